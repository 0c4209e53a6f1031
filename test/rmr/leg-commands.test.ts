// Every pool command survives its wire form: typed value -> CMD bytes -> decode -> typed
// value, the path the server dispatcher takes (server-node.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OWNER_INFO_MAX, decodeOwnerInfo, legCommandFromWire, legCommandToWire, type LegCommand } from '../../src/rmr/protocol/leg-commands.js';
import { CmdType, decodeMessage, encodeCmd, MAX_RANGES_PER_CMD, MAX_TEST_PAGES, OwnerInfo } from '../../src/rmr/protocol/msg.js';
import { DEFAULT_MAX_USER_HDR } from '../../src/transport/options.js';
import { NAME_MAX } from '../../src/rmr/protocol/layout.js';

const CHUNK = 65536;
const OWNER = { epoch: 2 ** 33 + 1, id: Buffer.from('00112233445566778899aabbccddeeff', 'hex') };

function roundTrip(cmd: LegCommand): LegCommand | null {
  const w = legCommandToWire(cmd, CHUNK);
  const bytes = encodeCmd(7, { cmd_type: w.cmd_type, sync: 0, pool_name: 'p1' }, w.payload, w.tail ?? null);
  const d = decodeMessage(bytes);
  assert.ok(d.ok, d.ok ? '' : d.reason);
  assert.equal(d.msg.type, 'CMD');
  if (d.msg.type !== 'CMD') return null;
  return legCommandFromWire(d.msg.env.cmd_type, d.msg.payload, d.msg.tail, cmd.kind === 'user' ? cmd.rsp_len : 0);
}

function encode(cmd: LegCommand): Buffer {
  const w = legCommandToWire(cmd, CHUNK);
  return encodeCmd(7, { cmd_type: w.cmd_type, sync: 0, pool_name: 'p1' }, w.payload, w.tail ?? null);
}

test('commands round-trip through their wire form', () => {
  const cmds: LegCommand[] = [
    { kind: 'join', create: true, dirty: false, extend: false, queue_depth: 64, members: [{ id: 2, dirty: true }, { id: 3, dirty: false }], owner: { epoch: 0, id: Buffer.alloc(16) } },
    { kind: 'join', create: true, dirty: true, extend: true, queue_depth: 64, members: [{ id: 1, dirty: false }], owner: OWNER },
    { kind: 'join', create: true, dirty: true, blank_ok: true, extend: false, queue_depth: 64, members: [{ id: 1, dirty: false }], owner: OWNER },
    { kind: 'rejoin', owner: { epoch: 0, id: Buffer.alloc(16) } },
    { kind: 'rejoin', owner: { epoch: Number.MAX_SAFE_INTEGER, id: Buffer.alloc(16, 0xff) } },
    { kind: 'owner', op: 'query', takeover: false, force: false, owner: { epoch: 0, id: OWNER.id }, name: 'rmr-b' },
    { kind: 'owner', op: 'prepare', takeover: true, force: true, owner: OWNER, name: 'rmr-b' },
    { kind: 'owner', op: 'release', takeover: false, force: false, owner: OWNER, name: 'x'.repeat(64) },
    { kind: 'owner', op: 'fold', takeover: true, force: false, owner: OWNER, name: 'rmr-b' },
    { kind: 'service', svc_ver: 2 ** 40, members: [1, 3] },
    { kind: 'enable_pool', enable: true },
    { kind: 'enable_pool', enable: true, trust: true },
    { kind: 'maintenance', on: true },
    { kind: 'maintenance', on: false },
    { kind: 'map_ready' },
    { kind: 'map_send', receiver: 3, map_ver: 2 ** 40 },
    { kind: 'map_done', enable: false },
    { kind: 'map_disable' },
    { kind: 'map_check' },
    { kind: 'store_check' },
    { kind: 'map_get_ver' },
    { kind: 'leave', member_id: 2, delete: true },
    { kind: 'pool_info', member_id: 4, op: 'remove', mode: 'disassemble', dirty: false },
    { kind: 'md_read' },
    { kind: 'user', bytes: Buffer.from('hello'), rsp_len: 100 },
    { kind: 'read_map_buf', map_idx: 2, page: 77 },
    { kind: 'intent_to_map', with_intent: true, ranges: [] },
    { kind: 'intent_to_map', with_intent: false, ranges: [[0, 1], [7, 300], [2 ** 32 - 2, 1]] },
    { kind: 'own_dirty', from_chunk: 2 ** 33 },
    { kind: 'map_mark', member_id: 3, conditional: true, ranges: [[5, 2]] },
    { kind: 'map_mark', member_id: 1, conditional: false, ranges: [] },
    { kind: 'send_discard', member_id: 2 },
    { kind: 'discard_clear', member_id: 2 },
    { kind: 'chunk_hash', first_chunk: 2 ** 30, chunk_count: 64 },
    { kind: 'verify', first_chunk: 7, chunk_count: 16, members: [2, 4] },
    { kind: 'map_test', member_id: 3, first_page: 2 ** 32 - 1, crcs: Buffer.from([1, 2, 3, 4, 0xff, 0xfe, 0xfd, 0xfc]) },
    { kind: 'map_test', member_id: 1, first_page: 0, crcs: Buffer.alloc(4 * MAX_TEST_PAGES, 0xa5) },
    { kind: 'map_set_ver', map_ver: 1 },
    { kind: 'map_set_ver', map_ver: Number.MAX_SAFE_INTEGER },
  ];
  for (const c of cmds) assert.deepEqual(roundTrip(c), c, c.kind);
});

test("POOL_INFO's operation and mode travel as the reference's numbers", () => {
  // The reference's numbers (rmr-reference-design.md §5): RMR_POOL_INFO_OP_ADD 0, _REMOVE 1; modes CREATE 0 … DISASSEMBLE 3.
  const ops = [['add', 0], ['remove', 1]] as const;
  const modes = [['create', 0], ['assemble', 1], ['delete', 2], ['disassemble', 3]] as const;
  for (const [op, op_code] of ops) {
    for (const [mode, mode_code] of modes) {
      const cmd: LegCommand = { kind: 'pool_info', member_id: 3, op, mode, dirty: true };
      const w = legCommandToWire(cmd, CHUNK);
      assert.deepEqual(w.payload, { member_id: 3, operation: op_code, mode: mode_code, dirty: 1 }, `${op} ${mode}`);
      assert.deepEqual(roundTrip(cmd), cmd, `${op} ${mode}`);
    }
  }
});

test('chunk ranges are 64-bit: a 64 TiB pool of 4 KiB chunks has 2^34 chunks', () => {
  // Protocol version 3 wrote u32 pairs: these threw (out of range) or wrapped.
  const ranges: [number, number][] = [
    [2 ** 34 - 1, 1],
    [2 ** 32, 2 ** 33],
    [0, 2 ** 34],
  ];
  for (const c of [
    { kind: 'intent_to_map', with_intent: false, ranges },
    { kind: 'map_mark', member_id: 2, conditional: true, ranges },
  ] as LegCommand[]) {
    assert.deepEqual(roundTrip(c), c, c.kind);
  }
});

test('a full batch of ranges fits the default transport message header, with the longest pool name', () => {
  const many = Array.from({ length: MAX_RANGES_PER_CMD }, (_, i): [number, number] => [2 ** 40 + i * 2, 2 ** 33]);
  for (const c of [
    { kind: 'intent_to_map', with_intent: true, ranges: many },
    { kind: 'map_mark', member_id: 4, conditional: false, ranges: many },
    { kind: 'map_test', member_id: 4, first_page: 2 ** 32 - 1, crcs: Buffer.alloc(4 * MAX_TEST_PAGES) },
  ] as LegCommand[]) {
    const w = legCommandToWire(c, CHUNK);
    const bytes = encodeCmd(7, { cmd_type: w.cmd_type, sync: 0, pool_name: 'p'.repeat(NAME_MAX) }, w.payload, w.tail ?? null);
    assert.ok(bytes.length <= DEFAULT_MAX_USER_HDR, `${c.kind}: ${bytes.length} bytes > ${DEFAULT_MAX_USER_HDR}`);
  }
});

test('INTENT_TO_MAP refuses more ranges than one message carries, and a ragged tail', () => {
  const many = Array.from({ length: MAX_RANGES_PER_CMD + 1 }, (_, i): [number, number] => [i * 2, 1]);
  assert.throws(() => legCommandToWire({ kind: 'intent_to_map', with_intent: false, ranges: many }, CHUNK), RangeError);
  const w = legCommandToWire({ kind: 'intent_to_map', with_intent: false, ranges: [[1, 2]] }, CHUNK);
  const bytes = encodeCmd(7, { cmd_type: w.cmd_type, sync: 0, pool_name: 'p1' }, w.payload, w.tail ?? null);
  // Cut the tail and its length field to 13 bytes: not whole pairs.
  const bad = Buffer.from(bytes.subarray(0, bytes.length - 3));
  bad.writeUInt32LE(13, bytes.length - 16 - 4);
  const d = decodeMessage(bad);
  assert.equal(d.ok, false);
});

test('MAP_TEST refuses hostile page counts and checksum tails', () => {
  const cmdBytes = (payload: Record<string, number>, tail: Buffer): Buffer => {
    // A valid message, then the payload fields and tail overwritten as a hostile sender would.
    const w = legCommandToWire({ kind: 'map_test', member_id: 2, first_page: 5, crcs: Buffer.alloc(8) }, CHUNK);
    const ok = encodeCmd(7, { cmd_type: w.cmd_type, sync: 0, pool_name: 'p1' }, w.payload, w.tail ?? null);
    const head = Buffer.from(ok.subarray(0, ok.length - 8));
    // Payload: member_id u8 | first_page u32 | page_count u16 | crcs_len u16, just before the tail.
    const at = head.length - 9;
    if (payload.member_id !== undefined) head[at] = payload.member_id;
    if (payload.page_count !== undefined) head.writeUInt16LE(payload.page_count, at + 5);
    if (payload.crcs_len !== undefined) head.writeUInt16LE(payload.crcs_len, at + 7);
    return Buffer.concat([head, tail]);
  };
  // The untouched message decodes (so the refusals below are about the change each makes).
  const base = decodeMessage(cmdBytes({}, Buffer.alloc(8)));
  assert.ok(base.ok && base.msg.type === 'CMD' && base.msg.env.cmd_type === CmdType.MAP_TEST);
  const refused: [string, Buffer][] = [
    ['no pages', cmdBytes({ page_count: 0, crcs_len: 0 }, Buffer.alloc(0))],
    ['more pages than one message carries', cmdBytes({ page_count: MAX_TEST_PAGES + 1, crcs_len: 4 * (MAX_TEST_PAGES + 1) }, Buffer.alloc(4 * (MAX_TEST_PAGES + 1)))],
    ['length field against the page count', cmdBytes({ page_count: 2, crcs_len: 12 }, Buffer.alloc(12))],
    ['a tail shorter than its length field', cmdBytes({}, Buffer.alloc(7))],
    ['a tail longer than its length field', cmdBytes({}, Buffer.alloc(9))],
    ['member 0', cmdBytes({ member_id: 0 }, Buffer.alloc(8))],
    ['the largest u16 lengths', cmdBytes({ page_count: 0xffff, crcs_len: 0xffff }, Buffer.alloc(64))],
  ];
  for (const [what, bytes] of refused) assert.equal(decodeMessage(bytes).ok, false, what);
  // The sender cannot build one either.
  for (const n of [4 * MAX_TEST_PAGES + 4, 6, 0]) assert.throws(() => encode({ kind: 'map_test', member_id: 2, first_page: 0, crcs: Buffer.alloc(n) }), RangeError, `${n} checksum bytes`);
});

test('MAP_SET_VER carries a 64-bit version (the reference sends a u8)', () => {
  const c: LegCommand = { kind: 'map_set_ver', map_ver: 2 ** 40 + 3 };
  assert.deepEqual(roundTrip(c), c);
  assert.throws(() => encode({ kind: 'map_set_ver', map_ver: 2 ** 64 }), RangeError);
});

test('owner pairs: garbage is refused (an epoch without an id, an id without an epoch, a bad op or name)', () => {
  const join = legCommandToWire({ kind: 'join', create: false, dirty: false, queue_depth: 8, members: [], owner: OWNER }, CHUNK);
  const bad = (over: Record<string, number | string | Buffer>, cmd_type: number = CmdType.JOIN_POOL, base = join.payload): void =>
    assert.throws(() => encodeCmd(7, { cmd_type, sync: 0, pool_name: 'p1' }, { ...base, ...over }), RangeError, JSON.stringify(over));
  bad({ epoch: 0 });
  bad({ owner_id: Buffer.alloc(16) });
  const rejoin = legCommandToWire({ kind: 'rejoin', owner: OWNER }, CHUNK).payload;
  bad({ epoch: 3, owner_id: Buffer.alloc(16) }, CmdType.REJOIN_POOL, rejoin);
  const owner = legCommandToWire({ kind: 'owner', op: 'prepare', takeover: false, force: false, owner: OWNER, name: 'a' }, CHUNK).payload;
  bad({ op: 4 }, CmdType.OWNER, owner);
  bad({ flags: 8 }, CmdType.OWNER, owner);
  bad({ epoch: 0 }, CmdType.OWNER, owner); // only QUERY may carry epoch 0
  bad({ owner_name: '' }, CmdType.OWNER, owner);
  bad({ owner_name: 'x'.repeat(65) }, CmdType.OWNER, owner);
  bad({ owner_id: Buffer.alloc(16) }, CmdType.OWNER, owner);
  const svc = legCommandToWire({ kind: 'service', svc_ver: 1, members: [1] }, CHUNK).payload;
  bad({ svc_cnt: 0, svc_ids: Buffer.alloc(4) }, CmdType.SERVICE, svc);
  bad({ svc_cnt: 2, svc_ids: Buffer.from([1, 1, 0, 0]) }, CmdType.SERVICE, svc);
  // A REJOIN without the tail (a version-4 sender) is refused, never read as epoch 0.
  const old = encodeCmd(7, { cmd_type: CmdType.REJOIN_POOL, sync: 0, pool_name: 'p1' }, rejoin).subarray(0, -24);
  assert.equal(decodeMessage(old).ok, false);
});

test('OWNER_INFO answers decode only when well-formed', () => {
  const info = {
    epoch: 9, owner_id: OWNER.id, owner_name: 'rmr-a', liveness: 2, last_contact_ms: 400, role: 0, srv_state: 3, maps_epoch: 9, map_ver: 2 ** 40, maps_lost: 0, replaced: 0,
    svc_epoch: 9, svc_ver: 3, svc_cnt: 2, svc_ids: Buffer.from([1, 2, 0, 0]), quorum: 1, on_no_quorum: 0, voters_cnt: 3, voter_ids: Buffer.from([1, 2, 9, 0, 0]), voter_roles: Buffer.from([0, 0, 1, 0, 0]),
  };
  const b = OwnerInfo.encode(info);
  assert.ok(b.length <= OWNER_INFO_MAX);
  assert.deepEqual({ ...decodeOwnerInfo(b) }, info);
  assert.equal(decodeOwnerInfo(Buffer.concat([b, Buffer.from([0])])), null, 'trailing bytes');
  assert.equal(decodeOwnerInfo(b.subarray(0, -1)), null, 'truncated');
  assert.equal(decodeOwnerInfo(null), null);
  for (const over of [{ liveness: 5 }, { epoch: 0 }, { voter_roles: Buffer.from([0, 0, 2, 0, 0]) }, { voter_ids: Buffer.from([1, 2, 9, 4, 0]) }, { srv_state: 5 }]) {
    assert.throws(() => OwnerInfo.encode({ ...info, ...over }), RangeError, JSON.stringify(over));
  }
  // A blank member: no owner, no name.
  assert.ok(decodeOwnerInfo(OwnerInfo.encode({ ...info, epoch: 0, owner_id: Buffer.alloc(16), owner_name: '', liveness: 0 })) !== null);
});
