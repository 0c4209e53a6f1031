// Issue 19 item 3: a node whose map images are lost or corrupt. Its own chunks are all dirty
// (it resyncs everything), it says so (status, event, error line) until a map update
// replaces its maps. (That it must never be a map source or recovery base is still open: see
// docs/rmr-core.md, "What is still missing".)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecoveryCluster, type RNode } from '../util/recovery-cluster.js';
import { MD_MAPS_OFFSET } from '../../src/rmr/server/server-pool.js';
import { MD_PAGE } from '../../src/rmr/server/md-slots.js';
import { mapBankBytes } from '../../src/rmr/server/map-store.js';

/** Both map banks of a node that is down get garbage (flushed): its next add_store finds no valid map image. */
function damageMaps(c: RecoveryCluster, n: RNode): void {
  const bank = mapBankBytes(n.pool.maps.get(n.member_id)?.page_count ?? 1);
  const from = MD_MAPS_OFFSET + 2 * MD_PAGE;
  let done = false;
  n.meta.write(from, Buffer.alloc(2 * bank, 0x5a), false, () => n.meta.flush(() => (done = true)));
  c.until('map banks damaged', () => done);
}

test('a member that is not needed as a source restarts with damaged maps: it resyncs everything from the NORMAL member; its maps_lost status ends with its map update', () => {
  const c = new RecoveryCluster(2);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  assert.equal(c.flush(), 0);
  c.crashNode(1, 'drop');
  c.writeStream(5, model, 2);
  damageMaps(c, c.node(1));
  c.restartNode(1, false);
  assert.match(c.node(1).pool.maps_lost ?? '', /./, 'the restarted node says its maps are lost');
  assert.equal(c.node(1).pool.ownMap()?.dirtyCount, 32, 'every chunk dirty for it');
  const syncs = c.node(1).pool.stats.chunk_syncs;
  const leg = c.client.leg(1);
  assert.ok(leg !== undefined);
  c.client.rejoinLeg(leg, () => undefined);
  c.settle();
  assert.equal(c.node(1).pool.maps_lost, null, 'maps from the source replaced the lost ones');
  assert.equal(c.node(1).pool.stats.chunk_syncs - syncs, 32, 'every chunk resynced');
  c.assertIdentical(model);
  assert.deepEqual(c.refused, []);
  c.close();
});
