// A pool of two storage nodes and a compute client over the real transport on loopback:
// replicated writes and reads; the client's link to one node is cut during writes (writes
// keep succeeding, the misses are recorded on the survivor and in the client); the link
// heals, the leg rejoins by itself, gets the survivor's maps peer to peer, and the
// background sync pulls the missed chunks from the peer until both disks are identical.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ClientSession } from '../../src/transport/client-session.js';
import { TransportServer } from '../../src/transport/server.js';
import { NodeNet } from '../../src/transport/node-net.js';
import { NodeClock, NodeRandom } from '../../src/util/node-ports.js';
import { ClientPool, type Leg } from '../../src/rmr/client-pool.js';
import { ServerPool } from '../../src/rmr/server-pool.js';
import { RmrServerNode } from '../../src/rmr/server-node.js';
import { TransportLeg } from '../../src/rmr/transport-leg.js';
import { SyncPoolSource } from '../../src/rmr/sync-pool.js';
import { BackgroundSync } from '../../src/rmr/background-sync.js';
import { followLinkEvents } from '../../src/rmr/leg-links.js';
import { groupId } from '../../src/util/jhash.js';
import { MemoryLogger } from '../../src/util/ports.js';
import { MemDisk } from '../../src/sim/mem-disk.js';
import { TcpProxy } from '../util/tcp-proxy.js';
import { waitFor } from '../util/wait.js';

const CHUNK = 64 * 1024;
const SIZE = 32 * CHUNK;
const SECRET = randomBytes(32);
const POOL = 'pool1';
const GID = groupId(POOL);

function ports() {
  return { net: new NodeNet(), clock: new NodeClock({ unref: true }), random: new NodeRandom() };
}

const fast = { heartbeat_interval_ms: 100, heartbeat_timeout_ms: 500, reconnect_delay_ms: 20, reconnect_max_delay_ms: 100 };

test('two storage nodes over loopback: cut, keep writing, heal, rejoin, spread, resync to identical disks', async (t) => {
  const closers: (() => unknown)[] = [];
  t.after(async () => {
    for (const c of closers.reverse()) await c();
  });
  const clock = new NodeClock({ unref: true });
  // Storage nodes.
  const nodes = [];
  for (const member of [1, 2]) {
    const data = new MemDisk(SIZE, clock);
    const meta = new MemDisk(1 << 20, clock);
    const pool = new ServerPool({ pool_name: POOL, group_id: GID, member_id: member, chunk_size: CHUNK }, () => undefined);
    assert.equal(pool.register({ block: data, meta, meta_base: 0, ioAllowed: () => true }, 'create', SIZE), null);
    const rmr = new RmrServerNode(new MemoryLogger());
    rmr.addPool(pool);
    const server = new TransportServer({ secret: SECRET, ...fast }, ports(), rmr);
    const addr = await server.listen({ host: '127.0.0.1', port: 0 });
    closers.push(() => server.close());
    nodes.push({ member, data, pool, server, port: addr.port });
  }
  const [n1, n2] = nodes as [(typeof nodes)[number], (typeof nodes)[number]];
  // The client reaches node 2 through a proxy the test can cut.
  const proxy = await new TcpProxy({ host: '127.0.0.1', port: n2.port }).start();
  closers.push(() => proxy.close());
  const client = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20 }, () => clock.now(), () => undefined);
  const log = new MemoryLogger();
  const legs: Leg[] = [];
  for (const [n, port] of [
    [n1, n1.port],
    [n2, proxy.port],
  ] as const) {
    const session = new ClientSession({ session_name: `compute@node${n.member}`, addresses: [{ host: '127.0.0.1', port }], secret: SECRET, ...fast }, ports());
    closers.push(() => session.close());
    await session.open();
    const ch = new TransportLeg(session, GID, POOL, CHUNK, false);
    // JOIN (create), as add_sess mode=create does, then enable.
    const joined = await new Promise<number>((resolve) =>
      ch.command({ kind: 'join', create: true, dirty: false, queue_depth: 128, members: legs.map((l) => ({ id: l.member_id, dirty: false })) }, (s, v) => resolve(s === 0 ? v : s)),
    );
    assert.equal(joined, n.member, 'the join answers with the member id');
    const leg = client.addLeg(session.name, joined, ch);
    followLinkEvents(session, client, leg, log);
    const enabled = await new Promise<number>((resolve) => ch.command({ kind: 'enable_pool', enable: true }, (s) => resolve(s)));
    assert.equal(enabled, 0);
    assert.equal(client.setLegState(leg, 'NORMAL', 'enabled'), null);
    legs.push(leg);
  }
  // Sync pools: each node reads from the other directly.
  const syncs: BackgroundSync[] = [];
  for (const [self, peer] of [
    [n1, n2],
    [n2, n1],
  ] as const) {
    const sp = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, sync: true }, () => clock.now(), () => undefined);
    const session = new ClientSession({ session_name: `node${self.member}@node${peer.member}`, addresses: [{ host: '127.0.0.1', port: peer.port }], secret: SECRET, ...fast }, ports());
    closers.push(() => session.close());
    await session.open();
    const src = new SyncPoolSource(sp);
    src.addPeer(peer.member, session.name, new TransportLeg(session, GID, POOL, CHUNK, true));
    self.pool.sync_source = src;
    const bs = new BackgroundSync(self.pool, clock, { tick_ms: 10 }, () => undefined);
    closers.push(() => bs.close());
    syncs.push(bs);
  }

  assert.equal(client.open(), 0);
  const model = Buffer.alloc(SIZE);
  const io = (op: 'read' | 'write', off: number, len: number, data: Buffer | null) =>
    new Promise<[number, Buffer | null]>((resolve) => client.submit(op, off, len, data, {}, (s, d) => resolve([s, d])));
  let seed = 1;
  const writeSome = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const len = 4096 * (1 + ((seed * 7) % 40));
      const off = 4096 * ((seed * 131) % ((SIZE - len) / 4096));
      const data = Buffer.alloc(len, seed & 0xff);
      seed++;
      const [s] = await io('write', off, len, data);
      assert.equal(s, 0, `write at ${off}`);
      data.copy(model, off);
    }
  };
  await writeSome(30);
  for (let off = 0; off < SIZE; off += 256 * 1024) {
    const [s, d] = await io('read', off, 256 * 1024, null);
    assert.equal(s, 0);
    assert.deepEqual(d, model.subarray(off, off + 256 * 1024));
  }
  assert.ok(n1.data.contents().equals(model) && n2.data.contents().equals(model));

  // Cut the client's link to node 2 and keep writing.
  proxy.refuse(true);
  proxy.cut();
  await waitFor('leg 2 FAILED', () => legs[1]?.state === 'FAILED');
  await waitFor('node 2 out of IO service', () => n2.pool.state === 'NO_IO');
  await writeSome(30);
  const missed = n1.pool.maps.get(2)?.dirtyCount ?? 0;
  assert.ok(missed > 0, 'node 1 recorded what node 2 missed');
  assert.equal(client.maps.get(2)?.dirtyCount, missed, 'and so did the client');
  assert.ok(!n2.data.contents().equals(model), 'node 2 is stale');

  // Heal: the session reconnects, the leg rejoins, gets node 1's maps, node 2 resyncs.
  proxy.refuse(false);
  await waitFor('leg 2 NORMAL again', () => legs[1]?.state === 'NORMAL', 15_000);
  assert.equal(n2.pool.state, 'NORMAL');
  await waitFor('node 2 resynced', () => n2.pool.ownMap()?.isEmpty() === true, 15_000);
  await waitFor('node 1 heard every MAP_CLEAR', () => n1.pool.maps.get(2)?.isEmpty() === true, 5000);
  assert.ok(n2.data.contents().equals(model), 'node 2 byte-identical to the model');
  assert.ok(n1.data.contents().equals(model));
  await writeSome(5);
  assert.ok(n1.data.contents().equals(n2.data.contents()), 'both legs take writes again');
});
