// A pool of two storage nodes and a compute client over the real transport on loopback:
// replicated writes and reads; the client's link to one node is cut during writes (writes
// keep succeeding, the misses are recorded on the survivor and in the client); the link
// heals, the leg rejoins by itself, gets the survivor's maps peer to peer, and the
// background sync pulls the missed chunks from the peer until both disks are identical.
import { NO_OWNER } from '../../src/rmr/protocol/leg-commands.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ClientSession } from '../../src/transport/client-session.js';
import { TransportServer } from '../../src/transport/server.js';
import { NodeNet } from '../../src/node/net.js';
import { NodeClock, NodeRandom } from '../../src/node/ports.js';
import { ClientPool, type Leg } from '../../src/rmr/client/client-pool.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { RmrServerNode } from '../../src/rmr/server/server-node.js';
import { TransportLeg } from '../../src/rmr/client/transport-leg.js';
import { SyncPoolSource } from '../../src/rmr/server/sync-pool.js';
import { BackgroundSync } from '../../src/rmr/server/background-sync.js';
import { followLinkEvents, linkMark } from '../../src/rmr/client/leg-links.js';
import { groupId } from '../../src/util/jhash.js';
import { MemoryLogger } from '../util/memory-logger.js';
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
    const mark = linkMark(session);
    const ch = new TransportLeg(session, GID, POOL, CHUNK, false);
    // JOIN (create), as add_sess mode=create does, then enable.
    const joined = await new Promise<number>((resolve) =>
      ch.command({ kind: 'join', create: true, dirty: false, queue_depth: 128, members: legs.map((l) => ({ id: l.member_id, dirty: false })), owner: NO_OWNER }, (s, v) => resolve(s === 0 ? v : s)),
    );
    assert.equal(joined, n.member, 'the join answers with the member id');
    const leg = client.addLeg(session.name, joined, ch);
    followLinkEvents(session, client, leg, log, mark);
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
    const [js, why] = await new Promise<[number, string | null]>((resolve) => src.addPeer(session.name, new TransportLeg(session, GID, POOL, CHUNK, true), (st, r) => resolve([st, r])));
    assert.equal(js, 0, why ?? '');
    assert.equal(self.pool.addClt(src), null);
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

test('lifecycle over loopback: add_sess create on three nodes, later members sync from the first; user commands; pool_md; del_sess', async (t) => {
  const closers: (() => unknown)[] = [];
  t.after(async () => {
    for (const c of closers.reverse()) await c();
  });
  const clock = new NodeClock({ unref: true });
  const nodes: { member: number; data: MemDisk; pool: ServerPool; port: number }[] = [];
  for (const member of [1, 2, 3]) {
    const data = new MemDisk(SIZE, clock);
    const meta = new MemDisk(1 << 20, clock);
    // Distinct content per disk: the first member is the reference the others must copy.
    data.write(0, Buffer.alloc(SIZE, member), true, () => undefined);
    const pool = new ServerPool({ pool_name: POOL, group_id: GID, member_id: member, chunk_size: CHUNK }, () => undefined);
    const store = {
      block: data,
      meta,
      meta_base: 0,
      ioAllowed: () => true,
      // A stand-in for BRMR's GET_PARAMS: answers with its member id and size.
      submitCmd: (bytes: Buffer, rsp_len: number, cb: (s: number, r: Buffer | null) => void) =>
        cb(0, Buffer.from(JSON.stringify({ asked: bytes.toString(), member, size: SIZE })).subarray(0, rsp_len)),
    };
    assert.equal(pool.register(store, 'create', SIZE), null);
    const rmr = new RmrServerNode(new MemoryLogger());
    rmr.addPool(pool);
    const server = new TransportServer({ secret: SECRET, ...fast }, ports(), rmr);
    const addr = await server.listen({ host: '127.0.0.1', port: 0 });
    closers.push(() => server.close());
    nodes.push({ member, data, pool, port: addr.port });
  }
  await waitFor('disks prepared', () => nodes.every((n) => n.data.contents(0, 1)[0] === n.member));
  // Sync pools between every pair.
  for (const self of nodes) {
    const sp = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, sync: true }, () => clock.now(), () => undefined);
    const src = new SyncPoolSource(sp);
    for (const peer of nodes) {
      if (peer === self) continue;
      const session = new ClientSession({ session_name: `node${self.member}@node${peer.member}`, addresses: [{ host: '127.0.0.1', port: peer.port }], secret: SECRET, ...fast }, ports());
      closers.push(() => session.close());
      await session.open();
      const [js, why] = await new Promise<[number, string | null]>((resolve) => src.addPeer(session.name, new TransportLeg(session, GID, POOL, CHUNK, true), (st, r) => resolve([st, r])));
      assert.equal(js, 0, why ?? '');
    }
    assert.equal(self.pool.addClt(src), null);
    const bs = new BackgroundSync(self.pool, clock, { tick_ms: 10 }, () => undefined);
    closers.push(() => bs.close());
  }
  const client = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20 }, () => clock.now(), () => undefined);
  const legs: Leg[] = [];
  for (const n of nodes) {
    const session = new ClientSession({ session_name: `compute@node${n.member}`, addresses: [{ host: '127.0.0.1', port: n.port }], secret: SECRET, ...fast }, ports());
    closers.push(() => session.close());
    await session.open();
    const [s, leg, why] = await new Promise<[number, Leg | null, string | null]>((resolve) =>
      client.addSess(session.name, new TransportLeg(session, GID, POOL, CHUNK, false), 'create', 128, (st, l, r) => resolve([st, l, r])),
    );
    assert.equal(s, 0, why ?? '');
    assert.ok(leg !== null);
    assert.equal(leg.state, 'CREATED');
    const [es] = await new Promise<[number, string | null]>((resolve) => client.enableLeg(leg, (st, r) => resolve([st, r])));
    assert.equal(es, 0);
    legs.push(leg);
  }
  // Members 2 and 3 joined after member 1: they start dirty and copy member 1.
  await waitFor('members 2 and 3 synced from member 1', () => nodes.every((n) => n.pool.ownMap()?.isEmpty() === true), 20_000);
  assert.equal(nodes[0]?.pool.stats.chunk_syncs, 0, 'the first member is the reference');
  for (const n of nodes.slice(1)) assert.equal(n.pool.stats.chunk_syncs, SIZE / CHUNK, `member ${n.member} synced every chunk`);
  for (const n of nodes) assert.ok(n.data.contents().equals(Buffer.alloc(SIZE, 1)), `member ${n.member} holds member 1's data`);
  await waitFor('peers learned of the syncs (MAP_CLEAR)', () => nodes[0]?.pool.maps.get(3)?.isEmpty() === true && nodes[0]?.pool.maps.get(2)?.isEmpty() === true);
  assert.equal(client.open(), 0);
  // The upper layer's command channel: one answer per leg.
  const answers = await new Promise<{ member_id: number; status: number; data: Buffer | null }[]>((resolve) => client.commandAll(Buffer.from('GET_PARAMS'), 512, resolve));
  assert.deepEqual(
    answers.map((a) => [a.member_id, a.status, JSON.parse(a.data?.toString() ?? '{}') as unknown]).sort(),
    [1, 2, 3].map((m) => [m, 0, { asked: 'GET_PARAMS', member: m, size: SIZE }]),
  );
  // pool_md: the client pushes its header, a node hands back the whole record.
  const leg1 = legs[0] as Leg;
  const md = nodes[0]?.pool.currentPoolMd();
  assert.ok(md !== undefined);
  const { encodePoolMd, decodePoolMd } = await import('../../src/rmr/protocol/pool-md.js');
  const pushed = { ...md, header: { ...md.header, queue_depth: 77, map_ver: 5 } };
  const [ws] = await new Promise<[number]>((resolve) => leg1.channel.command({ kind: 'md_write', md: encodePoolMd(pushed) }, (s) => resolve([s])));
  assert.equal(ws, 0);
  const got = await new Promise<Buffer | null>((resolve) => leg1.channel.command({ kind: 'md_read' }, (_s, _v, _r, d) => resolve(d ?? null)));
  const back = decodePoolMd(got ?? Buffer.alloc(0));
  if (typeof back === 'string') assert.fail(back);
  assert.equal(back.header.queue_depth, 77);
  // del_sess delete: the member leaves; the others forget its map.
  const [ds] = await new Promise<[number]>((resolve) => client.delSess(3, 'delete', (s) => resolve([s])));
  assert.equal(ds, 0);
  assert.equal(client.leg(3), undefined);
  assert.equal(nodes[0]?.pool.maps.has(3), false);
  assert.equal(nodes[1]?.pool.maps.has(3), false);
  assert.equal(nodes[2]?.pool.state, 'REGISTERED', 'the deleted member waits with its store registered');
  const [ws2] = await new Promise<[number, Buffer | null]>((resolve) => client.submit('write', 0, 4096, Buffer.alloc(4096, 9), {}, (s, d) => resolve([s, d])));
  assert.equal(ws2, 0);
  assert.equal(nodes[2]?.data.contents(0, 1)[0], 1, 'no IO reaches the deleted member');
  // Running it again is harmless.
  assert.deepEqual(await new Promise<[number]>((resolve) => client.delSess(3, 'delete', (s) => resolve([s]))), [0]);
});
