// Recovery and lifecycle on in-process pools (RF=2 and RF=3, simulated time): every case of
// try_enable (reference §8.3), compute-client crash and re-assembly, storage-node crash and
// restart, the combined failures of §9.4, maintenance, removal, extend, disk replacement,
// queued POOL_INFO, map cleaning. Each scenario ends with every leg NORMAL, every map empty
// and the members' data areas byte-identical.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecoveryCluster, pattern } from '../util/recovery-cluster.js';
import { Errno } from '../../src/util/errno.js';

const CHUNK = 16 * 1024;

for (const rf of [2, 3]) {
  test(`RF=${rf}: a member away misses writes: they are dirty entries (not zero), its return resyncs exactly those chunks`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(20, model);
    c.settle();
    const away = 2;
    c.cut(away);
    c.writeStream(15, model, 2);
    const survivor = c.node(1).pool;
    const missed = survivor.maps.get(away)?.dirtyCount ?? 0;
    assert.ok(missed > 0, 'writes to the degraded pool produced dirty entries');
    assert.equal(c.client.maps.get(away)?.dirtyCount, missed, 'the client recorded the same misses');
    const syncs_before = c.node(away).pool.stats.chunk_syncs;
    c.heal(away);
    c.settle();
    assert.equal(c.node(away).pool.stats.chunk_syncs - syncs_before, missed, 'exactly the missed chunks were resynced');
    c.assertIdentical(model);
    assert.deepEqual(c.refused, []);
    c.close();
  });

  test(`RF=${rf}: a member away while nothing is written resyncs nothing`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    c.settle();
    c.cut(2);
    c.run(500);
    assert.equal(c.node(1).pool.maps.get(2)?.dirtyCount, 0);
    const before = c.node(2).pool.stats.chunk_syncs;
    c.heal(2);
    c.settle();
    assert.equal(c.node(2).pool.stats.chunk_syncs, before, 'no chunk synced');
    c.assertIdentical(model);
    c.close();
  });

  test(`RF=${rf}: Case 2 — every leg failed; the last authoritative one is enabled directly, the others get its maps`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    for (let m = 1; m < rf; m++) {
      c.cut(m);
      c.writeStream(5, model, 10 + m);
    }
    // The last NORMAL leg fails: it held the complete maps.
    c.cut(rf);
    const last = c.client.leg(rf);
    assert.equal(last?.was_last_authoritative, true);
    // It comes back first, alone: Case 2, it serves again.
    c.heal(rf);
    c.until('last authoritative NORMAL', () => last?.state === 'NORMAL');
    for (let m = 1; m < rf; m++) assert.equal(c.client.leg(m)?.state, 'FAILED');
    c.writeStream(5, model, 20);
    for (let m = 1; m < rf; m++) c.heal(m);
    c.settle();
    c.assertIdentical(model);
    assert.deepEqual(c.refused, []);
    c.close();
  });

  test(`RF=${rf}: Cases 3/4 — the compute client crashes with writes in flight; a new client assembles every member and the pool converges`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    c.settle();
    // Writes in flight, reaching the members at different times: the client dies while
    // some landed on some members only.
    const slow = c.channels.get(2);
    assert.ok(slow !== undefined);
    slow.latency_ms = 5;
    for (let i = 0; i < 8; i++) c.client.submit('write', i * 2 * CHUNK, 4096, pattern(500 + i, 4096), {}, () => undefined);
    c.run(1);
    c.crashClient();
    c.run(20);
    // The in-flight writes landed somewhere: block i*2*CHUNK holds either value per member.
    c.restartClient();
    c.settle();
    c.assertIdentical();
    // Blocks untouched by the in-flight writes hold what was acknowledged.
    const d = c.members()[0]?.data.contents() as Buffer;
    for (let i = 0; i < 8; i++) model.fill(0, i * 2 * CHUNK, i * 2 * CHUNK + 4096);
    const masked = Buffer.from(d);
    for (let i = 0; i < 8; i++) masked.fill(0, i * 2 * CHUNK, i * 2 * CHUNK + 4096);
    assert.ok(masked.equals(model));
    assert.deepEqual(c.refused, []);
    c.close();
  });

  test(`RF=${rf}: client crash after one member flushed a write the others never got: its intent extent stays until the client settled it`, () => {
    const c = new RecoveryCluster(rf);
    c.settle();
    // Member 1 takes the write at once; the others' links are slow, and the client dies first.
    for (const [id, ch] of c.channels) if (id !== 1) ch.latency_ms = 50;
    let acked = false;
    c.client.submit('write', 5 * CHUNK, 4096, pattern(77, 4096), {}, () => (acked = true));
    c.run(2);
    // A flush on member 1 alone (as any other client IO would trigger): under the old rule the
    // extent would leave its intent record here.
    let fl = 1;
    c.node(1).pool.handleIo({ offset: 0, length: 0, flags: 5, map_ver: 1, prio: 0, member_id: 1, failed_cnt: 0, failed_ids: Buffer.alloc(4), sync: 0, seq: 0, settled: 0 }, Buffer.alloc(0), false, (s) => (fl = s));
    c.run(2);
    assert.equal(fl, 0);
    // Another write on member 1 rewrites its record: a flushed extent would leave it now.
    let wr = 1;
    c.node(1).pool.handleIo({ offset: 20 * CHUNK, length: 4096, flags: 1, map_ver: 1, prio: 0, member_id: 1, failed_cnt: 0, failed_ids: Buffer.alloc(4), sync: 0, seq: 0, settled: 0 }, Buffer.alloc(4096), false, (s) => (wr = s));
    c.run(2);
    assert.equal(wr, 0);
    assert.ok(c.node(1).pool.intentRecorded().includes(5), 'extent of chunk 5 still recorded');
    c.crashClient();
    assert.equal(acked, false);
    c.run(200);
    assert.ok(c.node(1).data.contents(5 * CHUNK, 4).readUInt32LE(0) !== 0, 'member 1 holds the write');
    c.restartClient();
    c.settle();
    c.assertIdentical();
    c.close();
  });

  test(`RF=${rf}: storage node crash with power loss and restart from its disks: NO_IO until a map update, its lost writes resynced`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    assert.equal(c.flush(), 0);
    c.writeStream(10, model, 2); // unflushed on every member
    c.crashNode(2, 'drop');
    c.writeStream(5, model, 3);
    c.restartNode(2, false);
    assert.equal(c.node(2).pool.state, 'REGISTERED');
    const leg = c.client.leg(2);
    assert.ok(leg !== undefined);
    c.client.rejoinLeg(leg, () => undefined);
    c.until('rejoined', () => leg.state !== 'FAILED');
    assert.notEqual(c.node(2).pool.state, 'NORMAL', 'admitted only after a map update');
    c.settle();
    c.assertIdentical(model);
    c.close();
  });

  test(`RF=${rf}: §9.4 storage node crashes, then the client; all come back and converge`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    c.crashNode(1, 'tear');
    c.writeStream(10, model, 2);
    c.crashClient();
    c.restartNode(1, false);
    c.restartClient();
    c.settle();
    c.assertIdentical(model);
    c.close();
  });

  test(`RF=${rf}: §9.4 the client crashes, then a storage node (power loss) before the client is back`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    c.writeStream(10, model, 2);
    c.crashClient();
    c.crashNode(2, 'drop');
    c.restartNode(2, false);
    c.restartClient();
    c.settle();
    c.assertIdentical();
    c.close();
  });

  test(`RF=${rf}: maintenance on a leg — dirtiness accumulates, leaving it resyncs exactly that (Case 1)`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    c.settle();
    c.must('maintenance on', (cb) => c.client.maintenance(2, true, cb));
    const leg = c.client.leg(2);
    assert.equal(leg?.state, 'RECONNECTING');
    assert.equal(leg?.maintenance, true);
    assert.equal(c.node(2).pool.state, 'NO_IO');
    assert.equal(c.node(2).pool.maintenance, true);
    c.must('maintenance on again (idempotent)', (cb) => c.client.maintenance(2, true, cb));
    c.writeStream(10, model, 2);
    c.run(500);
    assert.equal(leg?.state, 'RECONNECTING', 'recovery leaves a leg in maintenance alone');
    const missed = c.node(1).pool.maps.get(2)?.dirtyCount ?? 0;
    assert.ok(missed > 0);
    const before = c.node(2).pool.stats.chunk_syncs;
    c.must('maintenance off', (cb) => c.client.maintenance(2, false, cb));
    c.settle();
    assert.equal(c.node(2).pool.stats.chunk_syncs - before, missed);
    assert.equal(c.node(2).pool.maintenance, false);
    c.assertIdentical(model);
    assert.deepEqual(c.refused, []);
    c.close();
  });

  test(`RF=${rf}: extend — a brand-new member joins the live pool fully dirty and syncs while IO continues`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(15, model);
    const leg = c.extend(rf + 1);
    assert.equal(c.node(rf + 1).pool.state !== 'CREATED', true, 'not the reference\'s CREATED reuse');
    c.writeStream(10, model, 2);
    c.settle();
    assert.equal(leg.state, 'NORMAL');
    assert.equal(c.node(rf + 1).pool.stats.chunk_syncs >= 1, true);
    c.assertIdentical(model);
    for (const n of c.members()) assert.ok(n.pool.maps.has(rf + 1), `member ${n.member_id} knows the new member`);
    c.close();
  });

  test(`RF=${rf}: disk replacement — an empty store takes a member's place; every peer holds it fully dirty before any clears it; full resync while IO runs`, () => {
    const c = new RecoveryCluster(rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(20, model);
    c.settle();
    // Before the replaced member gets any maps, every other member holds it fully dirty.
    let checked = 0;
    c.onCommand = (to, cmd) => {
      if (to !== 2 || cmd.kind !== 'map_ready') return;
      checked++;
      for (const n of c.members()) if (n.member_id !== 2) assert.equal(n.pool.maps.get(2)?.isFull(), true, `member ${n.member_id} holds member 2 fully dirty`);
    };
    c.replaceDisk(2);
    // The client finds out through IO errors and the store check.
    c.writeStream(5, model, 2);
    const leg = c.client.leg(2);
    c.until('replaced member back', () => leg?.state === 'NORMAL');
    assert.ok(checked > 0);
    c.onCommand = null;
    for (const n of c.members()) assert.equal(n.pool.discarded.has(2), false, 'flag cleared after the spread');
    c.writeStream(5, model, 3);
    c.settle();
    assert.ok(c.node(2).pool.stats.chunk_syncs >= c.node(2).pool.no_of_chunks - 1, 'every chunk copied');
    c.assertIdentical(model);
    c.close();
  });
}

test('RF=3: a chunk sync that read its chunk before the node missed a write to it does not clear the record of that miss', () => {
  // Simulator seed 57684138: node 1 was syncing a chunk under a bandwidth cap; its leg failed,
  // a write to the chunk was recorded as missed by it on the others, and then the sync, with
  // data read before that write, finished: its MAP_CLEAR erased the record on every peer, and
  // the next map spread told node 1 the chunk was clean.
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  const K = 9;
  const at = K * CHUNK;
  // Node 1 misses a write to chunk K and comes back: it must sync chunk K.
  c.cut(1);
  const w1 = pattern(901, CHUNK);
  assert.equal(c.write(at, w1), 0);
  w1.copy(model, at);
  // Its peer read of chunk K is served at once, the answer held back.
  const src = c.node(1).source;
  const read = src.readPeer.bind(src);
  let held: (() => void) | null = null;
  src.readPeer = (off, len, cb) => read(off, len, (s, d) => (off === at && held === null ? (held = () => cb(s, d)) : cb(s, d)));
  c.heal(1);
  c.until('chunk K read from a peer', () => held !== null);
  // Meanwhile node 1 is away again and misses another write to chunk K.
  c.cut(1);
  const w2 = pattern(902, CHUNK);
  assert.equal(c.write(at, w2), 0);
  w2.copy(model, at);
  for (const id of [2, 3]) assert.equal(c.node(id).pool.maps.get(1)?.isDirty(K), true);
  // The sync ends with the older data: the record of the second write stays.
  const release = held as unknown as () => void;
  release();
  c.run(50);
  for (const id of [2, 3]) assert.equal(c.node(id).pool.maps.get(1)?.isDirty(K), true, `member ${id} still holds chunk ${K} dirty for member 1`);
  src.readPeer = read;
  c.heal(1);
  c.settle();
  c.assertIdentical(model);
  assert.deepEqual(c.refused, []);
  c.close();
});

test('RF=3: a write that failed everywhere gets its source after the receivers\' knowledge is marked: never a replaced member', () => {
  // Simulator seed 72000901: Case 1 gave an uncertain chunk a source (INTENT_TO_MAP) before
  // the spread marked the receiver whose disk had been replaced fully dirty; the source's
  // maps still had it clean there, so it became the chunk's source, and once it was marked
  // every member was dirty for the chunk: nobody could sync it.
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  const K = 6;
  // Member 2 misses a write to chunk K and comes back without syncing it yet.
  c.node(2).sync.stop();
  c.cut(2);
  const w1 = pattern(611, CHUNK);
  assert.equal(c.write(K * CHUNK, w1), 0);
  w1.copy(model, K * CHUNK);
  c.heal(2);
  c.until('member 2 back', () => c.client.leg(2)?.state === 'NORMAL');
  assert.equal(c.node(2).pool.ownMap()?.isDirty(K), true);
  // Member 1's disk is replaced; the client does not know yet.
  c.replaceDisk(1);
  c.cut(1);
  // A write to chunk K fails on both other legs: uncertain. Member 2 fails last.
  let st = 1;
  c.client.submit('write', K * CHUNK, 4096, pattern(612, 4096), {}, (s) => (st = s));
  c.cut(3);
  c.cut(2);
  c.until('the write failed', () => st !== 1);
  assert.notEqual(st, 0);
  assert.equal(c.client.status().uncertain_chunks, 1);
  // Member 1 comes back (replaced), then member 2 (Case 2, then Case 1 to member 1).
  c.heal(1);
  c.until('member 1 rejoined', () => c.client.leg(1)?.state === 'RECONNECTING');
  c.heal(2);
  c.until('member 2 serves', () => c.client.leg(2)?.state === 'NORMAL');
  c.node(2).sync.start();
  c.heal(3);
  c.settle();
  c.assertIdentical();
  // Chunk K holds the acknowledged write or the failed one; every other chunk what was written.
  const d = c.node(1).data.contents();
  const k = d.subarray(K * CHUNK, K * CHUNK + 4096);
  assert.ok(k.equals(model.subarray(K * CHUNK, K * CHUNK + 4096)) || k.equals(pattern(612, 4096)), 'chunk K holds one of the two values');
  k.copy(model, K * CHUNK);
  assert.ok(d.equals(model));
  assert.deepEqual(c.refused, []);
  c.close();
});

test('RF=3: a member whose disk was replaced is no longer the last authoritative one, also after a reconciliation that stopped half way', () => {
  // Simulator seed 55308163: the last leg to fail was the replaced member's; Cases 3/4 ran
  // (a replaced store is no authority), stopped after its spread had cleared its `replaced`
  // flag, and Case 2 then enabled it directly and spread its maps to every other member.
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  c.replaceDisk(3);
  for (const id of [1, 2, 3]) c.cut(id);
  assert.equal(c.client.leg(3)?.was_last_authoritative, true);
  c.heal(3);
  c.until('member 3 back', () => c.client.leg(3)?.state === 'RECONNECTING');
  assert.equal(c.client.leg(3)?.replaced, true);
  assert.equal(c.client.leg(3)?.was_last_authoritative, false, 'its authority went with its disk');
  // The reconciliation stops at the next spread after member 3 got its maps.
  let after_replace = false;
  let stopped = false;
  c.onCommand = (to, cmd) => {
    if (cmd.kind === 'discard_clear' && to === 3) after_replace = true;
    else if (cmd.kind === 'map_send' && after_replace && !stopped) {
      stopped = true;
      c.clock.setTimer(0, () => c.cut(to));
    }
  };
  c.heal(1);
  c.heal(2);
  c.until('the reconciliation stopped', () => stopped && [...c.client.legs()].some((l) => l.state === 'FAILED'));
  c.onCommand = null;
  // Recovery ticks run while that member is away (Case 2 would be tried here).
  c.run(300);
  for (const id of [1, 2]) if (c.client.leg(id)?.state === 'FAILED') c.heal(id);
  c.settle();
  assert.equal(c.leg_events.some((e) => e.reason === 'last authoritative leg enabled'), false, 'no member was enabled directly');
  c.writeStream(5, model, 2);
  c.settle();
  c.assertIdentical(model);
  assert.deepEqual(c.refused, []);
  c.close();
});

test('RF=3: del_sess delete updates every remaining member\'s persisted pool_md, is idempotent, and refuses to drop the only clean copy', () => {
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  // Member 3 the only clean one for some chunks: members 1 and 2 away while it takes writes.
  c.cut(1);
  c.cut(2);
  c.writeStream(4, model, 2);
  const [st, why] = c.call('del_sess refused', (cb) => c.client.delSess(3, 'delete', cb));
  assert.equal(st, Errno.EBUSY, why ?? '');
  assert.match(why ?? '', /only (clean copy|NORMAL member)/);
  c.heal(1);
  c.heal(2);
  c.settle();
  c.must('del_sess delete', (cb) => c.client.delSess(3, 'delete', cb));
  c.node(3).in_pool = false;
  c.must('del_sess delete again', (cb) => c.client.delSess(3, 'delete', cb));
  assert.equal(c.client.members.has(3), false);
  for (const id of [1, 2]) {
    const p = c.node(id).pool;
    assert.equal(p.maps.has(3), false);
    // Persisted: a restart of the node does not bring member 3 back.
    c.crashNode(id, 'process');
    c.restartNode(id);
    assert.equal(c.node(id).pool.pool_md?.srv_md.some((s) => s.member_id === 3), false, `member ${id}'s pool_md`);
    c.settle();
  }
  c.writeStream(5, model, 3);
  c.settle();
  c.assertIdentical(model);
  c.close();
});

test('RF=3: POOL_INFO to a FAILED leg is queued and replayed when it comes back', () => {
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(5, model);
  c.settle();
  c.cut(3);
  c.must('del_sess delete 2', (cb) => c.client.delSess(2, 'delete', cb));
  c.node(2).in_pool = false;
  assert.equal(c.client.leg(3)?.pending_info.length, 1);
  assert.equal(c.node(3).pool.maps.has(2), true, 'member 3 missed it');
  c.heal(3);
  c.settle();
  assert.equal(c.node(3).pool.maps.has(2), false, 'replayed');
  assert.equal(c.client.leg(3)?.pending_info.length, 0);
  c.assertIdentical(model);
  c.close();
});

// Simulator seed 61002823: the client's host stopped reading, every leg failed while the
// removal drained IO; POOL_INFO was queued for every remaining member, del_sess answered EIO,
// and leg 2 stayed REMOVING although the returning members then recorded the removal. In the
// seed member 1 failed last (Case 2 brings the pool back); with member 2 failing last no
// member is authoritative once it is removed, and Cases 3/4 bring the others back.
for (const order of [[2, 3, 1], [1, 3, 2]]) {
  test(`RF=3: a del_sess delete that found every other leg FAILED completes when a member comes back and records it, no re-run (legs failing in order ${order.join(',')})`, () => {
    const c = new RecoveryCluster(3);
    const model = Buffer.alloc(c.size);
    c.writeStream(5, model);
    c.settle();
    for (const id of order) c.cut(id);
    // The link to member 2 is back (LEAVE_POOL gets through), its leg still FAILED.
    const ch2 = c.channels.get(2);
    assert.ok(ch2 !== undefined);
    ch2.cut = false;
    const [st, why] = c.call('del_sess delete 2', (cb) => c.client.delSess(2, 'delete', cb));
    assert.equal(st, Errno.EIO, why ?? '');
    assert.equal(c.client.leg(2)?.state, 'REMOVING');
    assert.equal(c.client.members.has(2), false);
    c.node(2).in_pool = false;
    c.heal(1);
    c.heal(3);
    c.until('leg 2 detached once a member recorded the removal', () => c.client.leg(2) === undefined, 10_000);
    c.settle();
    for (const id of [1, 3]) assert.equal(c.node(id).pool.maps.has(2), false, `member ${id} recorded the removal`);
    assert.equal(c.client.maps.has(2), false, 'the client has no map for the removed member');
    c.writeStream(5, model, 2);
    c.settle();
    c.assertIdentical(model);
    assert.deepEqual(c.refused, []);
    c.close();
  });
}

test('RF=2: del_sess disassemble keeps the member, dirtiness accumulates; after a full disassemble the pool assembles again (Cases 3/4)', () => {
  const c = new RecoveryCluster(2);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  c.must('disassemble 2', (cb) => c.client.delSess(2, 'disassemble', cb));
  c.writeStream(5, model, 2);
  assert.ok((c.node(1).pool.maps.get(2)?.dirtyCount ?? 0) > 0, 'piggybacked for the detached member');
  c.must('disassemble 1', (cb) => c.client.delSess(1, 'disassemble', cb));
  c.crashClient();
  c.restartClient();
  c.settle();
  c.assertIdentical(model);
  c.close();
});

test('online verify: a chunk corrupted on one member is found by hashes, marked dirty for it and resynced; identical chunks move no data', () => {
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(20, model);
  c.settle();
  // Bit rot on member 3, chunk 4; member 2, chunk 9.
  const rot = (id: number, chunk: number): void => {
    let done = false;
    c.node(id).data.write(chunk * CHUNK + 100, Buffer.from('rot'), true, () => (done = true));
    c.until('rot', () => done);
  };
  rot(3, 4);
  rot(2, 9);
  const syncs = [1, 2, 3].map((id) => c.node(id).pool.stats.chunk_syncs);
  // IO runs during the verify.
  let writes = 0;
  const writer = (): void => {
    c.client.submit('write', 20 * CHUNK, 4096, pattern(900 + writes, 4096), {}, (s) => {
      assert.equal(s, 0);
      pattern(900 + writes, 4096).copy(model, 20 * CHUNK);
      if (++writes < 30) c.clock.setTimer(1, writer);
    });
  };
  writer();
  c.must('verify', (cb) => c.client.verifyStart({ source: 1, batch_chunks: 4 }, cb));
  c.until('verify done', () => c.client.verifyProgress().state === 'done' && writes === 30);
  const rep = c.client.verifyReport();
  assert.ok(rep !== null);
  assert.deepEqual(rep.differences, [
    { chunk: 4, members: [3] },
    { chunk: 9, members: [2] },
  ]);
  assert.equal(rep.differing, 2);
  c.settle();
  assert.deepEqual([1, 2, 3].map((id, i) => c.node(id).pool.stats.chunk_syncs - (syncs[i] as number)), [0, 1, 1], 'only the differing chunks moved');
  c.assertIdentical(model);
  // A second verify finds nothing.
  c.must('verify again', (cb) => c.client.verifyStart({}, cb));
  c.until('verify done', () => c.client.verifyProgress().state === 'done');
  assert.equal(c.client.verifyReport()?.differing, 0);
  c.close();
});

test('client map cleaning: a clean MAP_CHECK answer wipes the client copy only if no entry was added since the question', () => {
  const c = new RecoveryCluster(2);
  c.settle();
  c.cut(2);
  assert.equal(c.write(0, pattern(1, 4096)), 0);
  c.heal(2);
  c.until('member 2 clean', () => c.node(2).pool.ownMap()?.isEmpty() === true && c.client.leg(2)?.state === 'NORMAL');
  const map = c.client.maps.get(2);
  assert.ok(map !== undefined);
  // Pretend a write that failed on member 2 raced with the check: an entry added after the
  // question and before the answer must survive the answer.
  const ch = c.channels.get(2);
  assert.ok(ch !== undefined);
  ch.latency_ms = 10;
  assert.equal(map.isEmpty(), false);
  c.client.recoveryTick(); // asks MAP_CHECK
  c.run(1);
  map.setDirty(7, 1, c.clock.now());
  c.run(30);
  assert.equal(map.isDirty(7), true, 'the entry added during the check stays');
  ch.latency_ms = 0.05;
  c.close();
});

test('metadata exchange: the client pushes its pool_md header each tick (SEND_MD_BUF); peers merge each other\'s srv_md slot (MD_SEND); an assemble learns the members from a node', () => {
  const c = new RecoveryCluster(3);
  c.settle();
  // The client's queue depth reaches every node's pool_md through the tick.
  for (const n of c.members()) assert.equal(n.pool.pool_md?.header.queue_depth, 128, `member ${n.member_id} has the client's header`);
  // Member 2 leaves IO service; member 1 learns its state from member 2's own slot.
  c.cut(2);
  c.run(300);
  const slot = c.node(1).pool.pool_md?.srv_md.find((s) => s.member_id === 2);
  assert.equal(slot?.srv_state, 'NO_IO', "member 1's copy of member 2's slot");
  c.heal(2);
  c.settle();
  c.run(300);
  assert.equal(c.node(1).pool.pool_md?.srv_md.find((s) => s.member_id === 2)?.srv_state, 'NORMAL');
  // A new client assembling only member 3 learns of members 1 and 2 from its pool_md and waits for them.
  c.crashClient();
  c.restartClient([3]);
  assert.deepEqual([...c.client.members].sort(), [1, 2, 3]);
  c.run(500);
  assert.equal(c.client.leg(3)?.state, 'RECONNECTING', 'Cases 3/4 wait for every listed member');
  c.join(c.node(1), 'assemble');
  c.join(c.node(2), 'assemble');
  c.settle();
  c.assertIdentical();
  c.close();
});

// A chunk sync is a copy taken while the node serves: the writes that arrive meanwhile wait
// behind it on the node. Once the node leaves IO service, writes miss it and are recorded for
// it on its peers; a copy that finishes after that may predate them, so it must clean
// nothing, neither here nor on the peers (MAP_CLEAR). Found by the simulator (seed 61002973:
// the copy finished after the node went NO_IO, its MAP_CLEAR erased member 1's record of a
// write the node had missed, and the next spread left the node serving the old bytes).
for (const release of ['out of service', 'back in service'] as const) {
  test(`RF=2: a chunk sync that outlives its node's time in IO service cleans nothing (copy released ${release})`, () => {
    const c = new RecoveryCluster(2);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    c.settle();
    // Chunk 5 becomes dirty for member 2; member 2's copy of it is held after its peer read.
    c.cut(2);
    const w1 = pattern(601, CHUNK);
    assert.equal(c.write(5 * CHUNK, w1), 0);
    w1.copy(model, 5 * CHUNK);
    const n2 = c.node(2);
    const read = n2.source.readPeer.bind(n2.source);
    const held: (() => void)[] = [];
    n2.source.readPeer = (o, l, cb) => read(o, l, (s, d) => held.push(() => cb(s, d)));
    c.heal(2);
    c.until('member 2 copying chunk 5', () => held.length > 0);
    // A read of chunk 5 through member 2 waits behind the copy.
    let parked: number | null = null;
    c.client.readFrom(2, 5 * CHUNK, 4096, (s) => (parked = s));
    c.run(1);
    assert.equal(parked, null, 'the read waits for the copy');
    // Member 2 leaves IO service; a write to chunk 5 misses it and is recorded on member 1.
    c.cut(2);
    const w2 = pattern(602, CHUNK);
    assert.equal(c.write(5 * CHUNK, w2), 0);
    w2.copy(model, 5 * CHUNK);
    assert.equal(c.node(1).pool.maps.get(2)?.isDirty(5), true, 'member 1 records the miss');
    n2.source.readPeer = read;
    if (release === 'back in service') {
      c.heal(2);
      c.until('member 2 back', () => c.client.leg(2)?.state === 'NORMAL');
    }
    // The held copy (taken before w2) completes.
    for (const h of held.splice(0)) h();
    c.run(1);
    assert.equal(c.node(1).pool.maps.get(2)?.isDirty(5), true, 'member 1 still records the miss');
    assert.equal(n2.pool.ownMap()?.isDirty(5), true, 'member 2 still lacks chunk 5');
    // The read admitted before member 2 left service fails (over a cut link, or with EIO);
    // it does not take member 2, back in service with new maps, out again.
    assert.equal(parked, release === 'back in service' ? Errno.EIO : Errno.ENOTCONN);
    if (release === 'back in service') assert.equal(n2.pool.state, 'NORMAL');
    if (release === 'out of service') c.heal(2);
    c.settle();
    c.assertIdentical(model);
    assert.deepEqual(c.refused, []);
    c.close();
  });
}

// A recovery step readies a node to serve (MAP_DONE(enable), ENABLE_POOL, the maps loaded
// after the client-crash reconciliation); the leg is promoted when the step is answered. If
// the leg's link dropped meanwhile, the answer can still arrive (the transport replays
// requests after it reconnects), but the leg is FAILED (or already rejoined): it must not be
// promoted. Found by the simulator (seeds 63000709 and 58183127: FAILED -> NORMAL).
for (const v of [
  { name: 'Case 1 spread to a replaced member (the discard flag cleared after MAP_DONE)', rf: 2, victim: 2, trigger: 'discard_clear', on: 2 },
  { name: 'Case 2 (the last authoritative leg enabled)', rf: 2, victim: 2, trigger: 'enable_pool', on: 2 },
  { name: 'Cases 3/4 (the maps loaded after every member was enabled)', rf: 3, victim: 3, trigger: 'read_map_buf', on: 0 },
] as const) {
  test(`a leg whose link drops while the step readying its node is answered is not promoted: ${v.name}`, () => {
    const c = new RecoveryCluster(v.rf);
    const model = Buffer.alloc(c.size);
    c.writeStream(10, model);
    c.settle();
    let dropped = false;
    // The link drops: the leg fails (as on a DISCONNECTED link event) and the node leaves IO
    // service; the command in flight is still executed and answered.
    const drop = (): void => {
      dropped = true;
      const pool = c.node(v.victim).pool;
      if (pool.state === 'NORMAL') pool.sm.change('NO_IO', 'client session lost (test)');
      const leg = c.client.leg(v.victim);
      if (leg !== undefined) c.client.setLegState(leg, 'FAILED', 'link dropped (test)');
    };
    c.onCommand = (to, cmd) => {
      if (!dropped && cmd.kind === v.trigger && (v.on === 0 || to === v.on)) drop();
    };
    if (v.trigger === 'discard_clear') {
      c.replaceDisk(2);
      c.writeStream(5, model, 2);
    } else if (v.trigger === 'enable_pool') {
      c.cut(1);
      c.writeStream(5, model, 2);
      c.cut(2);
      c.heal(2);
    } else {
      c.crashClient();
      c.restartClient();
    }
    c.until('the leg dropped', () => dropped);
    c.onCommand = null;
    c.run(100);
    for (const n of c.members()) c.heal(n.member_id);
    c.settle();
    c.assertIdentical(v.trigger === 'read_map_buf' ? undefined : model);
    assert.deepEqual(c.refused, []);
    c.close();
  });
}

test('a spread whose source fails while its MAP_SEND is answered promotes no receiver: the maps may come from a restarted source', () => {
  // Found by the simulator (schedule 3, seed 10000872): the source of a Case 1 spread
  // crashed while the spread was under way; the transport resent MAP_SEND to the restarted
  // node, whose maps (reloaded from its disk) no longer said that the receiver had missed a
  // write, and the receiver was promoted and kept the old bytes.
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  c.cut(3);
  c.writeStream(5, model, 2);
  let dropped = false;
  c.onCommand = (to, cmd) => {
    if (dropped || cmd.kind !== 'map_send' || to !== 1) return;
    dropped = true;
    // The source's link drops (its leg fails, the node leaves IO service) and it comes back
    // as a node that lost what it knew of member 3; the command is still answered.
    const pool = c.node(1).pool;
    if (pool.state === 'NORMAL') pool.sm.change('NO_IO', 'client session lost (test)');
    pool.maps.get(3)?.clearAll();
    const leg = c.client.leg(1);
    if (leg !== undefined) c.client.setLegState(leg, 'FAILED', 'link dropped (test)');
  };
  c.heal(3);
  c.until('the source dropped', () => dropped);
  c.onCommand = null;
  c.run(100);
  assert.equal(
    c.leg_events.some((e) => e.member_id === 3 && e.to === 'NORMAL' && e.reason === 'map spread from member 1'),
    false,
    'no receiver promoted by the spread whose source failed',
  );
  c.heal(1);
  c.settle();
  c.assertIdentical(model);
  assert.deepEqual(c.refused, []);
  c.close();
});

test('a store replaced while its leg is in maintenance: after maintenance off the leg rejoins and resyncs everything (simulator seed 50002168)', () => {
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  c.must('maintenance on', (cb) => c.client.maintenance(3, true, cb));
  c.replaceDisk(3);
  assert.equal(c.node(3).pool.state, 'REGISTERED', 'the replaced store awaits a join');
  c.writeStream(5, model, 2);
  c.must('maintenance off', (cb) => c.client.maintenance(3, false, cb));
  // Before: every spread failed at MAP_READY (the node was not joined) and the leg stayed
  // RECONNECTING; now the tick's pool_md push learns the node awaits a join and fails the leg,
  // and the store check rejoins it.
  c.settle();
  c.assertIdentical(model);
  assert.ok(c.leg_events.some((e) => e.member_id === 3 && e.to === 'FAILED' && /awaits a join/.test(e.reason)));
  assert.deepEqual(c.refused, []);
  c.close();
});

test('a member whose leg was down while a replacement finished drops its stale discard flag before it gets maps (simulator seed 60000136)', () => {
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  // Member 2 takes SEND_DISCARD for member 1's replaced disk, and its leg goes down right
  // before the DISCARD_CLEAR_FLAGs: they reach members 3 and 1, not 2.
  let cut = false;
  c.onCommand = (_m, cmd) => {
    if (cmd.kind === 'discard_clear' && !cut) {
      cut = true;
      c.cut(2);
    }
  };
  c.replaceDisk(1);
  c.until('member 1 back', () => c.client.leg(1)?.state === 'NORMAL' && c.node(1).pool.ownMap()?.isEmpty() === true);
  assert.equal(c.node(2).pool.discarded.has(1), true, 'member 2 still holds the flag');
  c.writeStream(5, model, 2);
  // Before: member 2's every map update marked member 1 fully dirty again; its maps never
  // emptied (and in a client-crash reconciliation its spread made every member dirty for
  // every chunk, with nobody to sync from).
  c.heal(2);
  c.settle();
  assert.equal(c.node(2).pool.discarded.has(1), false);
  c.assertIdentical(model);
  assert.deepEqual(c.refused, []);
  c.close();
});
