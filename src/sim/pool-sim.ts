// A whole pool in one process on simulated time: the production client pool, storage-node
// pools, sync pools and transport, over the in-memory network and memory disks, driven by
// one seed. A seeded workload runs while seeded faults hit links and disks; an oracle checks
// every read against a register model per block, and after the faults heal, that the pool
// comes back (liveness) and the members converge byte for byte with clean maps.
//
// Same seed, same code: same history. `run` returns a hash of the event trace.

import { createHash } from 'node:crypto';
import { ClientSession } from '../transport/client-session.js';
import { TransportServer } from '../transport/server.js';
import { ClientPool, type Leg } from '../rmr/client-pool.js';
import { ServerPool } from '../rmr/server-pool.js';
import { RmrServerNode } from '../rmr/server-node.js';
import { TransportLeg } from '../rmr/transport-leg.js';
import { SyncPoolSource } from '../rmr/sync-pool.js';
import { BackgroundSync } from '../rmr/background-sync.js';
import { followLinkEvents } from '../rmr/leg-links.js';
import { clientPoolTickers, serverPoolTickers, type Ticker } from '../rmr/tickers.js';
import { groupId } from '../util/jhash.js';
import { nullLogger } from '../util/ports.js';
import { SimClock } from './sim-clock.js';
import { SimRandom } from './sim-random.js';
import { MemNetwork } from './mem-net.js';
import { MemDisk } from './mem-disk.js';

export const FAULT_KINDS = ['link_cut', 'partition', 'disk_error', 'crash', 'one_way', 'bandwidth', 'stop_reading'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
/** Kinds a seed uses unless told otherwise: all of them. */
export const DEFAULT_FAULTS: readonly FaultKind[] = FAULT_KINDS;

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
  mutation?: 'skip_map_add' | 'no_piggyback' | null;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  violation: string | null;
  trace_hash: string;
  /** The last trace lines before the violation (or the end). */
  trace_tail: string[];
  ops: number;
  reads_checked: number;
  sim_ms: number;
  members: number;
  faults: string[];
  /** Faults the seed scheduled (indexes for drop_faults), and those that happened. */
  scheduled_faults: number;
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

export async function runSeed(o: SimOptions): Promise<SimResult> {
  const seed = o.seed >>> 0;
  const random = new SimRandom(seed);
  const clock = new SimClock();
  const net = new MemNetwork(clock, random, { latency_ms: 0.05 + random.float() * 0.2, jitter_ms: random.float() * 0.3 });
  const trace: string[] = [];
  const t = (s: string): void => {
    trace.push(`${clock.now().toFixed(3)} ${s}`);
    if (o.echo === true) console.log(trace[trace.length - 1]);
  };
  let faults: FaultKind[] = [...(o.faults ?? DEFAULT_FAULTS)];
  if (o.swarm === true) faults = faults.filter(() => random.float() < 0.6);
  const members = 2 + random.int(3);
  const duration = o.duration_ms ?? 3000;
  const transport = { heartbeat_interval_ms: 100, heartbeat_timeout_ms: 500 };
  const tickers: Ticker[] = [];
  const cleanups: (() => void)[] = [];
  const result = (violation: string | null): SimResult => ({
    seed,
    ok: violation === null,
    violation,
    trace_hash: createHash('sha256').update(trace.join('\n')).digest('hex'),
    trace_tail: trace.slice(-40),
    ops: next_id,
    reads_checked,
    sim_ms: clock.now(),
    members,
    faults,
    scheduled_faults: scheduled,
    fault_log,
  });
  let next_id = 0;
  let reads_checked = 0;
  let scheduled = 0;
  const fault_log: string[] = [];
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
      sync_sessions: ClientSession[];
      up: boolean;
      /** Bumped at each crash and restart: callbacks of an earlier life are ignored. */
      gen: number;
    }
    const nodes: SimNode[] = [];
    const makePool = (n: SimNode, mode: 'create' | 'add'): ServerPool => {
      const gen = n.gen;
      const pool = new ServerPool({ pool_name: POOL, group_id: GID, member_id: n.member, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8 }, (ev) => {
        if (ev.kind === 'server_pool_state' && n.gen === gen) t(`node${n.member} ${ev.from}>${ev.to} (${ev.reason})`);
      });
      const err = pool.register({ block: n.data, meta: n.meta, meta_base: 0, ioAllowed: () => true }, mode, SIZE);
      if (err !== null) throw new Error(err);
      return pool;
    };
    /** The node's transport server and periodic work. Listening on the memory net is synchronous. */
    const serve = (n: SimNode): Promise<unknown> => {
      const rmr = new RmrServerNode(nullLogger);
      rmr.addPool(n.pool);
      const server = new TransportServer({ secret: SECRET, session_linger_ms: 5000, ...transport }, { net: net.host(n.host), clock, random }, rmr);
      const gen = n.gen;
      n.tickers = serverPoolTickers(clock, n.pool, (st) => {
        if (n.gen === gen) t(`node${n.member} metadata write failed ${st}`);
      });
      return server.listen({ host: n.host, port: 1234 });
    };
    const session = (from: string, to: string): ClientSession =>
      new ClientSession(
        { session_name: `${from}@${to}`, addresses: [{ host: to, port: 1234 }], secret: SECRET, ...transport, reconnect_delay_ms: 20, reconnect_max_delay_ms: 200, disconnect_timeout_ms: 2000, request_timeout_ms: 5000 },
        { net: net.host(from), clock, random },
      );
    /** The node's sync pool: a leg to every peer (joins retried until they work), and its background sync. */
    const joinPeers = (n: SimNode): void => {
      const gen = n.gen;
      const sp = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, sync: true }, () => clock.now(), () => undefined);
      const src = new SyncPoolSource(sp);
      n.sync_sessions = [];
      let joined = 0;
      // The background sync starts once the node can reach every peer.
      const startSync = (): void => {
        n.bsync = new BackgroundSync(n.pool, clock, { tick_ms: 20, min_bytes_per_s: 1 << 20, max_bytes_per_s: 1 << 30 }, (f, to, r) => {
          if (n.gen === gen) t(`node${n.member} sync ${f}>${to} (${r})`);
        });
      };
      for (const peer of nodes) {
        if (peer === n) continue;
        let s = session(n.host, peer.host);
        n.sync_sessions.push(s);
        void s.open().catch(() => undefined);
        const attempt = (): void => {
          if (n.gen !== gen) return;
          if (s.state === 'CLOSED') {
            // The first connect gave up (the peer was partitioned away): a new session.
            s = session(n.host, peer.host);
            n.sync_sessions.push(s);
            void s.open().catch(() => undefined);
          }
          if (s.state !== 'CONNECTED') return void clock.setTimer(50, attempt);
          src.addPeer(s.name, new TransportLeg(s, GID, POOL, CHUNK, true), (st) => {
            if (n.gen !== gen) return;
            if (st !== 0) return void clock.setTimer(200, attempt);
            const leg = sp.leg(peer.member);
            if (leg !== undefined) followLinkEvents(s, sp, leg, nullLogger);
            if (++joined === nodes.length - 1) startSync();
          });
        };
        attempt();
      }
      n.pool.addClt(src);
    };
    for (let m = 1; m <= members; m++) {
      const data = new MemDisk(SIZE, clock, random);
      const meta = new MemDisk(1 << 20, clock, random);
      data.faults.latency_ms = 0.1 + random.float() * 0.4;
      // 4 KiB atomic writes (a 4Kn device): the oracle's unit is the 4 KiB block.
      data.faults.tear_unit = BLOCK;
      meta.faults.latency_ms = 0.1;
      const n = { member: m, host: `node${m}`, data, meta, tickers: [], bsync: null, sync_sessions: [], up: true, gen: 0 } as unknown as SimNode;
      n.pool = makePool(n, 'create');
      await serve(n);
      nodes.push(n);
    }
    const open = (s: ClientSession): void => {
      void s.open().catch(() => undefined);
      wait(`session ${s.name}`, () => s.state === 'CONNECTED', 5000);
    };
    // ---- the compute client: add_sess create on each node, then enable (the bring-up)
    const client = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20 }, () => clock.now(), (ev) =>
      t(`leg${ev.member_id} ${ev.from}>${ev.to} (${ev.reason}) v${ev.map_ver}`),
    );
    const legs: Leg[] = [];
    for (const n of nodes) {
      const s = session('client', n.host);
      open(s);
      let joined: Leg | null = null;
      let status = 1;
      client.addSess(s.name, new TransportLeg(s, GID, POOL, CHUNK, false), 'create', 128, (st, leg) => {
        status = st;
        joined = leg;
      });
      wait('add_sess', () => status !== 1, 5000);
      if (status !== 0 || joined === null) throw new Error(`add_sess failed ${status}`);
      const leg: Leg = joined;
      let en = 1;
      client.enableLeg(leg, (st) => (en = st));
      wait('enable', () => en !== 1, 5000);
      followLinkEvents(s, client, leg, nullLogger);
      legs.push(leg);
    }
    // ---- sync pools between every pair of nodes
    for (const n of nodes) joinPeers(n);
    const crashNode = (n: SimNode, mode: 'process' | 'drop' | 'tear'): void => {
      n.up = false;
      n.gen++;
      for (const tk of n.tickers) tk.stop();
      n.bsync?.close();
      n.bsync = null;
      net.crashHost(n.host);
      for (const s of n.sync_sessions) s.close('host crashed');
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
    tickers.push(...clientPoolTickers(clock, client));
    cleanups.push(() => {
      for (const n of nodes) {
        for (const tk of n.tickers) tk.stop();
        n.bsync?.close();
      }
    });
    if (client.open() !== 0) throw new Error('open failed');
    // Members joined after the first start fully dirty: let them sync before the workload.
    wait('initial sync', () => nodes.every((n) => n.pool.ownMap()?.isEmpty() === true), 20_000);
    t(`bring-up done: ${members} members, faults ${faults.join(',') || 'none'}`);

    // ---- mutations (deliberate bugs) for the mutation checks
    if (o.mutation === 'skip_map_add') {
      for (const leg of legs) (leg.channel as { sendMapAdd: unknown }).sendMapAdd = (_m: unknown, cb: (s: number) => void) => clock.setTimer(0, () => cb(0));
    }
    if (o.mutation === 'no_piggyback') client.members.clear();

    // ---- the workload and the oracle
    const history: WriteRec[][] = Array.from({ length: BLOCKS }, () => []);
    /** Acknowledged writes not yet durable (a flush makes them durable). */
    let undurable: WriteRec[] = [];
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
    // Workers: each issues an op, and the next one a little after it completes.
    let end_at = Infinity;
    const after = (): void => {
      inflight--;
      if (clock.now() < end_at) clock.setTimer(random.float(), issue);
    };
    const issue = (): void => {
      const r = random.float();
      const first = random.int(BLOCKS);
      const count = 1 + random.int(Math.min(8, BLOCKS - first));
      const inv = clock.now();
      inflight++;
      const kind = r < 0.45 ? 'write' : r < 0.8 ? 'read' : r < 0.87 ? 'discard' : r < 0.93 ? 'write_zeroes' : 'flush';
      if (kind === 'flush') {
        client.submit('flush', 0, 0, null, {}, (s) => {
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
          after();
        });
        return;
      }
      if (kind === 'read') {
        reads_inflight.push(inv);
        client.submit('read', first * BLOCK, count * BLOCK, null, {}, (s, d) => {
          reads_inflight.splice(reads_inflight.indexOf(inv), 1);
          t(`read ${first}+${count} -> ${s}`);
          if (s === 0 && d !== null) for (let i = 0; i < count; i++) check(first + i, d.subarray(i * BLOCK, (i + 1) * BLOCK), inv, clock.now());
          after();
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
      const data = kind === 'write' ? blockValues(id, first, count) : null;
      const fua = kind === 'write' && random.float() < 0.2;
      client.submit(kind, first * BLOCK, count * BLOCK, data, { fua }, (s) => {
        for (const w of recs) {
          w.end = clock.now();
          w.acked = s === 0;
          if (w.acked && fua) w.durable_at = w.end;
          else if (w.acked) undurable.push(w);
          prune(w.block);
        }
        t(`${kind}${fua ? '+fua' : ''} ${first}+${count} id ${id} -> ${s}`);
        after();
      });
    };
    // ---- faults
    const hosts = nodes.map((n) => n.host);
    // The schedule is drawn up front from its own random stream, so a fault can be left out
    // (drop_faults: the shrinking search for a shorter reproduction) without changing what
    // the others are.
    interface FaultSpec {
      at: number;
      kind: FaultKind;
      h: string;
      other: string;
      node: number;
      mode: 'process' | 'drop' | 'tear';
      off: number;
      heal_ms: number;
    }
    const fr = new SimRandom((seed ^ 0x9e3779b9) >>> 0);
    const n_faults = faults.length === 0 ? 0 : 1 + fr.int(6);
    const schedule: FaultSpec[] = [];
    for (let i = 0; i < n_faults; i++) {
      schedule.push({
        at: fr.float() * duration,
        kind: faults[fr.int(faults.length)] as FaultKind,
        h: hosts[fr.int(hosts.length)] as string,
        other: fr.float() < 0.5 ? 'client' : (hosts[fr.int(hosts.length)] as string),
        node: fr.int(nodes.length),
        mode: (['process', 'drop', 'tear'] as const)[fr.int(3)] ?? 'process',
        off: fr.int(BLOCKS) * BLOCK,
        heal_ms: 200 + fr.int(2000),
      });
    }
    const fault = (f: FaultSpec, i: number): void => {
      const { kind, h, other } = f;
      if (kind === 'link_cut') {
        const n = other === h ? net.cut(h) : net.cut(h, other) + net.cut(other, h);
        fault_log.push(`#${i} cut ${h}-${other}`);
        t(`fault #${i}: cut ${h}-${other} (${n} streams)`);
      } else if (kind === 'partition' && other !== h) {
        net.partition(h, other, true);
        fault_log.push(`#${i} partition ${h}-${other}`);
        t(`fault #${i}: partition ${h}-${other}`);
        clock.setTimer(f.heal_ms, () => {
          net.partition(h, other, false);
          t(`heal: partition ${h}-${other}`);
        });
      } else if (kind === 'crash') {
        // One node down at a time, and never while a node is still restarting.
        if (nodes.some((n) => !n.up)) return;
        const n = nodes[f.node] as SimNode;
        crashes.push(clock.now());
        fault_log.push(`#${i} crash node${n.member} ${f.mode}`);
        t(`fault #${i}: crash node${n.member} (${f.mode}; ${n.data.unflushedWrites} unflushed writes)`);
        crashNode(n, f.mode);
        clock.setTimer(300 + f.heal_ms, () => restartNode(n));
      } else if (kind === 'one_way' && other !== h) {
        // Derived from the drawn values, not drawn: the schedule of the other kinds stays.
        const [from, to] = f.node % 2 === 0 ? [h, other] : [other, h];
        net.partitionOneWay(from, to, true);
        fault_log.push(`#${i} one-way ${from}>${to}`);
        t(`fault #${i}: one-way partition ${from}>${to}`);
        clock.setTimer(f.heal_ms, () => {
          net.partitionOneWay(from, to, false);
          t(`heal: one-way ${from}>${to}`);
        });
      } else if (kind === 'bandwidth' && other !== h) {
        // 0.25 .. 16 MiB/s each way.
        const rate = 2 ** (18 + ((f.off / BLOCK) % 7));
        net.limitBandwidth(h, other, rate);
        net.limitBandwidth(other, h, rate);
        fault_log.push(`#${i} bandwidth ${h}-${other} ${rate}`);
        t(`fault #${i}: bandwidth ${h}-${other} ${rate} bytes/s`);
        clock.setTimer(f.heal_ms, () => {
          net.limitBandwidth(h, other, 0);
          net.limitBandwidth(other, h, 0);
          t(`heal: bandwidth ${h}-${other}`);
        });
      } else if (kind === 'stop_reading') {
        // A host that hangs without closing its sockets: a storage node, or the client.
        const who = other === 'client' && f.node % 2 === 0 ? 'client' : h;
        net.stopReading(who, true);
        fault_log.push(`#${i} stop reading ${who}`);
        t(`fault #${i}: ${who} stops reading`);
        clock.setTimer(f.heal_ms, () => {
          net.stopReading(who, false);
          t(`heal: ${who} reads again`);
        });
      } else if (kind === 'disk_error') {
        const node = nodes[f.node] as SimNode;
        node.data.faults.bad_ranges.push({ offset: f.off, length: BLOCK });
        fault_log.push(`#${i} disk error node${node.member}@${f.off}`);
        t(`fault #${i}: disk error node${node.member} at ${f.off}`);
        clock.setTimer(100 + f.heal_ms, () => {
          node.data.faults.bad_ranges = [];
          t(`heal: disk node${node.member}`);
        });
      }
    };
    end_at = clock.now() + duration;
    schedule.forEach((f, i) => {
      if (o.drop_faults?.includes(i) !== true) clock.setTimer(f.at, () => fault(f, i));
    });
    scheduled = schedule.length;
    for (let w = 0; w < 4; w++) issue();
    while (clock.now() < end_at && found === null) clock.runUntil(Math.min(end_at, clock.now() + 10));
    raise();
    // ---- heal everything and check that the pool comes back and converges
    for (const a of [...hosts, 'client']) {
      net.stopReading(a, false);
      for (const b of [...hosts, 'client']) {
        if (a === b) continue;
        net.partitionOneWay(a, b, false);
        net.limitBandwidth(a, b, 0);
      }
    }
    for (const n of nodes) n.data.faults.bad_ranges = [];
    t('healed');
    try {
      wait('every IO answered', () => inflight === 0, 30_000);
    } catch (e) {
      throw new Violation(`${e instanceof Error ? e.message : String(e)} (${inflight} ops; client ${JSON.stringify(client.status())})`);
    }
    try {
      wait('every leg NORMAL', () => legs.every((l) => l.state === 'NORMAL'), 60_000);
    } catch (e) {
      const srv = nodes.map((n) => `node${n.member}:${n.pool.state}/${n.pool.map_update_state}/dirty ${n.pool.ownMap()?.dirtyCount ?? -1}`).join(' ');
      throw new Violation(`${e instanceof Error ? e.message : String(e)} (client ${JSON.stringify(client.status())}; ${srv})`);
    }
    try {
      wait('every member synced', () => nodes.every((n) => n.pool.state === 'NORMAL' && n.pool.ownMap()?.isEmpty() === true), 60_000);
    } catch (e) {
      const srv = nodes.map((n) => `node${n.member}:${n.pool.state}/own dirty ${n.pool.ownMap()?.dirtyCount ?? -1} first ${n.pool.ownMap()?.nextDirty(0) ?? -1}`).join(' ');
      const sy = nodes.map((n) => `${n.bsync?.state ?? 'none'}:${n.bsync?.progress().last_error ?? ''}`).join(' ');
      throw new Violation(`${e instanceof Error ? e.message : String(e)} (${srv}; sync ${sy})`);
    }
    // Stability: the same bytes from every member, read through the pool's own reads.
    const ref = nodes[0]?.data.contents() as Buffer;
    for (const n of nodes) {
      if (!n.data.contents().equals(ref)) {
        let b = 0;
        while (b < BLOCKS && n.data.contents(b * BLOCK, BLOCK).equals(ref.subarray(b * BLOCK, (b + 1) * BLOCK))) b++;
        const ids = nodes.map((x) => `node${x.member}=${x.data.contents(b * BLOCK, 4).readUInt32LE(0)}`).join(' ');
        const h = (history[b] as WriteRec[]).slice(-4).map((w) => `${w.id}[${w.inv.toFixed(1)}-${w.end.toFixed(1)}${w.acked ? '' : ' failed'}]`).join(' ');
        throw new Violation(`convergence: node${n.member} differs from node1 at block ${b} (${ids}; last writes ${h})`);
      }
    }
    // Peer maps are cleaned by the periodic check (lost MAP_CLEARs).
    wait('every map clean', () => nodes.every((n) => [...n.pool.maps.values()].every((m) => m.isEmpty())), 20_000);
    // Final read of everything: each block is a valid value of the register model.
    let done = false;
    const inv = clock.now();
    client.submit('read', 0, SIZE, null, {}, (s, d) => {
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
    for (const tk of tickers) tk.stop();
    for (const c of cleanups) c();
  }
}
