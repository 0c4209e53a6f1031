// Issue 19 item 6: a pool is known by its UUID, not its name. A member, a client or a store
// of another pool of the same name is refused at every entry point with an error naming both
// UUIDs; before, the client kept the first UUID it saw and took any member, a node took any
// client's UUID over its own, and a server pool took any store of its name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GatedDisk, RecoveryCluster } from '../util/recovery-cluster.js';
import { PeerSource } from '../util/inproc-cluster.js';
import { Errno } from '../../src/util/errno.js';

const A = Buffer.alloc(16, 0xa1);
const B = Buffer.alloc(16, 0xb2);
/** An error that names both UUIDs (in either order). */
const BOTH = /a1a1a1a1-a1a1-.*b2b2b2b2-b2b2-|b2b2b2b2-b2b2-.*a1a1a1a1-a1a1-/;

test('assemble: a member whose pool metadata carries another pool UUID is refused, naming both; the pool goes on with its own member', () => {
  const c = new RecoveryCluster(2, { pool_uuids: { 1: A, 2: B } });
  const model = Buffer.alloc(c.size);
  c.writeStream(4, model);
  c.settle();
  assert.equal(c.flush(), 0);
  assert.ok(c.node(1).pool.currentPoolMd().header.pool_uuid.equals(A), "pool_md takes the store header's UUID");
  c.crashClient();
  c.newClient();
  const [s1, why1] = c.tryJoin(c.node(1), 'assemble');
  assert.equal(s1, 0, why1 ?? '');
  assert.ok(c.client.pool_uuid.equals(A), 'the client learned the pool UUID from its first member');
  const [s2, why2] = c.tryJoin(c.node(2), 'assemble');
  assert.equal(s2, Errno.EINVAL, 'member 2 holds another pool of the same name');
  assert.match(why2 ?? '', BOTH);
  assert.equal(c.client.leg(2), undefined, 'no leg to it');
  c.close();
});

test('SEND_MD_BUF: a node refuses the pool metadata of a client of another pool UUID and keeps its own', () => {
  const c = new RecoveryCluster(2, { pool_uuids: { 1: A, 2: A } });
  c.settle();
  const pool = c.node(1).pool;
  const md = pool.currentPoolMd();
  const theirs = { ...md, header: { ...md.header, pool_uuid: Buffer.from(B) } };
  const err = pool.adoptClientMd(theirs);
  assert.match(err ?? '(accepted)', BOTH);
  assert.ok(pool.currentPoolMd().header.pool_uuid.equals(A), 'the node keeps its UUID');
  // A client that has not learned the UUID yet (zeroes) is taken, and the node keeps its own.
  assert.equal(pool.adoptClientMd({ ...md, header: { ...md.header, pool_uuid: Buffer.alloc(16) } }), null);
  assert.ok(pool.currentPoolMd().header.pool_uuid.equals(A));
  c.close();
});

test('add_store: a server pool that served pool UUID A refuses a store of pool UUID B of the same name, naming both', () => {
  const c = new RecoveryCluster(2, { pool_uuids: { 1: A, 2: A } });
  const other = new RecoveryCluster(2, { pool_uuids: { 1: B, 2: B } });
  c.settle();
  other.settle();
  const n = c.node(1);
  c.crashClient();
  // remove_store of member 1's disk; the disk of the other pool's member 1 is added instead.
  let st = 1;
  n.pool.persistMetadata((s) => (st = s));
  c.until('maps persisted', () => st !== 1);
  assert.equal(n.pool.unregister('remove_store'), null);
  const o = other.node(1);
  const err = n.pool.register({ block: new GatedDisk(o.data), meta: new GatedDisk(o.meta), meta_base: 0, ioAllowed: () => true, poolUuid: () => B }, 'add', c.size);
  assert.match(err ?? '(accepted)', BOTH);
  assert.equal(n.pool.hasStore, false);
  c.close();
  other.close();
});

test("add_clt's GET_PARAMS check: a peer of another size or pool UUID is named; the pool's own peers pass", () => {
  const c = new RecoveryCluster(2, { pool_uuids: { 1: A, 2: A } });
  const bigger = new RecoveryCluster(2, { chunks: 64, pool_uuids: { 1: A, 2: A } });
  const foreign = new RecoveryCluster(2, { pool_uuids: { 1: B, 2: B } });
  c.settle();
  const pool = c.node(1).pool;
  const check = (): [string | null, number] => {
    let got: [string | null, number] | null = null;
    pool.checkPeers((m, n) => (got = [m, n]));
    c.until('peers checked', () => got !== null);
    return got as unknown as [string | null, number];
  };
  assert.deepEqual(check(), [null, 1], "the pool's own peer passes");
  for (const [other, want] of [[bigger, /peer 2 holds 1048576 bytes, this node 524288/], [foreign, BOTH]] as const) {
    pool.sync_source = new PeerSource(c.clock, pool, () => [pool, other.node(2).pool], () => true);
    const [m, n] = check();
    assert.equal(n, 1);
    assert.match(m ?? '(passed)', want);
  }
  c.close();
  bigger.close();
  foreign.close();
});
