// The member side of ownership (docs/ownership.md §3): the pure rules of owner.ts, and the
// storage node's fence through RmrServerNode with sessions as the transport hands them over.
// A session bound to an older owner gets ESTALE on every message kind and changes nothing;
// random interleavings of PREPARE, JOIN, REJOIN and IO never apply anything older.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RmrServerNode } from '../../src/rmr/server/server-node.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { CmdType, IoOp, decodeMessage, encodeCmd, encodeIo, encodeMapAdd, encodeMapClear, CMD_RSP_BYTES } from '../../src/rmr/protocol/msg.js';
import { NO_OWNER, compareOwners, decodeOwnerInfo, legCommandToWire, type LegCommand, type OwnerPair } from '../../src/rmr/protocol/leg-commands.js';
import { initialOwnerState, joinDecision, liveness, prepareDecision } from '../../src/rmr/server/owner.js';
import { encodePoolMd } from '../../src/rmr/protocol/pool-md.js';
import type { ServerRequest, ServerSession } from '../../src/transport/server.js';
import { Errno } from '../../src/util/errno.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { MemDisk } from '../../src/sim/mem-disk.js';
import { MemoryLogger } from '../util/memory-logger.js';

const CHUNK = 65536;
const SIZE = 16 * CHUNK;
const GID = 42;

const pair = (epoch: number, id: number): OwnerPair => ({ epoch, id: Buffer.alloc(16, id) });

test('owner.ts: pairs order by epoch then id; PREPARE and join decisions; liveness', () => {
  assert.ok(compareOwners(pair(1, 9), pair(2, 1)) < 0);
  assert.ok(compareOwners(pair(2, 2), pair(2, 1)) > 0, 'equal epochs: the id breaks the tie');
  const st = initialOwnerState(pair(5, 3), 'rmr-a');
  assert.equal(prepareDecision(st, pair(4, 9), true, 'none'), 'stale');
  assert.equal(prepareDecision(st, pair(5, 2), true, 'none'), 'stale');
  assert.equal(prepareDecision(st, pair(5, 3), false, 'live'), 'same');
  assert.equal(prepareDecision(st, pair(6, 4), false, 'live'), 'busy');
  assert.equal(prepareDecision(st, pair(6, 4), false, 'restart_grace'), 'busy');
  assert.equal(prepareDecision(st, pair(6, 4), true, 'live'), 'accept', 'takeover');
  assert.equal(prepareDecision(st, pair(6, 3), false, 'live'), 'accept', 'the same owner restarted');
  assert.equal(prepareDecision(st, pair(6, 4), false, 'none'), 'accept');
  assert.equal(joinDecision(st, pair(5, 3)), 'ok');
  assert.equal(joinDecision(st, pair(5, 2)), 'stale');
  assert.equal(joinDecision(st, pair(7, 1)), 'prepare_first');
  assert.equal(joinDecision(initialOwnerState(), NO_OWNER), 'ok', 'a legacy pool and a legacy client');
  assert.equal(liveness(initialOwnerState(), 0, true), 'none');
  assert.equal(liveness({ ...st, released: true }, 0, true), 'released');
  assert.equal(liveness(st, 50_000, true), 'live');
  assert.equal(liveness({ ...st, last_contact: 45_000 }, 50_000, false, 10_000), 'recently_seen');
  assert.equal(liveness({ ...st, last_contact: 30_000 }, 50_000, false, 10_000), 'none');
  assert.equal(liveness({ ...st, started_at: 45_000 }, 50_000, false, 10_000), 'restart_grace');
  assert.equal(liveness({ ...st, started_at: 30_000 }, 50_000, false, 10_000), 'none');
});

function fakeSession(name: string): ServerSession {
  return { name, closed: false, paths: new Map([[1, {}]]) } as unknown as ServerSession;
}

function setup() {
  const clock = new SimClock();
  const data = new MemDisk(SIZE, clock);
  const pool = new ServerPool({ pool_name: 'p', group_id: GID, member_id: 1, chunk_size: CHUNK, now: () => clock.now() }, () => undefined);
  assert.equal(pool.register({ block: data, meta: new MemDisk(1 << 20, clock), meta_base: 0, ioAllowed: () => true }, 'create', SIZE), null);
  const node = new RmrServerNode(new MemoryLogger());
  node.addPool(pool);
  // The pool's creation by a legacy client, whose session then goes (a plain create).
  const creator = fakeSession('creator');
  assert.equal(send(node, clock, creator, cmd({ kind: 'join', create: true, dirty: false, queue_depth: 8, members: [], owner: NO_OWNER })).status, 0);
  node.onSessionClose(creator, 'done');
  return { clock, data, pool, node };
}

function cmd(c: LegCommand, sync = 0): Buffer {
  const w = legCommandToWire(c, CHUNK);
  return encodeCmd(GID, { cmd_type: w.cmd_type, sync, pool_name: 'p' }, w.payload, w.tail ?? null);
}

function send(node: RmrServerNode, clock: SimClock, session: ServerSession, user_hdr: Buffer, kind: 'read' | 'write' = 'read', data: Buffer = Buffer.alloc(0), read_len = CMD_RSP_BYTES + 70_000): { status: number; data: Buffer | null } {
  const answers: { status: number; data: Buffer | null }[] = [];
  const req: ServerRequest = { session, kind, id: 1, user_hdr, data, read_len, respond: (status: number, d?: Buffer | null) => answers.push({ status, data: d ?? null }) };
  node.onRequest(req);
  clock.runUntil(clock.now() + 50);
  assert.equal(answers.length, 1, 'answered once');
  return answers[0] as { status: number; data: Buffer | null };
}

function io(op: number, offset: number, length: number, seq = 0): Buffer {
  return encodeIo(GID, { offset, length, flags: op, map_ver: 1, prio: 0, member_id: 1, failed_cnt: 0, failed_ids: Buffer.alloc(4), sync: 0, seq, settled: 0 });
}

/** PREPARE (takeover), JOIN and ENABLE for `p` on a new session: the owner serving. */
function own(node: RmrServerNode, clock: SimClock, p: OwnerPair, name: string): ServerSession {
  const s = fakeSession(name);
  const prep = send(node, clock, s, cmd({ kind: 'owner', op: 'prepare', takeover: true, force: false, owner: p, name }));
  assert.equal(prep.status, 0);
  assert.equal(send(node, clock, s, cmd({ kind: 'join', create: false, dirty: false, queue_depth: 8, members: [], owner: p })).status, 0);
  assert.equal(send(node, clock, s, cmd({ kind: 'enable_pool', enable: true })).status, 0);
  return s;
}

function snapshot(pool: ServerPool, data: MemDisk): unknown {
  const md = pool.currentPoolMd();
  return {
    disk: data.contents(0, SIZE).toString('base64'),
    maps: [...pool.maps.values()].map((m) => [m.member_id, m.dirtyCount, m.runs()]),
    state: pool.state,
    map_ver: pool.map_ver,
    map_update_state: pool.map_update_state,
    md: encodePoolMd(md).toString('base64'),
    owner: [pool.owner.epoch, pool.owner.id.toString('hex')],
    discarded: [...pool.discarded],
  };
}

test('a session bound to an older owner gets ESTALE on every message kind and changes nothing', () => {
  const { clock, data, pool, node } = setup();
  const a = own(node, clock, pair(1, 0xa), 'rmr-a');
  assert.equal(send(node, clock, a, io(IoOp.WRITE, 0, 4096, 1), 'write', Buffer.alloc(4096, 0xaa)).status, 0, 'A serves');
  // A second client without takeover is refused while A's session is up, naming A.
  const c = fakeSession('rmr-c');
  const busy = send(node, clock, c, cmd({ kind: 'owner', op: 'prepare', takeover: false, force: false, owner: pair(2, 0xc), name: 'rmr-c' }));
  assert.equal(busy.status, Errno.EBUSY);
  const info = decodeOwnerInfo(busy.data?.subarray(CMD_RSP_BYTES));
  assert.equal(info?.owner_name, 'rmr-a');
  assert.equal(info?.liveness, 2, 'live');
  // B takes over.
  const b = own(node, clock, pair(2, 0xb), 'rmr-b');
  assert.equal(send(node, clock, b, io(IoOp.WRITE, 4096, 4096, 1), 'write', Buffer.alloc(4096, 0xbb)).status, 0, 'B serves');
  assert.equal(pool.state, 'NORMAL');
  const before = snapshot(pool, data);
  const stale: [string, Buffer, 'read' | 'write', Buffer?][] = [
    ['IO write', io(IoOp.WRITE, 0, 4096, 2), 'write', Buffer.alloc(4096, 0xee)],
    ['IO read', io(IoOp.READ, 0, 4096), 'read'],
    ['IO discard', io(IoOp.DISCARD, 0, CHUNK, 3), 'write'],
    ['IO write-zeroes', io(IoOp.WRITE_ZEROES, 0, CHUNK, 4), 'write'],
    ['IO flush', io(IoOp.FLUSH, 0, 0), 'write'],
    ['IO settled beacon', io(IoOp.WRITE, 0, 0), 'write'],
    ['MAP_ADD', encodeMapAdd(GID, { first_chunk: 0, chunk_count: 3, map_ver: 9, failed_cnt: 1, failed_ids: Buffer.from([2, 0, 0, 0]) }), 'write'],
    ['MAP_CLEAR', encodeMapClear(GID, { first_chunk: 0, chunk_count: 3, member_id: 1, map_ver: 9 }), 'write'],
  ];
  const cmds: LegCommand[] = [
    { kind: 'enable_pool', enable: true },
    { kind: 'maintenance', on: true },
    { kind: 'maintenance', on: false },
    { kind: 'map_ready' },
    { kind: 'map_send', receiver: 2, map_ver: 9 },
    { kind: 'map_done', enable: true },
    { kind: 'map_disable' },
    { kind: 'map_check' },
    { kind: 'store_check' },
    { kind: 'map_get_ver' },
    { kind: 'leave', member_id: 1, delete: true },
    { kind: 'pool_info', member_id: 2, op: 'add', mode: 'assemble', dirty: true },
    { kind: 'md_write', md: encodePoolMd({ ...pool.currentPoolMd(), header: { ...pool.currentPoolMd().header, map_ver: 99, queue_depth: 3 } }) },
    { kind: 'user', bytes: Buffer.from('x'), rsp_len: 100 },
    { kind: 'read_map_buf', map_idx: 0, page: 0 },
    { kind: 'intent_to_map', with_intent: true, ranges: [[0, 4]] },
    { kind: 'own_dirty', from_chunk: 0 },
    { kind: 'map_mark', member_id: 1, conditional: false, ranges: [[0, 4]] },
    { kind: 'send_discard', member_id: 1 },
    { kind: 'discard_clear', member_id: 1 },
    { kind: 'chunk_hash', first_chunk: 0, chunk_count: 1 },
    { kind: 'verify', first_chunk: 0, chunk_count: 1, members: [2] },
    { kind: 'map_test', member_id: 1, first_page: 0, crcs: Buffer.alloc(4) },
    { kind: 'map_set_ver', map_ver: 1000 },
    { kind: 'service', svc_ver: 7, members: [1] },
    { kind: 'rejoin', owner: pair(1, 0xa) },
    { kind: 'join', create: false, dirty: false, queue_depth: 8, members: [], owner: pair(1, 0xa) },
    { kind: 'owner', op: 'release', takeover: false, force: false, owner: pair(1, 0xa), name: 'rmr-a' },
    { kind: 'owner', op: 'prepare', takeover: true, force: false, owner: pair(1, 0xa), name: 'rmr-a' },
  ];
  for (const c of cmds) stale.push([c.kind, cmd(c), 'read']);
  stale.push(['SEND_MAP_BUF (sync flag)', encodeCmd(GID, { cmd_type: CmdType.SEND_MAP_BUF, sync: 1, pool_name: 'p' }, { member_id: 1, first_page: 0, page_count: 1, map_ver: 9 }), 'write', Buffer.alloc(4096, 0xff)]);
  stale.push(['MAP_BUF_DONE', encodeCmd(GID, { cmd_type: CmdType.MAP_BUF_DONE, sync: 0, pool_name: 'p' }, { map_ver: 99 }), 'read']);
  for (const [what, hdr, kind, body] of stale) {
    assert.ok(decodeMessage(hdr).ok, what);
    const r = send(node, clock, a, hdr, kind, body ?? Buffer.alloc(0), kind === 'read' ? CMD_RSP_BYTES + 70_000 : 0);
    assert.equal(r.status, Errno.ESTALE, `${what}: ESTALE`);
    assert.deepEqual(snapshot(pool, data), before, `${what} changed nothing`);
  }
  // A query still answers (the fenced client learns who fenced it).
  const q = send(node, clock, a, cmd({ kind: 'owner', op: 'query', takeover: false, force: false, owner: pair(1, 0xa), name: 'rmr-a' }));
  assert.equal(q.status, 0);
  assert.equal(decodeOwnerInfo(q.data?.subarray(CMD_RSP_BYTES))?.owner_name, 'rmr-b');
  // A's session going away does not take B's node out of service; B's does.
  node.onSessionClose(a, 'gone');
  assert.equal(pool.state, 'NORMAL');
  assert.deepEqual(snapshot(pool, data), before);
  node.onSessionDisconnected(b);
  assert.equal(pool.state, 'NO_IO');
  // B's data is there, A's late write is not.
  assert.equal(data.contents(0, 1)[0], 0xaa);
  assert.equal(data.contents(4096, 1)[0], 0xbb);
});

test('an owned pool refuses a compute client command on a session that never joined (ENOENT, not ESTALE)', () => {
  const { clock, pool, node } = setup();
  own(node, clock, pair(1, 0xa), 'rmr-a');
  const stranger = fakeSession('stranger');
  assert.equal(send(node, clock, stranger, cmd({ kind: 'map_set_ver', map_ver: 500 })).status, Errno.ENOENT);
  assert.equal(send(node, clock, stranger, io(IoOp.WRITE, 0, 4096, 1), 'write', Buffer.alloc(4096, 1)).status, Errno.ENOENT);
  assert.ok(pool.map_ver < 500);
  // The ownership protocol's own messages still answer.
  assert.equal(send(node, clock, stranger, cmd({ kind: 'md_read' })).status, 0);
  assert.equal(send(node, clock, stranger, cmd({ kind: 'owner', op: 'query', takeover: false, force: false, owner: pair(0, 0xd), name: 'd' })).status, 0);
});

test('PREPARE waits for the old owner\'s writes in the store before it answers', () => {
  const { clock, data, pool, node } = setup();
  const a = own(node, clock, pair(1, 0xa), 'rmr-a');
  data.faults.stall_writes = true;
  const answers: number[] = [];
  node.onRequest({ session: a, kind: 'write', id: 1, user_hdr: io(IoOp.WRITE, 0, 4096, 1), data: Buffer.alloc(4096, 0xaa), read_len: 0, respond: (s: number) => answers.push(s) } as unknown as ServerRequest);
  clock.runUntil(clock.now() + 10);
  assert.equal(data.heldWrites, 1, 'the write is held in the store');
  const b = fakeSession('rmr-b');
  let prepared: number | null = null;
  node.onRequest({
    session: b, kind: 'read', id: 2, read_len: CMD_RSP_BYTES + 512, data: Buffer.alloc(0),
    user_hdr: cmd({ kind: 'owner', op: 'prepare', takeover: true, force: false, owner: pair(2, 0xb), name: 'rmr-b' }),
    respond: (s: number) => (prepared = s),
  } as unknown as ServerRequest);
  clock.runUntil(clock.now() + 100);
  assert.equal(prepared, null, 'no answer while the old owner\'s write is in the store');
  assert.equal(pool.owner.epoch, 2, 'but the promise is made at once');
  data.faults.stall_writes = false;
  data.releaseHeld();
  clock.runUntil(clock.now() + 100);
  assert.equal(prepared, 0);
  assert.equal(answers.length, 1);
});

test('random PREPARE / JOIN / REJOIN / IO interleavings never apply anything from an older owner', () => {
  type Op = { s: number; what: 'prepare' | 'join' | 'rejoin' | 'write' | 'enable' | 'close'; p: [number, number]; takeover: boolean };
  const opArb: fc.Arbitrary<Op> = fc.record({
    s: fc.nat(2),
    what: fc.constantFrom<Op['what']>('prepare', 'prepare', 'join', 'join', 'rejoin', 'write', 'write', 'write', 'enable', 'enable', 'close'),
    // Few pairs, so that sessions often hold the current one and often an older one.
    p: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 2 })),
    takeover: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 10, maxLength: 60 }), (ops) => {
      const { clock, data, pool, node } = setup();
      let sessions = [0, 1, 2].map((i) => fakeSession(`s${i}`));
      // The model: the member's owner (the highest accepted pair) and each session's binding.
      let owner: OwnerPair = NO_OWNER;
      const bound = new Map<number, OwnerPair>();
      const disk = Buffer.alloc(3 * 4096);
      let stamp = 1;
      for (const op of ops) {
        const p = pair(op.p[0], op.p[1]);
        const s = sessions[op.s] as ServerSession;
        const b = bound.get(op.s);
        const current = b !== undefined && compareOwners(b, owner) === 0;
        if (op.what === 'prepare') {
          const r = send(node, clock, s, cmd({ kind: 'owner', op: 'prepare', takeover: op.takeover, force: false, owner: p, name: `o${op.p[1]}` }));
          const c = compareOwners(p, owner);
          if (c < 0) assert.equal(r.status, Errno.ESTALE);
          else if (c === 0) assert.equal(r.status, 0);
          else if (r.status === 0) owner = p;
          else assert.equal(r.status, Errno.EBUSY, 'a newer pair is accepted or refused as busy, never anything else');
          if (r.status === Errno.EBUSY) assert.ok(!op.takeover && !p.id.equals(owner.id));
        } else if (op.what === 'join' || op.what === 'rejoin') {
          const c = op.what === 'join' ? cmd({ kind: 'join', create: false, dirty: false, queue_depth: 8, members: [], owner: p }) : cmd({ kind: 'rejoin', owner: p });
          const r = send(node, clock, s, c);
          const want = compareOwners(p, owner);
          if (b !== undefined && compareOwners(b, owner) !== 0) assert.equal(r.status, want === 0 ? 0 : want < 0 ? Errno.ESTALE : Errno.EAGAIN);
          if (want < 0) assert.equal(r.status, Errno.ESTALE);
          if (want > 0) assert.equal(r.status, Errno.EAGAIN);
          if (r.status === 0) {
            assert.equal(want, 0);
            bound.set(op.s, p);
          }
        } else if (op.what === 'enable') {
          const r = send(node, clock, s, cmd({ kind: 'enable_pool', enable: true }));
          if (b !== undefined && !current) assert.equal(r.status, Errno.ESTALE);
        } else if (op.what === 'close') {
          node.onSessionClose(s, 'test');
          sessions = sessions.map((x, i) => (i === op.s ? fakeSession(`s${i}.${stamp}`) : x));
          bound.delete(op.s);
        } else {
          const v = stamp++ & 0xff;
          const r = send(node, clock, s, io(IoOp.WRITE, op.s * 4096, 4096, stamp), 'write', Buffer.alloc(4096, v));
          if (r.status === 0) {
            assert.ok(current, 'a write is taken only from the current owner');
            disk.fill(v, op.s * 4096, (op.s + 1) * 4096);
          } else if (b !== undefined && !current) assert.equal(r.status, Errno.ESTALE);
        }
        assert.ok(data.contents(0, 3 * 4096).equals(disk), 'the disk holds exactly what the model applied');
        assert.equal(compareOwners(pool.owner, owner), 0);
      }
    }),
    { numRuns: 300 },
  );
});
