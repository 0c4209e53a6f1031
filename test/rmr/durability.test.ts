// Durability and availability edges (issue 19) on in-process pools on simulated time: a
// FLUSH is acknowledged only if every chunk written since the last good flush has a clean
// copy on a member whose flush succeeded; min_replicas holds when an IO completes, not only
// when it is admitted; a write stuck in a node's store past the request timeout cannot land
// after the node is back in service.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecoveryCluster, pattern } from '../util/recovery-cluster.js';
import { Errno } from '../../src/util/errno.js';

/** RF=2; member 2 (A) is away while `w` is written to chunk 5, then comes back still dirty for it. */
function awayWhileWritten(): { c: RecoveryCluster; model: Buffer; off: number; w: Buffer } {
  const c = new RecoveryCluster(2);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  assert.equal(c.flush(), 0);
  c.settle();
  // A's background sync is stopped, so it stays dirty for what it missed (a slow resync).
  c.node(2).sync.stop();
  c.cut(2);
  const off = 5 * c.chunk_size + 4096;
  const w = pattern(77, 4096);
  assert.equal(c.write(off, w), 0, 'W lands on member 1 only');
  w.copy(model, off);
  c.heal(2);
  c.until('member 2 back in service', () => c.client.leg(2)?.state === 'NORMAL' && c.node(2).pool.state === 'NORMAL');
  assert.equal(c.node(2).pool.ownMap()?.isDirty(5), true, 'member 2 is back, still dirty for W\'s chunk');
  return { c, model, off, w };
}

test('FLUSH: the member holding the only clean copy of a written chunk fails its flush; the FLUSH fails (EIO) though the other member flushed', () => {
  const { c, off, w } = awayWhileWritten();
  c.node(1).data.faults.flush_error = true;
  assert.equal(c.flush(), Errno.EIO, 'W was made durable nowhere: member 2 flushed, but its copy of the chunk is stale');
  const st = c.client.status();
  assert.equal(st.io_failures.not_durable, 1, 'the pool counts the failure');
  assert.match(st.io_failures.last?.reason ?? '', /chunk 5 .*no member that flushed \(2\)/, 'and says why');
  // What the EIO protects against: member 1 loses its cache at a crash, and W is gone.
  c.crashNode(1, 'drop');
  c.node(1).data.faults.flush_error = false;
  c.run(100);
  c.restartNode(1);
  c.node(2).sync.start();
  c.settle();
  const [s, d] = c.read(off, 4096);
  assert.equal(s, 0);
  assert.equal(d?.equals(w), false, 'W did not survive: an acknowledged flush would have been a lie');
  c.close();
});

test('FLUSH: the member with the stale copy fails its flush; the FLUSH succeeds (the clean copy is durable), and the next one too', () => {
  const { c, model } = awayWhileWritten();
  c.node(2).data.faults.flush_error = true;
  assert.equal(c.flush(), 0, 'member 1 holds W clean and flushed it');
  // Member 2 left service with its intent record failed (a failed flush): a restart brings it back.
  c.node(2).data.faults.flush_error = false;
  c.crashNode(2, 'process');
  c.run(100);
  c.restartNode(2);
  c.settle();
  assert.equal(c.flush(), 0);
  assert.equal(c.client.status().io_failures.not_durable, 0);
  assert.equal(c.client.status().unflushed_chunks, 0);
  c.assertIdentical(model);
  c.close();
});

test('FLUSH: after a FLUSH that was not durable, the chunks still count until one is', () => {
  const { c, model } = awayWhileWritten();
  c.node(1).data.faults.flush_error = true;
  assert.equal(c.flush(), Errno.EIO);
  assert.ok(c.client.status().unflushed_chunks > 0);
  c.node(1).data.faults.flush_error = false;
  // Member 1 left IO service at its failed flush; back, it still holds W (no crash).
  c.node(2).sync.start();
  c.settle();
  assert.equal(c.flush(), 0, 'both members hold W clean now and flushed');
  assert.equal(c.client.status().unflushed_chunks, 0);
  c.assertIdentical(model);
  c.close();
});

test('FLUSH: a copy made clean while the flush ran does not vouch for it (the flush may not cover the chunk sync)', () => {
  const { c, off } = awayWhileWritten();
  const a = c.node(2);
  // Member 2's flush covers only what its store held when it began, and takes 200 ms (a slow
  // device), so a write into W's chunk, synced there first, lands on it meanwhile.
  a.data.faults.flush_issued_only = true;
  const flush = a.data.flush.bind(a.data);
  a.data.flush = (cb): void => {
    a.data.faults.latency_ms = 200;
    flush(cb);
    a.data.faults.latency_ms = 0;
  };
  c.node(1).data.faults.flush_error = true;
  const w2 = pattern(78, 4096);
  let ws: number | null = null;
  let fs: number | null = null;
  c.client.submit('write', off + 8192, 4096, w2, {}, (s) => (ws = s));
  c.client.submit('flush', 0, 0, null, {}, (s) => (fs = s));
  c.until('write and flush answered', () => ws !== null && fs !== null);
  assert.equal(ws, 0);
  assert.equal(c.client.maps.get(2)?.isDirty(5), false, 'the write made member 2\'s copy of the chunk clean, while the flush ran');
  assert.equal(fs, Errno.EIO, 'member 2 holds the chunk clean now, but its flush began before the chunk sync');
  c.close();
});

test('min_replicas holds at completion: a write that two of three legs fail in flight fails (EIO), and its copy is still recorded so the members converge', () => {
  const c = new RecoveryCluster(3);
  c.client.min_replicas = 2;
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  const off = 7 * c.chunk_size;
  for (const m of [2, 3]) c.node(m).data.faults.bad_ranges = [{ offset: off, length: 4096 }];
  const x = pattern(5, 4096);
  assert.equal(c.write(off, x), Errno.EIO, 'one copy is fewer than min_replicas');
  assert.equal(c.client.status().io_failures.min_replicas, 1);
  assert.match(c.client.status().io_failures.last?.reason ?? '', /completed on 1 leg\(s\), fewer than min_replicas 2/);
  x.copy(model, off); // it landed on member 1, and members 2 and 3 are recorded as having missed it
  for (const m of [2, 3]) c.node(m).data.faults.bad_ranges = [];
  c.settle();
  c.assertIdentical(model);
  c.close();
});

test('min_replicas holds for FLUSH: refused below the quorum (EROFS), failed (EIO) when too few legs flushed', () => {
  const c = new RecoveryCluster(3);
  c.client.min_replicas = 2;
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  for (const m of [2, 3]) c.node(m).data.faults.flush_error = true;
  assert.equal(c.flush(), Errno.EIO, 'only member 1 flushed');
  assert.equal(c.client.status().io_failures.last?.cause, 'min_replicas');
  assert.equal(c.client.status().io_failures.last?.op, 'flush');
  // Both failed members left IO service: one NORMAL leg is below the quorum, refused at once.
  c.until('members 2 and 3 out of service', () => c.client.leg(2)?.state !== 'NORMAL' && c.client.leg(3)?.state !== 'NORMAL');
  assert.equal(c.flush(), Errno.EROFS);
  c.close();
});
test('a write stuck in a node\'s store past the request timeout does not land after the node is back in service', () => {
  const c = new RecoveryCluster(2, { request_timeout_ms: 1000 });
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  const n2 = c.node(2);
  const off = 3 * c.chunk_size;
  // X reaches member 2's store and stays there; the client gives up on it after 1 s, fails the
  // leg (member 2 leaves IO service) and records the miss on member 1.
  n2.data.faults.stall_writes = true;
  const x = pattern(1, 4096);
  assert.equal(c.write(off, x), 0, 'X is on member 1, its miss recorded');
  x.copy(model, off);
  n2.data.faults.stall_writes = false;
  assert.equal(n2.data.heldWrites, 1, 'X is still in member 2\'s store');
  assert.notEqual(c.client.leg(2)?.state, 'NORMAL');
  // The recovery tick would bring member 2 back (store check, rejoin, Case 1) and resync the chunk.
  c.run(3000);
  const served_while_held = n2.pool.state === 'NORMAL';
  // Newer data to the same block, then the stalled X completes in member 2's store.
  const y = pattern(2, 4096);
  assert.equal(c.write(off, y), 0);
  y.copy(model, off);
  n2.data.releaseHeld();
  c.run(100);
  c.settle();
  c.assertIdentical(model);
  assert.equal(served_while_held, false, 'member 2 stayed out of service while a write from before it left was in its store');
  c.close();
});
