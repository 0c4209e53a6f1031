// A whole pool in one process on simulated time: the production client pool, storage-node
// pools, sync pools and transport, over the in-memory network and memory disks, driven by
// one seed. A seeded workload runs while seeded faults hit links, disks, storage nodes, the
// compute client and the pool's membership; an oracle checks every read against a register
// model per block, the members against each other while the pool is NORMAL, and after the
// faults heal, that the pool comes back (liveness) and the members converge byte for byte
// with clean maps.
//
// Invariants (each a violation kind):
//   durability      an acknowledged write that was durable (FUA, or a flush acknowledged after
//                   it) is never lost while one member holding it survives: reads never
//                   return what it superseded (checked with read validity)
//   read validity   a read returns a value of the register model: the last acknowledged write
//                   or one concurrent with the read (a storage-node crash may lose what was
//                   not durable; a failed or crashed client's write may or may not be there)
//   stability       while the pool is NORMAL, a block no write is touching reads the same from
//                   every NORMAL member (probes through each leg)
//   convergence     after healing and sync, every member's data area is byte-identical and
//                   every map is empty
//   liveness        every IO is answered, the pool is NORMAL and synced within bounded time
//   transitions     neither gatekeeper (leg state, server pool state) is asked for an
//                   illegal transition
//
// Same seed, same code: same history. `runSeed` returns a hash of the event trace.

import { createHash } from 'node:crypto';
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
import { MAX_MEMBERS } from '../rmr/protocol/msg.js';
import { clientPoolTickers } from '../rmr/client/tickers.js';
import { serverPoolTickers } from '../rmr/server/tickers.js';
import type { Ticker } from '../util/ticker.js';
import type { IoCallback, MetaStore, ReadCallback } from '../rmr/server/io-store.js';
import { groupId } from '../util/jhash.js';
import { Errno } from '../util/errno.js';
import { nullLogger, type Logger } from '../util/ports.js';
import { SimClock } from './sim-clock.js';
import { SeededRandom } from '../util/seeded-random.js';
import { MemNetwork } from './mem-net.js';
import { MemDisk } from './mem-disk.js';

export const FAULT_KINDS = [
  'link_cut',
  'partition',
  'disk_error',
  'crash',
  'one_way',
  'bandwidth',
  'stop_reading',
  'client_crash',
  'maintenance',
  'remove',
  'extend',
  'replace',
  'flush_error',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
/**
 * Kinds a seed uses unless told otherwise: all but `flush_error` (issue 19, item 1), opt-in
 * for now (`--faults`): in the default set it would change every seed's schedule, and the
 * regression seeds of test/sim would no longer replay what they found.
 */
export const DEFAULT_FAULTS: readonly FaultKind[] = FAULT_KINDS.filter((k) => k !== 'flush_error');

export type Mutation = 'skip_map_add' | 'no_piggyback' | 'drop_intent';

/**
 * Fault schedule versions. A seed's history depends on the schedule, so a recorded seed
 * names the version it was found with (the regression list pins 1) and replays as it did.
 *   1  1..6 faults at uniform times over the workload. Its extension never happened: the
 *      new node was created but the step after it (an `await`) ran only after the seed had
 *      ended; kept as it was, so recorded seeds replay their histories.
 *   2  1..4 faults at uniform times, and 0..6 *triggered* faults: each is armed at a uniform
 *      time (skewed early) and fires a few ms (0..40, most under 5) after the next protocol
 *      event of its kind (TRIGGERS), aimed at the member the event concerns 70% of the time;
 *      outages last 50..1050 ms (schedule 1: 200..2200), so more recoveries, and the events
 *      of their steps, fall within the workload. The windows
 *      the protocol is fragile in (a spread, a chunk sync, a reconciliation, a removal, the
 *      recovery of a first failure) last milliseconds; uniform times hit them about once in
 *      a few hundred faults. Extension works.
 *   3  as 2 with 3..9 triggered faults, each firing up to three times (re-armed once its
 *      outage is over): about six times as many faults land inside a recovery, a chunk sync
 *      or a reconciliation as with schedule 1 (2.5 times with 2).
 */
export const SCHEDULES = [1, 2, 3] as const;
export type Schedule = (typeof SCHEDULES)[number];
export const DEFAULT_SCHEDULE: Schedule = 3;

/**
 * Protocol events a triggered fault waits for:
 *   recover  a client leg enters RECONNECTING (a rejoin, assemble, extension or maintenance:
 *            a spread or reconciliation follows), or a member starts streaming its maps to a
 *            receiver (the member is the subject)
 *   sync     a member's chunk sync reads from a peer, or sends MAP_CLEAR
 *   fail     a client leg fails (a second fault overlapping the first one's recovery)
 *   client   a new compute client starts assembling the pool (reconciliation)
 *   member   a removal, disk replacement or extension starts
 */
export const TRIGGERS = ['recover', 'sync', 'fail', 'client', 'member'] as const;
export type Trigger = (typeof TRIGGERS)[number];
/** Kinds that wait for a quiet pool: never triggered. */
const MEMBERSHIP_KINDS: readonly FaultKind[] = ['remove', 'extend', 'replace'];

export interface SimOptions {
  seed: number;
  /** Fault kinds enabled; default all. With `swarm`, the seed picks a random subset. */
  faults?: readonly FaultKind[];
  swarm?: boolean;
  /** Simulated milliseconds of workload with faults. */
  duration_ms?: number;
  /** Print every trace line as it happens (replay). */
  echo?: boolean;
  /** Indexes of scheduled faults to leave out (the shrinking search). */
  drop_faults?: readonly number[];
  /** Deliberate bugs, to show the oracle catches them (mutation checks). */
  mutation?: Mutation | null;
  /** Fault schedule version (SCHEDULES); default DEFAULT_SCHEDULE. */
  schedule?: Schedule;
}

export interface SimResult {
  seed: number;
  schedule: Schedule;
  ok: boolean;
  violation: string | null;
  trace_hash: string;
  /** The last trace lines before the violation (or the end). */
  trace_tail: string[];
  ops: number;
  reads_checked: number;
  /** Stability probes that compared two or more members. */
  probes: number;
  sim_ms: number;
  members: number;
  faults: string[];
  /**
   * Kinds of which at least one fault took effect: a cut that reset streams, a partition,
   * bandwidth cap or stalled reader that held traffic, a bad disk range that failed an IO, a
   * crash, a maintenance the client entered, a removal, extension or disk replacement that
   * completed. A fault skipped for a precondition, or that met no traffic, does not count.
   */
  kinds_hit: FaultKind[];
  /** Kinds of which at least one fault was injected (whether or not it took effect). */
  kinds_injected: FaultKind[];
  /** Faults the seed scheduled (indexes for drop_faults), and those that happened. */
  scheduled_faults: number;
  /** Of those, triggered by a protocol event (schedule 2); their fault_log lines say `(on EVENT ...)`. */
  triggered_faults: number;
  fault_log: string[];
}

const POOL = 'simpool';
const GID = groupId(POOL);
const BLOCK = 4096;
const CHUNK = 16 * 1024;
const BLOCKS = 64; // 256 KiB device: small, so IOs overlap a lot
const SIZE = BLOCKS * BLOCK;
const SECRET = Buffer.alloc(32, 0x5a);

class Violation extends Error {}

/**
 * Block content for write `id` at block `b`: id and block in the first 8 bytes, then a
 * pattern that depends on (id * 131 + b * 7) mod 256 only, so the 256 patterns are made once.
 */
const PATTERNS: Buffer[] = Array.from({ length: 256 }, (_, k) => {
  const buf = Buffer.alloc(BLOCK);
  for (let i = 8; i < BLOCK; i++) buf[i] = (k + i) & 0xff;
  return buf;
});
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** Writes the content of write `id` for blocks first..first+count into one buffer. */
function blockValues(id: number, first: number, count: number): Buffer {
  const buf = Buffer.allocUnsafe(count * BLOCK);
  for (let i = 0; i < count; i++) {
    const b = first + i;
    (PATTERNS[(id * 131 + b * 7) & 0xff] as Buffer).copy(buf, i * BLOCK);
    buf.writeUInt32LE(id, i * BLOCK);
    buf.writeUInt32LE(b, i * BLOCK + 4);
  }
  return buf;
}

function valueOf(buf: Buffer, b: number): number | null {
  const id = buf.readUInt32LE(0);
  if (id === 0) return buf.equals(ZERO_BLOCK) ? 0 : null;
  if (buf.readUInt32LE(4) !== b) return null;
  const pat = PATTERNS[(id * 131 + b * 7) & 0xff] as Buffer;
  return buf.compare(pat, 8, BLOCK, 8, BLOCK) === 0 ? id : null;
}

interface WriteRec {
  id: number; // 0: zeroes (discard / write-zeroes)
  block: number;
  inv: number;
  end: number; // ack or failure time; Infinity while pending
  acked: boolean;
  /** When it became durable (acknowledged FUA, or a later flush acknowledged); Infinity until then. */
  durable_at: number;
}

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

/**
 * Runs one seed. The whole run is synchronous on the simulated clock (nothing in it may wait
 * for a microtask: it would run only after the seed ended); the promise is for callers.
 */
export function runSeed(o: SimOptions): Promise<SimResult> {
  return new Promise((resolve) => resolve(simulate(o)));
}

function simulate(o: SimOptions): SimResult {
  const seed = o.seed >>> 0;
  const random = new SeededRandom(seed);
  const clock = new SimClock();
  const net = new MemNetwork(clock, random, { latency_ms: 0.05 + random.float() * 0.2, jitter_ms: random.float() * 0.3 });
  const trace: string[] = [];
  const t = (s: string): void => {
    trace.push(`${clock.now().toFixed(3)} ${s}`);
    if (o.echo === true) console.log(trace[trace.length - 1]);
  };
  let faults: FaultKind[] = [...(o.faults ?? DEFAULT_FAULTS)];
  if (o.swarm === true) faults = faults.filter(() => random.float() < 0.6);
  const initial_members = 2 + random.int(3);
  const duration = o.duration_ms ?? 3000;
  const transport = { heartbeat_interval_ms: 100, heartbeat_timeout_ms: 500 };
  const cleanups: (() => void)[] = [];
  const version: Schedule = o.schedule ?? DEFAULT_SCHEDULE;
  /** Triggered faults waiting for their event (schedule 2), in index order. */
  const armed = new Map<Trigger, { fire: (subject: number | null) => void }[]>(TRIGGERS.map((e) => [e, []]));
  /** A protocol event: fires every fault armed for it (about `subject`, a member id). */
  const emit = (ev: Trigger, subject: number | null): void => {
    const waiting = armed.get(ev) as { fire: (subject: number | null) => void }[];
    if (waiting.length === 0) return;
    armed.set(ev, []);
    for (const w of waiting) w.fire(subject);
  };
  const kinds_hit = new Set<FaultKind>();
  const kinds_injected = new Set<FaultKind>();
  /** Faults whose effect shows later: exercised if their counter moved before they healed. */
  const watched: { kind: FaultKind; base: number; count: () => number; settled: boolean }[] = [];
  const settle = (w: (typeof watched)[number]): void => {
    if (w.settled) return;
    w.settled = true;
    if (w.count() > w.base) kinds_hit.add(w.kind);
  };
  let next_id = 0;
  let reads_checked = 0;
  let probes = 0;
  let scheduled = 0;
  let triggered = 0;
  const fault_log: string[] = [];
  const result = (violation: string | null): SimResult => {
    for (const w of watched) settle(w);
    return {
      seed,
      schedule: version,
      ok: violation === null,
      violation,
      trace_hash: createHash('sha256').update(trace.join('\n')).digest('hex'),
      trace_tail: trace.slice(-40),
      ops: next_id,
      reads_checked,
      probes,
      sim_ms: clock.now(),
      members: initial_members,
      faults,
      kinds_hit: FAULT_KINDS.filter((k) => kinds_hit.has(k)),
      kinds_injected: FAULT_KINDS.filter((k) => kinds_injected.has(k)),
      scheduled_faults: scheduled,
      triggered_faults: triggered,
      fault_log,
    };
  };
  // A violation seen inside a callback is recorded, not thrown: the production code under
  // test would catch it (a transport path treats a throwing handler as an internal error).
  let found: string | null = null;
  const violate = (msg: string): void => {
    if (found === null) {
      found = msg;
      t(`VIOLATION ${msg}`);
    }
  };
  const raise = (): void => {
    if (found !== null) throw new Violation(found);
  };
  const wait = (what: string, cond: () => boolean, within_ms: number): void => {
    try {
      clock.runUntilTrue(what, () => found !== null || cond(), clock.now() + within_ms);
    } catch (e) {
      throw new Violation(`liveness: ${e instanceof Error ? e.message : String(e)}`);
    }
    raise();
  };
  const refused = (who: string) => (reason: string) => violate(`transitions: ${who}: ${reason}`);
  // A handler that throws is a bug the transport survives by dropping the path: a violation.
  const log: Logger = {
    log: (level, msg, fields) => {
      if (level === 'error') violate(`internal error: ${msg} ${JSON.stringify(fields ?? {})}`);
    },
  };

  try {
    // ---- storage nodes: a node can crash (its objects die with it) and restart from its disks
    interface SimNode {
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
    const nodes: SimNode[] = [];
    const members = (): SimNode[] => nodes.filter((n) => n.in_pool);
    const makePool = (n: SimNode, mode: 'create' | 'add' | 'replace'): ServerPool => {
      const gen = n.gen;
      const pool = new ServerPool(
        { pool_name: POOL, group_id: GID, member_id: n.member, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8, on_refused: refused(`node${n.member}`) },
        (ev) => {
          // The same pool object lives on across a disk replacement (a new gen): its events still count.
          if (ev.kind === 'server_pool_state' && (n.gen === gen || (n.pool === pool && n.up))) t(`node${n.member} ${ev.from}>${ev.to} (${ev.reason})`);
        },
      );
      registerStore(n, pool, mode);
      return pool;
    };
    const registerStore = (n: SimNode, pool: ServerPool, mode: 'create' | 'add' | 'replace'): void => {
      const meta = o.mutation === 'drop_intent' ? new DropIntent(n.meta) : n.meta;
      const err = pool.register({ block: n.data, meta, meta_base: 0, ioAllowed: () => true }, mode, SIZE);
      if (err !== null) throw new Error(err);
    };
    /** The node's transport server and periodic work. Listening on the memory net is synchronous. */
    const serve = (n: SimNode): Promise<unknown> => {
      const rmr = new RmrServerNode(nullLogger);
      rmr.addPool(n.pool);
      const server = new TransportServer({ secret: SECRET, session_linger_ms: 5000, ...transport }, { net: net.host(n.host), clock, random, log }, rmr);
      startTickers(n);
      return server.listen({ host: n.host, port: 1234 });
    };
    const startTickers = (n: SimNode): void => {
      for (const tk of n.tickers) tk.stop();
      const gen = n.gen;
      n.tickers = serverPoolTickers(clock, n.pool, (st) => {
        if (n.gen === gen) t(`node${n.member} metadata write failed ${st}`);
      });
    };
    const session = (from: string, to: string): ClientSession =>
      new ClientSession(
        { session_name: `${from}@${to}`, addresses: [{ host: to, port: 1234 }], secret: SECRET, ...transport, reconnect_delay_ms: 20, reconnect_max_delay_ms: 200, disconnect_timeout_ms: 2000, request_timeout_ms: 5000 },
        { net: net.host(from), clock, random, log },
      );
    /** One sync leg of `n` to `peer`: the join is retried until it works (or the peer leaves). */
    const connectPeer = (n: SimNode, peer: SimNode, joined: () => void): void => {
      const gen = n.gen;
      const src = n.source;
      if (src === null) return;
      let s = session(n.host, peer.host);
      n.sync_sessions.set(peer.member, s);
      void s.open().catch(() => undefined);
      const attempt = (): void => {
        if (n.gen !== gen || !n.in_pool) return;
        // A peer removed from the pool meanwhile is not waited for (seed 72001092: a node
        // restarting while a member was removed never started its background sync).
        if (!peer.in_pool) return joined();
        if (s.state === 'CLOSED') {
          // The first connect gave up (the peer was partitioned away): a new session.
          s = session(n.host, peer.host);
          n.sync_sessions.set(peer.member, s);
          void s.open().catch(() => undefined);
        }
        if (s.state !== 'CONNECTED') return void clock.setTimer(50, attempt);
        const mark = linkMark(s);
        src.addPeer(s.name, new TransportLeg(s, GID, POOL, CHUNK, true), (st) => {
          if (n.gen !== gen) return;
          if (st !== 0) return void clock.setTimer(200, attempt);
          const sp = src.clientPool;
          const leg = sp.leg(peer.member);
          if (leg !== undefined) followLinkEvents(s, sp, leg, nullLogger, mark);
          joined();
        });
      };
      attempt();
    };
    /** The node's sync source as it is, reporting the protocol events triggered faults wait for. */
    const watchedSource = (member: number, src: SyncPoolSource): SyncSource => ({
      get max_io_size() {
        return src.max_io_size;
      },
      readPeer: (off, len, cb) => {
        emit('sync', member);
        src.readPeer(off, len, cb);
      },
      mapClear: (first, count, m, ver) => {
        emit('sync', member);
        src.mapClear(first, count, m, ver);
      },
      peerMapCheck: (m, cb) => src.peerMapCheck(m, cb),
      peerCommand: (r, cmd, cb) => {
        emit('recover', member);
        src.peerCommand(r, cmd, cb);
      },
      peerQuery: (m, q, cb) => src.peerQuery(m, q, cb),
    });
    /** The node's sync pool: a leg to every other member, and its background sync. */
    const joinPeers = (n: SimNode): void => {
      const gen = n.gen;
      const sp = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, sync: true, on_refused: refused(`node${n.member} sync pool`) }, () => clock.now(), () => undefined);
      n.source = new SyncPoolSource(sp);
      n.sync_sessions = new Map();
      const peers = members().filter((p) => p !== n);
      let joined = 0;
      // The background sync starts once the node can reach every peer.
      const startSync = (): void => {
        if (n.gen !== gen || n.bsync !== null) return;
        n.bsync = new BackgroundSync(n.pool, clock, { tick_ms: 20, min_bytes_per_s: 1 << 20, max_bytes_per_s: 1 << 30 }, (f, to, r) => {
          if (n.gen === gen) t(`node${n.member} sync ${f}>${to} (${r})`);
        });
      };
      for (const peer of peers) connectPeer(n, peer, () => ++joined >= peers.length && startSync());
      if (peers.length === 0) startSync();
      n.pool.addClt(version === 1 ? n.source : watchedSource(n.member, n.source));
    };
    // Synchronous on purpose: runSeed drives everything from the simulated clock and never
    // yields to the microtask queue after the bring-up, so a continuation after an `await`
    // here ran only once the seed had ended (an extension never happened).
    /** A node with its disks (drawn from the seed's stream in this order) and its pool. */
    const nodeShell = (m: number): SimNode => {
      const data = new MemDisk(SIZE, clock, random);
      const meta = new MemDisk(1 << 20, clock, random);
      data.faults.latency_ms = 0.1 + random.float() * 0.4;
      // 4 KiB atomic writes (a 4Kn device): the oracle's unit is the 4 KiB block.
      data.faults.tear_unit = BLOCK;
      meta.faults.latency_ms = 0.1;
      const n = { member: m, host: `node${m}`, data, meta, tickers: [], bsync: null, source: null, sync_sessions: new Map(), up: true, in_pool: true, gen: 0 } as unknown as SimNode;
      n.pool = makePool(n, 'create');
      return n;
    };
    const newNode = (m: number): SimNode => {
      const n = nodeShell(m);
      // Listening on the memory net happens inside the call; the promise only reports it.
      void serve(n).catch((e: unknown) => violate(`node${m} could not listen: ${String(e)}`));
      nodes.push(n);
      return n;
    };
    for (let m = 1; m <= initial_members; m++) newNode(m);

    // ---- the compute client: one process at a time; it can crash and a new one assembles
    interface SimClient {
      pool: ClientPool;
      sessions: Map<number, ClientSession>;
      tickers: Ticker[];
      gen: number;
      up: boolean;
    }
    let client_gen = 0;
    const newClientPool = (gen: number): ClientPool =>
      new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, on_refused: refused('client') }, () => clock.now(), (ev) => {
        if (client.gen !== gen) return;
        t(`leg${ev.member_id} ${ev.from}>${ev.to} (${ev.reason}) v${ev.map_ver}`);
        if (ev.to === 'RECONNECTING') emit('recover', ev.member_id);
        else if (ev.to === 'FAILED') emit('fail', ev.member_id);
      });
    let client: SimClient = { pool: null as unknown as ClientPool, sessions: new Map(), tickers: [], gen: 0, up: true };
    client.pool = newClientPool(0);
    const legs = (): Leg[] => [...client.pool.legs()];
    const open = (s: ClientSession): void => {
      void s.open().catch(() => undefined);
      wait(`session ${s.name}`, () => s.state === 'CONNECTED', 5000);
    };
    // The bring-up: add_sess create on each node, then enable.
    for (const n of nodes) {
      const s = session('client', n.host);
      open(s);
      const mark = linkMark(s);
      client.sessions.set(n.member, s);
      let joined: Leg | null = null;
      let status = 1;
      client.pool.addSess(s.name, new TransportLeg(s, GID, POOL, CHUNK, false), 'create', 128, (st, leg) => {
        status = st;
        joined = leg;
      });
      wait('add_sess', () => status !== 1, 5000);
      if (status !== 0 || joined === null) throw new Error(`add_sess failed ${status}`);
      const leg: Leg = joined;
      let en = 1;
      client.pool.enableLeg(leg, (st) => (en = st));
      wait('enable', () => en !== 1, 5000);
      followLinkEvents(s, client.pool, leg, nullLogger, mark);
    }
    for (const n of nodes) joinPeers(n);
    client.tickers = clientPoolTickers(clock, client.pool);
    cleanups.push(() => {
      for (const tk of client.tickers) tk.stop();
      for (const n of nodes) {
        for (const tk of n.tickers) tk.stop();
        n.bsync?.close();
      }
    });
    if (client.pool.open() !== 0) throw new Error('open failed');
    // Members joined after the first start fully dirty: let them sync before the workload.
    wait('initial sync', () => nodes.every((n) => n.pool.ownMap()?.isEmpty() === true), 20_000);
    t(`bring-up done: ${initial_members} members, faults ${faults.join(',') || 'none'}`);

    // ---- mutations (deliberate bugs) for the mutation checks
    if (o.mutation === 'skip_map_add') {
      for (const leg of legs()) (leg.channel as { sendMapAdd: unknown }).sendMapAdd = (_m: unknown, cb: (s: number) => void) => clock.setTimer(0, () => cb(0));
    }
    // The deliberate bug writes the pool's member set behind its back (the same Set the core owns).
    if (o.mutation === 'no_piggyback') (client.pool.members as Set<number>).clear();

    // ---- the workload and the oracle
    const history: WriteRec[][] = Array.from({ length: BLOCKS }, () => []);
    /** Acknowledged writes not yet durable (a flush makes them durable). */
    let undurable: WriteRec[] = [];
    /** Writes the current client has in flight (a client crash leaves them undecided). */
    const pending_writes = new Set<WriteRec[]>();
    /** Times of storage-node crashes. */
    const crashes: number[] = [];
    let inflight = 0;
    /** Invocation times of the reads in flight (the oldest bounds what may leave the history). */
    const reads_inflight: number[] = [];
    /**
     * A write that became durable with no crash between its acknowledgement and then
     * supersedes each write that ended before it was invoked, for every read invoked after it
     * was acknowledged: once no read in flight is older, those writes leave the history (it
     * stays short, and the check stays linear).
     */
    const prune = (b: number): void => {
      const horizon = Math.min(clock.now(), ...reads_inflight);
      const h = history[b] as WriteRec[];
      let latest = -Infinity;
      for (const u of h) {
        if (!u.acked || u.end >= horizon || u.durable_at > clock.now() || u.inv <= latest) continue;
        if (crashes.some((tc) => tc > u.end && tc < u.durable_at)) continue;
        latest = u.inv;
      }
      if (latest === -Infinity) return;
      const keep = h.filter((x) => !(x.end < latest));
      if (keep.length < h.length) history[b] = keep;
    };
    const check = (b: number, got: Buffer, inv: number, end: number): void => {
      reads_checked++;
      const v = valueOf(got, b);
      if (v === null) return violate(`read validity: block ${b} holds no whole written value (id ${got.readUInt32LE(0)})`);
      const h = history[b] as WriteRec[];
      // Candidates: writes not superseded before the read began. A write is superseded when
      // another acknowledged write was invoked after it ended and acknowledged before `inv`,
      // unless a storage node crashed after that acknowledgement and before the write was
      // durable (a crash may lose acknowledged writes that no flush or FUA covered). A crash
      // while the read is in flight counts too: the read may be served after it. So an
      // acknowledged durable write is never lost: the durability invariant.
      const lost = (u: WriteRec): boolean => crashes.some((tc) => tc > u.end && tc < end && u.durable_at > tc);
      // The latest invocation among superseding writes: everything that ended before it is out.
      let latest = -Infinity;
      for (const u of h) if (u.acked && u.end < inv && u.inv > latest && !lost(u)) latest = u.inv;
      const allowed: number[] = latest > -1 ? [] : [0];
      for (const w of h) if (w.inv < end && !(latest > w.end)) allowed.push(w.id);
      if (!allowed.includes(v)) violate(`read validity: block ${b} read value ${v} in [${inv.toFixed(3)}, ${end.toFixed(3)}], allowed ${allowed.join(',')}`);
    };
    // Workers: each issues an op, and the next one a little after it completes. A client
    // crash stops them; the new client starts them again.
    let end_at = Infinity;
    const WORKERS = 4;
    const after = (gen: number): void => {
      if (gen !== client.gen) return;
      inflight--;
      if (clock.now() < end_at) clock.setTimer(random.float(), () => issue(gen));
    };
    const issue = (gen: number): void => {
      if (gen !== client.gen || !client.up) return;
      const pool = client.pool;
      const r = random.float();
      const first = random.int(BLOCKS);
      const count = 1 + random.int(Math.min(8, BLOCKS - first));
      const inv = clock.now();
      inflight++;
      const kind = r < 0.45 ? 'write' : r < 0.8 ? 'read' : r < 0.87 ? 'discard' : r < 0.93 ? 'write_zeroes' : 'flush';
      if (kind === 'flush') {
        pool.submit('flush', 0, 0, null, {}, (s) => {
          if (gen !== client.gen) return;
          t(`flush -> ${s}`);
          // Everything acknowledged before the flush was issued is durable now.
          if (s === 0) {
            const now = undurable.filter((w) => w.end <= inv);
            undurable = undurable.filter((w) => w.end > inv);
            for (const w of now) {
              w.durable_at = clock.now();
              prune(w.block);
            }
          }
          after(gen);
        });
        return;
      }
      if (kind === 'read') {
        reads_inflight.push(inv);
        pool.submit('read', first * BLOCK, count * BLOCK, null, {}, (s, d) => {
          if (gen !== client.gen) return;
          reads_inflight.splice(reads_inflight.indexOf(inv), 1);
          t(`read ${first}+${count} -> ${s}`);
          if (s === 0 && d !== null) for (let i = 0; i < count; i++) check(first + i, d.subarray(i * BLOCK, (i + 1) * BLOCK), inv, clock.now());
          after(gen);
        });
        return;
      }
      const id = kind === 'write' ? ++next_id : 0;
      if (id === 0) next_id++;
      const recs: WriteRec[] = [];
      for (let i = 0; i < count; i++) {
        const w: WriteRec = { id, block: first + i, inv, end: Infinity, acked: false, durable_at: Infinity };
        (history[first + i] as WriteRec[]).push(w);
        recs.push(w);
      }
      pending_writes.add(recs);
      const data = kind === 'write' ? blockValues(id, first, count) : null;
      const fua = kind === 'write' && random.float() < 0.2;
      pool.submit(kind, first * BLOCK, count * BLOCK, data, { fua }, (s) => {
        if (gen !== client.gen) return;
        pending_writes.delete(recs);
        for (const w of recs) {
          w.end = clock.now();
          w.acked = s === 0;
          if (w.acked && fua) w.durable_at = w.end;
          else if (w.acked) undurable.push(w);
          prune(w.block);
        }
        t(`${kind}${fua ? '+fua' : ''} ${first}+${count} id ${id} -> ${s}`);
        after(gen);
      });
    };
    const startWorkers = (): void => {
      const gen = client.gen;
      for (let w = 0; w < WORKERS; w++) issue(gen);
    };
    /** Writes touching block b right now. */
    const busy = (b: number): boolean => (history[b] as WriteRec[]).some((w) => w.end === Infinity);
    // Stability probes: a block no write touches reads the same from every NORMAL member.
    const probe = (): void => {
      const gen = client.gen;
      if (!client.up) return;
      const normal = legs().filter((l) => l.state === 'NORMAL');
      if (normal.length < 2) return;
      const b = random.int(BLOCKS);
      if (busy(b)) return;
      const started = clock.now();
      const got = new Map<number, Buffer>();
      let pending = normal.length;
      for (const l of normal) {
        client.pool.readFrom(l.member_id, b * BLOCK, BLOCK, (s, d) => {
          if (gen !== client.gen) return;
          if (s === 0 && d !== null) got.set(l.member_id, d);
          if (--pending > 0) return;
          // A write that began meanwhile makes the comparison moot.
          if ((history[b] as WriteRec[]).some((w) => w.inv >= started || w.end === Infinity) || got.size < 2) return;
          probes++;
          const vals = [...got.entries()].map(([m, d2]) => [m, valueOf(d2, b)] as const);
          if (vals.some(([, v]) => v !== vals[0]?.[1])) violate(`stability: block ${b} reads ${vals.map(([m, v]) => `${v ?? 'garbage'} from member ${m}`).join(', ')}`);
        });
      }
    };

    // ---- storage-node crash and restart
    const crashNode = (n: SimNode, mode: 'process' | 'drop' | 'tear'): void => {
      n.up = false;
      n.gen++;
      for (const tk of n.tickers) tk.stop();
      n.bsync?.close();
      n.bsync = null;
      net.crashHost(n.host);
      for (const s of n.sync_sessions.values()) s.close('host crashed');
      n.data.crash(mode);
      n.meta.crash(mode);
    };
    /** Restart from the disks: add_store (metadata reloaded, intent record applied), serve, sync pool. */
    const restartNode = (n: SimNode): void => {
      n.gen++;
      const gen = n.gen;
      n.pool = makePool(n, 'add');
      n.pool.loadMetadata((st, report, reason) => {
        if (n.gen !== gen) return;
        if (st !== 0 || report === null) return violate(`restart: node${n.member} could not load its metadata (${st}: ${reason ?? ''})`);
        t(`node${n.member} restarted: ${report.intent_chunks} intent chunks dirty, maps ${report.maps_lost ?? 'kept'}, map_ver ${report.map_ver}`);
        void serve(n).catch((e: unknown) => violate(`restart: node${n.member} could not listen: ${String(e)}`));
        joinPeers(n);
        n.up = true;
      });
    };

    // ---- compute-client crash and a new client assembling the pool
    const crashClient = (): void => {
      client.up = false;
      for (const tk of client.tickers) tk.stop();
      net.crashHost('client');
      for (const s of client.sessions.values()) s.close('client crashed');
      // Its writes in flight are undecided: they may have landed anywhere, or nowhere.
      for (const recs of pending_writes) for (const w of recs) w.end = clock.now();
      pending_writes.clear();
      reads_inflight.length = 0;
      inflight = 0;
      client_gen++;
      client = { pool: client.pool, sessions: new Map(), tickers: [], gen: client_gen, up: false };
    };
    /** add_sess mode=assemble for every member, retried until each works. */
    const restartClient = (): void => {
      const gen = client_gen;
      client = { pool: newClientPool(gen), sessions: new Map(), tickers: [], gen, up: true };
      const c = client;
      c.tickers = clientPoolTickers(clock, c.pool);
      c.pool.open();
      t('client restarted');
      emit('client', null);
      // An extension the crashed client left unfinished is the operator's to re-run.
      for (const n of members()) {
        if (n.extending === true) extendMember(c, n);
        else assembleMember(c, n);
      }
      startWorkers();
      // The operator's re-run of a del_sess delete that the crashed client finished but not
      // every member recorded (their pool_md still lists the member; re-running is harmless).
      const redo = new Set<number>();
      const operator = (): void => {
        if (c.gen !== client.gen) return;
        for (const n of nodes) {
          if (n.in_pool || !c.pool.members.has(n.member) || redo.has(n.member)) continue;
          redo.add(n.member);
          c.pool.delSess(n.member, 'delete', (st, why) => {
            redo.delete(n.member);
            t(`operator: del_sess ${n.member} again: ${st === 0 ? 'ok' : (why ?? st)}`);
          });
        }
        clock.setTimer(500, operator);
      };
      clock.setTimer(500, operator);
    };
    const assembleMember = (c: SimClient, n: SimNode): void => {
      let s = session('client', n.host);
      c.sessions.set(n.member, s);
      void s.open().catch(() => undefined);
      const attempt = (): void => {
        if (c.gen !== client.gen || !n.in_pool) return;
        if (s.state === 'CLOSED') {
          s = session('client', n.host);
          c.sessions.set(n.member, s);
          void s.open().catch(() => undefined);
        }
        if (s.state !== 'CONNECTED') return void clock.setTimer(50, attempt);
        const mark = linkMark(s);
        c.pool.addSess(s.name, new TransportLeg(s, GID, POOL, CHUNK, false), 'assemble', 128, (st, leg) => {
          if (c.gen !== client.gen) return;
          if (st !== 0 || leg === null) return void clock.setTimer(200, attempt);
          followLinkEvents(s, c.pool, leg, nullLogger, mark);
        });
      };
      attempt();
    };

    // ---- membership: removal, extend, replacement
    /** Every member NORMAL and clean: no member holds data another lacks. */
    const quiet = (): boolean =>
      client.up && nodes.every((n) => !n.in_pool || n.up) && legs().length === members().length && legs().every((l) => l.state === 'NORMAL' && !l.maintenance) && members().every((n) => n.pool.state === 'NORMAL' && n.pool.ownMap()?.isEmpty() === true);
    const removeMember = (n: SimNode, i: number): void => {
      const c = client;
      c.pool.delSess(n.member, 'delete', (st, why) => {
        // EIO: the member left but no remaining one recorded it yet (every other leg was
        // FAILED); del_sess says to re-run it, and the operator does (seed 61002823 waited
        // for a removal nobody finished). A crashed client's restart re-runs it too.
        if (st === Errno.EIO && c === client && c.up) {
          t(`fault #${i}: del_sess ${n.member} not recorded yet (${why ?? st}), re-run`);
          return void clock.setTimer(500, () => c === client && c.up && n.in_pool && removeMember(n, i));
        }
        if (st !== 0) return t(`fault #${i}: del_sess ${n.member} refused (${why ?? st})`);
        t(`node${n.member} removed from the pool`);
        kinds_hit.add('remove');
        n.in_pool = false;
        n.gen++;
        for (const tk of n.tickers) tk.stop();
        n.bsync?.close();
        n.bsync = null;
        // The operator's step on the other nodes (§9.6): their sync legs to it go.
        for (const p of members()) {
          p.source?.removePeer(n.member);
          p.sync_sessions.get(n.member)?.close('peer removed');
          p.sync_sessions.delete(n.member);
        }
        for (const s of n.sync_sessions.values()) s.close('removed');
        client.sessions.get(n.member)?.close('removed');
      });
    };
    const extendPool = (i: number): void => {
      const m = Math.max(...nodes.map((x) => x.member)) + 1;
      const n = newNode(m);
      n.extending = true;
      t(`fault #${i}: extend with node${m}`);
      emit('member', m);
      joinPeers(n);
      for (const p of members()) if (p !== n) connectPeer(p, n, () => undefined);
      if (client.up) extendMember(client, n);
    };
    /**
     * The operator's extend of `n` by client `c`, retried until it works. A new node that
     * crashed before its join, or took the join but the client's extend failed after it,
     * refuses another create-mode join: it never held data, so the operator makes its store
     * afresh (delete_store, create_store) and runs the extend again.
     */
    const extendMember = (c: SimClient, n: SimNode): void => {
      const m = n.member;
      let s = session('client', n.host);
      c.sessions.set(m, s);
      void s.open().catch(() => undefined);
      const attempt = (): void => {
        if (c.gen !== client.gen || !c.up || !n.in_pool) return;
        if (s.state === 'CLOSED') {
          s = session('client', n.host);
          c.sessions.set(m, s);
          void s.open().catch(() => undefined);
        }
        if (s.state !== 'CONNECTED') return void clock.setTimer(50, attempt);
        const mark = linkMark(s);
        c.pool.extend(s.name, new TransportLeg(s, GID, POOL, CHUNK, false), 128, (st, leg, why) => {
          if (c.gen !== client.gen) return;
          if (st !== 0 || leg === null) {
            t(`extend node${m}: ${why ?? st}, retried`);
            if (n.up && !(n.pool.state === 'REGISTERED' && n.pool.marked_create) && n.pool.unregister('store made afresh') === null) {
              n.data = new MemDisk(SIZE, clock, random);
              n.meta = new MemDisk(1 << 20, clock, random);
              n.data.faults.latency_ms = 0.2;
              n.data.faults.tear_unit = BLOCK;
              n.meta.faults.latency_ms = 0.1;
              registerStore(n, n.pool, 'create');
              t(`operator: node${m}'s store made afresh for the extend`);
            }
            return void clock.setTimer(200, attempt);
          }
          n.extending = false;
          kinds_hit.add('extend');
          followLinkEvents(s, c.pool, leg, nullLogger, mark);
        });
      };
      attempt();
    };
    /**
     * Schedule 1's extension as it ran: the node is created and serves (its disks draw from
     * the seed's stream, its tickers run), but never joins: the rest of the step waited
     * behind an `await` that resolved only after the seed ended.
     */
    const strayNode = (m: number): void => {
      void serve(nodeShell(m)).catch(() => undefined);
    };
    const replaceDisk = (n: SimNode, i: number): void => {
      const gen = n.gen;
      n.bsync?.close();
      n.bsync = null;
      // remove_store: the maps are persisted, the store leaves the pool (once no chunk sync runs).
      const unregister = (tries: number): void => {
        if (n.gen !== gen) return;
        const err = n.pool.unregister('remove_store');
        if (err !== null) {
          if (tries > 100) return violate(`liveness: replace of node${n.member}: ${err}`);
          return void clock.setTimer(10, () => unregister(tries + 1));
        }
        n.gen++;
        const g2 = n.gen;
        n.data = new MemDisk(SIZE, clock, random);
        n.meta = new MemDisk(1 << 20, clock, random);
        n.data.faults.latency_ms = 0.2;
        n.data.faults.tear_unit = BLOCK;
        n.meta.faults.latency_ms = 0.1;
        registerStore(n, n.pool, 'replace');
        t(`fault #${i}: node${n.member} disk replaced by an empty one`);
        kinds_hit.add('replace');
        n.pool.persistMetadata((st) => {
          if (n.gen !== g2) return;
          if (st !== 0) return violate(`replace: node${n.member} metadata not persisted (${st})`);
          startTickers(n);
          n.bsync = new BackgroundSync(n.pool, clock, { tick_ms: 20, min_bytes_per_s: 1 << 20, max_bytes_per_s: 1 << 30 }, (f, to, r) => {
            if (n.gen === g2) t(`node${n.member} sync ${f}>${to} (${r})`);
          });
        });
      };
      n.pool.persistMetadata(() => unregister(0));
    };

    // ---- faults
    // The schedule is drawn up front from its own random stream, so a fault can be left out
    // (drop_faults: the shrinking search for a shorter reproduction) without changing what
    // the others are.
    interface FaultSpec {
      at: number;
      kind: FaultKind;
      /** Schedule 2: a triggered fault waits from `at` for this event, then `delay_ms`. */
      on: Trigger | null;
      delay_ms: number;
      /** Aimed at the event's member (its host, its node) rather than the drawn ones. */
      aim: boolean;
      h: string;
      other: string;
      node: number;
      mode: 'process' | 'drop' | 'tear';
      off: number;
      heal_ms: number;
    }
    const fr = new SeededRandom((seed ^ 0x9e3779b9) >>> 0);
    const schedule: FaultSpec[] = [];
    const hosts0 = nodes.map((n) => n.host);
    /** The draws every fault makes, in schedule 1's order (its seeds keep their faults). */
    const draw = (kinds: readonly FaultKind[], on: Trigger | null): FaultSpec => ({
      at: fr.float() * duration,
      kind: kinds[fr.int(kinds.length)] as FaultKind,
      h: hosts0[fr.int(hosts0.length)] as string,
      other: fr.float() < 0.5 ? 'client' : (hosts0[fr.int(hosts0.length)] as string),
      node: fr.int(nodes.length),
      mode: (['process', 'drop', 'tear'] as const)[fr.int(3)] ?? 'process',
      off: fr.int(BLOCKS) * BLOCK,
      heal_ms: 200 + fr.int(2000),
      on,
      delay_ms: 0,
      aim: false,
    });
    if (version === 1) {
      const n_faults = faults.length === 0 ? 0 : 1 + fr.int(6);
      for (let i = 0; i < n_faults; i++) schedule.push(draw(faults, null));
    } else {
      const n_timed = faults.length === 0 ? 0 : 1 + fr.int(4);
      const triggerable = faults.filter((k) => !MEMBERSHIP_KINDS.includes(k));
      const n_triggered = triggerable.length === 0 ? 0 : (version >= 3 ? 3 : 0) + fr.int(7);
      // Shorter outages (50..1050 ms): more recoveries, and their events, within the workload.
      const shorter = (f: FaultSpec): FaultSpec => ({ ...f, heal_ms: 50 + (f.heal_ms - 200) / 2 });
      for (let i = 0; i < n_timed; i++) schedule.push(shorter(draw(faults, null)));
      for (let i = 0; i < n_triggered; i++) {
        const f = shorter(draw(triggerable, TRIGGERS[fr.int(TRIGGERS.length)] as Trigger));
        // Armed early more often (median a quarter of the way): events follow the timed faults.
        f.at = (f.at * f.at) / duration;
        // Cubed: most delays are under 5 ms, the length of a spread or a chunk sync.
        f.delay_ms = 40 * fr.float() ** 3;
        f.aim = fr.float() < 0.7;
        schedule.push(f);
      }
    }
    const maintenance_legs = new Set<number>();
    /** Membership faults wait (up to a second) for a quiet pool: no member holding data another lacks. */
    const whenQuiet = (i: number, fn: () => void, tries = 0): void => {
      if (quiet()) return fn();
      if (tries >= 20) return t(`fault #${i}: skipped, the pool was never quiet`);
      clock.setTimer(50, () => whenQuiet(i, fn, tries + 1));
    };
    const fault = (f: FaultSpec, i: number): void => {
      const { kind, h, other } = f;
      // Injected; `kinds_hit` counts it once it took effect (at once, or `watch`ed).
      const hit = (what0: string): void => {
        const what = f.on === null ? what0 : `${what0} (on ${f.on}${f.aim ? ' aimed' : ''} +${f.delay_ms.toFixed(1)} ms)`;
        kinds_injected.add(kind);
        fault_log.push(`#${i} ${what}`);
        t(`fault #${i}: ${what}`);
      };
      const watch = (count: () => number): (() => void) => {
        const w = { kind, base: count(), count, settled: false };
        watched.push(w);
        return () => settle(w);
      };
      const held = (a: string, b: string): number => net.touches(`held ${a}>${b}`);
      if (kind === 'link_cut') {
        const n = other === h ? net.cut(h) : net.cut(h, other) + net.cut(other, h);
        hit(`cut ${h}-${other} (${n} streams)`);
        if (n > 0) kinds_hit.add(kind);
      } else if (kind === 'partition' && other !== h) {
        net.partition(h, other, true);
        hit(`partition ${h}-${other}`);
        const took = watch(() => held(h, other) + held(other, h));
        clock.setTimer(f.heal_ms, () => {
          took();
          net.partition(h, other, false);
          t(`heal: partition ${h}-${other}`);
        });
      } else if (kind === 'crash') {
        // One node down at a time, and never while a node is still restarting.
        if (nodes.some((n) => !n.up)) return;
        const n = nodes[f.node % nodes.length] as SimNode;
        if (!n.in_pool) return;
        crashes.push(clock.now());
        hit(`crash node${n.member} ${f.mode} (${n.data.unflushedWrites} unflushed writes)`);
        kinds_hit.add(kind);
        crashNode(n, f.mode);
        clock.setTimer(300 + f.heal_ms, () => restartNode(n));
      } else if (kind === 'flush_error') {
        // An fsync error, then the host goes down: the node's flushes fail for a while (it
        // leaves IO service at the first), then it crashes losing its cache and restarts. A
        // FLUSH acknowledged meanwhile must have a durable clean copy elsewhere.
        if (nodes.some((n) => !n.up)) return;
        const n = nodes[f.node % nodes.length] as SimNode;
        if (!n.in_pool) return;
        const d = n.data;
        d.faults.flush_error = true;
        hit(`flush errors node${n.member}`);
        clock.setTimer(100 + f.heal_ms, () => {
          d.faults.flush_error = false;
          if (!n.up || n.data !== d) return t(`heal: flush errors node${n.member}`);
          crashes.push(clock.now());
          // It took effect: the node lost its cache after its flushes had failed.
          kinds_hit.add(kind);
          t(`heal: flush errors node${n.member}: crash drop (${d.unflushedWrites} unflushed writes)`);
          crashNode(n, 'drop');
          clock.setTimer(300, () => restartNode(n));
        });
      } else if (kind === 'disk_error') {
        const node = nodes[f.node % nodes.length] as SimNode;
        node.data.faults.bad_ranges.push({ offset: f.off, length: BLOCK });
        hit(`disk error node${node.member}@${f.off}`);
        const d = node.data;
        const took = watch(() => d.stats.errors);
        clock.setTimer(100 + f.heal_ms, () => {
          took();
          d.faults.bad_ranges = [];
          t(`heal: disk node${node.member}`);
        });
      } else if (kind === 'one_way' && other !== h) {
        // Derived from the drawn values, not drawn: the schedule of the other kinds stays.
        const [from, to] = f.node % 2 === 0 ? [h, other] : [other, h];
        net.partitionOneWay(from, to, true);
        hit(`one-way ${from}>${to}`);
        const took = watch(() => held(from, to));
        clock.setTimer(f.heal_ms, () => {
          took();
          net.partitionOneWay(from, to, false);
          t(`heal: one-way ${from}>${to}`);
        });
      } else if (kind === 'bandwidth' && other !== h) {
        // 0.25 .. 16 MiB/s each way.
        const rate = 2 ** (18 + ((f.off / BLOCK) % 7));
        net.limitBandwidth(h, other, rate);
        net.limitBandwidth(other, h, rate);
        hit(`bandwidth ${h}-${other} ${rate}`);
        const took = watch(() => net.touches(`slowed ${h}>${other}`) + net.touches(`slowed ${other}>${h}`));
        clock.setTimer(f.heal_ms, () => {
          took();
          net.limitBandwidth(h, other, 0);
          net.limitBandwidth(other, h, 0);
          t(`heal: bandwidth ${h}-${other}`);
        });
      } else if (kind === 'stop_reading') {
        // A host that hangs without closing its sockets: a storage node, or the client.
        const who = other === 'client' && f.node % 2 === 0 ? 'client' : h;
        net.stopReading(who, true);
        hit(`stop reading ${who}`);
        const took = watch(() => net.touches(`unread ${who}`));
        clock.setTimer(f.heal_ms, () => {
          took();
          net.stopReading(who, false);
          t(`heal: ${who} reads again`);
        });
      } else if (kind === 'client_crash') {
        if (!client.up) return;
        hit('client crash');
        kinds_hit.add(kind);
        crashClient();
        clock.setTimer(300 + f.heal_ms, () => {
          if (!client.up) restartClient();
        });
      } else if (kind === 'maintenance') {
        const n = nodes[f.node % nodes.length] as SimNode;
        const leg = client.pool.leg(n.member);
        if (!client.up || leg === undefined || leg.maintenance || leg.state !== 'NORMAL') return;
        hit(`maintenance node${n.member}`);
        const c = client;
        maintenance_legs.add(n.member);
        c.pool.maintenance(n.member, true, (st, why) => {
          if (st !== 0) t(`maintenance on node${n.member}: ${why ?? st}`);
          else kinds_hit.add(kind);
          clock.setTimer(f.heal_ms, () => {
            if (c !== client) return;
            c.pool.maintenance(n.member, false, (s2, w2) => {
              maintenance_legs.delete(n.member);
              t(`maintenance off node${n.member}: ${s2 === 0 ? 'ok' : (w2 ?? s2)}`);
            });
          });
        });
      } else if (kind === 'remove') {
        const n = nodes[f.node % nodes.length] as SimNode;
        whenQuiet(i, () => {
          if (members().length <= 2 || !n.in_pool) return;
          hit(`remove node${n.member}`);
          emit('member', n.member);
          removeMember(n, i);
        });
      } else if (kind === 'extend') {
        whenQuiet(i, () => {
          if (members().length >= MAX_MEMBERS || nodes.length >= 6) return;
          kinds_injected.add(kind);
          fault_log.push(`#${i} extend`);
          if (version === 1) strayNode(Math.max(...nodes.map((x) => x.member)) + 1);
          else extendPool(i);
        });
      } else if (kind === 'replace') {
        const n = nodes[f.node % nodes.length] as SimNode;
        whenQuiet(i, () => {
          if (!n.in_pool) return;
          hit(`replace node${n.member}`);
          emit('member', n.member);
          replaceDisk(n, i);
        });
      }
    };
    end_at = clock.now() + duration;
    /** A triggered fault, armed: it fires `delay_ms` after the next event it waits for. */
    /** Schedule 3: a triggered fault fires up to three times, re-armed once its outage is over. */
    const arm = (f: FaultSpec, i: number, on: Trigger, left = version >= 3 ? 3 : 1): void => {
      (armed.get(on) as { fire: (subject: number | null) => void }[]).push({
        fire: (subject) => {
          const target = f.aim && subject !== null ? nodes.findIndex((x) => x.member === subject) : -1;
          const g = target < 0 ? f : { ...f, h: `node${subject}`, node: target };
          clock.setTimer(f.delay_ms, () => {
            if (clock.now() < end_at) fault(g, i);
          });
          if (left > 1) clock.setTimer(f.delay_ms + f.heal_ms + 300, () => arm(f, i, on, left - 1));
        },
      });
    };
    schedule.forEach((f, i) => {
      if (o.drop_faults?.includes(i) === true) return;
      const on = f.on;
      clock.setTimer(f.at, on === null ? () => fault(f, i) : () => arm(f, i, on));
    });
    scheduled = schedule.length;
    triggered = schedule.filter((f) => f.on !== null).length;
    startWorkers();
    let next_probe = clock.now() + 20;
    while (clock.now() < end_at && found === null) {
      clock.runUntil(Math.min(end_at, clock.now() + 10));
      if (clock.now() >= next_probe) {
        probe();
        next_probe = clock.now() + 20;
      }
    }
    raise();
    // ---- heal everything and check that the pool comes back and converges
    const hosts = [...nodes.map((n) => n.host), 'client'];
    for (const a of hosts) {
      net.stopReading(a, false);
      for (const b of hosts) {
        if (a === b) continue;
        net.partitionOneWay(a, b, false);
        net.limitBandwidth(a, b, 0);
      }
    }
    for (const n of nodes) n.data.faults.bad_ranges = [];
    for (const w of watched) settle(w);
    t('healed');
    // A crashed client comes back now; a leg left in maintenance leaves it.
    if (!client.up) restartClient();
    wait('every IO answered', () => inflight === 0, 30_000);
    // A leg whose "maintenance off" did not get through leaves it now (retried).
    const leaveMaintenance = (): void => {
      for (const l of legs()) {
        if (!l.maintenance || maintenance_legs.has(l.member_id)) continue;
        maintenance_legs.add(l.member_id);
        client.pool.maintenance(l.member_id, false, () => maintenance_legs.delete(l.member_id));
      }
      clock.setTimer(500, leaveMaintenance);
    };
    leaveMaintenance();
    wait('every member restarted', () => nodes.every((n) => n.up), 10_000);
    try {
      wait('every leg NORMAL', () => legs().length === members().length && legs().every((l) => l.state === 'NORMAL'), 60_000);
    } catch (e) {
      const srv = members().map((n) => `node${n.member}:${n.pool.state}/${n.pool.map_update_state}/dirty ${n.pool.ownMap()?.dirtyCount ?? -1}`).join(' ');
      throw new Violation(`${e instanceof Error ? e.message : String(e)} (client ${JSON.stringify(client.pool.status())}; ${srv})`);
    }
    try {
      wait('every member synced', () => members().every((n) => n.pool.state === 'NORMAL' && n.pool.ownMap()?.isEmpty() === true), 60_000);
    } catch (e) {
      const srv = members().map((n) => `node${n.member}:${n.pool.state}/own dirty ${n.pool.ownMap()?.dirtyCount ?? -1} first ${n.pool.ownMap()?.nextDirty(0) ?? -1}`).join(' ');
      const sy = members().map((n) => `${n.bsync?.state ?? 'none'}:${n.bsync?.progress().last_error ?? ''}`).join(' ');
      throw new Violation(`${e instanceof Error ? e.message : String(e)} (${srv}; sync ${sy})`);
    }
    // A worker's last IO may start just after the workload ends (its timer was set before),
    // after the wait for every IO above: it must land before the members are compared (seed
    // 10000770 compared them while a write released by the reconciliation was on its way).
    wait('every IO answered and the pool settled', () => inflight === 0 && legs().every((l) => l.state === 'NORMAL') && members().every((n) => n.pool.state === 'NORMAL' && n.pool.ownMap()?.isEmpty() === true), 60_000);
    // Convergence: the same bytes on every member.
    const ref_node = members()[0] as SimNode;
    const ref = ref_node.data.contents();
    for (const n of members()) {
      if (!n.data.contents().equals(ref)) {
        let b = 0;
        while (b < BLOCKS && n.data.contents(b * BLOCK, BLOCK).equals(ref.subarray(b * BLOCK, (b + 1) * BLOCK))) b++;
        const ids = members().map((x) => `node${x.member}=${x.data.contents(b * BLOCK, 4).readUInt32LE(0)}`).join(' ');
        const h = (history[b] as WriteRec[]).slice(-4).map((w) => `${w.id}[${w.inv.toFixed(1)}-${w.end.toFixed(1)}${w.acked ? '' : ' failed'}]`).join(' ');
        throw new Violation(`convergence: node${n.member} differs from node${ref_node.member} at block ${b} (${ids}; last writes ${h})`);
      }
    }
    // Peer maps are cleaned by the periodic check (lost MAP_CLEARs); a removed member's map is gone.
    wait('every map clean', () => members().every((n) => [...n.pool.maps.values()].every((m) => m.isEmpty() && members().some((x) => x.member === m.member_id))), 20_000);
    // Final read of everything: each block is a valid value of the register model.
    let done = false;
    const inv = clock.now();
    client.pool.submit('read', 0, SIZE, null, {}, (s, d) => {
      done = true;
      if (s !== 0 || d === null) return violate(`liveness: final read failed ${s}`);
      for (let b = 0; b < BLOCKS; b++) check(b, d.subarray(b * BLOCK, (b + 1) * BLOCK), inv, clock.now());
    });
    wait('final read', () => done, 10_000);
    t(`end: ${fault_log.length} faults`);
    return result(null);
  } catch (e) {
    if (e instanceof Violation) {
      if (found === null) t(`VIOLATION ${e.message}`);
      return result(found ?? e.message);
    }
    throw e;
  } finally {
    for (const c of cleanups) c();
  }
}
