// The simulated world of one seed: the clock, the in-memory network, the seed's random stream
// and the event trace; the storage nodes (disks, server pool, transport server, sync pool,
// background sync) and the compute client (client pool, one session per member), and the
// bring-up that makes them a NORMAL pool. The workload and oracle (workload.ts), crash,
// restart and membership steps (restart.ts) and the fault schedule (nemesis.ts) act on it.
//
// Every statement that draws from `random` or creates an object holding it (MemDisk,
// MemNetwork, ClientSession, TransportServer) runs in the order it always did: a seed's
// history is the order of its draws (docs/simulator.md, "Determinism").

import { ClientSession } from '../transport/client-session.js';
import { TransportServer } from '../transport/server.js';
import { ClientPool, type Leg } from '../rmr/client/client-pool.js';
import { MD_INTENT_OFFSET, ServerPool, type SyncSource } from '../rmr/server/server-pool.js';
import { RmrServerNode } from '../rmr/server/server-node.js';
import { TransportLeg } from '../rmr/client/transport-leg.js';
import { SyncPoolSource } from '../rmr/server/sync-pool.js';
import { BackgroundSync } from '../rmr/server/background-sync.js';
import { followLinkEvents, linkMark } from '../rmr/client/leg-links.js';
import { MD_PAGE } from '../rmr/server/md-slots.js';
import { clientPoolTickers } from '../rmr/client/tickers.js';
import { serverPoolTickers } from '../rmr/server/tickers.js';
import type { Ticker } from '../util/ticker.js';
import type { IoCallback, MetaStore, ReadCallback } from '../rmr/server/io-store.js';
import { groupId } from '../util/jhash.js';
import { nullLogger, type Logger } from '../util/ports.js';
import { SimClock } from './sim-clock.js';
import { SeededRandom } from '../util/seeded-random.js';
import { MemNetwork } from './mem-net.js';
import { MemDisk } from './mem-disk.js';
import { DEFAULT_FAULTS, DEFAULT_SCHEDULE, TRIGGERS, type FaultKind, type Schedule, type SimOptions, type Trigger } from './options.js';

export const POOL = 'simpool';
export const GID = groupId(POOL);
export const BLOCK = 4096;
export const CHUNK = 16 * 1024;
export const BLOCKS = 64; // 256 KiB device: small, so IOs overlap a lot
export const SIZE = BLOCKS * BLOCK;
const SECRET = Buffer.alloc(32, 0x5a);

/** A broken invariant: thrown to end the seed (a violation seen in a callback is recorded, see violate). */
export class Violation extends Error {}

/** The "drop the intent record" mutation: writes to the record's slots never reach the disk. */
class DropIntent implements MetaStore {
  constructor(private readonly m: MemDisk) {}
  get meta_size_bytes(): number {
    return this.m.meta_size_bytes;
  }
  readMeta(o: number, l: number, cb: ReadCallback): void {
    this.m.readMeta(o, l, cb);
  }
  writeMeta(o: number, d: Buffer, cb: IoCallback): void {
    if (o >= MD_INTENT_OFFSET && o < MD_INTENT_OFFSET + 2 * MD_PAGE) return this.m.flush(() => cb(0));
    this.m.writeMeta(o, d, cb);
  }
}

// ---- storage nodes: a node can crash (its objects die with it) and restart from its disks
export interface SimNode {
  member: number;
  host: string;
  data: MemDisk;
  meta: MemDisk;
  pool: ServerPool;
  tickers: Ticker[];
  bsync: BackgroundSync | null;
  source: SyncPoolSource | null;
  /** The sync pool's session to each peer. */
  sync_sessions: Map<number, ClientSession>;
  up: boolean;
  /** Still a member of the pool (false once removed). */
  in_pool: boolean;
  /** Being added by an extension that has not completed (schedule 2). */
  extending?: boolean;
  /** Bumped at each crash, restart and replacement: callbacks of an earlier life are ignored. */
  gen: number;
}

// ---- the compute client: one process at a time; it can crash and a new one assembles
export interface SimClient {
  pool: ClientPool;
  sessions: Map<number, ClientSession>;
  tickers: Ticker[];
  gen: number;
  up: boolean;
}

type Armed = { fire: (subject: number | null) => void }[];

export class SimWorld {
  readonly o: SimOptions;
  readonly seed: number;
  readonly random: SeededRandom;
  readonly clock: SimClock;
  readonly net: MemNetwork;
  readonly trace: string[] = [];
  readonly faults: FaultKind[];
  readonly initial_members: number;
  readonly duration: number;
  readonly transport = { heartbeat_interval_ms: 100, heartbeat_timeout_ms: 500 };
  readonly cleanups: (() => void)[] = [];
  readonly version: Schedule;
  /** Triggered faults waiting for their event (schedule 2), in index order. */
  private readonly armed = new Map<Trigger, Armed>(TRIGGERS.map((e) => [e, []]));
  /** Kinds of which a fault took effect (SimResult.kinds_hit). */
  readonly kinds_hit = new Set<FaultKind>();
  // A violation seen inside a callback is recorded, not thrown: the production code under
  // test would catch it (a transport path treats a throwing handler as an internal error).
  found: string | null = null;
  // A handler that throws is a bug the transport survives by dropping the path: a violation.
  readonly log: Logger = {
    log: (level, msg, fields) => {
      if (level === 'error') this.violate(`internal error: ${msg} ${JSON.stringify(fields ?? {})}`);
    },
  };
  readonly nodes: SimNode[] = [];
  client_gen = 0;
  client: SimClient;

  /** The world before any node: the network's latency and jitter, the swarm's kinds, the member count (drawn in this order). */
  constructor(o: SimOptions) {
    this.o = o;
    this.seed = o.seed >>> 0;
    this.random = new SeededRandom(this.seed);
    this.clock = new SimClock();
    this.net = new MemNetwork(this.clock, this.random, { latency_ms: 0.05 + this.random.float() * 0.2, jitter_ms: this.random.float() * 0.3 });
    let faults: FaultKind[] = [...(o.faults ?? DEFAULT_FAULTS)];
    if (o.swarm === true) faults = faults.filter(() => this.random.float() < 0.6);
    this.faults = faults;
    this.initial_members = 2 + this.random.int(3);
    this.duration = o.duration_ms ?? 3000;
    this.version = o.schedule ?? DEFAULT_SCHEDULE;
    this.client = { pool: null as unknown as ClientPool, sessions: new Map(), tickers: [], gen: 0, up: true };
  }

  t(s: string): void {
    this.trace.push(`${this.clock.now().toFixed(3)} ${s}`);
    if (this.o.echo === true) console.log(this.trace[this.trace.length - 1]);
  }

  /** A triggered fault waits for the next event `on`. */
  arm(on: Trigger, fire: (subject: number | null) => void): void {
    (this.armed.get(on) as Armed).push({ fire });
  }

  /** A protocol event: fires every fault armed for it (about `subject`, a member id). */
  emit(ev: Trigger, subject: number | null): void {
    const waiting = this.armed.get(ev) as Armed;
    if (waiting.length === 0) return;
    this.armed.set(ev, []);
    for (const w of waiting) w.fire(subject);
  }

  violate(msg: string): void {
    if (this.found === null) {
      this.found = msg;
      this.t(`VIOLATION ${msg}`);
    }
  }

  raise(): void {
    if (this.found !== null) throw new Violation(this.found);
  }

  wait(what: string, cond: () => boolean, within_ms: number): void {
    try {
      this.clock.runUntilTrue(what, () => this.found !== null || cond(), this.clock.now() + within_ms);
    } catch (e) {
      throw new Violation(`liveness: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.raise();
  }

  refused(who: string): (reason: string) => void {
    return (reason: string) => this.violate(`transitions: ${who}: ${reason}`);
  }

  members(): SimNode[] {
    return this.nodes.filter((n) => n.in_pool);
  }

  legs(): Leg[] {
    return [...this.client.pool.legs()];
  }

  makePool(n: SimNode, mode: 'create' | 'add' | 'replace'): ServerPool {
    const gen = n.gen;
    const pool = new ServerPool(
      { pool_name: POOL, group_id: GID, member_id: n.member, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8, on_refused: this.refused(`node${n.member}`) },
      (ev) => {
        // The same pool object lives on across a disk replacement (a new gen): its events still count.
        if (ev.kind === 'server_pool_state' && (n.gen === gen || (n.pool === pool && n.up))) this.t(`node${n.member} ${ev.from}>${ev.to} (${ev.reason})`);
      },
    );
    this.registerStore(n, pool, mode);
    return pool;
  }

  registerStore(n: SimNode, pool: ServerPool, mode: 'create' | 'add' | 'replace'): void {
    const meta = this.o.mutation === 'drop_intent' ? new DropIntent(n.meta) : n.meta;
    const err = pool.register({ block: n.data, meta, meta_base: 0, ioAllowed: () => true }, mode, SIZE);
    if (err !== null) throw new Error(err);
  }

  /** The node's transport server and periodic work. Listening on the memory net is synchronous. */
  serve(n: SimNode): Promise<unknown> {
    const rmr = new RmrServerNode(nullLogger);
    rmr.addPool(n.pool);
    const server = new TransportServer({ secret: SECRET, session_linger_ms: 5000, ...this.transport }, { net: this.net.host(n.host), clock: this.clock, random: this.random, log: this.log }, rmr);
    this.startTickers(n);
    return server.listen({ host: n.host, port: 1234 });
  }

  startTickers(n: SimNode): void {
    for (const tk of n.tickers) tk.stop();
    const gen = n.gen;
    n.tickers = serverPoolTickers(this.clock, n.pool, (st) => {
      if (n.gen === gen) this.t(`node${n.member} metadata write failed ${st}`);
    });
  }

  /** A new, empty pair of disks for a node whose store is made afresh (extension retry, replacement). */
  freshDisks(n: SimNode): void {
    n.data = new MemDisk(SIZE, this.clock, this.random);
    n.meta = new MemDisk(1 << 20, this.clock, this.random);
    n.data.faults.latency_ms = 0.2;
    n.data.faults.tear_unit = BLOCK;
    n.meta.faults.latency_ms = 0.1;
  }

  /** The node's background sync (resync of what its own map says it missed). */
  startBackgroundSync(n: SimNode): void {
    const gen = n.gen;
    n.bsync = new BackgroundSync(n.pool, this.clock, { tick_ms: 20, min_bytes_per_s: 1 << 20, max_bytes_per_s: 1 << 30 }, (f, to, r) => {
      if (n.gen === gen) this.t(`node${n.member} sync ${f}>${to} (${r})`);
    });
  }

  session(from: string, to: string): ClientSession {
    return new ClientSession(
      { session_name: `${from}@${to}`, addresses: [{ host: to, port: 1234 }], secret: SECRET, ...this.transport, reconnect_delay_ms: 20, reconnect_max_delay_ms: 200, disconnect_timeout_ms: 2000, request_timeout_ms: 5000 },
      { net: this.net.host(from), clock: this.clock, random: this.random, log: this.log },
    );
  }

  /** One sync leg of `n` to `peer`: the join is retried until it works (or the peer leaves). */
  connectPeer(n: SimNode, peer: SimNode, joined: () => void): void {
    const gen = n.gen;
    const src = n.source;
    if (src === null) return;
    let s = this.session(n.host, peer.host);
    n.sync_sessions.set(peer.member, s);
    void s.open().catch(() => undefined);
    const attempt = (): void => {
      if (n.gen !== gen || !n.in_pool) return;
      // A peer removed from the pool meanwhile is not waited for (seed 72001092: a node
      // restarting while a member was removed never started its background sync).
      if (!peer.in_pool) return joined();
      if (s.state === 'CLOSED') {
        // The first connect gave up (the peer was partitioned away): a new session.
        s = this.session(n.host, peer.host);
        n.sync_sessions.set(peer.member, s);
        void s.open().catch(() => undefined);
      }
      if (s.state !== 'CONNECTED') return void this.clock.setTimer(50, attempt);
      const mark = linkMark(s);
      src.addPeer(s.name, new TransportLeg(s, GID, POOL, CHUNK, true), (st) => {
        if (n.gen !== gen) return;
        if (st !== 0) return void this.clock.setTimer(200, attempt);
        const sp = src.clientPool;
        const leg = sp.leg(peer.member);
        if (leg !== undefined) followLinkEvents(s, sp, leg, nullLogger, mark);
        joined();
      });
    };
    attempt();
  }

  /** The node's sync source as it is, reporting the protocol events triggered faults wait for. */
  private watchedSource(member: number, src: SyncPoolSource): SyncSource {
    return {
      get max_io_size() {
        return src.max_io_size;
      },
      readPeer: (off, len, cb) => {
        this.emit('sync', member);
        src.readPeer(off, len, cb);
      },
      mapClear: (first, count, m, ver) => {
        this.emit('sync', member);
        src.mapClear(first, count, m, ver);
      },
      peerMapCheck: (m, cb) => src.peerMapCheck(m, cb),
      peerCommand: (r, cmd, cb) => {
        this.emit('recover', member);
        src.peerCommand(r, cmd, cb);
      },
      peerQuery: (m, q, cb) => src.peerQuery(m, q, cb),
    };
  }

  /** The node's sync pool: a leg to every other member, and its background sync. */
  joinPeers(n: SimNode): void {
    const gen = n.gen;
    const sp = new ClientPool(
      { pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, sync: true, on_refused: this.refused(`node${n.member} sync pool`) },
      () => this.clock.now(),
      () => undefined,
    );
    n.source = new SyncPoolSource(sp);
    n.sync_sessions = new Map();
    const peers = this.members().filter((p) => p !== n);
    let joined = 0;
    // The background sync starts once the node can reach every peer.
    const startSync = (): void => {
      if (n.gen !== gen || n.bsync !== null) return;
      this.startBackgroundSync(n);
    };
    for (const peer of peers) this.connectPeer(n, peer, () => ++joined >= peers.length && startSync());
    if (peers.length === 0) startSync();
    n.pool.addClt(this.version === 1 ? n.source : this.watchedSource(n.member, n.source));
  }

  // Synchronous on purpose: runSeed drives everything from the simulated clock and never
  // yields to the microtask queue after the bring-up, so a continuation after an `await`
  // here ran only once the seed had ended (an extension never happened).
  /** A node with its disks (drawn from the seed's stream in this order) and its pool. */
  nodeShell(m: number): SimNode {
    const data = new MemDisk(SIZE, this.clock, this.random);
    const meta = new MemDisk(1 << 20, this.clock, this.random);
    data.faults.latency_ms = 0.1 + this.random.float() * 0.4;
    // 4 KiB atomic writes (a 4Kn device): the oracle's unit is the 4 KiB block.
    data.faults.tear_unit = BLOCK;
    meta.faults.latency_ms = 0.1;
    const n = { member: m, host: `node${m}`, data, meta, tickers: [], bsync: null, source: null, sync_sessions: new Map(), up: true, in_pool: true, gen: 0 } as unknown as SimNode;
    n.pool = this.makePool(n, 'create');
    return n;
  }

  newNode(m: number): SimNode {
    const n = this.nodeShell(m);
    // Listening on the memory net happens inside the call; the promise only reports it.
    void this.serve(n).catch((e: unknown) => this.violate(`node${m} could not listen: ${String(e)}`));
    this.nodes.push(n);
    return n;
  }

  newClientPool(gen: number): ClientPool {
    return new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, on_refused: this.refused('client') }, () => this.clock.now(), (ev) => {
      if (this.client.gen !== gen) return;
      this.t(`leg${ev.member_id} ${ev.from}>${ev.to} (${ev.reason}) v${ev.map_ver}`);
      if (ev.to === 'RECONNECTING') this.emit('recover', ev.member_id);
      else if (ev.to === 'FAILED') this.emit('fail', ev.member_id);
    });
  }

  /**
   * The initial members, and the compute client's bring-up: add_sess create on each node,
   * then enable; each node's sync pool; the client's tickers; open; the initial sync.
   */
  bringUp(): void {
    for (let m = 1; m <= this.initial_members; m++) this.newNode(m);
    const client = this.client;
    client.pool = this.newClientPool(0);
    const open = (s: ClientSession): void => {
      void s.open().catch(() => undefined);
      this.wait(`session ${s.name}`, () => s.state === 'CONNECTED', 5000);
    };
    for (const n of this.nodes) {
      const s = this.session('client', n.host);
      open(s);
      const mark = linkMark(s);
      client.sessions.set(n.member, s);
      let joined: Leg | null = null;
      let status = 1;
      client.pool.addSess(s.name, new TransportLeg(s, GID, POOL, CHUNK, false), 'create', 128, (st, leg) => {
        status = st;
        joined = leg;
      });
      this.wait('add_sess', () => status !== 1, 5000);
      if (status !== 0 || joined === null) throw new Error(`add_sess failed ${status}`);
      const leg: Leg = joined;
      let en = 1;
      client.pool.enableLeg(leg, (st) => (en = st));
      this.wait('enable', () => en !== 1, 5000);
      followLinkEvents(s, client.pool, leg, nullLogger, mark);
    }
    for (const n of this.nodes) this.joinPeers(n);
    client.tickers = clientPoolTickers(this.clock, client.pool);
    this.cleanups.push(() => {
      for (const tk of this.client.tickers) tk.stop();
      for (const n of this.nodes) {
        for (const tk of n.tickers) tk.stop();
        n.bsync?.close();
      }
    });
    if (client.pool.open() !== 0) throw new Error('open failed');
    // Members joined after the first start fully dirty: let them sync before the workload.
    this.wait('initial sync', () => this.nodes.every((n) => n.pool.ownMap()?.isEmpty() === true), 20_000);
    this.t(`bring-up done: ${this.initial_members} members, faults ${this.faults.join(',') || 'none'}`);
  }
}
