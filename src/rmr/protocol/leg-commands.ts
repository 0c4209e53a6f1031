// Pool commands a compute client (or a peer) sends to a storage node's pool, as typed values,
// and their wire form. The transport dispatcher encodes them as CMD messages (msg.ts); the
// storage node executes them (server/execute-command.ts), and in-process tests call that
// directly: one implementation of what each command does, whatever carries it.

import type { DirtyMap } from './dirty-map.js';
import {
  CmdType,
  MAX_INTENT_RANGES,
  MAX_MEMBERS,
  MAX_RANGES_PER_CMD,
  MAX_TEST_PAGES,
  MD_FLAG,
  OWNER_FLAG,
  OWNER_ID_BYTES,
  OwnerInfo,
  POOL_INFO_MODE,
  POOL_INFO_OP,
  RANGE_BYTES,
  type CmdTypeValue,
  type OwnerInfoValue,
} from './msg.js';

/**
 * An owner pair (docs/ownership.md §1): ordered by epoch, then by id byte by byte. Epoch 0
 * with an all-zero id is "no owner", what a legacy pool and a pool never assembled have.
 */
export interface OwnerPair {
  epoch: number;
  id: Buffer;
}
export const NO_OWNER: Readonly<OwnerPair> = Object.freeze({ epoch: 0, id: Buffer.alloc(OWNER_ID_BYTES) });

/** <0, 0, >0 as `a` is older than, the same as, newer than `b`. */
export function compareOwners(a: OwnerPair, b: OwnerPair): number {
  if (a.epoch !== b.epoch) return a.epoch < b.epoch ? -1 : 1;
  return Buffer.compare(a.id, b.id);
}

export type OwnerOp = 'query' | 'prepare' | 'release' | 'fold';
const OWNER_OPS: readonly OwnerOp[] = ['query', 'prepare', 'release', 'fold'];

export type LegCommand =
  | { kind: 'join'; create: boolean; dirty: boolean; blank_ok?: boolean; extend?: boolean; queue_depth: number; members: { id: number; dirty: boolean }[]; owner: OwnerPair }
  | { kind: 'rejoin'; owner: OwnerPair }
  | { kind: 'owner'; op: OwnerOp; takeover: boolean; force: boolean; owner: OwnerPair; name: string }
  | { kind: 'service'; svc_ver: number; members: number[] }
  | { kind: 'enable_pool'; enable: boolean; trust?: boolean }
  | { kind: 'maintenance'; on: boolean }
  | { kind: 'map_ready' }
  | { kind: 'map_send'; receiver: number; map_ver: number }
  | { kind: 'map_done'; enable: boolean }
  | { kind: 'map_disable' }
  | { kind: 'map_check' }
  | { kind: 'store_check' }
  | { kind: 'map_get_ver' }
  | { kind: 'leave'; member_id: number; delete: boolean }
  | { kind: 'pool_info'; member_id: number; op: 'add' | 'remove'; mode: PoolInfoMode; dirty: boolean }
  | { kind: 'md_read' }
  | { kind: 'md_write'; md: Buffer }
  | { kind: 'user'; bytes: Buffer; rsp_len: number }
  | { kind: 'read_map_buf'; map_idx: number; page: number }
  | { kind: 'intent_to_map'; with_intent: boolean; ranges: (readonly [number, number])[] }
  | { kind: 'own_dirty'; from_chunk: number }
  | { kind: 'map_mark'; member_id: number; conditional: boolean; ranges: (readonly [number, number])[] }
  | { kind: 'send_discard'; member_id: number }
  | { kind: 'discard_clear'; member_id: number }
  | { kind: 'chunk_hash'; first_chunk: number; chunk_count: number }
  | { kind: 'verify'; first_chunk: number; chunk_count: number; members: number[] }
  | { kind: 'map_test'; member_id: number; first_page: number; crcs: Buffer }
  | { kind: 'map_set_ver'; map_ver: number };

export type PoolInfoMode = 'create' | 'assemble' | 'delete' | 'disassemble';

/** A question a storage node asks one peer, answered with bytes: its pool_md (MD_SEND, §8.7), chunk hashes (verify). */
export type PeerQuery = { kind: 'md_read' } | { kind: 'chunk_hash'; first_chunk: number; chunk_count: number };

/** What a map source sends to the receiver during a map spread. */
export type PeerMapCommand =
  | { kind: 'send_map_buf'; member_id: number; first_page: number; page_count: number; map_ver: number; pages: Buffer }
  | { kind: 'map_buf_done'; map_ver: number };
/** POOL_INFO's mode on the wire, and back (an unknown code reads as 'assemble', as before). */
const MODE_CODE: Record<PoolInfoMode, number> = {
  create: POOL_INFO_MODE.CREATE,
  assemble: POOL_INFO_MODE.ASSEMBLE,
  delete: POOL_INFO_MODE.DELETE,
  disassemble: POOL_INFO_MODE.DISASSEMBLE,
};
const modeOfCode = (code: number): PoolInfoMode => (Object.keys(MODE_CODE) as PoolInfoMode[]).find((m) => MODE_CODE[m] === code) ?? 'assemble';

/** A CHUNK_HASH answer per chunk: state u8 (0 hashed, 1 dirty here: not compared) | sha256 [32]. */
export const CHUNK_HASH_BYTES = 33;
/** VERIFY answer per chunk, one byte: bit i the i-th listed member differs from the source, bit 4+i it was not compared. */
export const VERIFY_DIFFERS = 0x01;
export const VERIFY_SKIPPED = 0x10;

/**
 * MAP_TEST answer: map_count u8 | member_ids [4] | pad [3], then one byte per page compared:
 * MAP_TEST_SAME, MAP_TEST_DIFFERS, or MAP_TEST_NO_MAP (the node holds no map of that member).
 * The member ids let the sender see maps the node holds that it lacks.
 */
export const MAP_TEST_HEADER = 8;
export const MAP_TEST_SAME = 0;
export const MAP_TEST_DIFFERS = 1;
export const MAP_TEST_NO_MAP = 2;

/**
 * The node's side of MAP_TEST: `crcs` (the sender's CRC32C of each page of `member_id`'s map
 * from `first_page`) against `maps`. Returns the answer and how many pages are not the
 * same, or why the request is refused.
 */
export function mapTestAnswer(maps: ReadonlyMap<number, DirtyMap<unknown>>, member_id: number, first_page: number, crcs: Buffer): { differing: number; answer: Buffer } | string {
  const n = crcs.length / 4;
  if (!Number.isInteger(n) || n < 1 || n > MAX_TEST_PAGES) return `${crcs.length} bytes of page checksums`;
  const m = maps.get(member_id);
  if (m !== undefined && (!Number.isSafeInteger(first_page) || first_page < 0 || first_page + n > m.page_count)) return `pages ${first_page}+${n} outside the map's ${m.page_count}`;
  const ids = [...maps.keys()].sort((a, b) => a - b);
  const answer = Buffer.alloc(MAP_TEST_HEADER + n);
  answer[0] = ids.length;
  ids.forEach((id, i) => (answer[1 + i] = id));
  let differing = 0;
  for (let i = 0; i < n; i++) {
    const flag = m === undefined ? MAP_TEST_NO_MAP : m.pageCrc(first_page + i) === crcs.readUInt32LE(4 * i) ? MAP_TEST_SAME : MAP_TEST_DIFFERS;
    answer[MAP_TEST_HEADER + i] = flag;
    if (flag !== MAP_TEST_SAME) differing++;
  }
  return { differing, answer };
}

/**
 * The sender's side: a MAP_TEST answer for `n` pages, checked as hostile input. null when it
 * is malformed (wrong length, more maps than a pool has, a member id listed twice or 0, an
 * unknown flag).
 */
export function decodeMapTestAnswer(data: Buffer | null | undefined, n: number): { member_ids: number[]; flags: number[] } | null {
  if (data === null || data === undefined || data.length !== MAP_TEST_HEADER + n) return null;
  const count = data[0] as number;
  if (count > MAX_MEMBERS) return null;
  const member_ids = [...data.subarray(1, 1 + count)];
  if (member_ids.some((id) => id === 0) || new Set(member_ids).size !== count) return null;
  const flags = [...data.subarray(MAP_TEST_HEADER)];
  if (flags.some((f) => f !== MAP_TEST_SAME && f !== MAP_TEST_DIFFERS && f !== MAP_TEST_NO_MAP)) return null;
  return { member_ids, flags };
}

/** Room for one OWNER_INFO answer (its fixed part plus the longest owner name is well below). */
export const OWNER_INFO_MAX = 512;
/** Largest answer payload of a command (pool_md, user replies). */
export const MAX_CMD_ANSWER = 4096;
/** Map pages one READ_MAP_BUF answer carries at most. */
export const READ_MAP_PAGES = 16;
/** READ_MAP_BUF answer header: member_id u8 | next_map_idx u8 | pad u16 | first_page u32 | page_count u32 | next_page u32. */
export const READ_MAP_HEADER = 16;

/**
 * status 0 or -errno; `value` carries MAP_CHECK / STORE_CHECK answers (1/0), versions and the
 * joined member id; `data` the answer of md_read and user commands.
 */
export type LegCommandCallback = (status: number, value: number, reason: string | null, data?: Buffer | null) => void;

/**
 * Chunk ranges as (u64 first, u64 count) pairs: INTENT_TO_MAP and MAP_MARK tails (at most
 * MAX_RANGES_PER_CMD) and OWN_DIRTY answers (at most MAX_INTENT_RANGES). 64-bit: a 64 TiB
 * pool of 4 KiB chunks has 2^34 chunks (protocol version 3 carried u32 and was wrong there).
 */
export function encodeRanges(ranges: readonly (readonly [number, number])[], max = MAX_INTENT_RANGES): Buffer {
  if (ranges.length > max) throw new RangeError(`at most ${max} ranges`);
  const tail = Buffer.alloc(ranges.length * RANGE_BYTES);
  ranges.forEach(([first, count], i) => {
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0) throw new RangeError(`chunk range [${first}, +${count})`);
    tail.writeBigUInt64LE(BigInt(first), i * RANGE_BYTES);
    tail.writeBigUInt64LE(BigInt(count), i * RANGE_BYTES + 8);
  });
  return tail;
}

/** The inverse of encodeRanges; null when the length is not whole pairs or a number is beyond 2^53. */
export function decodeRanges(buf: Buffer, max = MAX_INTENT_RANGES): [number, number][] | null {
  if (buf.length % RANGE_BYTES !== 0 || buf.length > max * RANGE_BYTES) return null;
  const ranges: [number, number][] = [];
  for (let o = 0; o + RANGE_BYTES <= buf.length; o += RANGE_BYTES) {
    const first = buf.readBigUInt64LE(o);
    const count = buf.readBigUInt64LE(o + 8);
    if (first > BigInt(Number.MAX_SAFE_INTEGER) || count > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    ranges.push([Number(first), Number(count)]);
  }
  return ranges;
}

/** The wire form of a command: its CMD type and payload fields (msg.ts CmdPayload). */
export function legCommandToWire(cmd: LegCommand, chunk_size: number): { cmd_type: CmdTypeValue; payload: Record<string, number | string | Buffer>; tail?: Buffer } {
  switch (cmd.kind) {
    case 'join': {
      const ids = Buffer.alloc(MAX_MEMBERS);
      const dirty = Buffer.alloc(MAX_MEMBERS);
      cmd.members.forEach((m, i) => {
        ids[i] = m.id;
        dirty[i] = m.dirty ? 1 : 0;
      });
      return {
        cmd_type: CmdType.JOIN_POOL,
        payload: {
          queue_depth: cmd.queue_depth,
          chunk_size,
          dirty: cmd.dirty ? (cmd.blank_ok === true ? JOIN_DIRTY_UNLESS_BLANK : 1) : 0,
          create: cmd.create ? 1 : 0,
          rejoin: 0,
          extend: cmd.extend === true ? 1 : 0,
          member_cnt: cmd.members.length,
          member_ids: ids,
          member_dirty: dirty,
          epoch: cmd.owner.epoch,
          owner_id: cmd.owner.id,
        },
      };
    }
    case 'rejoin':
      return { cmd_type: CmdType.REJOIN_POOL, payload: { queue_depth: 0, chunk_size, epoch: cmd.owner.epoch, owner_id: cmd.owner.id } };
    case 'owner': {
      const flags = (cmd.takeover ? OWNER_FLAG.TAKEOVER : 0) | (cmd.force ? OWNER_FLAG.FORCE : 0);
      return { cmd_type: CmdType.OWNER, payload: { op: OWNER_OPS.indexOf(cmd.op), flags, epoch: cmd.owner.epoch, owner_id: cmd.owner.id, owner_name: cmd.name } };
    }
    case 'service': {
      const ids = Buffer.alloc(MAX_MEMBERS);
      cmd.members.forEach((id, i) => (ids[i] = id));
      return { cmd_type: CmdType.SERVICE, payload: { svc_ver: cmd.svc_ver, svc_cnt: cmd.members.length, svc_ids: ids } };
    }
    case 'enable_pool':
      // 3 (beyond the reference): enable, trusting a node whose maps were lost (issue 19 item 3).
      return { cmd_type: CmdType.ENABLE_POOL, payload: { enable: cmd.trust === true && cmd.enable ? ENABLE_TRUST : cmd.enable ? 1 : 0 } };
    case 'maintenance':
      return { cmd_type: CmdType.ENABLE_POOL, payload: { enable: cmd.on ? 0 : 2 } };
    case 'map_ready':
      return { cmd_type: CmdType.MAP_READY, payload: {} };
    case 'map_send':
      return { cmd_type: CmdType.MAP_SEND, payload: { receiver_member_id: cmd.receiver, map_ver: cmd.map_ver } };
    case 'map_done':
      return { cmd_type: CmdType.MAP_DONE, payload: { enable: cmd.enable ? 1 : 0 } };
    case 'map_disable':
      return { cmd_type: CmdType.MAP_DISABLE, payload: {} };
    case 'map_check':
      return { cmd_type: CmdType.MAP_CHECK, payload: {} };
    case 'store_check':
      return { cmd_type: CmdType.STORE_CHECK, payload: {} };
    case 'map_get_ver':
      return { cmd_type: CmdType.MAP_GET_VER, payload: {} };
    case 'leave':
      return { cmd_type: CmdType.LEAVE_POOL, payload: { member_id: cmd.member_id, delete: cmd.delete ? 1 : 0 } };
    case 'pool_info':
      return { cmd_type: CmdType.POOL_INFO, payload: { member_id: cmd.member_id, operation: cmd.op === 'add' ? POOL_INFO_OP.ADD : POOL_INFO_OP.REMOVE, mode: MODE_CODE[cmd.mode], dirty: cmd.dirty ? 1 : 0 } };
    case 'md_read':
      return { cmd_type: CmdType.MD_SEND, payload: { src_mapped_size: 0, sender_id: 0, leader_id: 0, read_full_md: 1 } };
    case 'md_write':
      return { cmd_type: CmdType.SEND_MD_BUF, payload: { sender_id: 0, receiver_id: 0, flags: MD_FLAG.WRITE, md_len: cmd.md.length }, tail: cmd.md };
    case 'user':
      return { cmd_type: CmdType.USER, payload: { usr_len: cmd.bytes.length }, tail: cmd.bytes };
    case 'read_map_buf':
      return { cmd_type: CmdType.READ_MAP_BUF, payload: { map_idx: cmd.map_idx, page: cmd.page } };
    case 'intent_to_map': {
      const tail = encodeRanges(cmd.ranges, MAX_RANGES_PER_CMD);
      return { cmd_type: CmdType.INTENT_TO_MAP, payload: { with_intent: cmd.with_intent ? 1 : 0, ranges_len: tail.length }, tail };
    }
    case 'own_dirty':
      return { cmd_type: CmdType.OWN_DIRTY, payload: { from_chunk: cmd.from_chunk } };
    case 'send_discard':
      return { cmd_type: CmdType.SEND_DISCARD, payload: { member_id: cmd.member_id } };
    case 'discard_clear':
      return { cmd_type: CmdType.DISCARD_CLEAR_FLAG, payload: { member_id: cmd.member_id } };
    case 'chunk_hash':
      return { cmd_type: CmdType.CHUNK_HASH, payload: { first_chunk: cmd.first_chunk, chunk_count: cmd.chunk_count } };
    case 'verify': {
      const ids = Buffer.alloc(MAX_MEMBERS);
      cmd.members.forEach((id, i) => (ids[i] = id));
      return { cmd_type: CmdType.VERIFY, payload: { first_chunk: cmd.first_chunk, chunk_count: cmd.chunk_count, member_cnt: cmd.members.length, member_ids: ids } };
    }
    case 'map_test':
      return { cmd_type: CmdType.MAP_TEST, payload: { member_id: cmd.member_id, first_page: cmd.first_page, page_count: cmd.crcs.length / 4, crcs_len: cmd.crcs.length }, tail: cmd.crcs };
    case 'map_set_ver':
      return { cmd_type: CmdType.MAP_SET_VER, payload: { map_ver: cmd.map_ver } };
    case 'map_mark': {
      const tail = encodeRanges(cmd.ranges, MAX_RANGES_PER_CMD);
      return { cmd_type: CmdType.MAP_MARK, payload: { member_id: cmd.member_id, conditional: cmd.conditional ? 1 : 0, ranges_len: tail.length }, tail };
    }
  }
}

/**
 * JOIN_POOL's `dirty` value for a create-mode join whose every other member's store was blank
 * (never written since create_store made it all zeroes): the node starts dirty unless its own
 * store is blank too, when its data equals theirs and no initial sync is needed.
 */
export const JOIN_DIRTY_UNLESS_BLANK = 2;

/** JOIN_POOL's answer byte (beyond the reference): bit 0, this node's store is blank. Older nodes send none. */
export const JOIN_ANSWER_BLANK = 0x01;

/** ENABLE_POOL's `enable` value for an enable that trusts a node whose maps were lost. */
export const ENABLE_TRUST = 3;

/** MAP_GET_VER's answer byte (beyond the reference): bit 0, this node's maps were lost (issue 19 item 3). Older nodes send none. */
export const MAP_GET_VER_LOST = 0x01;

/**
 * SEND_MD_BUF's answer value (the client's pool_md push): the node serves IO (1), does not (0),
 * or awaits a join (2: its store was replaced or added again since the client's join, so no
 * map update can reach it before a rejoin).
 */
export const MD_WRITE_NOT_SERVING = 0;
export const MD_WRITE_SERVING = 1;
export const MD_WRITE_UNJOINED = 2;

/** An OWNER answer's data, checked as hostile input: null when malformed. */
export function decodeOwnerInfo(data: Buffer | null | undefined): OwnerInfoValue | null {
  if (data === null || data === undefined) return null;
  const d = OwnerInfo.decode(data);
  return d.ok && d.bytes === data.length ? d.value : null;
}

/** Answer bytes a command may return beyond its CMD_RSP. */
export function answerBytes(cmd: LegCommand): number {
  if (cmd.kind === 'read_map_buf') return READ_MAP_HEADER + READ_MAP_PAGES * 4096;
  if (cmd.kind === 'map_get_ver' || cmd.kind === 'join') return 1;
  if (cmd.kind === 'own_dirty') return MAX_INTENT_RANGES * RANGE_BYTES;
  if (cmd.kind === 'chunk_hash') return cmd.chunk_count * CHUNK_HASH_BYTES;
  if (cmd.kind === 'verify') return cmd.chunk_count;
  if (cmd.kind === 'map_test') return MAP_TEST_HEADER + cmd.crcs.length / 4;
  if (cmd.kind === 'owner') return OWNER_INFO_MAX;
  return cmd.kind === 'md_read' ? MAX_CMD_ANSWER : cmd.kind === 'user' ? Math.min(cmd.rsp_len, MAX_CMD_ANSWER) : 0;
}

const num = (p: Record<string, number | string | Buffer>, k: string): number => (typeof p[k] === 'number' ? p[k] : 0);
const pairOf = (p: Record<string, number | string | Buffer>): OwnerPair => ({ epoch: num(p, 'epoch'), id: Buffer.from(p.owner_id as Buffer) });

/** A decoded CMD back to a command (null for commands that are not leg commands). */
export function legCommandFromWire(cmd_type: number, p: Record<string, number | string | Buffer>, tail: Buffer, read_len: number): LegCommand | null {
  switch (cmd_type) {
    case CmdType.JOIN_POOL: {
      const ids = p.member_ids as Buffer;
      const dirty = p.member_dirty as Buffer;
      const members = Array.from({ length: num(p, 'member_cnt') }, (_, i) => ({ id: ids[i] as number, dirty: dirty[i] === 1 }));
      return { kind: 'join', create: num(p, 'create') === 1, dirty: num(p, 'dirty') !== 0, ...(num(p, 'dirty') === JOIN_DIRTY_UNLESS_BLANK ? { blank_ok: true } : {}), extend: num(p, 'extend') === 1, queue_depth: num(p, 'queue_depth'), members, owner: pairOf(p) };
    }
    case CmdType.REJOIN_POOL:
      return { kind: 'rejoin', owner: pairOf(p) };
    case CmdType.OWNER: {
      const flags = num(p, 'flags');
      return {
        kind: 'owner',
        op: OWNER_OPS[num(p, 'op')] ?? 'query',
        takeover: (flags & OWNER_FLAG.TAKEOVER) !== 0,
        force: (flags & OWNER_FLAG.FORCE) !== 0,
        owner: pairOf(p),
        name: typeof p.owner_name === 'string' ? p.owner_name : '',
      };
    }
    case CmdType.SERVICE: {
      const ids = p.svc_ids as Buffer;
      return { kind: 'service', svc_ver: num(p, 'svc_ver'), members: Array.from({ length: num(p, 'svc_cnt') }, (_, i) => ids[i] as number) };
    }
    case CmdType.ENABLE_POOL: {
      const e = num(p, 'enable');
      if (e === ENABLE_TRUST) return { kind: 'enable_pool', enable: true, trust: true };
      return e === 1 ? { kind: 'enable_pool', enable: true } : { kind: 'maintenance', on: e === 0 };
    }
    case CmdType.MAP_READY:
      return { kind: 'map_ready' };
    case CmdType.MAP_SEND:
      return { kind: 'map_send', receiver: num(p, 'receiver_member_id'), map_ver: num(p, 'map_ver') };
    case CmdType.MAP_DONE:
      return { kind: 'map_done', enable: num(p, 'enable') === 1 };
    case CmdType.MAP_DISABLE:
      return { kind: 'map_disable' };
    case CmdType.MAP_CHECK:
      return { kind: 'map_check' };
    case CmdType.STORE_CHECK:
      return { kind: 'store_check' };
    case CmdType.MAP_GET_VER:
      return { kind: 'map_get_ver' };
    case CmdType.LEAVE_POOL:
      return { kind: 'leave', member_id: num(p, 'member_id'), delete: num(p, 'delete') === 1 };
    case CmdType.POOL_INFO:
      return { kind: 'pool_info', member_id: num(p, 'member_id'), op: num(p, 'operation') === POOL_INFO_OP.ADD ? 'add' : 'remove', mode: modeOfCode(num(p, 'mode')), dirty: num(p, 'dirty') === 1 };
    case CmdType.MD_SEND:
      // Peers merge the slot they need out of the whole record, so both forms answer it.
      return { kind: 'md_read' };
    case CmdType.SEND_MD_BUF:
      return num(p, 'flags') === MD_FLAG.WRITE ? { kind: 'md_write', md: Buffer.from(tail) } : { kind: 'md_read' };
    case CmdType.USER:
      return { kind: 'user', bytes: Buffer.from(tail), rsp_len: read_len };
    case CmdType.READ_MAP_BUF:
      return { kind: 'read_map_buf', map_idx: num(p, 'map_idx'), page: num(p, 'page') };
    case CmdType.INTENT_TO_MAP: {
      // The layout checked that the tail is whole pairs, at most MAX_RANGES_PER_CMD of them;
      // a number beyond 2^53 makes it no command (refused, never read as fewer ranges).
      const ranges = decodeRanges(tail, MAX_RANGES_PER_CMD);
      return ranges === null ? null : { kind: 'intent_to_map', with_intent: num(p, 'with_intent') === 1, ranges };
    }
    case CmdType.OWN_DIRTY:
      return { kind: 'own_dirty', from_chunk: num(p, 'from_chunk') };
    case CmdType.SEND_DISCARD:
      return { kind: 'send_discard', member_id: num(p, 'member_id') };
    case CmdType.DISCARD_CLEAR_FLAG:
      return { kind: 'discard_clear', member_id: num(p, 'member_id') };
    case CmdType.CHUNK_HASH:
      return { kind: 'chunk_hash', first_chunk: num(p, 'first_chunk'), chunk_count: num(p, 'chunk_count') };
    case CmdType.VERIFY: {
      const ids = p.member_ids as Buffer;
      return { kind: 'verify', first_chunk: num(p, 'first_chunk'), chunk_count: num(p, 'chunk_count'), members: Array.from({ length: num(p, 'member_cnt') }, (_, i) => ids[i] as number) };
    }
    case CmdType.MAP_TEST:
      return { kind: 'map_test', member_id: num(p, 'member_id'), first_page: num(p, 'first_page'), crcs: Buffer.from(tail) };
    case CmdType.MAP_SET_VER:
      return { kind: 'map_set_ver', map_ver: num(p, 'map_ver') };
    case CmdType.MAP_MARK: {
      const ranges = decodeRanges(tail, MAX_RANGES_PER_CMD);
      return ranges === null ? null : { kind: 'map_mark', member_id: num(p, 'member_id'), conditional: num(p, 'conditional') === 1, ranges };
    }
    default:
      return null;
  }
}
