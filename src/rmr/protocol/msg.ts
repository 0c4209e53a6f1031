// RMR wire messages (reference §5), each layout defined once. An RMR message travels as the
// transport's user header; bulk data (IO payload, map pages, metadata pages, user command
// bytes) travels as the transport's data. Unlike the reference, offsets and lengths are
// 64-bit, IO carries a byte range (a chunk *range* is derived from it), and MAP_ADD /
// MAP_CLEAR carry chunk ranges, so discards and multi-chunk IOs are tracked like writes.
//
// Every message:  group_id u32 | type u16 | proto_ver u8 | reserved u8       (8 bytes)
// then the body of its type:
//   IO         offset u64 | length u64 | flags u32 | map_ver u64 | prio u16 | member_id u8
//              | failed_cnt u8 | failed_ids [4] | sync u8 | seq u64 | settled u64
//              (seq: the client's number of a modifying IO, 0 for others; settled: every
//              client write below it was answered by every leg and its misses recorded)
//   MAP_ADD    first_chunk u64 | chunk_count u64 | map_ver u64 | failed_cnt u8 | failed_ids [4]
//   MAP_CLEAR  first_chunk u64 | chunk_count u64 | member_id u8 | map_ver u64
//              (map_ver: the sender's version when its chunk sync began, see MapSpread.mapClear)
//   CMD        cmd_type u8 | sync u8 | pool_name (u16 len + utf-8) | payload of cmd_type
//   CMD_RSP    cmd_type u8 | member_id u8 | err i32 | value u64 | chunk_size u32 | mapped_size u64

import { Layout, type UntypedLayout, type ValuesOf } from './layout.js';

/**
 * 2: IO carries seq and settled; JOIN_POOL an extend flag; commands 24-27 (see the layouts).
 * 3: MAP_CLEAR carries a map version.
 * 4: chunk ranges (INTENT_TO_MAP, MAP_MARK tails, OWN_DIRTY answers) are u64 pairs;
 *    MAP_TEST carries page checksums.
 * 5: ownership (docs/ownership.md): OWNER (28) and SERVICE (29); JOIN_POOL and REJOIN_POOL
 *    end with the joiner's owner pair (epoch u64, owner_id [16]).
 */
export const RMR_PROTO_VER = 5;
/** Most members (legs) a pool can have: the reference's RMR_POOL_MAX_SESS. */
export const MAX_MEMBERS = 4;

export const MsgType = { CMD: 0, CMD_RSP: 1, IO: 2, MAP_CLEAR: 4, MAP_ADD: 5 } as const;
export type MsgTypeValue = (typeof MsgType)[keyof typeof MsgType];

export const IoOp = { READ: 0, WRITE: 1, DISCARD: 2, SYNCREQ: 3, WRITE_ZEROES: 4, FLUSH: 5, MD_READ: 6, MD_WRITE: 7 } as const;
export type IoOpValue = (typeof IoOp)[keyof typeof IoOp];
export const IO_OP_MASK = 0xff;
export const IO_F_SYNC = 0x100;
export const IO_F_FUA = 0x200;
const IO_FLAGS_KNOWN = IO_OP_MASK | IO_F_SYNC | IO_F_FUA;

/** Chunk ranges one OWN_DIRTY answer carries at most (they travel as the answer's data). */
export const MAX_INTENT_RANGES = 512;
/** Bytes of one chunk range on the wire: u64 first_chunk, u64 chunk_count. */
export const RANGE_BYTES = 16;
/**
 * Chunk ranges one INTENT_TO_MAP or MAP_MARK carries at most. They travel in the message
 * header, which the transport limits (1 KiB by default): with the longest pool name (255
 * bytes) the envelope and payload take 273 bytes, so 32 ranges (512 bytes) always fit.
 * Larger sets go in several messages.
 */
export const MAX_RANGES_PER_CMD = 32;
/** Map pages one MAP_TEST compares at most (their checksums travel in the message header). */
export const MAX_TEST_PAGES = 64;
/** Chunks one CHUNK_HASH or VERIFY covers at most (a hash answer: CHUNK_HASH_BYTES per chunk, leg-commands.ts). */
export const MAX_VERIFY_CHUNKS = 64;

export const CmdType = {
  MAP_READY: 0,
  MAP_SEND: 1,
  SEND_MAP_BUF: 2,
  MAP_BUF_DONE: 3,
  MAP_DONE: 4,
  MAP_DISABLE: 5,
  READ_MAP_BUF: 6,
  MAP_CHECK: 7,
  INTENT_TO_MAP: 8, // the reference's LAST_IO_TO_MAP, for the intent record
  STORE_CHECK: 9,
  MAP_TEST: 10,
  SEND_MD_BUF: 11,
  SEND_DISCARD: 12,
  MD_SEND: 13,
  MAP_GET_VER: 14,
  MAP_SET_VER: 15,
  DISCARD_CLEAR_FLAG: 16,
  POOL_INFO: 18,
  JOIN_POOL: 19,
  REJOIN_POOL: 20,
  LEAVE_POOL: 21,
  ENABLE_POOL: 22,
  USER: 23,
  // Beyond the reference:
  OWN_DIRTY: 24, // a node's own dirty chunks and undecided crash chunks, as ranges from a cursor
  MAP_MARK: 25, // chunk ranges become dirty for one member
  CHUNK_HASH: 26, // hashes of a node's chunks (peers, over the sync pool: online verify)
  VERIFY: 27, // the verify source compares chunks with the listed members
  OWNER: 28, // ownership: query, prepare (fence), release, fold (docs/ownership.md)
  SERVICE: 29, // the owner's service record (docs/ownership.md; not executed yet)
} as const;
export type CmdTypeValue = (typeof CmdType)[keyof typeof CmdType];
export const CMD_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(CmdType).map(([k, v]) => [v, k]));

export const MsgHeader = new Layout('msg header', { group_id: 'u32', type: 'u16', proto_ver: 'u8', reserved: 'u8' }, (v) =>
  ![0, 1, 2, 4, 5].includes(v.type) ? `unknown message type ${v.type}` : v.proto_ver !== RMR_PROTO_VER ? `protocol version ${v.proto_ver}` : null,
);

/** Member id lists: `cnt` ids in 1..255, distinct, the rest zero. */
export function checkMembers(cnt: number, ids: Buffer, max = MAX_MEMBERS): string | null {
  if (cnt > max) return `${cnt} members > ${max}`;
  const seen = new Set<number>();
  for (let i = 0; i < max; i++) {
    const id = ids[i] as number;
    if (i < cnt) {
      if (id === 0) return 'member id 0 in the list';
      if (seen.has(id)) return `member ${id} listed twice`;
      seen.add(id);
    } else if (id !== 0) return 'member ids beyond the count must be zero';
  }
  return null;
}

export const IoMsg = new Layout(
  'IO',
  {
    offset: 'u64',
    length: 'u64',
    flags: 'u32',
    map_ver: 'u64',
    prio: 'u16',
    member_id: 'u8',
    failed_cnt: 'u8',
    failed_ids: { bytes: MAX_MEMBERS },
    sync: 'u8',
    seq: 'u64',
    settled: 'u64',
  },
  (v) => {
    if ((v.flags & ~IO_FLAGS_KNOWN) !== 0) return `unknown IO flags 0x${v.flags.toString(16)}`;
    if ((v.flags & IO_OP_MASK) > IoOp.MD_WRITE) return `unknown IO op ${v.flags & IO_OP_MASK}`;
    if (v.offset + v.length > Number.MAX_SAFE_INTEGER) return 'offset + length beyond 2^53';
    if (v.sync > 1) return 'sync must be 0 or 1';
    return checkMembers(v.failed_cnt, v.failed_ids);
  },
);

export const MapAddMsg = new Layout(
  'MAP_ADD',
  { first_chunk: 'u64', chunk_count: 'u64', map_ver: 'u64', failed_cnt: 'u8', failed_ids: { bytes: MAX_MEMBERS } },
  (v) => (v.chunk_count < 1 ? 'empty chunk range' : v.failed_cnt < 1 ? 'no member listed' : checkMembers(v.failed_cnt, v.failed_ids)),
);

export const MapClearMsg = new Layout('MAP_CLEAR', { first_chunk: 'u64', chunk_count: 'u64', member_id: 'u8', map_ver: 'u64' }, (v) =>
  v.chunk_count < 1 ? 'empty chunk range' : v.member_id === 0 ? 'member id 0' : null,
);

export const CmdEnvelope = new Layout('CMD', { cmd_type: 'u8', sync: 'u8', pool_name: 'name' }, (v) =>
  !CMD_NAMES.has(v.cmd_type) ? `unknown command ${v.cmd_type}` : v.sync > 1 ? 'sync must be 0 or 1' : v.pool_name.length === 0 ? 'empty pool name' : null,
);

const flag = (name: string, x: number): string | null => (x > 1 ? `${name} must be 0 or 1` : null);

/** Bytes of an owner id (16 random bytes per client pool, docs/ownership.md). */
export const OWNER_ID_BYTES = 16;
/** Longest owner name (the client daemon's `name`). */
export const OWNER_NAME_MAX = 64;
/** Voters a pool can have: its data members and at most one witness. */
export const MAX_VOTERS = MAX_MEMBERS + 1;
export const OWNER_OP = { QUERY: 0, PREPARE: 1, RELEASE: 2, FOLD: 3 } as const;
export const OWNER_FLAG = { TAKEOVER: 1, FORCE: 2, CLAIM: 4 } as const;
/** What a member says of its owner's liveness (OWNER_INFO). */
export const LIVENESS = ['none', 'released', 'live', 'recently_seen', 'restart_grace'] as const;
export type Liveness = (typeof LIVENESS)[number];
const isZero = (b: Buffer): boolean => b.every((x) => x === 0);
/**
 * An owner pair (epoch, owner_id): epoch 0 is "no owner" (a legacy pool) and goes with an
 * all-zero id; any other epoch names an owner, whose id is never all zero.
 */
export function checkOwnerPair(epoch: number, owner_id: Buffer): string | null {
  if (epoch === 0) return isZero(owner_id) ? null : 'owner id without an epoch';
  return isZero(owner_id) ? 'epoch without an owner id' : null;
}
export function checkOwnerName(epoch: number, name: string): string | null {
  const n = Buffer.byteLength(name, 'utf8');
  if (n > OWNER_NAME_MAX) return `owner name of ${n} bytes > ${OWNER_NAME_MAX}`;
  return epoch === 0 ? (n === 0 ? null : 'owner name without an epoch') : n === 0 ? 'empty owner name' : null;
}
/** The tail JOIN_POOL and REJOIN_POOL end with: the joiner's owner pair. */
const OWNER_TAIL = { epoch: 'u64', owner_id: { bytes: OWNER_ID_BYTES } } as const;
const member = (name: string, x: number): string | null => (x === 0 ? `${name} 0` : null);
const first = (...xs: (string | null)[]): string | null => xs.find((x) => x !== null) ?? null;

const none = new Layout('no payload', {});
const badRangesLen = (n: number): string | null => (n % RANGE_BYTES !== 0 || n > MAX_RANGES_PER_CMD * RANGE_BYTES ? `ranges_len ${n}` : null);
export const POOL_INFO_OP = { ADD: 0, REMOVE: 1 } as const;
export const POOL_INFO_MODE = { CREATE: 0, ASSEMBLE: 1, DELETE: 2, DISASSEMBLE: 3 } as const;
export const MD_FLAG = { READ: 1, WRITE: 2 } as const;

/** Payload layout of each command (what follows the envelope). */
export const CmdPayload = {
  [CmdType.MAP_READY]: none,
  // map_ver: the client's version, which the source adopts if higher (the client bumps it).
  [CmdType.MAP_SEND]: new Layout('MAP_SEND', { receiver_member_id: 'u8', map_ver: 'u64' }, (v) => member('receiver', v.receiver_member_id)),
  [CmdType.SEND_MAP_BUF]: new Layout('SEND_MAP_BUF', { member_id: 'u8', first_page: 'u32', page_count: 'u32', map_ver: 'u64' }, (v) =>
    first(member('member', v.member_id), v.page_count < 1 ? 'no pages' : null),
  ),
  [CmdType.MAP_BUF_DONE]: new Layout('MAP_BUF_DONE', { map_ver: 'u64' }),
  [CmdType.MAP_DONE]: new Layout('MAP_DONE', { enable: 'u8' }, (v) => flag('enable', v.enable)),
  [CmdType.MAP_DISABLE]: none,
  [CmdType.READ_MAP_BUF]: new Layout('READ_MAP_BUF', { map_idx: 'u8', page: 'u32' }, (v) => (v.map_idx >= MAX_MEMBERS ? `map index ${v.map_idx}` : null)),
  [CmdType.MAP_CHECK]: none,
  // Tail: ranges_len bytes of (u64 first_chunk, u64 chunk_count) pairs.
  [CmdType.INTENT_TO_MAP]: new Layout('INTENT_TO_MAP', { with_intent: 'u8', ranges_len: 'u32' }, (v) =>
    first(flag('with_intent', v.with_intent), badRangesLen(v.ranges_len)),
  ),
  [CmdType.STORE_CHECK]: none,
  // Tail: crcs_len bytes, the sender's CRC32C (u32) of each page from first_page: the node
  // compares them with its own pages of that member's map (the reference pushes whole pages).
  [CmdType.MAP_TEST]: new Layout('MAP_TEST', { member_id: 'u8', first_page: 'u32', page_count: 'u16', crcs_len: 'u16' }, (v) =>
    first(
      member('member', v.member_id),
      v.page_count < 1 || v.page_count > MAX_TEST_PAGES ? `page_count ${v.page_count} outside 1..${MAX_TEST_PAGES}` : null,
      v.crcs_len !== v.page_count * 4 ? `crcs_len ${v.crcs_len} for ${v.page_count} pages` : null,
    ),
  ),
  [CmdType.SEND_MD_BUF]: new Layout('SEND_MD_BUF', { sender_id: 'u8', receiver_id: 'u8', flags: 'u8', md_len: 'u16' }, (v) =>
    v.flags !== MD_FLAG.READ && v.flags !== MD_FLAG.WRITE ? `bad metadata flags ${v.flags}` : null,
  ),
  [CmdType.SEND_DISCARD]: new Layout('SEND_DISCARD', { member_id: 'u8' }, (v) => member('member', v.member_id)),
  [CmdType.MD_SEND]: new Layout('MD_SEND', { src_mapped_size: 'u64', sender_id: 'u8', leader_id: 'u8', read_full_md: 'u8' }, (v) =>
    flag('read_full_md', v.read_full_md),
  ),
  [CmdType.MAP_GET_VER]: none,
  // The reference sends a u8 here although versions are u64 (§12.4); ours is u64.
  [CmdType.MAP_SET_VER]: new Layout('MAP_SET_VER', { map_ver: 'u64' }),
  [CmdType.DISCARD_CLEAR_FLAG]: new Layout('DISCARD_CLEAR_FLAG', { member_id: 'u8' }, (v) => member('member', v.member_id)),
  [CmdType.POOL_INFO]: new Layout('POOL_INFO', { member_id: 'u8', operation: 'u8', mode: 'u8', dirty: 'u8' }, (v) =>
    first(member('member', v.member_id), v.operation > POOL_INFO_OP.REMOVE ? `operation ${v.operation}` : null, v.mode > POOL_INFO_MODE.DISASSEMBLE ? `mode ${v.mode}` : null, flag('dirty', v.dirty)),
  ),
  [CmdType.JOIN_POOL]: new Layout(
    'JOIN_POOL',
    {
      queue_depth: 'u32',
      chunk_size: 'u32',
      dirty: 'u8',
      create: 'u8',
      rejoin: 'u8',
      extend: 'u8',
      member_cnt: 'u8',
      member_ids: { bytes: MAX_MEMBERS },
      member_dirty: { bytes: MAX_MEMBERS },
      ...OWNER_TAIL,
    },
    // dirty 2 (beyond the reference): dirty unless this node's store is blank (JOIN_DIRTY_UNLESS_BLANK).
    (v) =>
      first(v.dirty > 2 ? `dirty ${v.dirty}` : null, flag('create', v.create), flag('rejoin', v.rejoin), flag('extend', v.extend), checkMembers(v.member_cnt, v.member_ids), checkOwnerPair(v.epoch, v.owner_id)),
  ),
  [CmdType.REJOIN_POOL]: new Layout('REJOIN_POOL', { queue_depth: 'u32', chunk_size: 'u32', ...OWNER_TAIL }, (v) => checkOwnerPair(v.epoch, v.owner_id)),
  [CmdType.LEAVE_POOL]: new Layout('LEAVE_POOL', { member_id: 'u8', delete: 'u8' }, (v) => first(member('member', v.member_id), flag('delete', v.delete))),
  // enable: 1 enable; 0 maintenance on; 2 maintenance off (never enables: the reference's
  // ENABLE_POOL(1) does both, and a node that missed the "on" would be enabled with a stale map);
  // 3 enable, trusting the data of a node whose maps were lost (issue 19 item 3).
  [CmdType.ENABLE_POOL]: new Layout('ENABLE_POOL', { enable: 'u8' }, (v) => (v.enable > 3 ? `enable ${v.enable}` : null)),
  [CmdType.USER]: new Layout('USER', { usr_len: 'u32' }),
  [CmdType.OWN_DIRTY]: new Layout('OWN_DIRTY', { from_chunk: 'u64' }),
  [CmdType.CHUNK_HASH]: new Layout('CHUNK_HASH', { first_chunk: 'u64', chunk_count: 'u32' }, (v) =>
    v.chunk_count < 1 || v.chunk_count > MAX_VERIFY_CHUNKS ? `chunk_count ${v.chunk_count} outside 1..${MAX_VERIFY_CHUNKS}` : null,
  ),
  [CmdType.VERIFY]: new Layout('VERIFY', { first_chunk: 'u64', chunk_count: 'u32', member_cnt: 'u8', member_ids: { bytes: MAX_MEMBERS } }, (v) =>
    first(v.chunk_count < 1 || v.chunk_count > MAX_VERIFY_CHUNKS ? `chunk_count ${v.chunk_count} outside 1..${MAX_VERIFY_CHUNKS}` : null, checkMembers(v.member_cnt, v.member_ids)),
  ),
  // Tail: ranges_len bytes of (u64 first_chunk, u64 chunk_count) pairs. conditional: only
  // chunks some other member is clean for.
  [CmdType.MAP_MARK]: new Layout('MAP_MARK', { member_id: 'u8', conditional: 'u8', ranges_len: 'u32' }, (v) =>
    first(member('member', v.member_id), flag('conditional', v.conditional), badRangesLen(v.ranges_len)),
  ),
  // The sender's own pair, also for QUERY (a member does not count its own owner as live
  // against it); epoch >= 1 for every other op. Answered with OWNER_INFO.
  [CmdType.OWNER]: new Layout('OWNER', { op: 'u8', flags: 'u8', epoch: 'u64', owner_id: { bytes: OWNER_ID_BYTES }, owner_name: 'name' }, (v) =>
    first(
      v.op > OWNER_OP.FOLD ? `owner op ${v.op}` : null,
      (v.flags & ~7) !== 0 ? `owner flags 0x${v.flags.toString(16)}` : null,
      v.epoch === 0 && v.op !== OWNER_OP.QUERY ? 'epoch 0' : null,
      isZero(v.owner_id) ? 'no owner id' : null,
      checkOwnerName(1, v.owner_name),
    ),
  ),
  // The epoch is the session's binding; a service set is never empty.
  [CmdType.SERVICE]: new Layout('SERVICE', { svc_ver: 'u64', svc_cnt: 'u8', svc_ids: { bytes: MAX_MEMBERS } }, (v) =>
    v.svc_cnt < 1 ? 'empty service set' : checkMembers(v.svc_cnt, v.svc_ids),
  ),
} as const;

/**
 * OWNER's answer data (after CMD_RSP): the member's owner, its maps' versions and its
 * service record and voter list (docs/ownership.md §3.5).
 */
export const OwnerInfo = new Layout(
  'OWNER_INFO',
  {
    epoch: 'u64',
    owner_id: { bytes: OWNER_ID_BYTES },
    owner_name: 'name',
    liveness: 'u8',
    last_contact_ms: 'u32',
    role: 'u8',
    srv_state: 'u8',
    maps_epoch: 'u64',
    map_ver: 'u64',
    maps_lost: 'u8',
    replaced: 'u8',
    svc_epoch: 'u64',
    svc_ver: 'u64',
    svc_cnt: 'u8',
    svc_ids: { bytes: MAX_MEMBERS },
    quorum: 'u8',
    on_no_quorum: 'u8',
    voters_cnt: 'u8',
    voter_ids: { bytes: MAX_VOTERS },
    voter_roles: { bytes: MAX_VOTERS },
  },
  (v) =>
    first(
      checkOwnerPair(v.epoch, v.owner_id),
      checkOwnerName(v.epoch, v.owner_name),
      v.liveness >= LIVENESS.length ? `liveness ${v.liveness}` : null,
      flag('role', v.role),
      v.srv_state > 4 ? `server state ${v.srv_state}` : null,
      flag('maps_lost', v.maps_lost),
      flag('replaced', v.replaced),
      flag('quorum', v.quorum),
      flag('on_no_quorum', v.on_no_quorum),
      checkMembers(v.svc_cnt, v.svc_ids),
      checkMembers(v.voters_cnt, v.voter_ids, MAX_VOTERS),
      [...v.voter_roles].some((r, i) => (i < v.voters_cnt ? r > 1 : r !== 0)) ? 'bad voter roles' : null,
    ),
);
export type OwnerInfoValue = ValuesOf<typeof OwnerInfo.spec>;

const PAYLOADS: ReadonlyMap<number, UntypedLayout> = new Map(
  Object.entries(CmdPayload).map(([k, l]) => [Number(k), l as unknown as UntypedLayout]),
);

/** The payload layout of a command number, or undefined for an unknown command. */
export function payloadLayout(cmd_type: number): UntypedLayout | undefined {
  return PAYLOADS.get(cmd_type);
}

export const CmdRsp = new Layout('CMD_RSP', { cmd_type: 'u8', member_id: 'u8', err: 'i32', value: 'u64', chunk_size: 'u32', mapped_size: 'u64' }, (v) =>
  !CMD_NAMES.has(v.cmd_type) ? `unknown command ${v.cmd_type}` : v.err > 0 || v.err < -4095 ? `bad errno ${v.err}` : null,
);

/** Bytes a command answer needs (header + CMD_RSP). */
export const CMD_RSP_BYTES = MsgHeader.min_size + CmdRsp.min_size;

export type MsgHeaderValue = ValuesOf<typeof MsgHeader.spec>;
export type IoMsgValue = ValuesOf<typeof IoMsg.spec>;
export type MapAddValue = ValuesOf<typeof MapAddMsg.spec>;
export type MapClearValue = ValuesOf<typeof MapClearMsg.spec>;
export type CmdEnvelopeValue = ValuesOf<typeof CmdEnvelope.spec>;
export type CmdRspValue = ValuesOf<typeof CmdRsp.spec>;

export type RmrMessage =
  | { type: 'IO'; group_id: number; body: IoMsgValue }
  | { type: 'MAP_ADD'; group_id: number; body: MapAddValue }
  | { type: 'MAP_CLEAR'; group_id: number; body: MapClearValue }
  | { type: 'CMD'; group_id: number; env: CmdEnvelopeValue; payload: Record<string, number | string | Buffer>; tail: Buffer }
  | { type: 'CMD_RSP'; group_id: number; body: CmdRspValue };

function header(group_id: number, type: MsgTypeValue): Buffer {
  return MsgHeader.encode({ group_id, type, proto_ver: RMR_PROTO_VER, reserved: 0 });
}

// The IO message is on every IO's path (encoded per leg on the client, decoded per request
// on the node): a hand-written codec for exactly the bytes of MsgHeader + IoMsg, with the
// same checks (test/rmr/msg.test.ts holds it to the generic layouts byte for byte and
// decision for decision). Anything it is unsure of goes to the generic layouts, which
// encode, or throw and refuse with the reason.
const U64_MAX = Number.MAX_SAFE_INTEGER;
const fieldsOf = (spec: Readonly<Record<string, unknown>>): string[] =>
  Object.entries(spec).map(([k, t]) => `${k}:${typeof t === 'object' && t !== null ? String((t as { bytes: number }).bytes) : String(t)}`);
/**
 * The fields the codec was written for, in wire order; u64 fields after them (numbers with
 * no rule of their own) are handled too. Any other change of either layout switches the
 * fast path off: every IO message then takes the generic layouts (slower, never wrong).
 */
const IO_FAST_HEAD = ['group_id:u32', 'type:u16', 'proto_ver:u8', 'reserved:u8', 'offset:u64', 'length:u64', 'flags:u32', 'map_ver:u64', 'prio:u16', 'member_id:u8', 'failed_cnt:u8', 'failed_ids:4', 'sync:u8'];
const IO_FIELDS = [...fieldsOf(MsgHeader.spec), ...fieldsOf(IoMsg.spec)];
const IO_TAIL = IO_FIELDS.slice(IO_FAST_HEAD.length);
/** Names of the trailing u64 fields, at byte 45 + 8 i. */
const IO_TAIL_U64: readonly string[] = IO_TAIL.map((f) => f.slice(0, -':u64'.length));
const IO_MSG_BYTES = MsgHeader.min_size + IoMsg.min_size;
export const IO_FAST_PATH =
  IO_FAST_HEAD.every((f, i) => IO_FIELDS[i] === f) && IO_TAIL.every((f) => f.endsWith(':u64')) && IO_MSG_BYTES === 45 + 8 * IO_TAIL.length;

const isU = (x: unknown, max: number): boolean => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= max;

/** checkMembers without allocating: true when the list is valid. */
function membersOk(cnt: number, ids: Buffer): boolean {
  if (cnt > MAX_MEMBERS) return false;
  for (let i = 0; i < MAX_MEMBERS; i++) {
    const id = ids[i] as number;
    if (i >= cnt) {
      if (id !== 0) return false;
      continue;
    }
    if (id === 0) return false;
    for (let j = 0; j < i; j++) if (ids[j] === id) return false;
  }
  return true;
}

function ioRulesOk(offset: number, length: number, flags: number, sync: number, failed_cnt: number, failed_ids: Buffer): boolean {
  return (flags & ~IO_FLAGS_KNOWN) === 0 && (flags & IO_OP_MASK) <= IoOp.MD_WRITE && offset + length <= U64_MAX && sync <= 1 && membersOk(failed_cnt, failed_ids);
}

function putU64(b: Buffer, o: number, x: number): void {
  b.writeUInt32LE(x % 0x1_0000_0000, o);
  b.writeUInt32LE(Math.floor(x / 0x1_0000_0000), o + 4);
}

/** A u64 at `o`, or -1 beyond 2^53 (the layouts refuse those). */
function getU64(b: Buffer, o: number): number {
  const hi = b.readUInt32LE(o + 4);
  return hi > 0x1f_ffff ? -1 : b.readUInt32LE(o) + hi * 0x1_0000_0000;
}

export function encodeIo(group_id: number, body: IoMsgValue): Buffer {
  const v = body;
  const tail = v as unknown as Readonly<Record<string, unknown>>;
  const fast =
    IO_FAST_PATH &&
    isU(group_id, 0xffffffff) &&
    isU(v.offset, U64_MAX) &&
    isU(v.length, U64_MAX) &&
    isU(v.flags, 0xffffffff) &&
    isU(v.map_ver, U64_MAX) &&
    isU(v.prio, 0xffff) &&
    isU(v.member_id, 0xff) &&
    isU(v.failed_cnt, 0xff) &&
    isU(v.sync, 0xff) &&
    Buffer.isBuffer(v.failed_ids) &&
    v.failed_ids.length === MAX_MEMBERS &&
    IO_TAIL_U64.every((k) => isU(tail[k], U64_MAX)) &&
    ioRulesOk(v.offset, v.length, v.flags, v.sync, v.failed_cnt, v.failed_ids);
  if (!fast) return Buffer.concat([header(group_id, MsgType.IO), IoMsg.encode(body)]);
  const b = Buffer.allocUnsafe(IO_MSG_BYTES);
  b.writeUInt32LE(group_id, 0);
  b.writeUInt16LE(MsgType.IO, 4);
  b[6] = RMR_PROTO_VER;
  b[7] = 0;
  putU64(b, 8, v.offset);
  putU64(b, 16, v.length);
  b.writeUInt32LE(v.flags, 24);
  putU64(b, 28, v.map_ver);
  b.writeUInt16LE(v.prio, 36);
  b[38] = v.member_id;
  b[39] = v.failed_cnt;
  v.failed_ids.copy(b, 40, 0, MAX_MEMBERS);
  b[44] = v.sync;
  for (let i = 0; i < IO_TAIL_U64.length; i++) putU64(b, 45 + 8 * i, tail[IO_TAIL_U64[i] as string] as number);
  return b;
}

/** The IO fast path of decodeMessage: null when the generic decoder must decide. */
function decodeIoFast(buf: Buffer): RmrMessage | null {
  if (!IO_FAST_PATH || buf.length !== IO_MSG_BYTES || buf.readUInt16LE(4) !== MsgType.IO || buf[6] !== RMR_PROTO_VER) return null;
  const offset = getU64(buf, 8);
  const length = getU64(buf, 16);
  const map_ver = getU64(buf, 28);
  if (offset < 0 || length < 0 || map_ver < 0) return null;
  const flags = buf.readUInt32LE(24);
  const failed_cnt = buf[39] as number;
  const sync = buf[44] as number;
  // A view, not a copy: the transport never reuses received memory.
  const failed_ids = buf.subarray(40, 44);
  if (!ioRulesOk(offset, length, flags, sync, failed_cnt, failed_ids)) return null;
  const body = { offset, length, flags, map_ver, prio: buf.readUInt16LE(36), member_id: buf[38] as number, failed_cnt, failed_ids, sync } as IoMsgValue;
  for (let i = 0; i < IO_TAIL_U64.length; i++) {
    const x = getU64(buf, 45 + 8 * i);
    if (x < 0) return null;
    (body as unknown as Record<string, number>)[IO_TAIL_U64[i] as string] = x;
  }
  return { type: 'IO', group_id: buf.readUInt32LE(0), body };
}
export function encodeMapAdd(group_id: number, body: MapAddValue): Buffer {
  return Buffer.concat([header(group_id, MsgType.MAP_ADD), MapAddMsg.encode(body)]);
}
export function encodeMapClear(group_id: number, body: MapClearValue): Buffer {
  return Buffer.concat([header(group_id, MsgType.MAP_CLEAR), MapClearMsg.encode(body)]);
}
/** A command's answer: header, CMD_RSP, then the answer's bytes if any (md_read, user, chunk hashes). */
export function encodeCmdRsp(group_id: number, body: CmdRspValue, extra: Buffer | null = null): Buffer {
  const head = [header(group_id, MsgType.CMD_RSP), CmdRsp.encode(body)];
  return Buffer.concat(extra === null ? head : [...head, extra]);
}
/** Commands that carry bytes after their payload, and the payload field giving their length. */
const TAIL_FIELD: ReadonlyMap<number, string> = new Map([
  [CmdType.USER, 'usr_len'],
  [CmdType.SEND_MD_BUF, 'md_len'],
  [CmdType.INTENT_TO_MAP, 'ranges_len'],
  [CmdType.MAP_MARK, 'ranges_len'],
  [CmdType.MAP_TEST, 'crcs_len'],
]);

export function encodeCmd(group_id: number, env: CmdEnvelopeValue, payload: Record<string, number | string | Buffer>, tail: Buffer | null = null): Buffer {
  const layout = payloadLayout(env.cmd_type);
  if (layout === undefined) throw new RangeError(`unknown command ${env.cmd_type}`);
  const field = TAIL_FIELD.get(env.cmd_type);
  const t = tail ?? Buffer.alloc(0);
  if (field === undefined ? t.length !== 0 : payload[field] !== t.length) throw new RangeError('command tail does not match its length field');
  const p = layout.encodeUntyped(payload);
  return Buffer.concat([header(group_id, MsgType.CMD), CmdEnvelope.encode(env), p, t]);
}

/**
 * Decodes any RMR message (the whole user header). Trailing bytes are refused: a layout
 * either matches exactly or the message is rejected with a reason.
 */
export function decodeMessage(buf: Buffer): { ok: true; msg: RmrMessage } | { ok: false; reason: string } {
  const io = decodeIoFast(buf);
  if (io !== null) return { ok: true, msg: io };
  const h = MsgHeader.decode(buf);
  if (!h.ok) return h;
  const { group_id, type } = h.value;
  let o = h.bytes;
  type Result = { ok: true; msg: RmrMessage } | { ok: false; reason: string };
  // A body must end exactly where the buffer ends.
  const whole = <T>(d: { ok: true; value: T; bytes: number } | { ok: false; reason: string }, make: (v: T) => RmrMessage): Result => {
    if (!d.ok) return d;
    const rest = buf.length - o - d.bytes;
    return rest === 0 ? { ok: true, msg: make(d.value) } : { ok: false, reason: `${rest} trailing bytes` };
  };
  switch (type) {
    case MsgType.IO:
      return whole(IoMsg.decode(buf, o), (body) => ({ type: 'IO', group_id, body }));
    case MsgType.MAP_ADD:
      return whole(MapAddMsg.decode(buf, o), (body) => ({ type: 'MAP_ADD', group_id, body }));
    case MsgType.MAP_CLEAR:
      return whole(MapClearMsg.decode(buf, o), (body) => ({ type: 'MAP_CLEAR', group_id, body }));
    case MsgType.CMD_RSP:
      return whole(CmdRsp.decode(buf, o), (body) => ({ type: 'CMD_RSP', group_id, body }));
    default: {
      const e = CmdEnvelope.decode(buf, o);
      if (!e.ok) return e;
      o += e.bytes;
      const layout = payloadLayout(e.value.cmd_type) as UntypedLayout; // the envelope check knows every command
      const p = layout.decode(buf, o);
      if (!p.ok) return p;
      o += p.bytes;
      // Commands with a tail (USER data, a pool_md) say its length in a payload field.
      const field = TAIL_FIELD.get(e.value.cmd_type);
      const len = field === undefined ? 0 : (p.value[field] as number);
      if (buf.length - o !== len) {
        return { ok: false, reason: field === undefined ? `${buf.length - o} trailing bytes` : `command tail of ${buf.length - o} bytes, ${field} says ${len}` };
      }
      return { ok: true, msg: { type: 'CMD', group_id, env: e.value, payload: p.value, tail: len === 0 ? Buffer.alloc(0) : buf.subarray(o) } };
    }
  }
}
