// A pool created on blank stores (all zeroes since create_store, never written) needs no
// initial sync: a create-mode join beside members that were all blank starts clean when its
// own store is blank too (JOIN_DIRTY_UNLESS_BLANK). One member that is not blank, and every
// member created after it, starts fully dirty as before: their data may differ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecoveryCluster } from '../util/recovery-cluster.js';

const syncs = (c: RecoveryCluster): number[] => c.nodes.map((n) => n.pool.stats.chunk_syncs);

test('every store blank: no member copies anything at creation, and the pool works as before', () => {
  const c = new RecoveryCluster(3, { blank_members: [1, 2, 3] });
  assert.deepEqual(syncs(c), [0, 0, 0]);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.cut(2);
  c.writeStream(5, model, 2);
  c.heal(2);
  c.settle();
  c.assertIdentical(model);
  c.close();
});

test('a store that is not blank, and every member created after it, start dirty and sync from the first', () => {
  const chunks = 32;
  const c = new RecoveryCluster(3, { blank_members: [1, 3], chunks });
  // Member 2 may hold anything; member 3, blank, could differ from member 2 (which synced from 1), so it syncs too.
  assert.deepEqual(syncs(c), [0, chunks, chunks]);
  c.assertIdentical();
  c.close();
  // The first member not blank: the next one syncs, blank or not.
  const d = new RecoveryCluster(2, { blank_members: [2], chunks });
  assert.deepEqual(syncs(d), [0, chunks]);
  d.close();
});

test('a member created after the pool was opened (and written) syncs, blank or not', () => {
  const chunks = 32;
  const c = new RecoveryCluster(1, { blank_members: [1, 2], chunks });
  assert.equal(c.write(0, Buffer.alloc(4096, 5)), 0);
  c.addNode(2);
  // A create-mode join of member 2 after the pool was opened and written: dirty.
  const leg = c.join(c.node(2), 'create');
  c.must('enable', (cb) => c.client.enableLeg(leg, cb));
  c.settle();
  assert.equal(c.node(2).pool.stats.chunk_syncs, chunks);
  const want = Buffer.alloc(c.size);
  want.fill(5, 0, 4096);
  c.assertIdentical(want);
  c.close();
});
