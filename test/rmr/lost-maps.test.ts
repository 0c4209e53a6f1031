// Issue 19 item 3: a node whose map images are lost or corrupt is never a map source or
// recovery base by itself. Its own chunks are all dirty and what its peers lack is unknown
// (every member dirty everywhere in its maps, persisted so across restarts); the client does
// not enable it as the last authoritative member (Case 2) nor take it as the base of Cases 3/4
// while its map version is not below the best member with maps, and says why in its status.
// The operator then trusts its data (trust_data): every other member resyncs every chunk from it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecoveryCluster, type RNode } from '../util/recovery-cluster.js';
import { MD_MAPS_OFFSET } from '../../src/rmr/server/server-pool.js';
import { MD_PAGE } from '../../src/rmr/server/md-slots.js';
import { mapBankBytes } from '../../src/rmr/server/map-store.js';
import type { Leg } from '../../src/rmr/client/leg.js';

/** Both map banks of a node that is down get garbage (flushed): its next add_store finds no valid map image. */
function damageMaps(c: RecoveryCluster, n: RNode): void {
  const bank = mapBankBytes(n.pool.maps.get(n.member_id)?.page_count ?? 1);
  const from = MD_MAPS_OFFSET + 2 * MD_PAGE;
  let done = false;
  n.meta.write(from, Buffer.alloc(2 * bank, 0x5a), false, () => n.meta.flush(() => (done = true)));
  c.until('map banks damaged', () => done);
}

const leg = (c: RecoveryCluster, id: number): Leg => c.client.leg(id) as Leg;

/** Member 1 misses writes that land on member 2 alone (flushed: durable); then member 2 fails too, with its maps lost. */
function lastMemberLosesItsMaps(c: RecoveryCluster, model: Buffer): void {
  c.writeStream(10, model);
  c.settle();
  c.cut(1);
  c.writeStream(10, model, 2);
  assert.equal(c.flush(), 0);
  assert.ok((c.node(2).pool.maps.get(1)?.dirtyCount ?? 0) > 0, 'member 1 missed writes');
  c.crashNode(2, 'drop');
  damageMaps(c, c.node(2));
}

test('Case 2: the last member in service restarts with its maps lost: it is not enabled, the stale member is not promoted, status says why; trust_data brings the newest data back everywhere', () => {
  const c = new RecoveryCluster(2);
  const model = Buffer.alloc(c.size);
  lastMemberLosesItsMaps(c, model);
  assert.equal(leg(c, 2).was_last_authoritative, true);
  c.restartNode(2);
  const n2 = c.node(2).pool;
  assert.notEqual(n2.maps_lost, null, 'the node says its maps were lost');
  assert.equal(n2.maps.get(1)?.dirtyCount, n2.no_of_chunks, "what member 1 lacks is unknown: dirty everywhere, not clean");
  assert.equal(n2.ownMap()?.dirtyCount, n2.no_of_chunks);
  c.heal(1);
  c.until('the client knows why it waits', () => c.client.status().recovery_blocked !== null);
  c.run(20_000);
  // Nothing was promoted: the stale member 1 would have served older data.
  assert.deepEqual([...c.client.legs()].map((l) => l.state), ['RECONNECTING', 'RECONNECTING']);
  assert.equal(c.node(1).pool.state, 'NO_IO');
  assert.equal(c.node(2).pool.state, 'NO_IO');
  assert.match(c.client.status().recovery_blocked ?? '', /member 2, the last member in service, lost its maps/);
  assert.equal(c.client.status().legs.find((l) => l.member_id === 2)?.maps_lost, true);
  // The node refuses a plain enable by itself too (an older client, a wrong operator step).
  assert.match(c.node(2).pool.enable(true) ?? '', /maps were lost .*trust/);
  assert.equal(c.node(2).pool.state, 'NO_IO');
  // A restart before the operator acts does not turn the loss into clean maps.
  c.crashNode(2, 'process');
  c.restartNode(2);
  assert.match(c.node(2).pool.maps_lost ?? '', /earlier start/);
  assert.equal(c.node(2).pool.maps.get(1)?.dirtyCount, c.node(2).pool.no_of_chunks);
  c.until('back and waiting', () => leg(c, 2).state === 'RECONNECTING' && c.client.status().recovery_blocked !== null);
  // trust_data is refused for a member whose maps are intact.
  assert.match(c.call('trust 1', (cb) => c.client.trustData(leg(c, 1), cb))[1] ?? '', /maps are intact/);
  c.must('trust 2', (cb) => c.client.trustData(leg(c, 2), cb));
  c.settle();
  c.assertIdentical(model);
  assert.equal(c.client.status().recovery_blocked, null);
  assert.equal(c.node(2).pool.maps_lost, null);
  assert.deepEqual(c.refused, []);
  c.close();
});

test('Cases 3/4: a member with lost maps and the best map version is not passed over for a member with maps (it may hold writes they missed); trust_data decides', () => {
  const c = new RecoveryCluster(2);
  const model = Buffer.alloc(c.size);
  lastMemberLosesItsMaps(c, model);
  // The client crashes too: a new client knows nothing of the last authoritative member.
  c.crashClient();
  c.restartNode(2, false);
  assert.notEqual(c.node(2).pool.maps_lost, null);
  c.heal(1);
  c.restartClient([1, 2]);
  c.until('the client knows why it waits', () => c.client.status().recovery_blocked !== null);
  c.run(20_000);
  assert.ok([...c.client.legs()].every((l) => l.state !== 'NORMAL'), 'member 1 (stale, with maps) is not made the base');
  assert.match(c.client.status().recovery_blocked ?? '', /member 2 lost its maps at map version \d+, not below the best member with maps \(member 1/);
  c.must('trust 2', (cb) => c.client.trustData(leg(c, 2), cb));
  c.settle();
  c.assertIdentical(model);
  assert.deepEqual(c.refused, []);
  c.close();
});

test('a member with lost maps that comes back while another serves gets maps from it and resyncs everything; no operator step', () => {
  const c = new RecoveryCluster(2);
  const model = Buffer.alloc(c.size);
  c.writeStream(10, model);
  c.settle();
  c.crashNode(2, 'drop');
  c.writeStream(10, model, 2);
  damageMaps(c, c.node(2));
  c.restartNode(2);
  assert.notEqual(c.node(2).pool.maps_lost, null);
  c.settle();
  c.assertIdentical(model);
  assert.equal(c.node(2).pool.maps_lost, null, 'the spread replaced the lost maps');
  assert.equal(c.client.status().recovery_blocked, null);
  c.close();
});
