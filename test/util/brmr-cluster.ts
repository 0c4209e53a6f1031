// A BRMR pool for tests and the NBD integration, on the real clock: N storage nodes, each a
// server pool with a store made by its StoreManager (files in a temp dir, or memory), legs
// wired in-process (DirectChannel, which a test can cut), sync pools between the nodes, and
// a device mapped on the client pool. Returns the BlockDevice and a way to read each store's
// data area (store bytes 4096 ..), to compare members byte for byte.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ClientPool, type Leg, type LegChannel } from '../../src/rmr/client/client-pool.js';
import { RmrServerNode } from '../../src/rmr/server/server-node.js';
import { TransportLeg } from '../../src/rmr/client/transport-leg.js';
import { SyncPoolSource } from '../../src/rmr/server/sync-pool.js';
import { followLinkEvents, linkMark, type LinkMark } from '../../src/rmr/client/leg-links.js';
import { ClientSession } from '../../src/transport/client-session.js';
import { TransportServer } from '../../src/transport/server.js';
import { NodeNet } from '../../src/node/net.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { BackgroundSync } from '../../src/rmr/server/background-sync.js';
import { Ticker } from '../../src/util/ticker.js';
import { groupId } from '../../src/util/jhash.js';
import { NodeClock, NodeRandom } from '../../src/node/ports.js';
import { MemoryLogger } from './memory-logger.js';
import { memOpener, type MemDevice } from '../../src/brmr/server/backend.js';
import { nodeFileOpener } from '../../src/node/file-backend.js';
import { StoreManager, type StoreManagerEvent } from '../../src/brmr/server/store-manager.js';
import { DATA_OFFSET } from '../../src/brmr/server/header.js';
import { mapDevice, type BrmrDevice } from '../../src/brmr/client/device.js';
import { DirectChannel, PeerSource } from './inproc-cluster.js';
import { waitFor } from './wait.js';

export interface BrmrClusterOptions {
  nodes?: number;
  backend?: 'file' | 'memory';
  pool?: string;
  size_bytes?: number;
  chunk_size?: number;
  queue_depth?: number;
  max_waiting?: number;
  /** Map the device (default true). */
  map?: boolean;
  /**
   * How legs and sync pools reach the nodes: in-process channels a test can cut (default),
   * or the real transport over loopback TCP (cut/heal are not available then).
   */
  transport?: 'direct' | 'loopback';
}

export interface BrmrNode {
  member_id: number;
  pool: ServerPool;
  manager: StoreManager;
  /** The in-process channel of the client's leg (null over loopback). */
  channel: DirectChannel | null;
  path: string;
  events: StoreManagerEvent[];
  sync: BackgroundSync;
}

export interface BrmrCluster {
  clock: NodeClock;
  client: ClientPool;
  legs: Leg[];
  nodes: BrmrNode[];
  /** Null when `map: false`. */
  device: BrmrDevice | null;
  dir: string;
  log: MemoryLogger;
  size_bytes: number;
  mem_devices: Map<string, MemDevice>;
  /** Store `i`'s data area, read from the file or memory device itself. */
  dataArea(i: number): Buffer;
  /**
   * Cuts the client's link to node `i`. The node notices as a storage node does when its
   * compute client's session loses its last path (RmrServerNode.clientGone): it leaves IO
   * service, so a peer's map check cannot mistake it for a clean member.
   */
  cut(i: number): void;
  heal(i: number): void;
  /** Every node's own map is clean (the initial sync is over). */
  waitSynced(timeout_ms?: number): Promise<void>;
  map(): Promise<[number, BrmrDevice | null, string | null]>;
  close(): Promise<void>;
}

export async function makeBrmrCluster(o: BrmrClusterOptions = {}): Promise<BrmrCluster> {
  const n = o.nodes ?? 2;
  const pool_name = o.pool ?? 'brmr1';
  const chunk_size = o.chunk_size ?? 64 * 1024;
  const size = o.size_bytes ?? 32 * chunk_size;
  const backend = o.backend ?? 'file';
  const loopback = o.transport === 'loopback';
  // Ref'd timers: with memory stores nothing else keeps the event loop alive while IO is in
  // flight. close() stops every periodic timer so the process can exit.
  const clock = new NodeClock();
  const random = new NodeRandom();
  const gid = groupId(pool_name);
  const log = new MemoryLogger();
  const dir = mkdtempSync(join(tmpdir(), 'brmr-'));
  const mem_devices = new Map<string, MemDevice>();
  const tickers: Ticker[] = [];
  const nodes: BrmrNode[] = [];
  for (let i = 0; i < n; i++) {
    const member_id = i + 1;
    const pool = new ServerPool({ pool_name, group_id: gid, member_id, chunk_size }, () => undefined);
    const events: StoreManagerEvent[] = [];
    const manager = new StoreManager({
      open: backend === 'file' ? nodeFileOpener : memOpener(mem_devices),
      random,
      wall_ms: () => Date.now(),
      serverPool: (name) => (name === pool_name ? pool : undefined),
      log,
      emit: (ev) => events.push(ev),
    });
    const path = join(dir, `store${member_id}.img`);
    const [s, , why] = await new Promise<[number, unknown, string | null]>((resolve) => manager.createStore({ pool: pool_name, device: path, mapped_size: size }, (st, store, r) => resolve([st, store, r])));
    if (s !== 0) throw new Error(`create_store on node ${member_id}: ${why ?? s}`);
    nodes.push({ member_id, pool, manager, channel: loopback ? null : new DirectChannel(clock, pool), path, events, sync: null as unknown as BackgroundSync });
  }
  const closers: (() => Promise<void> | void)[] = [];
  const ports = () => ({ net: new NodeNet(), clock, random });
  const fast = { heartbeat_interval_ms: 100, heartbeat_timeout_ms: 1000, reconnect_delay_ms: 20, reconnect_max_delay_ms: 200 };
  const secret = randomBytes(32);
  const addr = new Map<BrmrNode, number>();
  const session = async (name: string, port: number): Promise<ClientSession> => {
    const s = new ClientSession({ session_name: name, addresses: [{ host: '127.0.0.1', port }], secret, ...fast }, ports());
    closers.push(() => s.close());
    await s.open();
    return s;
  };
  if (loopback) {
    for (const node of nodes) {
      const rmr = new RmrServerNode(log);
      rmr.addPool(node.pool);
      const server = new TransportServer({ secret, ...fast }, ports(), rmr);
      addr.set(node, (await server.listen({ host: '127.0.0.1', port: 0 })).port);
      closers.push(() => server.close());
    }
  }
  // Sync pools: each node reads from the others (directly, or through its own sessions).
  for (const [i, node] of nodes.entries()) {
    if (loopback) {
      const sp = new ClientPool({ pool_name, group_id: gid, chunk_size, mapped_size: size, max_io_size: 1 << 20, sync: true }, () => clock.now(), () => undefined);
      const src = new SyncPoolSource(sp);
      for (const peer of nodes) {
        if (peer === node) continue;
        const s = await session(`node${node.member_id}@node${peer.member_id}`, addr.get(peer) as number);
        const [st, why] = await new Promise<[number, string | null]>((resolve) => src.addPeer(s.name, new TransportLeg(s, gid, pool_name, chunk_size, true), (x, r) => resolve([x, r])));
        if (st !== 0) throw new Error(`sync pool of node ${node.member_id}: ${why ?? st}`);
      }
      node.pool.addClt(src);
    } else {
      const cut = (x: BrmrNode | undefined): boolean => x?.channel?.cut === true;
      node.pool.sync_source = new PeerSource(clock, node.pool, () => nodes.map((x) => x.pool), (p) => !cut(nodes[i]) && !cut(nodes.find((x) => x.pool === p)));
    }
    node.sync = new BackgroundSync(node.pool, clock, { tick_ms: 5, max_bytes_per_s: 1e12, min_bytes_per_s: 1e9 }, () => undefined);
    tickers.push(new Ticker(clock, 100, () => node.pool.checkPeerMaps()));
  }
  const client = new ClientPool({ pool_name, group_id: gid, chunk_size, mapped_size: size, max_io_size: 1 << 20, map_clean_delay_ms: 0 }, () => clock.now(), () => undefined);
  tickers.push(new Ticker(clock, 50, () => client.recoveryTick()));
  const legs: Leg[] = [];
  for (const node of nodes) {
    let ch: LegChannel;
    let sess: ClientSession | null = null;
    let mark: LinkMark | null = null;
    if (node.channel !== null) ch = node.channel;
    else {
      sess = await session(`client@node${node.member_id}`, addr.get(node) as number);
      mark = linkMark(sess);
      ch = new TransportLeg(sess, gid, pool_name, chunk_size, false);
    }
    const [s, leg, why] = await new Promise<[number, Leg | null, string | null]>((resolve) => client.addSess(`client@node${node.member_id}`, ch, 'create', 128, (st, l, r) => resolve([st, l, r])));
    if (s !== 0 || leg === null) throw new Error(`add_sess node ${node.member_id}: ${why ?? s}`);
    if (sess !== null && mark !== null) closers.push(followLinkEvents(sess, client, leg, log, mark));
    const [es, ewhy] = await new Promise<[number, string | null]>((resolve) => client.enableLeg(leg, (st, r) => resolve([st, r])));
    if (es !== 0) throw new Error(`enable node ${node.member_id}: ${ewhy ?? es}`);
    legs.push(leg);
  }
  const cluster: BrmrCluster = {
    clock,
    client,
    legs,
    nodes,
    device: null,
    dir,
    log,
    size_bytes: size,
    mem_devices,
    dataArea: (i) => {
      const node = nodes[i] as BrmrNode;
      if (backend === 'memory') return Buffer.from((mem_devices.get(node.path) as MemDevice).bytes.subarray(DATA_OFFSET, DATA_OFFSET + size));
      return readFileSync(node.path).subarray(DATA_OFFSET, DATA_OFFSET + size);
    },
    cut: (i) => {
      const node = nodes[i] as BrmrNode;
      if (node.channel === null) throw new Error('cut() needs transport: direct');
      node.channel.cut = true;
      if (node.pool.state === 'NORMAL') node.pool.sm.change('NO_IO', 'client session lost (test cut)');
    },
    heal: (i) => {
      const ch = (nodes[i] as BrmrNode).channel;
      if (ch === null) throw new Error('heal() needs transport: direct');
      ch.cut = false;
    },
    waitSynced: (timeout_ms = 10_000) => waitFor('every member clean', () => nodes.every((x) => x.pool.ownMap()?.isEmpty() === true), timeout_ms),
    map: () =>
      new Promise((resolve) =>
        mapDevice({ pool: client, size_sectors: size / 512, queue_depth: o.queue_depth, max_waiting: o.max_waiting, log }, (s, dev, why) => {
          if (dev !== null) cluster.device = dev;
          resolve([s, dev, why]);
        }),
      ),
    close: async () => {
      for (const t of tickers) t.stop();
      for (const node of nodes) node.sync.close();
      for (const c of closers.reverse()) await c();
      await waitFor('timers of the cluster done', () => clock.pendingTimers === 0, 5000);
      for (const node of nodes) {
        if (node.manager.store(pool_name) !== undefined) await new Promise((resolve) => node.manager.removeStore(pool_name, resolve));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  if (o.map ?? true) {
    const [s, , why] = await cluster.map();
    if (s !== 0) throw new Error(`map_device: ${why ?? s}`);
  }
  return cluster;
}

/** Promise forms of the BlockDevice calls, for tests. */
export const dev = {
  read: (d: BrmrDevice, off: number, len: number) => new Promise<[number, Buffer | null]>((r) => d.read(off, len, (s, b) => r([s, b]))),
  write: (d: BrmrDevice, off: number, data: Buffer, fua = false) => new Promise<number>((r) => d.write(off, data, { fua }, r)),
  trim: (d: BrmrDevice, off: number, len: number, fua = false) => new Promise<number>((r) => d.trim(off, len, { fua }, r)),
  zero: (d: BrmrDevice, off: number, len: number, fua = false) => new Promise<number>((r) => d.writeZeroes(off, len, { fua, no_hole: false, fast_zero: false }, r)),
  flush: (d: BrmrDevice) => new Promise<number>((r) => d.flush(r)),
};
