// The reference's map admin commands on an in-process pool (simulated time): MAP_TEST finds
// the map page where a node's copy differs from the client's; MAP_SET_VER raises the map
// version on every NORMAL member, durably (it survives a power loss right after the
// answer), never lowers it, and leaves members out of service to learn it on their return.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecoveryCluster } from '../util/recovery-cluster.js';
import { testMapPages, type MapTestResult } from '../../src/rmr/client/map-compare.js';
import { executeLegCommand } from '../../src/rmr/server/execute-command.js';
import { Errno } from '../../src/util/errno.js';

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
  // Two map pages per member (33,000 chunks of 4 KiB; two members keep the memory disks at
  // ~0.5 GiB): the difference is on the second page.
  const c = new RecoveryCluster(2, { chunk_size: 4096, chunks: 33_000 });
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  for (const m of [1, 2]) assert.deepEqual(mapTest(c, m), { pages: [], extra_maps: [] }, `member ${m}`);
  // Node 2's copy of member 1's map gains a chunk the client does not have.
  c.node(2).pool.maps.get(1)?.setDirty(32_900, 1);
  assert.deepEqual(mapTest(c, 2), { pages: [{ member_id: 1, page: 1 }], extra_maps: [] });
  assert.deepEqual(mapTest(c, 1), { pages: [], extra_maps: [] }, 'the other node still agrees');
  c.close();
});

test('MAP_SET_VER raises the version on every NORMAL member, durably; never lowers it; a member away learns it on return', () => {
  const c = new RecoveryCluster(3);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  // The data is durable (the power loss below is about the version, not unflushed writes).
  assert.equal(c.flush(), 0);
  // Member 3 is out of service: it must not get the version (its order against the others
  // is what Cases 3/4 choose the base by).
  c.cut(3);
  const away_ver = c.node(3).pool.map_ver;
  const target = c.client.map_ver + 10;
  c.must('MAP_SET_VER', (cb) => c.client.setMapVersion(target, cb));
  assert.equal(c.client.map_ver, target);
  for (const m of [1, 2]) assert.equal(c.node(m).pool.map_ver, target, `member ${m}`);
  assert.equal(c.node(3).pool.map_ver, away_ver, 'the member out of service kept its version');
  // Durable before the answer: a power loss right now (unflushed metadata dropped) and a
  // restart from the disks keep it.
  for (const m of [1, 2]) {
    c.crashNode(m, 'drop');
    c.restartNode(m, false);
    assert.ok(c.node(m).pool.map_ver >= target, `member ${m} restarted with version ${c.node(m).pool.map_ver}, below ${target}`);
  }
  // A node refuses a lower version than its own, and a sync pool's MAP_SET_VER.
  let got: [number, number] | null = null;
  executeLegCommand(c.node(1).pool, { kind: 'map_set_ver', map_ver: target - 1 }, false, (s, v) => (got = [s, v]));
  assert.deepEqual(got, [Errno.EINVAL, c.node(1).pool.map_ver]);
  got = null;
  executeLegCommand(c.node(1).pool, { kind: 'map_set_ver', map_ver: target + 100 }, true, (s, v) => (got = [s, v]));
  assert.equal((got as [number, number] | null)?.[0], Errno.EINVAL);
  assert.ok(c.node(1).pool.map_ver < target + 100);
  // The client never lowers its own either.
  c.must('MAP_SET_VER lower', (cb) => c.client.setMapVersion(1, cb));
  assert.ok(c.client.map_ver >= target);
  // Everyone back: the pool converges and member 3 holds at least the raised version.
  for (const m of [1, 2]) {
    const leg = c.client.leg(m);
    assert.ok(leg !== undefined);
    c.client.rejoinLeg(leg, () => undefined);
  }
  c.heal(3);
  c.settle();
  assert.ok(c.node(3).pool.map_ver >= target, `member 3 has version ${c.node(3).pool.map_ver}`);
  c.writeStream(5, model, 2);
  c.settle();
  c.assertIdentical(model);
  assert.deepEqual(c.refused, []);
  c.close();
});
