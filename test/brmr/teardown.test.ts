// The documented teardown orders (reference §9.10) and re-adding stores after a clean
// shutdown (§9.9), with BRMR stores (memory backend, shared across "restarts") on the real
// clock: disassemble the whole pool and assemble it again in new processes (Cases 3/4), data
// intact; delete one leg permanently; the UUID checks that refuse a store of another pool or a
// re-created empty store presented as an old one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientPool, type Leg } from '../../src/rmr/client/client-pool.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { BackgroundSync } from '../../src/rmr/server/background-sync.js';
import { Ticker } from '../../src/util/ticker.js';
import { memOpener, type MemDevice } from '../../src/brmr/server/backend.js';
import { StoreManager } from '../../src/brmr/server/store-manager.js';
import { DATA_OFFSET } from '../../src/brmr/server/header.js';
import { mapDevice, type BrmrDevice } from '../../src/brmr/client/device.js';
import { NodeClock, NodeRandom } from '../../src/node/ports.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { groupId } from '../../src/util/jhash.js';
import { DirectChannel, PeerSource } from '../util/inproc-cluster.js';
import { waitFor } from '../util/wait.js';
import { dev } from '../util/brmr-cluster.js';
import { Errno } from '../../src/util/errno.js';

const CHUNK = 64 * 1024;
const SIZE = 16 * CHUNK;
const POOL = 'tear1';

interface Node {
  member_id: number;
  pool: ServerPool;
  manager: StoreManager;
  sync: BackgroundSync;
  ticker: Ticker;
}

/** One "world": processes for storage nodes and a client, over shared memory disks. */
class World {
  readonly clock = new NodeClock();
  readonly random = new NodeRandom();
  readonly log = new MemoryLogger();
  readonly devices = new Map<string, MemDevice>();
  nodes: Node[] = [];
  client: ClientPool | null = null;
  private tickers: Ticker[] = [];

  /** rmr-server join_pool and brmr-server on a node (a new process each time). */
  startNodes(n: number): void {
    this.nodes = [];
    for (let m = 1; m <= n; m++) {
      const pool = new ServerPool({ pool_name: POOL, group_id: groupId(POOL), member_id: m, chunk_size: CHUNK }, () => undefined);
      const manager = new StoreManager({ open: memOpener(this.devices), random: this.random, wall_ms: () => Date.now(), serverPool: (name) => (name === POOL ? pool : undefined), log: this.log });
      const node: Node = { member_id: m, pool, manager, sync: null as unknown as BackgroundSync, ticker: null as unknown as Ticker };
      this.nodes.push(node);
    }
    for (const node of this.nodes) {
      node.pool.sync_source = new PeerSource(this.clock, node.pool, () => this.nodes.map((x) => x.pool), () => true);
      node.sync = new BackgroundSync(node.pool, this.clock, { tick_ms: 5, max_bytes_per_s: 1e12, min_bytes_per_s: 1e9, retry_ms: 20 }, () => undefined);
      node.ticker = new Ticker(this.clock, 50, () => {
        node.pool.checkPeerMaps();
        if (node.pool.hasStore) node.pool.persistMetadata(() => undefined);
      });
    }
  }

  stopNodes(): void {
    for (const n of this.nodes) {
      n.sync.close();
      n.ticker.stop();
    }
  }

  newClient(): ClientPool {
    for (const t of this.tickers) t.stop();
    const c = new ClientPool({ pool_name: POOL, group_id: groupId(POOL), chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, map_clean_delay_ms: 0 }, () => this.clock.now(), () => undefined);
    this.tickers = [new Ticker(this.clock, 50, () => c.recoveryTick())];
    this.client = c;
    return c;
  }

  stopClient(): void {
    for (const t of this.tickers) t.stop();
    this.tickers = [];
  }

  node(m: number): Node {
    return this.nodes[m - 1] as Node;
  }

  data(m: number): Buffer {
    return Buffer.from((this.devices.get(`disk${m}`) as MemDevice).bytes.subarray(DATA_OFFSET, DATA_OFFSET + SIZE));
  }
}

const p = <T extends unknown[]>(fn: (cb: (...a: T) => void) => void): Promise<T> => new Promise((r) => fn((...a) => r(a)));

async function addSess(c: ClientPool, n: Node, mode: 'create' | 'assemble'): Promise<Leg> {
  const [s, leg, why] = await p<[number, Leg | null, string | null]>((cb) => c.addSess(`client@node${n.member_id}`, new DirectChannel(new NodeClock(), n.pool), mode, 128, cb));
  assert.equal(s, 0, why ?? '');
  return leg as Leg;
}

async function map(c: ClientPool): Promise<BrmrDevice> {
  const [s, d, why] = await p<[number, BrmrDevice | null, string | null]>((cb) => mapDevice({ pool: c, size_sectors: SIZE / 512 }, cb));
  assert.equal(s, 0, why ?? '');
  return d as BrmrDevice;
}

async function bringUp(w: World, rf: number): Promise<{ device: BrmrDevice; uuids: Buffer[] }> {
  w.startNodes(rf);
  const uuids: Buffer[] = [];
  for (const n of w.nodes) {
    const [s, st, why] = await p<[number, { header: { store_uuid: Buffer } } | null, string | null]>((cb) => n.manager.createStore({ pool: POOL, device: `disk${n.member_id}`, mapped_size: SIZE }, cb));
    assert.equal(s, 0, why ?? '');
    uuids.push(Buffer.from((st as { header: { store_uuid: Buffer } }).header.store_uuid));
  }
  const c = w.newClient();
  for (const n of w.nodes) {
    const leg = await addSess(c, n, 'create');
    const [s, why] = await p<[number, string | null]>((cb) => c.enableLeg(leg, cb));
    assert.equal(s, 0, why ?? '');
  }
  await waitFor('initial sync', () => w.nodes.every((n) => n.pool.ownMap()?.isEmpty() === true));
  return { device: await map(c), uuids };
}

function pattern(seed: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 13 + i * 5 + (i >> 9)) & 0xff;
  return b;
}

async function writeSome(d: BrmrDevice, model: Buffer, seed: number): Promise<void> {
  for (let i = 0; i < 12; i++) {
    const len = 4096 * (1 + ((seed + i * 7) % 20));
    const off = 4096 * ((seed * 31 + i * 97) % ((SIZE - len) / 4096));
    const data = pattern(seed * 100 + i, len);
    assert.equal(await dev.write(d, off, data, i % 4 === 0), 0);
    data.copy(model, off);
  }
  assert.equal(await dev.flush(d), 0);
}

for (const rf of [2, 3]) {
  test(`RF=${rf}: disassemble the whole pool (unmap, del_sess disassemble, remove_store), restart everything, add_store with UUID checks, assemble: data intact`, async () => {
    const w = new World();
    const model = Buffer.alloc(SIZE);
    const { device, uuids } = await bringUp(w, rf);
    await writeSome(device, model, 1);
    // §9.10 "disassemble the whole pool": unmap; (sync sessions: in-process here); del_sess
    // disassemble for each leg; remove_store on every node; the client leaves.
    assert.equal(await p<[number]>((cb) => device.unmap(cb)).then((a) => a[0]), 0);
    const c = w.client as ClientPool;
    for (const n of w.nodes) {
      const [s, why] = await p<[number, string | null]>((cb) => c.delSess(n.member_id, 'disassemble', cb));
      assert.equal(s, 0, why ?? '');
    }
    assert.equal([...c.legs()].length, 0);
    for (const n of w.nodes) assert.deepEqual(await p<[number, string | null]>((cb) => n.manager.removeStore(POOL, cb)), [0, null]);
    w.stopClient();
    w.stopNodes();
    // New processes on the same disks. The UUID checks first.
    w.startNodes(rf);
    const n1 = w.node(1);
    const [bad, , bad_why] = await p<[number, unknown, string | null]>((cb) => n1.manager.addStore({ pool: POOL, device: 'disk1', store_uuid: uuids[1] }, cb));
    assert.notEqual(bad, 0);
    assert.match(bad_why ?? '', /store UUID differs/);
    const [other, , other_why] = await p<[number, unknown, string | null]>((cb) => n1.manager.addStore({ pool: 'not-this-pool', device: 'disk1' }, cb));
    assert.notEqual(other, 0);
    assert.match(other_why ?? '', /no rmr-server pool|belongs to pool/);
    for (const n of w.nodes) {
      const [s, , why] = await p<[number, unknown, string | null]>((cb) => n.manager.addStore({ pool: POOL, device: `disk${n.member_id}`, store_uuid: uuids[n.member_id - 1] }, cb));
      assert.equal(s, 0, why ?? '');
      assert.equal(n.pool.state, 'REGISTERED');
    }
    const c2 = w.newClient();
    for (const n of w.nodes) await addSess(c2, n, 'assemble');
    await waitFor('assembled (Cases 3/4)', () => [...c2.legs()].every((l) => l.state === 'NORMAL') && w.nodes.every((n) => n.pool.state === 'NORMAL'));
    const d2 = await map(c2);
    assert.equal(d2.first_map, false, 're-map of a mapped device');
    const [rs, got] = await dev.read(d2, 0, SIZE);
    assert.equal(rs, 0);
    assert.ok(got?.equals(model), 'the data survived the teardown');
    await waitFor('synced', () => w.nodes.every((n) => n.pool.ownMap()?.isEmpty() === true));
    for (let m = 2; m <= rf; m++) assert.ok(w.data(m).equals(w.data(1)), `member ${m} identical`);
    await p<[number]>((cb) => d2.unmap(cb));
    w.stopClient();
    w.stopNodes();
  });
}

test('RF=3: delete one leg permanently (unmap, del_sess delete, delete_store); the rest serve, their pool_md forgets it; a re-created store is refused as the old one', async () => {
  const w = new World();
  const model = Buffer.alloc(SIZE);
  const { device, uuids } = await bringUp(w, 3);
  await writeSome(device, model, 2);
  assert.equal((await p<[number]>((cb) => device.unmap(cb)))[0], 0);
  const c = w.client as ClientPool;
  const n3 = w.node(3);
  // Issue 19 item 6: delete_store of a live member (client joined, peers counting on it) is
  // refused, and the store keeps serving; on main it wiped the disk under the client.
  const [ls, lwhy] = await p<[number, string | null]>((cb) => n3.manager.deleteStore(POOL, cb));
  assert.equal(ls, Errno.EBUSY, 'a live member is not deleted');
  assert.match(lwhy ?? '', /live member .*compute client joined.*del_sess mode=delete/);
  assert.ok(n3.manager.store(POOL) !== undefined && n3.pool.hasStore, 'the store stays');
  const [s, why] = await p<[number, string | null]>((cb) => c.delSess(3, 'delete', cb));
  assert.equal(s, 0, why ?? '');
  assert.deepEqual(await p<[number, string | null]>((cb) => n3.manager.deleteStore(POOL, cb)), [0, null]);
  assert.equal(n3.pool.state, 'EMPTY');
  for (const m of [1, 2]) {
    const pool = w.node(m).pool;
    assert.equal(pool.maps.has(3), false);
    assert.equal(pool.pool_md?.srv_md.some((x) => x.member_id === 3), false, `member ${m}'s pool_md`);
  }
  const d2 = await map(c);
  assert.equal(d2.first_map, false);
  await writeSome(d2, model, 3);
  const [rs, got] = await dev.read(d2, 0, SIZE);
  assert.equal(rs, 0);
  assert.ok(got?.equals(model));
  assert.ok(w.data(1).equals(w.data(2)));
  // The deleted member's disk, re-created empty, is not taken for the old store.
  const [cs] = await p<[number, unknown, string | null]>((cb) => n3.manager.createStore({ pool: POOL, device: 'disk3', mapped_size: SIZE }, cb));
  assert.equal(cs, 0);
  assert.deepEqual(await p<[number, string | null]>((cb) => n3.manager.removeStore(POOL, cb)), [0, null]);
  const [as, , as_why] = await p<[number, unknown, string | null]>((cb) => n3.manager.addStore({ pool: POOL, device: 'disk3', store_uuid: uuids[2] }, cb));
  assert.notEqual(as, 0);
  assert.match(as_why ?? '', /re-created/);
  await p<[number]>((cb) => d2.unmap(cb));
  w.stopClient();
  w.stopNodes();
});
