// The storage node's pool logic, driven directly (no transport) on simulated time with
// memory disks and a fake peer: the join acceptance matrix, IO admission, piggybacked
// dirtiness over a chunk range, and "lock, sync, resume" for dirty chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServerPool, type PeerMapCommand, type PeerQuery, type ServerPoolEvent, type SyncSource } from '../../src/rmr/server/server-pool.js';
import { BackgroundSync } from '../../src/rmr/server/background-sync.js';
import { executeLegCommand } from '../../src/rmr/server/execute-command.js';
import type { LegCommand } from '../../src/rmr/protocol/leg-commands.js';
import { IO_F_FUA, IoOp, type IoMsgValue } from '../../src/rmr/protocol/msg.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemDisk } from '../../src/sim/mem-disk.js';
import { Errno } from '../../src/util/errno.js';
import type { ReadCallback } from '../../src/rmr/server/io-store.js';

const CHUNK = 64 * 1024;
const SIZE = 16 * CHUNK;

function io(op: number, offset: number, length: number, extra: Partial<IoMsgValue> = {}): IoMsgValue {
  return { offset, length, flags: op, map_ver: 1, prio: 0, member_id: 1, failed_cnt: 0, failed_ids: Buffer.alloc(4), sync: 0, seq: 0, settled: 0, ...extra };
}

class FakePeer implements SyncSource {
  readonly max_io_size = 16 * 1024;
  readonly cleared: [number, number, number][] = [];
  fail = false;
  reads = 0;
  constructor(readonly disk: MemDisk) {}
  readPeer(offset: number, length: number, cb: ReadCallback): void {
    this.reads++;
    if (this.fail) return this.disk.read(0, 0, () => cb(Errno.EIO, null));
    this.disk.read(offset, length, cb);
  }
  mapClear(first: number, count: number, member: number): void {
    this.cleared.push([first, count, member]);
  }
  peerMapCheck(_member: number, cb: (status: number, empty: boolean) => void): void {
    this.disk.read(0, 0, () => cb(Errno.ENOTCONN, false));
  }
  peerQuery(_member: number, _q: PeerQuery, cb: (status: number, data: Buffer | null) => void): void {
    cb(Errno.ENOTCONN, null);
  }
  peerCommand(_receiver: number, _cmd: PeerMapCommand, cb: (status: number) => void): void {
    this.disk.read(0, 0, () => cb(Errno.ENOTCONN));
  }
}

function node(mode: 'create' | 'add' = 'create', allowed = { io: true }) {
  const clock = new SimClock();
  const random = new SeededRandom(1);
  const data = new MemDisk(SIZE, clock, random);
  const meta = new MemDisk(1 << 20, clock, random);
  data.faults.latency_ms = 0.1;
  meta.faults.latency_ms = 0.1;
  const events: ServerPoolEvent[] = [];
  const pool = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8 }, (e) => events.push(e));
  assert.equal(pool.register({ block: data, meta, meta_base: 0, ioAllowed: () => allowed.io }, mode, SIZE), null);
  return { clock, random, data, meta, pool, events, allowed };
}

function run<T>(clock: SimClock, start: (cb: (v: T) => void) => void): T {
  let got: { v: T } | null = null;
  start((v) => (got = { v }));
  clock.runUntilTrue('completion', () => got !== null, clock.now() + 10_000);
  return (got as unknown as { v: T }).v;
}

test('join acceptance matrix: created stores take one create join, added stores take assemble joins', () => {
  const c = node('create');
  const join = { sync: false, create: false, dirty: false, chunk_size: CHUNK, members: [] };
  assert.match(c.pool.join(join) ?? '', /awaits its create-mode join/);
  assert.match(c.pool.join({ ...join, create: true, chunk_size: 4096 }) ?? '', /chunk_size/);
  assert.equal(c.pool.join({ ...join, create: true, members: [{ id: 2, dirty: true }] }), null);
  assert.equal(c.pool.state, 'CREATED');
  assert.equal(c.pool.maps.get(2)?.isFull(), true, 'a member listed dirty at create starts fully dirty');
  assert.match(c.pool.join({ ...join, create: true }) ?? '', /only assemble/);
  assert.equal(c.pool.enable(true), null);
  assert.equal(c.pool.state, 'NORMAL');

  const a = node('add');
  assert.match(a.pool.join({ ...join, create: true }) ?? '', /only assemble/);
  assert.equal(a.pool.join(join), null);
  assert.equal(a.pool.state, 'NO_IO');
  assert.equal(a.pool.join({ ...join, sync: true }), null, 'sync joins need only a store');
  assert.deepEqual(
    a.events.filter((e) => e.kind === 'server_pool_state').map((e) => (e.kind === 'server_pool_state' ? `${e.from}>${e.to}` : '')),
    ['EMPTY>REGISTERED', 'REGISTERED>NO_IO'],
  );
});

function normal() {
  const n = node('create');
  assert.equal(n.pool.join({ sync: false, create: true, dirty: false, chunk_size: CHUNK, members: [{ id: 2, dirty: false }] }), null);
  assert.equal(n.pool.enable(true), null);
  return n;
}

test('IO admission: refused outside NORMAL (and the node leaves IO service), peers may only read', () => {
  const n = node('create');
  const r = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.READ, 0, 4096), Buffer.alloc(0), false, (s) => cb(s)));
  assert.equal(r, Errno.EIO);
  const m = normal();
  const w = run<number>(m.clock, (cb) => m.pool.handleIo(io(IoOp.WRITE, 0, 4096), Buffer.alloc(4096), true, (s) => cb(s)));
  assert.equal(w, Errno.EIO, 'a sync-pool write is refused');
  assert.equal(m.pool.state, 'NORMAL', 'a refused peer request does not take the node out of service');
  const big = run<number>(m.clock, (cb) => m.pool.handleIo(io(IoOp.READ, SIZE - 4096, 8192), Buffer.alloc(0), false, (s) => cb(s)));
  assert.equal(big, Errno.EINVAL);
  // A store that stops allowing IO (BRMR: not OPEN and MAPPED) refuses client IO.
  m.allowed.io = false;
  const na = run<number>(m.clock, (cb) => m.pool.handleIo(io(IoOp.READ, 0, 4096), Buffer.alloc(0), false, (s) => cb(s)));
  assert.equal(na, Errno.EIO);
  assert.equal(m.pool.state, 'NO_IO');
  assert.equal(m.pool.storeCheck(), false);
});

test('writes and reads; piggybacked members get the whole chunk range of a spanning write dirty', () => {
  const n = normal();
  const payload = Buffer.alloc(2 * CHUNK, 0x5a);
  // A write spanning chunks 2..4 (starts mid chunk 2), member 2 missed it.
  const off = 2 * CHUNK + 4096;
  const st = run<number>(n.clock, (cb) =>
    n.pool.handleIo(io(IoOp.WRITE | IO_F_FUA, off, payload.length, { failed_cnt: 1, failed_ids: Buffer.from([2, 0, 0, 0]), map_ver: 9 }), payload, false, (s) => cb(s)),
  );
  assert.equal(st, 0);
  const m2 = n.pool.maps.get(2);
  assert.deepEqual([1, 2, 3, 4, 5].map((c) => m2?.isDirty(c)), [false, true, true, true, false]);
  assert.equal(n.pool.map_ver, 9, 'a higher map_ver is adopted');
  const [rs, rd] = run<[number, Buffer | null]>(n.clock, (cb) => n.pool.handleIo(io(IoOp.READ, off, payload.length), Buffer.alloc(0), false, (s, d) => cb([s, d])));
  assert.equal(rs, 0);
  assert.deepEqual(rd, payload);
  // A discard is tracked exactly like a write (the reference loses it, §12.4).
  const ds = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.DISCARD, 10 * CHUNK, CHUNK, { failed_cnt: 1, failed_ids: Buffer.from([2, 0, 0, 0]) }), Buffer.alloc(0), false, (s) => cb(s)));
  assert.equal(ds, 0);
  assert.equal(m2?.isDirty(10), true);
  assert.equal(m2?.dirtyCount, 4);
});

test('lock, sync, resume: an IO on a dirty chunk waits for the chunk to come from a peer', () => {
  const n = normal();
  const peer = new FakePeer(new MemDisk(SIZE, n.clock));
  n.pool.sync_source = peer;
  // The peer holds newer data for chunk 3; this node is dirty there.
  const fresh = Buffer.alloc(CHUNK, 0xc3);
  peer.disk.write(3 * CHUNK, fresh, true, () => undefined);
  n.clock.runUntil(n.clock.now() + 1);
  n.pool.ownMap()?.setDirty(3, 1);
  // A peer's read of the dirty chunk is refused at once (it retries elsewhere).
  const pr = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.READ, 3 * CHUNK, 4096), Buffer.alloc(0), true, (s) => cb(s)));
  assert.equal(pr, Errno.EIO);
  // Two client reads touching chunk 3 park; one sync serves both.
  const results: Buffer[] = [];
  n.pool.handleIo(io(IoOp.READ, 3 * CHUNK + 100, 1000), Buffer.alloc(0), false, (s, d) => results.push(d as Buffer));
  n.pool.handleIo(io(IoOp.READ, 2 * CHUNK, 2 * CHUNK), Buffer.alloc(0), false, (s, d) => results.push(d as Buffer));
  n.clock.runUntilTrue('both reads', () => results.length === 2, n.clock.now() + 1000);
  assert.deepEqual(results[0], fresh.subarray(100, 1100));
  assert.deepEqual(results[1]?.subarray(CHUNK), fresh);
  assert.equal(n.pool.stats.chunk_syncs, 1);
  assert.equal(peer.reads, CHUNK / peer.max_io_size, 'the chunk came in max-io-size pieces');
  assert.equal(n.pool.ownMap()?.isDirty(3), false);
  assert.deepEqual(peer.cleared, [[3, 1, 1]], 'peers were told');
});

test('a failed chunk sync fails the waiting IOs, keeps the chunk dirty, and can be retried', () => {
  const n = normal();
  const peer = new FakePeer(new MemDisk(SIZE, n.clock));
  n.pool.sync_source = peer;
  n.pool.ownMap()?.setDirty(5, 1);
  peer.fail = true;
  const st = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE, 5 * CHUNK, 512), Buffer.alloc(512), false, (s) => cb(s)));
  assert.equal(st, Errno.EIO);
  assert.equal(n.pool.ownMap()?.isDirty(5), true);
  assert.equal(n.pool.ownMap()?.entryCount, 0, 'no stale sync entry left');
  assert.equal(n.pool.state, 'NO_IO', 'a node that failed a client IO leaves IO service');
  // The client's recovery brings it back (here: directly), and the retry succeeds.
  assert.equal(n.pool.sm.change('NORMAL', 'test: recovered'), null);
  peer.fail = false;
  const st2 = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE, 5 * CHUNK, 512), Buffer.alloc(512, 1), false, (s) => cb(s)));
  assert.equal(st2, 0);
  assert.equal(n.pool.ownMap()?.isDirty(5), false);
});

test('a chunk sync the node outlives its IO service with cleans nothing; the background sync takes it as no error', () => {
  const n = normal();
  const peer = new FakePeer(new MemDisk(SIZE, n.clock));
  const held: (() => void)[] = [];
  const read = peer.readPeer.bind(peer);
  peer.readPeer = (o, l, cb) => read(o, l, (st, d) => held.push(() => cb(st, d)));
  n.pool.sync_source = peer;
  const bs = new BackgroundSync(n.pool, n.clock, { max_inflight: 1, tick_ms: 10 }, () => undefined);
  n.pool.ownMap()?.setDirty(3, 1);
  n.clock.runUntilTrue('every piece of the copy read', () => held.length === CHUNK / peer.max_io_size, n.clock.now() + 1000);
  // Out of IO service (its client's session went): writes to chunk 3 now miss this node and
  // are recorded for it on the peers; the copy may predate them.
  assert.equal(n.pool.sm.change('NO_IO', 'test: client session lost'), null);
  for (const h of held.splice(0)) h();
  n.clock.runUntilTrue('copy done', () => n.pool.ownMap()?.entryCount === 0, n.clock.now() + 1000);
  assert.equal(n.pool.ownMap()?.isDirty(3), true, 'the chunk stays dirty');
  assert.deepEqual(peer.cleared, [], 'no MAP_CLEAR erases what the peers recorded');
  assert.equal(bs.progress().last_error, null, 'not a failure of the peers: no backoff');
  // Back in service (after a map update): the chunk is copied again at once.
  peer.readPeer = read;
  assert.equal(n.pool.sm.change('NORMAL', 'test: map update done'), null);
  n.clock.runUntilTrue('copied again', () => n.pool.ownMap()?.isEmpty() === true, n.clock.now() + 200);
  assert.deepEqual(peer.cleared, [[3, 1, 1]]);
  bs.close();
});

test('a store error takes the node out of IO service, visibly', () => {
  const n = normal();
  n.data.faults.bad_ranges = [{ offset: 0, length: 4096 }];
  const st = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.READ, 0, 4096), Buffer.alloc(0), false, (s) => cb(s)));
  assert.equal(st, Errno.EIO);
  assert.equal(n.pool.state, 'NO_IO');
  assert.ok(n.events.some((e) => e.kind === 'store_error' && e.op === 'read'));
});

test('MAP_ADD and MAP_CLEAR update the named members over chunk ranges', () => {
  const n = normal();
  assert.equal(n.pool.mapAdd({ first_chunk: 4, chunk_count: 3, map_ver: 12, failed_cnt: 2, failed_ids: Buffer.from([2, 3, 0, 0]) }), 0);
  assert.equal(n.pool.maps.get(3)?.dirtyCount, 3);
  assert.equal(n.pool.map_ver, 12);
  assert.equal(n.pool.mapClear({ first_chunk: 5, chunk_count: 1, member_id: 2, map_ver: 12 }), 0);
  assert.equal(n.pool.maps.get(2)?.dirtyCount, 2);
  assert.equal(n.pool.mapClear({ first_chunk: 5, chunk_count: 1, member_id: 9, map_ver: 12 }), Errno.EINVAL);
  // A peer whose sync began before this node learned version 12 may hold older data.
  assert.equal(n.pool.mapClear({ first_chunk: 4, chunk_count: 1, member_id: 2, map_ver: 11 }), 0);
  assert.equal(n.pool.maps.get(2)?.isDirty(4), true, 'a clear from an older version is ignored');
  assert.equal(n.pool.mapAdd({ first_chunk: 15, chunk_count: 2, map_ver: 1, failed_cnt: 1, failed_ids: Buffer.from([2, 0, 0, 0]) }), Errno.EINVAL);
});

test('background sync starts by itself, drains the map, yields to application IO, stops on errors', () => {
  const n = normal();
  const peer = new FakePeer(new MemDisk(SIZE, n.clock));
  const states: string[] = [];
  const bs = new BackgroundSync(n.pool, n.clock, { max_inflight: 2, min_bytes_per_s: CHUNK * 10, max_bytes_per_s: CHUNK * 100, tick_ms: 10 }, (f, t, r) => states.push(`${f}>${t}: ${r}`));
  n.pool.ownMap()?.setDirty(0, 8);
  n.clock.runUntil(n.clock.now() + 50);
  assert.equal(bs.state, 'STOPPED', 'no peers attached: nothing to sync from');
  n.pool.sync_source = peer;
  n.clock.runUntilTrue('map drained', () => n.pool.ownMap()?.isEmpty() === true, n.clock.now() + 5000);
  n.clock.runUntilTrue('stopped', () => bs.state === 'STOPPED', n.clock.now() + 1000);
  assert.deepEqual(states.slice(0, 2), ['STOPPED>RUNNING: own map dirty', 'RUNNING>STOPPED: all chunks in sync']);
  assert.equal(bs.progress().synced_bytes, 8 * CHUNK);
  // Long after, its rate has decayed to almost nothing: no ETA while stopped, and a sane one
  // once it runs again.
  n.clock.runUntil(n.clock.now() + 60_000);
  n.pool.ownMap()?.setDirty(10, 6);
  assert.equal(bs.progress().eta_s, null, 'a stopped sync has no ETA');
  n.clock.runUntilTrue('running again', () => bs.state === 'RUNNING' && bs.progress().eta_s !== null, n.clock.now() + 1000);
  const eta = bs.progress().eta_s ?? -1;
  assert.ok(eta >= 0 && eta < 60, `an ETA in seconds for 6 chunks at 10..100 chunks/s, got ${eta}`);
  n.clock.runUntilTrue('map drained again', () => n.pool.ownMap()?.isEmpty() === true, n.clock.now() + 5000);
  n.clock.runUntilTrue('stopped again', () => bs.state === 'STOPPED', n.clock.now() + 1000);
  // An operator stop holds against auto-start; an error stops with its reason.
  bs.stop();
  n.pool.ownMap()?.setDirty(8, 4);
  n.clock.runUntil(n.clock.now() + 100);
  assert.equal(bs.state, 'STOPPED');
  peer.fail = true;
  assert.equal(bs.start(), null);
  n.clock.runUntilTrue('stopped on error', () => bs.state === 'STOPPED', n.clock.now() + 5000);
  assert.match(bs.progress().last_error ?? '', /chunk sync failed/);
  peer.fail = false;
  n.clock.runUntil(n.clock.now() + 100);
  assert.equal(bs.state, 'STOPPED', 'after an error only the operator restarts it');
  assert.equal(bs.start(), null);
  n.clock.runUntilTrue('drained again', () => n.pool.ownMap()?.isEmpty() === true, n.clock.now() + 5000);
  bs.close();
});

test('the sync rate follows its share of application traffic within min and max', () => {
  const n = normal();
  n.pool.sync_source = new FakePeer(new MemDisk(SIZE, n.clock));
  const bs = new BackgroundSync(n.pool, n.clock, { share: 0.25, min_bytes_per_s: 1000, max_bytes_per_s: 1e9, tick_ms: 100 }, () => undefined);
  // Application traffic of ~1 MB/s (100 KB per 100 ms tick).
  for (let i = 0; i < 10; i++) {
    n.pool.stats.app_bytes += 100_000;
    n.clock.runUntil(n.clock.now() + 100);
  }
  const limit = bs.progress().rate_limit_bytes_per_s;
  assert.ok(Math.abs(limit - 1_000_000 / 3) < 20_000, `sync limited to a third of application throughput (25 % of the total), got ${limit}`);
  // A pause shorter than the rate window (IO stuck for a tick behind the sync's own traffic
  // on a slow link) is no idle application: the sync keeps to its share.
  n.clock.runUntil(n.clock.now() + 200);
  const paused = bs.progress().rate_limit_bytes_per_s;
  assert.ok(paused < 1_000_000 / 3 && paused > 1_000_000 / 5, `a short pause leaves the sync at its share, got ${paused}`);
  n.clock.runUntil(n.clock.now() + 1000);
  assert.equal(bs.progress().rate_limit_bytes_per_s, 1e9, 'idle application (a whole window without IO): full speed');
  // The operator changes the rate: a new ceiling for an idle application, a new share.
  assert.equal(bs.setRate({ max_bytes_per_s: 5e6 }), null);
  n.clock.runUntil(n.clock.now() + 100);
  assert.equal(bs.progress().rate_limit_bytes_per_s, 5e6);
  assert.equal(bs.setRate({ share: 0.5 }), null);
  for (let i = 0; i < 10; i++) {
    n.pool.stats.app_bytes += 100_000;
    n.clock.runUntil(n.clock.now() + 100);
  }
  assert.ok(Math.abs(bs.progress().rate_limit_bytes_per_s - 1_000_000) < 20_000, 'half of the total: as much as the application');
  assert.match(bs.setRate({ share: 1 }) ?? '', /share/);
  assert.match(bs.setRate({ min_bytes_per_s: 1e7, max_bytes_per_s: 1e6 }) ?? '', /min_bytes_per_s/);
  bs.close();
});

test('the application keeps its share of both its IOs and its bytes: the sync gets the smaller allowance (one chunk sync is one IO)', () => {
  const n = normal();
  n.pool.sync_source = new FakePeer(new MemDisk(SIZE, n.clock));
  const bs = new BackgroundSync(n.pool, n.clock, { share: 0.25, min_bytes_per_s: 1000, max_bytes_per_s: 1e9, tick_ms: 100 }, () => undefined);
  // 1,000 IOs/s of 4 KiB (4 MB/s): a third of its IOs in chunks would be far more bytes than
  // a third of its bytes; on a slow link those bytes would be taken from the application.
  for (let i = 0; i < 10; i++) {
    n.pool.stats.app_bytes += 100 * 4096;
    n.pool.stats.app_ios += 100;
    n.clock.runUntil(n.clock.now() + 100);
  }
  const small = bs.progress().rate_limit_bytes_per_s;
  const by_bytes = (1000 * 4096) / 3;
  assert.ok(Math.abs(small - by_bytes) < by_bytes * 0.05, `a third of the application's bytes, ${by_bytes} bytes/s; got ${small}`);
  // 100 IOs/s of 1 MiB: a third of its bytes would be ~33 chunk syncs of 64 KiB per
  // IO... far more IOs than a third of its 100 IOs/s: the IO share applies.
  for (let i = 0; i < 10; i++) {
    n.pool.stats.app_bytes += 10 * (1 << 20);
    n.pool.stats.app_ios += 10;
    n.clock.runUntil(n.clock.now() + 100);
  }
  const big = bs.progress().rate_limit_bytes_per_s;
  const by_ios = (100 / 3) * CHUNK;
  assert.ok(by_ios < (100 * (1 << 20)) / 3, 'the test needs chunks smaller than 1 MiB');
  assert.ok(Math.abs(big - by_ios) < by_ios * 0.05, `a third of the application's IOs in chunks, ${by_ios} bytes/s; got ${big}`);
  bs.close();
});

test('a restarted node restores pool_md and maps; its intent chunks become dirty for it at a map update from a peer, not when enabled as the source', () => {
  const n = normal();
  // Member 2 missed chunks 1..2 (piggyback), recorded and persisted.
  const w = (off: number, len: number, fua: boolean, failed: number[] = []): number =>
    run<number>(n.clock, (cb) =>
      n.pool.handleIo(io(IoOp.WRITE | (fua ? IO_F_FUA : 0), off, len, { failed_cnt: failed.length, failed_ids: Buffer.from([...failed, 0, 0, 0, 0].slice(0, 4)), map_ver: 4 }), Buffer.alloc(len, 7), false, (s) => cb(s)),
    );
  assert.equal(w(CHUNK, 2 * CHUNK, true, [2]), 0);
  let ps = -1;
  n.pool.persistMetadata((s) => (ps = s));
  n.clock.runUntilTrue('persisted', () => ps !== -1, n.clock.now() + 1000);
  assert.equal(ps, 0);
  // Writes that are not flushed when the power fails: their extents are in the intent record.
  assert.equal(w(9 * CHUNK, 4096, false), 0);
  n.data.powerLoss('drop');
  n.meta.powerLoss('drop');
  const events: ServerPoolEvent[] = [];
  const again = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8 }, (e) => events.push(e));
  assert.equal(again.register({ block: n.data, meta: n.meta, meta_base: 0, ioAllowed: () => true }, 'add', SIZE), null);
  const [st, report, why] = run<[number, unknown, string | null]>(n.clock, (cb) => again.loadMetadata((s, r, reason) => cb([s, r, reason])));
  assert.equal(st, 0, why ?? '');
  assert.deepEqual(report, { found: true, intent_chunks: 1, maps_lost: null, map_ver: 4 });
  assert.equal(again.maps.get(2)?.dirtyCount, 2, 'the peer map survived');
  assert.equal(again.ownMap()?.dirtyCount ?? 0, 0, 'undecided until the node comes back');
  // Enabled directly (the last authoritative member): it is the source, nothing to resync.
  const direct = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8 }, () => undefined);
  assert.equal(direct.register({ block: n.data, meta: n.meta, meta_base: 0, ioAllowed: () => true }, 'add', SIZE), null);
  const [st3] = run<[number, unknown]>(n.clock, (cb) => direct.loadMetadata((s, r) => cb([s, r])));
  assert.equal(st3, 0);
  const rejoin = { sync: false, create: false, dirty: false, rejoin: true, chunk_size: CHUNK, members: [] };
  assert.equal(direct.join(rejoin), null);
  assert.equal(direct.enable(true), null);
  assert.equal(direct.ownMap()?.dirtyCount ?? 0, 0);
  // Brought back by a map update from a NORMAL peer: the unflushed write is dirty for it.
  assert.equal(again.join(rejoin), null);
  assert.equal(again.mapReady(false), null);
  assert.equal(again.mapBufDone(4), null);
  assert.equal(again.ownMap()?.isDirty(9), true, 'the unflushed write is dirty for this node');
  assert.equal(again.ownMap()?.dirtyCount, 1);
  // The store of another pool is refused.
  const other = new ServerPool({ pool_name: 'other', group_id: 8, member_id: 1, chunk_size: CHUNK }, () => undefined);
  assert.equal(other.register({ block: n.data, meta: n.meta, meta_base: 0, ioAllowed: () => true }, 'add', SIZE), null);
  const [st2, , why2] = run<[number, unknown, string | null]>(n.clock, (cb) => other.loadMetadata((s, r, reason) => cb([s, r, reason])));
  assert.notEqual(st2, 0);
  assert.match(why2 ?? '', /belongs to pool pool1/);
});

/** A member-1 node that lost power with an unflushed write in chunk 9, restarted from its store (crash chunk 9 undecided). */
function restartedWithCrashChunk(): ServerPool {
  const n = normal();
  const ps = run<number>(n.clock, (cb) => n.pool.persistMetadata(cb));
  assert.equal(ps, 0);
  assert.equal(run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE, 9 * CHUNK, 4096, { map_ver: 2 }), Buffer.alloc(4096, 7), false, (s) => cb(s))), 0);
  n.data.powerLoss('drop');
  n.meta.powerLoss('drop');
  const again = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8 }, () => undefined);
  assert.equal(again.register({ block: n.data, meta: n.meta, meta_base: 0, ioAllowed: () => true }, 'add', SIZE), null);
  const [st, report, why] = run<[number, unknown, string | null]>(n.clock, (cb) => again.loadMetadata((s, r, reason) => cb([s, r, reason])));
  assert.equal(st, 0, why ?? '');
  assert.deepEqual(report, { found: true, intent_chunks: 1, maps_lost: null, map_ver: 1 });
  assert.equal(again.join({ sync: false, create: false, dirty: false, rejoin: true, chunk_size: CHUNK, members: [] }), null);
  return again;
}

test('the base of a client-crash reconciliation decides its own crash chunks before it chooses sources: a peer clean there is the source, not the node that lost power (seed 40002141)', () => {
  // Cases 3/4 with tied map versions: the base is this restarted node. Its maps say every
  // member is clean at chunk 9, yet its power loss may have dropped a write there that the
  // peer holds (a FLUSH acknowledged by the peer alone while this node was away).
  const base = restartedWithCrashChunk();
  assert.equal(base.ownMap()?.isDirty(9) ?? false, false, 'undecided after the restart');
  assert.ok((base.intentToMap([], true) as number) >= 1);
  assert.equal(base.ownMap()?.isDirty(9), true, 'the restarted node lacks chunk 9');
  assert.equal(base.maps.get(2)?.isDirty(9), false, 'the peer, clean there, is the source');

  // Where every other member is stale too, the restarted node keeps the newest data it has.
  const alone = restartedWithCrashChunk();
  alone.maps.get(2)?.setDirty(9, 1);
  alone.intentToMap([], true);
  assert.equal(alone.ownMap()?.isDirty(9), false);
  assert.equal(alone.maps.get(2)?.isDirty(9), true);
});

test('a node back in IO service has on disk every write it acknowledged before it left: a map update or an enable flushes its store first', () => {
  const command = (n: ReturnType<typeof normal>, cmd: LegCommand): [number, string | null] =>
    run<[number, string | null]>(n.clock, (cb) => executeLegCommand(n.pool, cmd, false, (status, _v, reason) => cb([status, reason])));
  const onDisk = (n: ReturnType<typeof normal>): number => run<Buffer | null>(n.clock, (cb) => n.data.read(9 * CHUNK, 4096, (_s, d) => cb(d)))?.[0] ?? -1;
  for (const back of ['map update', 'enable'] as const) {
    const n = normal();
    // A write acknowledged from the cache; then the node leaves IO service (its store stops
    // allowing IO). The client may now flush the other members only: the write is durable there.
    assert.equal(run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE, 9 * CHUNK, 4096), Buffer.alloc(4096, 7), false, (s) => cb(s))), 0);
    n.allowed.io = false;
    assert.equal(run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.READ, 0, 4096), Buffer.alloc(0), false, (s) => cb(s))), Errno.EIO);
    assert.equal(n.pool.state, 'NO_IO');
    n.allowed.io = true;
    if (back === 'map update') {
      assert.deepEqual(command(n, { kind: 'map_ready' }), [0, null]);
      assert.equal(n.pool.mapBufDone(n.pool.map_ver), null);
      assert.deepEqual(command(n, { kind: 'map_done', enable: true }), [0, null]);
    } else {
      assert.deepEqual(command(n, { kind: 'enable_pool', enable: true }), [0, null]);
    }
    assert.equal(n.pool.state, 'NORMAL', back);
    // Its power fails before any FLUSH reaches it: the write is still there.
    n.data.powerLoss('drop');
    assert.equal(onDisk(n), 7, `${back}: the write acknowledged before is on disk`);
  }
});

test('more members than a pool holds are refused with a reason, never a throw', () => {
  const c = node('create');
  const join = { sync: false, create: true, dirty: false, chunk_size: CHUNK };
  assert.match(c.pool.join({ ...join, members: [2, 3, 4, 5].map((id) => ({ id, dirty: false })) }) ?? '', /1 to 4 members/);
  assert.equal(c.pool.state, 'REGISTERED', 'a refused join changes nothing');
  assert.equal(c.pool.join({ ...join, members: [2, 3, 4].map((id) => ({ id, dirty: false })) }), null);
  assert.match(c.pool.poolInfo(9, 'add', 'create', false) ?? '', /already has 4 members/);
  const n = normal();
  n.pool.poolInfo(3, 'add', 'create', false);
  // Members 5 and 6 would make five maps: refused whole, nothing marked.
  assert.equal(n.pool.mapAdd({ first_chunk: 0, chunk_count: 1, map_ver: 1, failed_cnt: 2, failed_ids: Buffer.from([5, 6, 0, 0]) }), Errno.ENOSPC);
  assert.equal(n.pool.maps.has(5), false);
});

test('INTENT_TO_MAP gives each uncertain chunk one source: this node when clean, else the lowest clean member', () => {
  const n = normal();
  // Member 3 joins the picture; chunk 2 is known stale on members 1 (this node) and 2.
  assert.equal(n.pool.mapAdd({ first_chunk: 2, chunk_count: 1, map_ver: 2, failed_cnt: 2, failed_ids: Buffer.from([1, 2, 0, 0]) }), 0);
  assert.equal(n.pool.mapAdd({ first_chunk: 5, chunk_count: 1, map_ver: 2, failed_cnt: 3, failed_ids: Buffer.from([1, 2, 3, 0]) }), 0);
  n.pool.maps.get(3)?.clear(2, 1);
  const dirty = (id: number, c: number): boolean => n.pool.maps.get(id)?.isDirty(c) ?? false;
  assert.equal(n.pool.intentToMap([[0, 1], [2, 1], [5, 1]], false), 2);
  // Chunk 0: this node is clean, so it is the source; every other member resyncs it.
  assert.deepEqual([dirty(1, 0), dirty(2, 0), dirty(3, 0)], [false, true, true]);
  // Chunk 2: this node is stale; member 3 is the lowest clean one and stays the source.
  assert.deepEqual([dirty(1, 2), dirty(2, 2), dirty(3, 2)], [true, true, false]);
  // Chunk 5: nobody is clean; nothing can be chosen and nothing changes.
  assert.deepEqual([dirty(1, 5), dirty(2, 5), dirty(3, 5)], [true, true, true]);
  // Idempotent: a second application changes nothing.
  const before = [1, 2, 3].map((id) => n.pool.maps.get(id)?.dirtyCount);
  n.pool.intentToMap([[0, 1], [2, 1], [5, 1]], false);
  assert.deepEqual([1, 2, 3].map((id) => n.pool.maps.get(id)?.dirtyCount), before);
  assert.equal(typeof n.pool.intentToMap([[15, 2]], false), 'string', 'a range past the end is refused');

  // With the intent record: the chunk written here becomes dirty for every other member.
  const w = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE, 9 * CHUNK, 4096), Buffer.alloc(4096, 1), false, (s) => cb(s)));
  assert.equal(w, 0);
  assert.equal(dirty(2, 9), false);
  assert.ok((n.pool.intentToMap([], true) as number) >= 1);
  assert.deepEqual([dirty(1, 9), dirty(2, 9), dirty(3, 9)], [false, true, true]);
});

test("a leg disassembled and assembled again by a live client: the extents its last writes left unsettled leave the intent record once it serves again", () => {
  const n = normal();
  // A write the client had not settled yet when this node last heard from it (settled 5 < seq 5+).
  const w = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE, 0, 4096, { seq: 5, settled: 5 }), Buffer.alloc(4096, 1), false, (s) => cb(s)));
  assert.equal(w, 0);
  assert.equal(run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.FLUSH, 0, 0, { settled: 5 }), Buffer.alloc(0), false, (s) => cb(s))), 0);
  assert.deepEqual(n.pool.intentRecorded(), [0]);
  // del_sess disassemble, then add_sess assemble: a non-rejoin join pins what was unsettled.
  assert.equal(n.pool.leave(1, false), null);
  assert.equal(n.pool.join({ sync: false, create: false, dirty: false, chunk_size: CHUNK, members: [] }), null);
  // Case 1: the maps arrive, MAP_DONE(enable) — the node serves again.
  assert.equal(n.pool.mapReady(false), null);
  assert.equal(n.pool.mapBufDone(n.pool.map_ver), null);
  assert.equal(n.pool.mapDone(true), null);
  assert.equal(n.pool.state, 'NORMAL');
  // Writes elsewhere with the client's later mark: the old extent can make room now.
  for (let e = 1; e < 12; e++) {
    const s = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE | IO_F_FUA, e * 65536, 4096, { seq: 100 + e, settled: 100 + e }), Buffer.alloc(4096, 2), false, (st) => cb(st)));
    assert.equal(s, 0, `write into extent ${e}`);
  }
  assert.equal(n.pool.intentRecorded().includes(0), false, 'extent 0 left the record');
});

test('a map update replaces the maps only once complete: one that fails after MAP_READY leaves the previous maps, on disk too', () => {
  // Simulator seed 55308163: a reconciliation's spread stopped after MAP_READY; the node kept
  // wiped maps (every chunk clean for every member), was trusted as a map source, and its
  // empty maps reached every other member.
  const n = normal();
  const w = run<number>(n.clock, (cb) => n.pool.handleIo(io(IoOp.WRITE | IO_F_FUA, CHUNK, 2 * CHUNK, { failed_cnt: 1, failed_ids: Buffer.from([2, 0, 0, 0]), map_ver: 3 }), Buffer.alloc(2 * CHUNK, 7), false, (s) => cb(s)));
  assert.equal(w, 0);
  assert.equal(n.pool.mapMark(1, [[5, 1]], false), 1, 'this node lacks chunk 5');
  // Out of service, a map update begins, a page of member 2's map arrives, then it fails.
  assert.equal(n.pool.join({ sync: false, create: false, dirty: false, rejoin: true, chunk_size: CHUNK, members: [] }), null);
  assert.equal(n.pool.mapReady(false), null);
  const page = Buffer.alloc(4096);
  page[0] = 1 << 7; // member 2 dirty for chunk 7 only
  assert.equal(n.pool.receiveMapBuf(2, 0, 1, page, true), null);
  n.pool.mapDisable(false);
  assert.deepEqual(n.pool.maps.get(2)?.runs(), [[1, 2]], 'member 2 still dirty for what it missed');
  assert.deepEqual(n.pool.ownMap()?.runs(), [[5, 1]], 'what this node lacks is still known');
  // What reaches the disk is the previous maps, not wiped ones.
  assert.equal(run<number>(n.clock, (cb) => n.pool.persistMetadata(cb)), 0);
  const again = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8 }, () => undefined);
  assert.equal(again.register({ block: n.data, meta: n.meta, meta_base: 0, ioAllowed: () => true }, 'add', SIZE), null);
  assert.equal(run<number>(n.clock, (cb) => again.loadMetadata((s) => cb(s))), 0);
  assert.deepEqual(again.maps.get(2)?.runs(), [[1, 2]]);
  // A complete update replaces them; what this node lacks stays (another member is clean there).
  assert.equal(n.pool.mapReady(false), null);
  assert.equal(n.pool.receiveMapBuf(2, 0, 1, page, true), null);
  assert.equal(n.pool.mapBufDone(n.pool.map_ver), null);
  assert.deepEqual(n.pool.maps.get(2)?.runs(), [[7, 1]], 'the source\'s map of member 2');
  assert.deepEqual(n.pool.ownMap()?.runs(), [[5, 1]]);
  assert.equal(n.pool.mapDone(true), null);
  assert.equal(n.pool.state, 'NORMAL');
});

test('a store added without pool metadata is taken as a replacement: fully dirty for itself, never a source', () => {
  // Found by the simulator (schedule 3, seed 10000085 swarm): a node whose disk had just been
  // replaced crashed before the replacement reached the new disk; it came back (add_store)
  // from the empty disk with no pool metadata, was taken as a member with clean maps, got
  // maps in which it was clean, and held zeroes where the others held a durable write.
  const n = node('create');
  // The replacement: an empty disk registered with mode=replace, and a power loss before
  // its metadata is persisted.
  const data = new MemDisk(SIZE, n.clock, n.random);
  const meta = new MemDisk(1 << 20, n.clock, n.random);
  const replaced = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK }, () => undefined);
  assert.equal(replaced.register({ block: data, meta, meta_base: 0, ioAllowed: () => true }, 'replace', SIZE), null);
  meta.powerLoss('drop');
  const again = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK }, () => undefined);
  assert.equal(again.register({ block: data, meta, meta_base: 0, ioAllowed: () => true }, 'add', SIZE), null);
  const [st, report] = run<[number, { found: boolean } | null]>(n.clock, (cb) => again.loadMetadata((s, r) => cb([s, r])));
  assert.equal(st, 0);
  assert.equal(report?.found, false);
  assert.equal(again.ownMap()?.isFull(), true, 'nothing on it is known good');
  assert.equal(again.discarded.has(1), true, 'peers must hold it fully dirty before any clears it (as for a replacement)');
  // And it says so in its pool_md, where the client reads it (Leg.replaced), also after a restart.
  assert.equal(again.currentPoolMd().srv_md.find((s) => s.member_id === 1)?.discard_entries, true);
  const third = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK }, () => undefined);
  assert.equal(third.register({ block: data, meta, meta_base: 0, ioAllowed: () => true }, 'add', SIZE), null);
  const [st3, report3] = run<[number, { found: boolean } | null]>(n.clock, (cb) => third.loadMetadata((s, r) => cb([s, r])));
  assert.equal(st3, 0);
  assert.equal(report3?.found, true);
  assert.equal(third.discarded.has(1), true);
  assert.equal(third.ownMap()?.isFull(), true);
});
