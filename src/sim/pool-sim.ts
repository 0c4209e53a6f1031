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

export const FAULT_KINDS = ['link_cut', 'partition', 'disk_error'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface SimOptions {
  seed: number;
  /** Fault kinds enabled; default all. With `swarm`, the seed picks a random subset. */
  faults?: readonly FaultKind[];
  swarm?: boolean;
  /** Simulated milliseconds of workload with faults. */
  duration_ms?: number;
  /** Print every trace line as it happens (replay). */
  echo?: boolean;
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
}

const POOL = 'simpool';
const GID = groupId(POOL);
const BLOCK = 4096;
const CHUNK = 16 * 1024;
const BLOCKS = 64; // 256 KiB device: small, so IOs overlap a lot
const SIZE = BLOCKS * BLOCK;
const SECRET = Buffer.alloc(32, 0x5a);

class Violation extends Error {}

/** Block content for write `id` at block `b`: id and block in the first 16 bytes, then a pattern. */
function blockValue(id: number, b: number): Buffer {
  const buf = Buffer.alloc(BLOCK);
  if (id === 0) return buf;
  buf.writeUInt32LE(id, 0);
  buf.writeUInt32LE(b, 4);
  for (let i = 8; i < BLOCK; i++) buf[i] = (id * 131 + b * 7 + i) & 0xff;
  return buf;
}

function valueOf(buf: Buffer, b: number): number | null {
  const id = buf.readUInt32LE(0);
  if (id === 0) return buf.every((x) => x === 0) ? 0 : null;
  return buf.readUInt32LE(4) === b && buf.equals(blockValue(id, b)) ? id : null;
}

interface WriteRec {
  id: number; // 0: zeroes (discard / write-zeroes)
  inv: number;
  end: number; // ack or failure time; Infinity while pending
  acked: boolean;
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
  let faults: FaultKind[] = [...(o.faults ?? FAULT_KINDS)];
  if (o.swarm === true) faults = faults.filter(() => random.float() < 0.6);
  const members = 2 + random.int(3);
  const duration = o.duration_ms ?? 3000;
  const transport = { heartbeat_interval_ms: 100, heartbeat_timeout_ms: 500 };
  const tickers: Ticker[] = [];
  const syncs: BackgroundSync[] = [];
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
  });
  let next_id = 0;
  let reads_checked = 0;
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
    // ---- storage nodes
    const nodes: { member: number; host: string; data: MemDisk; meta: MemDisk; pool: ServerPool }[] = [];
    for (let m = 1; m <= members; m++) {
      const host = `node${m}`;
      const data = new MemDisk(SIZE, clock, random);
      const meta = new MemDisk(1 << 20, clock, random);
      data.faults.latency_ms = 0.1 + random.float() * 0.4;
      meta.faults.latency_ms = 0.1;
      const pool = new ServerPool({ pool_name: POOL, group_id: GID, member_id: m, chunk_size: CHUNK, intent_extent_shift: 16, intent_max_extents: 8 }, (ev) => {
        if (ev.kind === 'server_pool_state') t(`node${m} ${ev.from}>${ev.to} (${ev.reason})`);
      });
      const err = pool.register({ block: data, meta, meta_base: 0, ioAllowed: () => true }, 'create', SIZE);
      if (err !== null) throw new Error(err);
      const rmr = new RmrServerNode(nullLogger);
      rmr.addPool(pool);
      const server = new TransportServer({ secret: SECRET, session_linger_ms: 5000, ...transport }, { net: net.host(host), clock, random }, rmr);
      await server.listen({ host, port: 1234 });
      tickers.push(...serverPoolTickers(clock, pool, (s) => t(`node${m} metadata write failed ${s}`)));
      nodes.push({ member: m, host, data, meta, pool });
    }
    const session = (from: string, to: string): ClientSession =>
      new ClientSession(
        { session_name: `${from}@${to}`, addresses: [{ host: to, port: 1234 }], secret: SECRET, ...transport, reconnect_delay_ms: 20, reconnect_max_delay_ms: 200, disconnect_timeout_ms: 2000, request_timeout_ms: 5000 },
        { net: net.host(from), clock, random },
      );
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
    for (const self of nodes) {
      const sp = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20, sync: true }, () => clock.now(), () => undefined);
      const src = new SyncPoolSource(sp);
      for (const peer of nodes) {
        if (peer === self) continue;
        const s = session(self.host, peer.host);
        open(s);
        let st = 1;
        src.addPeer(s.name, new TransportLeg(s, GID, POOL, CHUNK, true), (x) => (st = x));
        wait('sync join', () => st !== 1, 5000);
        const leg = sp.leg(peer.member);
        if (leg !== undefined) followLinkEvents(s, sp, leg, nullLogger);
      }
      self.pool.addClt(src);
      syncs.push(new BackgroundSync(self.pool, clock, { tick_ms: 20, min_bytes_per_s: 1 << 20, max_bytes_per_s: 1 << 30 }, (f, to, r) => t(`node${self.member} sync ${f}>${to} (${r})`)));
    }
    tickers.push(...clientPoolTickers(clock, client));
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
    let inflight = 0;
    const check = (b: number, got: Buffer, inv: number, end: number): void => {
      reads_checked++;
      const v = valueOf(got, b);
      if (v === null) return violate(`read validity: block ${b} holds no whole written value (id ${got.readUInt32LE(0)})`);
      const h = history[b] as WriteRec[];
      // Candidates: writes not superseded before the read began. A write is superseded when
      // another acknowledged write was invoked after it ended and acknowledged before `inv`.
      const ok = (w: { id: number; inv: number; end: number }): boolean => {
        if (w.inv >= end) return false;
        return !h.some((u) => u.acked && u !== w && u.inv > w.end && u.end < inv);
      };
      const initial = { id: 0, inv: -1, end: -1 };
      const allowed = [initial, ...h].filter(ok).map((w) => w.id);
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
          after();
        });
        return;
      }
      if (kind === 'read') {
        client.submit('read', first * BLOCK, count * BLOCK, null, {}, (s, d) => {
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
        const w: WriteRec = { id, inv, end: Infinity, acked: false };
        (history[first + i] as WriteRec[]).push(w);
        recs.push(w);
      }
      const data = kind === 'write' ? Buffer.concat(Array.from({ length: count }, (_, i) => blockValue(id, first + i))) : null;
      const fua = kind === 'write' && random.float() < 0.2;
      client.submit(kind, first * BLOCK, count * BLOCK, data, { fua }, (s) => {
        for (const w of recs) {
          w.end = clock.now();
          w.acked = s === 0;
        }
        t(`${kind}${fua ? '+fua' : ''} ${first}+${count} id ${id} -> ${s}`);
        after();
      });
    };
    // ---- faults
    const fault_log: string[] = [];
    const hosts = nodes.map((n) => n.host);
    const fault = (): void => {
      if (faults.length === 0) return;
      const kind = faults[random.int(faults.length)] as FaultKind;
      const h = hosts[random.int(hosts.length)] as string;
      const other = random.float() < 0.5 ? 'client' : (hosts[random.int(hosts.length)] as string);
      if (kind === 'link_cut') {
        const n = other === h ? net.cut(h) : net.cut(h, other) + net.cut(other, h);
        fault_log.push(`cut ${h}-${other}`);
        t(`fault: cut ${h}-${other} (${n} streams)`);
      } else if (kind === 'partition' && other !== h) {
        net.partition(h, other, true);
        fault_log.push(`partition ${h}-${other}`);
        t(`fault: partition ${h}-${other}`);
        clock.setTimer(200 + random.int(1500), () => {
          net.partition(h, other, false);
          t(`heal: partition ${h}-${other}`);
        });
      } else if (kind === 'disk_error') {
        const node = nodes[random.int(nodes.length)] as (typeof nodes)[number];
        const off = random.int(BLOCKS) * BLOCK;
        node.data.faults.bad_ranges.push({ offset: off, length: BLOCK });
        fault_log.push(`disk error node${node.member}@${off}`);
        t(`fault: disk error node${node.member} at ${off}`);
        clock.setTimer(300 + random.int(1000), () => {
          node.data.faults.bad_ranges = [];
          t(`heal: disk node${node.member}`);
        });
      }
    };
    end_at = clock.now() + duration;
    const n_faults = faults.length === 0 ? 0 : 1 + random.int(6);
    for (let i = 0; i < n_faults; i++) clock.setTimer(random.float() * duration, fault);
    for (let w = 0; w < 4; w++) issue();
    while (clock.now() < end_at && found === null) clock.runUntil(Math.min(end_at, clock.now() + 10));
    raise();
    // ---- heal everything and check that the pool comes back and converges
    for (const a of [...hosts, 'client']) for (const b of [...hosts, 'client']) if (a < b) net.partition(a, b, false);
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
      const sy = syncs.map((x) => `${x.state}:${x.progress().last_error ?? ''}`).join(' ');
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
    for (const s of syncs) s.close();
  }
}
