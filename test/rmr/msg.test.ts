// Every RMR message layout round-trips, and truncated or mutated bytes are either rejected
// with a reason or decode to a value that re-encodes to exactly those bytes (no two
// encodings of one message, no silent repair).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Layout} from '../../src/rmr/protocol/layout.js';
import { type FieldSpec, type FieldType, type ValuesOf } from '../../src/rmr/protocol/layout.js';
import {
  CmdEnvelope,
  CmdPayload,
  CMD_RSP_BYTES,
  CmdRsp,
  CmdType,
  IO_F_FUA,
  IoMsg,
  IoOp,
  MapAddMsg,
  MapClearMsg,
  IO_FAST_PATH,
  MsgHeader,
  MsgType,
  OwnerInfo,
  RMR_PROTO_VER,
  decodeMessage,
  encodeCmd,
  encodeCmdRsp,
  encodeIo,
  encodeMapAdd,
} from '../../src/rmr/protocol/msg.js';

function fieldArb(t: FieldType): fc.Arbitrary<number | string | Buffer> {
  if (t === 'u8') return fc.integer({ min: 0, max: 255 });
  if (t === 'u16') return fc.integer({ min: 0, max: 0xffff });
  if (t === 'u32') return fc.integer({ min: 0, max: 0xffffffff });
  if (t === 'i32') return fc.integer({ min: -0x80000000, max: 0x7fffffff });
  if (t === 'u64') return fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
  if (t === 'name') return fc.stringMatching(/^[a-z0-9_.-]{1,40}$/);
  // Small member-id-like bytes make valid lists likely.
  return fc.array(fc.integer({ min: 0, max: 5 }), { minLength: t.bytes, maxLength: t.bytes }).map((a) => Buffer.from(a));
}

const FLAGS = ['dirty', 'create', 'rejoin', 'delete', 'enable', 'sync', 'read_full_md', 'conditional', 'extend'];

/** Nudges random values towards validity so every layout gets many valid cases. */
function repair(v: Record<string, number | string | Buffer>): void {
  for (const f of FLAGS) if (typeof v[f] === 'number') v[f] = (v[f]) % 2;
  if (typeof v.flags === 'number' && 'offset' in v) v.flags = ((v.flags) % 8) | ((v.flags) & 0x300);
  if (typeof v.flags === 'number' && 'sender_id' in v) v.flags = 1 + ((v.flags) % 2);
  for (const [cnt, ids] of [['failed_cnt', 'failed_ids'], ['member_cnt', 'member_ids']] as const) {
    if (typeof v[cnt] !== 'number') continue;
    const n = (v[cnt]) % 5;
    v[cnt] = n;
    v[ids] = Buffer.from([1, 2, 3, 4].map((id, i) => (i < n ? id : 0)));
  }
  for (const k of ['member_id', 'receiver_member_id']) if (v[k] === 0) v[k] = 1;
  if (typeof v.chunk_count === 'number' && v.chunk_count === 0) v.chunk_count = 1;
  // CHUNK_HASH and VERIFY: at most MAX_VERIFY_CHUNKS chunks.
  if (typeof v.chunk_count === 'number' && !('failed_cnt' in v) && !('member_id' in v)) v.chunk_count = 1 + (v.chunk_count % 64);
  if (typeof v.failed_cnt === 'number' && 'chunk_count' in v && v.failed_cnt === 0) {
    v.failed_cnt = 1;
    v.failed_ids = Buffer.from([1, 0, 0, 0]);
  }
  if (typeof v.offset === 'number' && typeof v.length === 'number') v.offset = Math.min(v.offset, Number.MAX_SAFE_INTEGER - v.length);
  if (typeof v.err === 'number') v.err = -(Math.abs(v.err) % 4096) || 0;
  if (typeof v.cmd_type === 'number') v.cmd_type = [0, 1, 7, 18, 19, 23, 28, 29][v.cmd_type % 8] as number;
  if (typeof v.map_idx === 'number') v.map_idx %= 4;
  if (typeof v.operation === 'number') v.operation %= 2;
  if (typeof v.mode === 'number') v.mode %= 4;
  if (typeof v.page_count === 'number' && v.page_count === 0) v.page_count = 1;
  // MAP_TEST: 1..64 pages and 4 checksum bytes each.
  if (typeof v.page_count === 'number' && typeof v.crcs_len === 'number') {
    v.page_count = 1 + (v.page_count % 64);
    v.crcs_len = 4 * v.page_count;
  }
  if (typeof v.ranges_len === 'number') v.ranges_len = (v.ranges_len % 64) * 8;
  if (typeof v.with_intent === 'number') v.with_intent %= 2;
  // Ownership (OWNER, SERVICE, OWNER_INFO, the JOIN/REJOIN tails).
  if (Buffer.isBuffer(v.owner_id)) {
    const id = Buffer.from(v.owner_id.length === 16 ? v.owner_id : Buffer.alloc(16));
    if (typeof v.op === 'number') {
      v.op %= 4;
      if (typeof v.flags === 'number') v.flags %= 8;
      if (v.op !== 0 && v.epoch === 0) v.epoch = 1;
    }
    if (v.epoch === 0 && typeof v.op !== 'number') {
      id.fill(0);
      if (typeof v.owner_name === 'string') v.owner_name = '';
    } else if (id.every((x) => x === 0)) id[0] = 1;
    v.owner_id = id;
  }
  for (const k of ['liveness', 'srv_state']) if (typeof v[k] === 'number') v[k] %= 5;
  for (const k of ['role', 'maps_lost', 'replaced', 'quorum', 'on_no_quorum']) if (typeof v[k] === 'number') v[k] %= 2;
  if (typeof v.svc_cnt === 'number') {
    const n = 1 + (v.svc_cnt % 4);
    v.svc_cnt = n;
    v.svc_ids = Buffer.from([1, 2, 3, 4].map((id, i) => (i < n ? id : 0)));
  }
  if (typeof v.voters_cnt === 'number') {
    const n = v.voters_cnt % 6;
    v.voters_cnt = n;
    v.voter_ids = Buffer.from([1, 2, 3, 4, 5].map((id, i) => (i < n ? id : 0)));
    v.voter_roles = Buffer.from([0, 0, 0, 0, 1].map((r, i) => (i < n ? r : 0)));
  }
}

function valueArb<S extends FieldSpec>(l: Layout<S>): fc.Arbitrary<ValuesOf<S>> {
  const rec: Record<string, fc.Arbitrary<number | string | Buffer>> = {};
  for (const [k, t] of Object.entries(l.spec)) rec[k] = fieldArb(t);
  return fc.record(rec).map((v) => {
    const copy: Record<string, number | string | Buffer> = { ...v };
    repair(copy);
    return copy as unknown as ValuesOf<S>;
  });
}

const LAYOUTS: Layout<FieldSpec>[] = [IoMsg, MapAddMsg, MapClearMsg, CmdEnvelope, CmdRsp, OwnerInfo, ...Object.values(CmdPayload)] as unknown as Layout<FieldSpec>[];

test('every layout round-trips its valid values', () => {
  for (const l of LAYOUTS) {
    let valid = 0;
    fc.assert(
      fc.property(valueArb(l), (v) => {
        if (l.validate(v) !== null) {
          assert.throws(() => l.encode(v), RangeError);
          return;
        }
        valid++;
        const b = l.encode(v);
        assert.equal(b.length, l.size(v));
        const d = l.decode(b);
        assert.ok(d.ok, `${l.name}: ${d.ok ? '' : d.reason}`);
        assert.deepEqual({ ...d.value }, { ...v });
        assert.equal(d.bytes, b.length);
      }),
      { numRuns: 300 },
    );
    assert.ok(valid > 100, `${l.name}: the generator produced valid values (${valid})`);
  }
});

test('truncations are rejected; mutations are rejected or canonical', () => {
  for (const l of LAYOUTS) {
    fc.assert(
      fc.property(valueArb(l), fc.array(fc.record({ at: fc.nat(), val: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }), (v, muts) => {
        fc.pre(l.validate(v) === null);
        const b = l.encode(v);
        for (let n = 0; n < b.length; n++) assert.equal(l.decode(b.subarray(0, n)).ok, false, `${l.name} prefix ${n}`);
        if (b.length === 0) return;
        const m = Buffer.from(b);
        for (const x of muts) m[x.at % m.length] = x.val;
        const d = l.decode(m);
        if (d.ok && d.bytes === m.length) assert.deepEqual(l.encode(d.value), m, `${l.name}: decoded value re-encodes identically`);
        if (!d.ok) assert.ok(d.reason.startsWith(l.name));
      }),
      { numRuns: 200 },
    );
  }
});

test('whole messages: 64-bit offsets travel intact; garbage and trailing bytes are refused', () => {
  const io = {
    offset: 64 * 2 ** 40 - 4096, // the last 4 KiB of a 64 TiB device
    length: 4096,
    flags: IoOp.WRITE | IO_F_FUA,
    map_ver: 7,
    prio: 0,
    member_id: 2,
    failed_cnt: 1,
    failed_ids: Buffer.from([3, 0, 0, 0]),
    sync: 0,
    seq: 2 ** 40 + 3,
    settled: 2 ** 40,
  };
  const b = encodeIo(0xdeadbeef, io);
  const d = decodeMessage(b);
  assert.ok(d.ok);
  assert.equal(d.msg.type, 'IO');
  if (d.msg.type === 'IO') assert.deepEqual({ ...d.msg.body }, io);
  assert.match((decodeMessage(Buffer.concat([b, Buffer.from([0])])) as { reason: string }).reason, /trailing/);
  assert.equal(decodeMessage(Buffer.alloc(3)).ok, false);
  const bad = Buffer.from(b);
  bad.writeUInt16LE(9, 4); // unknown message type
  assert.match((decodeMessage(bad) as { reason: string }).reason, /unknown message type 9/);

  const add = encodeMapAdd(1, { first_chunk: 10, chunk_count: 3, map_ver: 2, failed_cnt: 2, failed_ids: Buffer.from([1, 4, 0, 0]) });
  assert.equal(decodeMessage(add).ok, true);
  assert.throws(() => encodeMapAdd(1, { first_chunk: 10, chunk_count: 3, map_ver: 2, failed_cnt: 2, failed_ids: Buffer.from([1, 1, 0, 0]) }), /listed twice/);

  const join = encodeCmd(5, { cmd_type: CmdType.JOIN_POOL, sync: 0, pool_name: 'pool1' }, {
    queue_depth: 128, chunk_size: 131072, dirty: 0, create: 1, rejoin: 0, extend: 0, member_cnt: 1, member_ids: Buffer.from([2, 0, 0, 0]), member_dirty: Buffer.alloc(4),
    epoch: 2 ** 40, owner_id: Buffer.alloc(16, 7),
  });
  const j = decodeMessage(join);
  assert.ok(j.ok && j.msg.type === 'CMD');
  if (j.msg.type === 'CMD') {
    assert.equal(j.msg.env.pool_name, 'pool1');
    assert.equal(j.msg.payload.chunk_size, 131072);
    assert.equal(j.msg.payload.epoch, 2 ** 40);
    assert.deepEqual(j.msg.payload.owner_id, Buffer.alloc(16, 7));
  }
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => {
      const r = decodeMessage(Buffer.from(bytes));
      if (!r.ok) assert.ok(r.reason.length > 0);
    }),
    { numRuns: 3000 },
  );
});

test('a command answer: header, CMD_RSP at byte 8, then the answer bytes', () => {
  const body = { cmd_type: CmdType.MD_SEND, member_id: 3, err: -5, value: 2 ** 40 + 1, chunk_size: 131072, mapped_size: 2 ** 33 };
  const extra = Buffer.from('pool_md bytes');
  const b = encodeCmdRsp(0xdeadbeef, body, extra);
  // The layout the storage node wrote by hand before it used encodeCmdRsp.
  const want = Buffer.alloc(CMD_RSP_BYTES + extra.length);
  want.writeUInt32LE(0xdeadbeef, 0);
  want.writeUInt16LE(MsgType.CMD_RSP, 4);
  want[6] = RMR_PROTO_VER;
  CmdRsp.encode(body, want, 8);
  extra.copy(want, CMD_RSP_BYTES);
  assert.deepEqual(b, want);
  assert.equal(MsgType.CMD_RSP, 1);
  assert.deepEqual(encodeCmdRsp(0xdeadbeef, body), want.subarray(0, CMD_RSP_BYTES));
  const d = decodeMessage(encodeCmdRsp(7, body));
  assert.ok(d.ok && d.msg.type === 'CMD_RSP');
  if (d.msg.type === 'CMD_RSP') assert.deepEqual({ ...d.msg.body }, body);
  assert.throws(() => encodeCmdRsp(7, { ...body, err: 5 }), /bad errno/);
});

/** What the generic layouts make of an IO message: the reference for the fast codec. */
function genericIo(buf: Buffer): { ok: true; group_id: number; body: Record<string, unknown> } | { ok: false } {
  const h = MsgHeader.decode(buf);
  if (!h.ok || h.value.type !== MsgType.IO) return { ok: false };
  const d = IoMsg.decode(buf, h.bytes);
  if (!d.ok || h.bytes + d.bytes !== buf.length) return { ok: false };
  return { ok: true, group_id: h.value.group_id, body: { ...d.value } };
}

test('the IO fast codec writes and accepts exactly what the generic layouts do', () => {
  // Written for the current IO layout; a changed layout turns it off (and this test then
  // compares the generic path with itself until the codec is updated).
  assert.equal(IO_FAST_PATH, true, 'the IO layout changed: update the fast codec in msg.ts (or accept the slower generic path)');
  const ioArb = valueArb(IoMsg as unknown as Layout<FieldSpec>);
  fc.assert(
    fc.property(ioArb, fc.integer({ min: 0, max: 0xffffffff }), fc.boolean(), (v, gid, spoil) => {
      const body = { ...(v as unknown as Record<string, number | Buffer>) };
      // Half the cases break one rule the layouts check.
      if (spoil) {
        const k = ['flags', 'sync', 'failed_cnt', 'member_id', 'offset'][gid % 5] as string;
        body[k] = k === 'offset' ? Number.MAX_SAFE_INTEGER : k === 'flags' ? 0x400 | (body.flags as number) : k === 'member_id' ? 256 : 7;
      }
      const typed = body as unknown as Parameters<typeof encodeIo>[1];
      let generic: Buffer | null;
      try {
        generic = Buffer.concat([MsgHeader.encode({ group_id: gid, type: MsgType.IO, proto_ver: RMR_PROTO_VER, reserved: 0 }), IoMsg.encode(typed)]);
      } catch {
        generic = null;
      }
      if (generic === null) assert.throws(() => encodeIo(gid, typed));
      else assert.deepEqual(encodeIo(gid, typed), generic);
    }),
    { numRuns: 3000 },
  );
  // Decoding: valid encodings and every kind of mutation of them. The value is built from
  // the layout's own field list, so fields added later take part too.
  const value: Record<string, number | Buffer> = Object.fromEntries(Object.entries(IoMsg.spec).map(([k, t]) => [k, typeof t === 'object' ? Buffer.alloc(t.bytes) : 5]));
  Object.assign(value, { offset: 4096, length: 8192, flags: IoOp.WRITE | IO_F_FUA, map_ver: 9, member_id: 2, failed_cnt: 2, failed_ids: Buffer.from([1, 3, 0, 0]), sync: 0 });
  const base = encodeIo(77, value as unknown as Parameters<typeof encodeIo>[1]);
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }), (edits) => {
      const b = Buffer.from(base);
      for (const [i, x] of edits) b[i] = x;
      const fast = decodeMessage(b);
      const ref = genericIo(b);
      if (ref.ok) {
        assert.ok(fast.ok && fast.msg.type === 'IO', 'the fast path refused what the layouts accept');
        assert.equal(fast.msg.group_id, ref.group_id);
        assert.deepEqual({ ...fast.msg.body }, ref.body);
      } else if (fast.ok) assert.notEqual(fast.msg.type, 'IO', 'the fast path accepted an IO the layouts refuse');
    }),
    { numRuns: 5000 },
  );
});
