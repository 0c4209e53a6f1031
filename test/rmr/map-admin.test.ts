// The reference's map admin commands on an in-process pool (simulated time): MAP_TEST finds
// the map page where a node's copy differs from the client's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecoveryCluster } from '../util/recovery-cluster.js';
import { testMapPages, type MapTestResult } from '../../src/rmr/client/map-compare.js';

function mapTest(c: RecoveryCluster, member_id: number): MapTestResult | null {
  const ch = c.channels.get(member_id);
  assert.ok(ch !== undefined);
  let got: [number, MapTestResult | null] | null = null;
  testMapPages((cmd, cb) => ch.command(cmd, cb), c.client.maps, (s, r) => (got = [s, r]));
  c.until(`MAP_TEST to ${member_id}`, () => got !== null);
  const [s, r] = got as unknown as [number, MapTestResult | null];
  assert.equal(s, 0);
  return r;
}

test('MAP_TEST: every member holds the client\'s maps; a changed chunk in one node\'s copy is found on its page', () => {
  // Two map pages per member (40,000 chunks of 4 KiB): the difference is on the second.
  const c = new RecoveryCluster(3, { chunk_size: 4096, chunks: 40_000 });
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  for (const m of [1, 2, 3]) assert.deepEqual(mapTest(c, m), { pages: [], extra_maps: [] }, `member ${m}`);
  // Node 2's copy of member 3's map gains a chunk the client does not have.
  c.node(2).pool.maps.get(3)?.setDirty(35_000, 1);
  assert.deepEqual(mapTest(c, 2), { pages: [{ member_id: 3, page: 1 }], extra_maps: [] });
  assert.deepEqual(mapTest(c, 1), { pages: [], extra_maps: [] }, 'the other nodes still agree');
  c.close();
});
