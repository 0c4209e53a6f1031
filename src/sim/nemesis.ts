// The fault schedule of one seed: drawn up front from its own random stream (so a fault can
// be left out, drop_faults, the shrinking search, without changing what the others are),
// armed on the simulated clock, timed or triggered by a protocol event (schedules 2 and 3),
// and at the end healed. Each fault kind's effect and heal is in `fault`; what counts as
// having taken effect (SimResult.kinds_hit) is recorded here or by the restart steps.

import { MAX_MEMBERS } from '../rmr/protocol/msg.js';
import { SeededRandom } from '../util/seeded-random.js';
import { MEMBERSHIP_KINDS, TRIGGERS, type FaultKind, type Trigger } from './options.js';
import { crashClient, crashNode, extendPool, quiet, removeMember, replaceDisk, restartClient, restartNode, strayNode } from './restart.js';
import { BLOCK, BLOCKS, type SimNode, type SimWorld } from './world.js';
import type { Workload } from './workload.js';

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

/** A fault whose effect shows later: exercised if its counter moved before it healed. */
interface Watched {
  kind: FaultKind;
  base: number;
  count: () => number;
  settled: boolean;
}

export class Nemesis {
  private readonly w: SimWorld;
  private readonly load: Workload;
  private readonly schedule: FaultSpec[] = [];
  private readonly watched: Watched[] = [];
  readonly kinds_injected = new Set<FaultKind>();
  readonly fault_log: string[] = [];
  /** Legs the schedule put in maintenance and has not taken out yet. */
  private readonly maintenance_legs = new Set<number>();

  /** Draws the schedule (after the bring-up: the hosts are the initial members). */
  constructor(w: SimWorld, load: Workload) {
    this.w = w;
    this.load = load;
    const { faults, duration, version } = w;
    const fr = new SeededRandom((w.seed ^ 0x9e3779b9) >>> 0);
    const schedule = this.schedule;
    const hosts0 = w.nodes.map((n) => n.host);
    /** The draws every fault makes, in schedule 1's order (its seeds keep their faults). */
    const draw = (kinds: readonly FaultKind[], on: Trigger | null): FaultSpec => ({
      at: fr.float() * duration,
      kind: kinds[fr.int(kinds.length)] as FaultKind,
      h: hosts0[fr.int(hosts0.length)] as string,
      other: fr.float() < 0.5 ? 'client' : (hosts0[fr.int(hosts0.length)] as string),
      node: fr.int(w.nodes.length),
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
  }

  /** Faults the seed scheduled (indexes for drop_faults). */
  get scheduled(): number {
    return this.schedule.length;
  }

  /** Of those, triggered by a protocol event. */
  get triggered(): number {
    return this.schedule.filter((f) => f.on !== null).length;
  }

  /** Every scheduled fault on the clock (those not dropped): timed ones fire at `at`, triggered ones are armed then. */
  start(): void {
    const clock = this.w.clock;
    this.schedule.forEach((f, i) => {
      if (this.w.o.drop_faults?.includes(i) === true) return;
      const on = f.on;
      clock.setTimer(f.at, on === null ? () => this.fault(f, i) : () => this.arm(f, i, on));
    });
  }

  private settle(x: Watched): void {
    if (x.settled) return;
    x.settled = true;
    if (x.count() > x.base) this.w.kinds_hit.add(x.kind);
  }

  /** Every watched fault's verdict (at the heal, and for the result). */
  settleAll(): void {
    for (const x of this.watched) this.settle(x);
  }

  /** A triggered fault, armed: it fires `delay_ms` after the next event it waits for. */
  /** Schedule 3: a triggered fault fires up to three times, re-armed once its outage is over. */
  private arm(f: FaultSpec, i: number, on: Trigger, left = this.w.version >= 3 ? 3 : 1): void {
    const w = this.w;
    w.arm(on, (subject) => {
      const target = f.aim && subject !== null ? w.nodes.findIndex((x) => x.member === subject) : -1;
      const g = target < 0 ? f : { ...f, h: `node${subject}`, node: target };
      w.clock.setTimer(f.delay_ms, () => {
        if (w.clock.now() < this.load.end_at) this.fault(g, i);
      });
      if (left > 1) w.clock.setTimer(f.delay_ms + f.heal_ms + 300, () => this.arm(f, i, on, left - 1));
    });
  }

  /** Membership faults wait (up to a second) for a quiet pool: no member holding data another lacks. */
  private whenQuiet(i: number, fn: () => void, tries = 0): void {
    if (quiet(this.w)) return fn();
    if (tries >= 20) return this.w.t(`fault #${i}: skipped, the pool was never quiet`);
    this.w.clock.setTimer(50, () => this.whenQuiet(i, fn, tries + 1));
  }

  /** A fault takes effect now (timed, or `delay_ms` after its trigger). */
  private fault(f: FaultSpec, i: number): void {
    const k = f.kind;
    if (k === 'link_cut' || k === 'partition' || k === 'one_way' || k === 'bandwidth' || k === 'stop_reading') this.netFault(f, i);
    else if (k === 'crash' || k === 'flush_error' || k === 'disk_error') this.nodeFault(f, i);
    else if (k === 'client_crash' || k === 'maintenance') this.clientFault(f, i);
    else this.membershipFault(f, i);
  }

  /** Injected; `kinds_hit` counts it once it took effect (at once, or `watch`ed). */
  private hit(f: FaultSpec, i: number, what0: string): void {
    const what = f.on === null ? what0 : `${what0} (on ${f.on}${f.aim ? ' aimed' : ''} +${f.delay_ms.toFixed(1)} ms)`;
    this.kinds_injected.add(f.kind);
    this.fault_log.push(`#${i} ${what}`);
    this.w.t(`fault #${i}: ${what}`);
  }

  /** Watches a counter of the fault's effect; the returned function settles it (at its heal). */
  private watch(f: FaultSpec, count: () => number): () => void {
    const x = { kind: f.kind, base: count(), count, settled: false };
    this.watched.push(x);
    return () => this.settle(x);
  }

  /** Cuts, partitions, bandwidth caps and a host that stops reading. */
  private netFault(f: FaultSpec, i: number): void {
    const w = this.w;
    const { clock, net, kinds_hit } = w;
    const { kind, h, other } = f;
    const held = (a: string, b: string): number => net.touches(`held ${a}>${b}`);
    if (kind === 'link_cut') {
      const n = other === h ? net.cut(h) : net.cut(h, other) + net.cut(other, h);
      this.hit(f, i, `cut ${h}-${other} (${n} streams)`);
      if (n > 0) kinds_hit.add(kind);
    } else if (kind === 'partition' && other !== h) {
      net.partition(h, other, true);
      this.hit(f, i, `partition ${h}-${other}`);
      const took = this.watch(f, () => held(h, other) + held(other, h));
      clock.setTimer(f.heal_ms, () => {
        took();
        net.partition(h, other, false);
        w.t(`heal: partition ${h}-${other}`);
      });
    } else if (kind === 'one_way' && other !== h) {
      // Derived from the drawn values, not drawn: the schedule of the other kinds stays.
      const [from, to] = f.node % 2 === 0 ? [h, other] : [other, h];
      net.partitionOneWay(from, to, true);
      this.hit(f, i, `one-way ${from}>${to}`);
      const took = this.watch(f, () => held(from, to));
      clock.setTimer(f.heal_ms, () => {
        took();
        net.partitionOneWay(from, to, false);
        w.t(`heal: one-way ${from}>${to}`);
      });
    } else if (kind === 'bandwidth' && other !== h) {
      // 0.25 .. 16 MiB/s each way.
      const rate = 2 ** (18 + ((f.off / BLOCK) % 7));
      net.limitBandwidth(h, other, rate);
      net.limitBandwidth(other, h, rate);
      this.hit(f, i, `bandwidth ${h}-${other} ${rate}`);
      const took = this.watch(f, () => net.touches(`slowed ${h}>${other}`) + net.touches(`slowed ${other}>${h}`));
      clock.setTimer(f.heal_ms, () => {
        took();
        net.limitBandwidth(h, other, 0);
        net.limitBandwidth(other, h, 0);
        w.t(`heal: bandwidth ${h}-${other}`);
      });
    } else if (kind === 'stop_reading') {
      // A host that hangs without closing its sockets: a storage node, or the client.
      const who = other === 'client' && f.node % 2 === 0 ? 'client' : h;
      net.stopReading(who, true);
      this.hit(f, i, `stop reading ${who}`);
      const took = this.watch(f, () => net.touches(`unread ${who}`));
      clock.setTimer(f.heal_ms, () => {
        took();
        net.stopReading(who, false);
        w.t(`heal: ${who} reads again`);
      });
    }
  }

  /** A storage node's crash, flush errors ending in a crash, a bad disk range. */
  private nodeFault(f: FaultSpec, i: number): void {
    const w = this.w;
    const { clock, nodes, kinds_hit } = w;
    const kind = f.kind;
    if (kind === 'crash') {
      // One node down at a time, and never while a node is still restarting.
      if (nodes.some((n) => !n.up)) return;
      const n = nodes[f.node % nodes.length] as SimNode;
      if (!n.in_pool) return;
      this.load.crashes.push(clock.now());
      this.hit(f, i, `crash node${n.member} ${f.mode} (${n.data.unflushedWrites} unflushed writes)`);
      kinds_hit.add(kind);
      crashNode(w, n, f.mode);
      clock.setTimer(300 + f.heal_ms, () => restartNode(w, n));
    } else if (kind === 'flush_error') {
      // An fsync error, then the host goes down: the node's flushes fail for a while (it
      // leaves IO service at the first), then it crashes losing its cache and restarts. A
      // FLUSH acknowledged meanwhile must have a durable clean copy elsewhere.
      if (nodes.some((n) => !n.up)) return;
      const n = nodes[f.node % nodes.length] as SimNode;
      if (!n.in_pool) return;
      const d = n.data;
      d.faults.flush_error = true;
      this.hit(f, i, `flush errors node${n.member}`);
      clock.setTimer(100 + f.heal_ms, () => {
        d.faults.flush_error = false;
        if (!n.up || n.data !== d) return w.t(`heal: flush errors node${n.member}`);
        this.load.crashes.push(clock.now());
        // It took effect: the node lost its cache after its flushes had failed.
        kinds_hit.add(kind);
        w.t(`heal: flush errors node${n.member}: crash drop (${d.unflushedWrites} unflushed writes)`);
        crashNode(w, n, 'drop');
        clock.setTimer(300, () => restartNode(w, n));
      });
    } else if (kind === 'disk_error') {
      const node = nodes[f.node % nodes.length] as SimNode;
      node.data.faults.bad_ranges.push({ offset: f.off, length: BLOCK });
      this.hit(f, i, `disk error node${node.member}@${f.off}`);
      const d = node.data;
      const took = this.watch(f, () => d.stats.errors);
      clock.setTimer(100 + f.heal_ms, () => {
        took();
        d.faults.bad_ranges = [];
        w.t(`heal: disk node${node.member}`);
      });
    }
  }

  /** The compute client's crash (a new one assembles), a leg in and out of maintenance. */
  private clientFault(f: FaultSpec, i: number): void {
    const w = this.w;
    const { clock, nodes, kinds_hit } = w;
    const kind = f.kind;
    if (kind === 'client_crash') {
      if (!w.client.up) return;
      this.hit(f, i, 'client crash');
      kinds_hit.add(kind);
      crashClient(w, this.load);
      clock.setTimer(300 + f.heal_ms, () => {
        if (!w.client.up) restartClient(w, this.load);
      });
    } else if (kind === 'maintenance') {
      const n = nodes[f.node % nodes.length] as SimNode;
      const leg = w.client.pool.leg(n.member);
      if (!w.client.up || leg === undefined || leg.maintenance || leg.state !== 'NORMAL') return;
      this.hit(f, i, `maintenance node${n.member}`);
      const c = w.client;
      this.maintenance_legs.add(n.member);
      c.pool.maintenance(n.member, true, (st, why) => {
        if (st !== 0) w.t(`maintenance on node${n.member}: ${why ?? st}`);
        else kinds_hit.add(kind);
        clock.setTimer(f.heal_ms, () => {
          if (c !== w.client) return;
          c.pool.maintenance(n.member, false, (s2, w2) => {
            this.maintenance_legs.delete(n.member);
            w.t(`maintenance off node${n.member}: ${s2 === 0 ? 'ok' : (w2 ?? s2)}`);
          });
        });
      });
    }
  }

  /** The operator's removal, extension and disk replacement, each on a quiet pool. */
  private membershipFault(f: FaultSpec, i: number): void {
    const w = this.w;
    const nodes = w.nodes;
    const kind = f.kind;
    if (kind === 'remove') {
      const n = nodes[f.node % nodes.length] as SimNode;
      this.whenQuiet(i, () => {
        if (w.members().length <= 2 || !n.in_pool) return;
        this.hit(f, i, `remove node${n.member}`);
        w.emit('member', n.member);
        removeMember(w, n, i);
      });
    } else if (kind === 'extend') {
      this.whenQuiet(i, () => {
        if (w.members().length >= MAX_MEMBERS || nodes.length >= 6) return;
        this.kinds_injected.add(kind);
        this.fault_log.push(`#${i} extend`);
        if (w.version === 1) strayNode(w, Math.max(...nodes.map((x) => x.member)) + 1);
        else extendPool(w, i);
      });
    } else if (kind === 'replace') {
      const n = nodes[f.node % nodes.length] as SimNode;
      this.whenQuiet(i, () => {
        if (!n.in_pool) return;
        this.hit(f, i, `replace node${n.member}`);
        w.emit('member', n.member);
        replaceDisk(w, n, i);
      });
    }
  }

  /** The end of the faults: the network and the disks healed, a crashed client back. */
  healAll(): void {
    const { net, nodes } = this.w;
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
    this.settleAll();
    this.w.t('healed');
    // A crashed client comes back now; a leg left in maintenance leaves it (leaveMaintenance).
    if (!this.w.client.up) restartClient(this.w, this.load);
  }

  /** A leg whose "maintenance off" did not get through leaves it now (retried). */
  leaveMaintenance(): void {
    const w = this.w;
    for (const l of w.legs()) {
      if (!l.maintenance || this.maintenance_legs.has(l.member_id)) continue;
      this.maintenance_legs.add(l.member_id);
      w.client.pool.maintenance(l.member_id, false, () => this.maintenance_legs.delete(l.member_id));
    }
    w.clock.setTimer(500, () => this.leaveMaintenance());
  }
}
