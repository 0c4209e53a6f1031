// The dashboard's view of a cluster, built once per tick from every daemon's control API the
// way `rmr status` builds its table: `/v1/status` (daemons, legs, devices, sync progress),
// `/metrics` (the IO charts: rates and latency quantiles between two scrapes), the new
// events, and the dirty-map pictures. Pictures cost little to keep current: per tick one
// `map_picture/versions` read per source, and a member's picture only when its version moved.
//
// Sans-IO: the daemons are reached through `DaemonPort`s and time comes from a clock; the
// Node side (node-dashboard.ts) owns sockets and timers and calls `tick()`.

import { addDaemonStatus, addUnreachable, emptyClusterStatus, type ClusterStatus } from '../daemon/cluster-status.js';
import { formatEvent, type DaemonEvent } from '../daemon/events.js';
import { histogramBuckets, intervalQuantile, parseSamples, rates, sumBy, type Buckets, type Sample } from './prom-text.js';
import type { ActionReply, ActionRequest, ChartData, ChartPoint, ChartUnit, DaemonView, DashState, DeviceView, EventRow, Health, HealthSummary, MemberView, Picture, PoolView, Snapshot, SyncView, Update, VerifyView } from './model.js';
import { HEALTH_ORDER } from './model.js';

export interface DaemonReply {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
}

export interface DaemonPort {
  readonly name: string;
  request(method: 'GET' | 'PUT', path: string, body?: string): Promise<DaemonReply>;
  /** Local evidence on a daemon that does not answer (its pid file), or null. */
  local?(): { running: boolean; pid: number | null; evidence: string } | null;
}

export interface ClusterLayout {
  readonly cluster: string;
  readonly nodes: readonly DaemonPort[];
  readonly pools: readonly { name: string; chunk_size: number; members: readonly { node: string; member_id: number }[] }[];
  readonly client_node: string | null;
}

export interface CollectorOptions {
  readonly interval_ms: number;
  /** Points kept per chart (the page's history). */
  readonly history_points: number;
  /** Events kept for a page that connects. */
  readonly events_max?: number;
}

const EVENTS_PER_READ = 200;
const POOL_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const RATE_MIN = 1 << 16;
const RATE_MAX = 2 ** 40;

type J = unknown;
const obj = (v: J): Record<string, J> => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, J>) : {});
const num = (v: J): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: J): string | null => (typeof v === 'string' ? v : null);
const tree = (path: string, json = true): string => `/v1/tree/${path.split('/').map(encodeURIComponent).join('/')}${json ? '?json' : ''}`;

function errorText(r: DaemonReply): string {
  try {
    const e = obj(obj(JSON.parse(r.body)).error);
    if (typeof e.message === 'string') return `${typeof e.code === 'string' ? e.code : `HTTP ${r.status}`}: ${e.message}`;
  } catch {
    // not JSON
  }
  return `HTTP ${r.status}`;
}

interface NodeMetrics {
  t_s: number;
  samples: Sample[];
}

interface ChartSpec {
  id: string;
  title: string;
  unit: ChartUnit;
  /** Values of this tick by label, from the previous and current scrapes. */
  point(c: Collector): Map<string, number | null>;
}

export class Collector {
  private readonly o: CollectorOptions;
  private tickNo = 0;
  private status: ClusterStatus;
  private state: DashState;
  private readonly pictures = new Map<string, Picture>();
  private readonly charts = new Map<string, ChartData>();
  private readonly events: EventRow[] = [];
  private readonly since = new Map<string, number>();
  private readonly started = new Map<string, string | null>();
  /** Metrics of the previous and the current tick, per node. */
  prev = new Map<string, NodeMetrics>();
  cur = new Map<string, NodeMetrics>();
  /** Bytes synced per `<pool> <node>` (from /v1/status) at this tick and the one before. */
  syncBytes = new Map<string, number>();
  syncBytesPrev = new Map<string, number>();
  syncDt = 0;
  private syncT: number | null = null;
  private readonly verify = new Map<string, VerifyView>();
  private readonly verifyKey = new Map<string, string>();
  private running: Promise<Update> | null = null;

  constructor(
    private readonly layout: ClusterLayout,
    private readonly now_ms: () => number,
    o: CollectorOptions,
  ) {
    this.o = o;
    this.status = emptyClusterStatus(layout.cluster);
    this.state = this.buildState();
  }

  private port(name: string): DaemonPort | undefined {
    return this.layout.nodes.find((n) => n.name === name);
  }

  snapshot(): Snapshot {
    return { state: this.state, pictures: Object.fromEntries(this.pictures), charts: [...this.charts.values()], events: [...this.events] };
  }

  /** One tick; concurrent callers share the tick under way. */
  tick(): Promise<Update> {
    this.running ??= this.doTick().finally(() => (this.running = null));
    return this.running;
  }

  private async doTick(): Promise<Update> {
    const t_ms = this.now_ms();
    const t_s = t_ms / 1000;
    this.tickNo++;
    // Daemons first: what answers decides where the maps are read.
    const status = emptyClusterStatus(this.layout.cluster);
    const answers = await Promise.all(
      this.layout.nodes.map(async (n) => {
        try {
          const r = await n.request('GET', '/v1/status');
          if (r.status !== 200) throw new Error(errorText(r));
          return { n, body: JSON.parse(r.body) as unknown, error: null };
        } catch (e) {
          return { n, body: null, error: e instanceof Error ? e.message : String(e) };
        }
      }),
    );
    for (const a of answers) {
      if (a.error === null) addDaemonStatus(status, a.n.name, a.n.name, a.body);
      else addUnreachable(status, a.n.name, a.n.name, a.error, a.n.local?.() ?? null);
    }
    this.status = status;
    this.syncBytesPrev = this.syncBytes;
    this.syncBytes = new Map(status.sync.map((x) => [`${x.pool} ${x.node}`, num(obj(x.progress).synced_bytes) ?? 0]));
    this.syncDt = this.syncT === null ? 0 : t_s - this.syncT;
    this.syncT = t_s;
    const up = this.layout.nodes.filter((n) => status.daemons.some((d) => d.name === n.name && d.reachable));
    // A daemon started again counts its events and map versions from scratch.
    for (const d of status.daemons) {
      if (!d.reachable) continue;
      const before = this.started.get(d.name);
      if (before !== undefined && before !== (d.started_at ?? null)) {
        this.since.set(d.name, 0);
        for (const [k, p] of this.pictures) if (p.version.startsWith(`${d.name}:`)) this.pictures.set(k, { ...p, version: `${d.name}:stale` });
      }
      this.started.set(d.name, d.started_at ?? null);
    }
    this.prev = this.cur;
    this.cur = new Map(this.prev);
    const [newEvents, changed] = await Promise.all([this.readEvents(up), this.readPictures(), this.readMetrics(up, t_s), this.readVerify()]).then(([e, p]) => [e, p] as const);
    this.state = this.buildState(t_ms);
    const { points, new_charts } = this.updateCharts(t_s);
    return { state: this.state, pictures: changed, gone: [], t: t_s, points, new_charts, events: newEvents };
  }

  // ---------------------------------------------------------------- reads

  /**
   * The client's metrics only: the charts of client IO are its counters and histograms. The
   * storage daemons, which serve the IO, are asked for nothing they must format at length:
   * their resync throughput comes from the bytes synced in /v1/status.
   */
  private async readMetrics(up: readonly DaemonPort[], t_s: number): Promise<void> {
    const wanted = (n: string): boolean => n.startsWith('rmr_device_io') || n.startsWith('rmr_leg_io');
    const client = this.layout.client_node;
    await Promise.all(
      up.filter((n) => n.name === client).map(async (n) => {
        try {
          const r = await n.request('GET', '/metrics');
          if (r.status === 200) this.cur.set(n.name, { t_s, samples: parseSamples(r.body, wanted) });
        } catch {
          this.cur.delete(n.name);
        }
      }),
    );
    for (const n of this.layout.nodes) if (!up.includes(n)) this.cur.delete(n.name);
  }

  private async readEvents(up: readonly DaemonPort[]): Promise<EventRow[]> {
    const fresh: EventRow[] = [];
    await Promise.all(
      up.map(async (n) => {
        try {
          const since = this.since.get(n.name) ?? 0;
          const r = await n.request('GET', `/v1/events?since=${since}&limit=${EVENTS_PER_READ}`);
          if (r.status !== 200) return;
          const next = Number(r.headers['x-rmr-events-next']);
          for (const line of r.body.split('\n')) {
            if (line === '') continue;
            const e = JSON.parse(line) as DaemonEvent;
            fresh.push({ node: n.name, seq: e.seq, time: e.time, kind: e.kind, subject: e.subject, text: formatEvent(e) });
          }
          if (Number.isSafeInteger(next)) this.since.set(n.name, next);
        } catch {
          // the next tick tries again from the same place
        }
      }),
    );
    fresh.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
    this.events.push(...fresh);
    const max = this.o.events_max ?? 500;
    if (this.events.length > max) this.events.splice(0, this.events.length - max);
    return fresh;
  }

  private serverState(node: string, pool: string): string | null {
    const l = this.status.legs.find((x) => x.node === node && x.pool === pool && x.side === 'server');
    return l === undefined ? null : String(l.state);
  }

  private reachable(node: string): boolean {
    return this.status.daemons.some((d) => d.name === node && d.reachable);
  }

  /**
   * Whose record of a member's map to show: the member's own daemon while it serves; a
   * serving peer while it does not (the client tells the peers what the member missed);
   * else the client's.
   */
  private mapSource(pool: string, member: { node: string; member_id: number }): { node: string; base: string } | null {
    if (this.reachable(member.node) && this.serverState(member.node, pool) === 'normal') return { node: member.node, base: `rmr-server/pools/${pool}/map_picture` };
    const p = this.layout.pools.find((x) => x.name === pool);
    for (const m of p?.members ?? []) {
      if (m.node !== member.node && this.reachable(m.node) && this.serverState(m.node, pool) === 'normal') return { node: m.node, base: `rmr-server/pools/${pool}/map_picture` };
    }
    const c = this.layout.client_node;
    if (c !== null && this.reachable(c)) return { node: c, base: `rmr-client/pools/${pool}/map_picture` };
    return null;
  }

  private readonly seenBy = new Map<string, string | null>();

  private async readPictures(): Promise<Record<string, Picture>> {
    const wants = new Map<string, { node: string; base: string; members: { key: string; member_id: number }[] }>();
    for (const p of this.layout.pools) {
      for (const m of p.members) {
        const key = `${p.name}/${m.member_id}`;
        const src = this.mapSource(p.name, m);
        this.seenBy.set(key, src?.node ?? null);
        if (src === null) continue;
        const k = `${src.node} ${src.base}`;
        let w = wants.get(k);
        if (w === undefined) wants.set(k, (w = { ...src, members: [] }));
        w.members.push({ key, member_id: m.member_id });
      }
    }
    const changed: Record<string, Picture> = {};
    await Promise.all(
      [...wants.values()].map(async (w) => {
        const port = this.port(w.node);
        if (port === undefined) return;
        try {
          const r = await port.request('GET', tree(`${w.base}/versions`));
          if (r.status !== 200) return;
          const versions = new Map<number, string>();
          for (const m of (obj(JSON.parse(r.body)).members as J[] | undefined) ?? []) {
            const id = num(obj(m).member_id);
            const v = str(obj(m).version);
            if (id !== null && v !== null) versions.set(id, v);
          }
          for (const m of w.members) {
            const v = versions.get(m.member_id);
            if (v === undefined || this.pictures.get(m.key)?.version === `${w.node}:${v}`) continue;
            const pr = await port.request('GET', tree(`${w.base}/${m.member_id}`));
            if (pr.status !== 200) continue;
            const j = obj(JSON.parse(pr.body));
            const cells = Array.isArray(j.cells) ? j.cells.map((x) => num(x) ?? 0) : [];
            const pic: Picture = { key: m.key, version: `${w.node}:${str(j.version) ?? v}`, chunks: num(j.chunks) ?? 0, dirty: num(j.dirty) ?? 0, chunks_per_cell: num(j.chunks_per_cell) ?? 1, cells };
            this.pictures.set(m.key, pic);
            changed[m.key] = pic;
          }
        } catch {
          // keep the last picture; the next tick tries again
        }
      }),
    );
    return changed;
  }

  private async readVerify(): Promise<void> {
    const c = this.layout.client_node;
    const port = c === null ? undefined : this.port(c);
    if (port === undefined || c === null || !this.reachable(c)) return;
    await Promise.all(
      this.layout.pools.map(async (p) => {
        try {
          const r = await port.request('GET', tree(`rmr-client/pools/${p.name}/verify`));
          if (r.status !== 200) return;
          const j = obj(JSON.parse(r.body));
          const v: VerifyView = { state: str(j.state) ?? '?', chunks_done: num(j.chunks_done) ?? 0, chunks_total: num(j.chunks_total) ?? 0, differing: num(j.differing) ?? 0, report: this.verify.get(p.name)?.report ?? null };
          const key = `${v.state}/${v.chunks_done}/${v.differing}`;
          if (v.state !== 'running' && v.state !== 'idle' && this.verifyKey.get(p.name) !== key) {
            const rr = await port.request('GET', tree(`rmr-client/pools/${p.name}/verify_report`, false));
            if (rr.status === 200) {
              v.report = rr.body.split('\n')[0] ?? null;
              this.verifyKey.set(p.name, key);
            }
          }
          this.verify.set(p.name, v);
        } catch {
          // keep the last view
        }
      }),
    );
  }

  // ---------------------------------------------------------------- state

  private buildState(t_ms = this.now_ms()): DashState {
    const s = this.status;
    const daemons: DaemonView[] = s.daemons.map((d) => ({ name: d.name, reachable: d.reachable, state: d.state, pid: d.pid, roles: d.roles, data_address: d.data_address, error: d.error ?? null }));
    const pools: PoolView[] = this.layout.pools.map((p) => ({ name: p.name, chunk_size: p.chunk_size, members: p.members.map((m) => this.memberView(p.name, m)), verify: this.verify.get(p.name) ?? null }));
    const devices: DeviceView[] = s.devices.map((d) => ({ name: d.name, node: d.node, pool: d.pool, export: d.export, state: d.state, degraded: d.degraded, uris: d.uris, health: d.state !== 'ready' ? 'down' : d.degraded ? 'degraded' : 'normal' }));
    // A device on a client that does not answer is not listed by it: show it as down.
    const c = this.layout.client_node;
    if (c !== null && !this.reachable(c)) for (const d of this.state?.devices ?? []) devices.push({ ...d, state: 'unknown (client down)', health: 'down' });
    return { cluster: this.layout.cluster, time_ms: t_ms, tick: this.tickNo, health: this.summary(daemons, pools, devices), daemons, pools, devices, pending: s.pending, interval_ms: this.o.interval_ms };
  }

  private memberView(pool: string, m: { node: string; member_id: number }): MemberView {
    const s = this.status;
    const reachable = this.reachable(m.node);
    const server = s.legs.find((x) => x.node === m.node && x.pool === pool && x.side === 'server');
    const c = this.layout.client_node;
    const leg = c === null ? undefined : s.legs.find((x) => x.node === c && x.pool === pool && x.side === 'client' && x.member_id === m.member_id);
    const p = obj(s.sync.find((x) => x.node === m.node && x.pool === pool)?.progress);
    const sync: SyncView | null =
      Object.keys(p).length === 0
        ? null
        : { state: str(p.state) ?? '?', dirty_chunks: num(p.dirty_chunks) ?? 0, total_chunks: num(p.total_chunks) ?? 0, synced_bytes: num(p.synced_bytes) ?? 0, bytes_per_s: num(p.bytes_per_s) ?? 0, eta_s: num(p.eta_s), rate_limit_bytes_per_s: num(p.rate_limit_bytes_per_s), last_error: str(p.last_error) };
    const key = `${pool}/${m.member_id}`;
    const pic = this.pictures.get(key);
    const server_state = reachable && server !== undefined ? String(server.state) : null;
    const leg_state = leg === undefined ? null : String(leg.state);
    const dirty = pic?.dirty ?? num(server?.dirty_chunks) ?? num(leg?.dirty_chunks);
    const total = pic?.chunks ?? num(server?.total_chunks) ?? num(leg?.total_chunks);
    let health: Health;
    const why: string[] = [];
    if (!reachable) {
      health = 'down';
      why.push(`daemon ${m.node} does not answer${s.daemons.find((d) => d.name === m.node)?.state === 'stopped' ? ' (stopped)' : ''}`);
    } else if (leg_state !== null && leg_state.includes('fenced')) {
      health = 'fenced';
      why.push(`the client's leg is ${leg_state}`);
    } else if (sync?.state === 'running') {
      health = 'syncing';
      why.push(`resync: ${dirty ?? sync.dirty_chunks} chunks to copy`);
    } else if (server_state !== 'normal' || (leg_state !== null && leg_state !== 'normal') || (dirty ?? 0) > 0) {
      health = 'degraded';
      if (server_state !== 'normal') why.push(`server pool ${server_state ?? 'absent'}`);
      if (leg_state !== null && leg_state !== 'normal') why.push(`client leg ${leg_state}`);
      if ((dirty ?? 0) > 0) why.push(`${dirty} dirty chunks${sync !== null && sync.state !== 'running' ? `, sync ${sync.state}` : ''}`);
    } else health = 'normal';
    if (reachable && leg_state !== null && leg_state !== 'normal' && health === 'syncing') why.push(`client leg ${leg_state}`);
    return { pool, member_id: m.member_id, node: m.node, health, reason: why.length === 0 ? null : why.join('; '), server_state, leg_state, dirty_chunks: dirty, total_chunks: total, map_seen_by: this.seenBy.get(key) ?? null, sync };
  }

  private summary(daemons: DaemonView[], pools: PoolView[], devices: DeviceView[]): HealthSummary {
    const zero = (): Record<Health, number> => ({ down: 0, fenced: 0, degraded: 0, syncing: 0, normal: 0 });
    const members = zero();
    const devs = zero();
    const problems: { h: number; text: string }[] = [];
    for (const d of daemons) if (!d.reachable) problems.push({ h: 0, text: `daemon ${d.name}: ${d.state ?? 'unreachable'} (${d.error ?? ''})` });
    for (const p of pools) {
      for (const m of p.members) {
        members[m.health]++;
        if (m.health !== 'normal') problems.push({ h: HEALTH_ORDER.indexOf(m.health), text: `${p.name} member ${m.member_id} (${m.node}) ${m.health}: ${m.reason ?? ''}` });
      }
    }
    for (const d of devices) {
      devs[d.health]++;
      if (d.health !== 'normal') problems.push({ h: HEALTH_ORDER.indexOf(d.health), text: `device ${d.name} ${d.state}${d.degraded ? ' (degraded: fewer legs than members)' : ''}` });
    }
    for (const p of this.status.pending) problems.push({ h: 2, text: `${p.node}: pending ${p.step}: ${p.reason}` });
    problems.sort((a, b) => a.h - b.h);
    return { daemons_up: daemons.filter((d) => d.reachable).length, daemons_down: daemons.filter((d) => !d.reachable).length, members, devices: devs, problems: problems.map((p) => p.text) };
  }

  // ---------------------------------------------------------------- charts

  /** Counter rates of `name` on `node` by labels `by` (only series passing `filter`). */
  counterRates(node: string, name: string, by: readonly string[], filter?: (l: Readonly<Record<string, string>>) => boolean): Map<string, number | null> {
    const now = this.cur.get(node);
    const prev = this.prev.get(node);
    if (now === undefined) return new Map();
    const a = prev === undefined ? undefined : sumBy(prev.samples, name, by, filter);
    return rates(a, sumBy(now.samples, name, by, filter), prev === undefined ? 0 : now.t_s - prev.t_s);
  }

  /** Interval quantiles of histogram `name` on `node` by labels `by`. */
  quantiles(node: string, name: string, by: readonly string[], qs: readonly number[]): Map<string, number | null> {
    const now = this.cur.get(node);
    const prev = this.prev.get(node);
    const out = new Map<string, number | null>();
    if (now === undefined) return out;
    const b = histogramBuckets(now.samples, name, by);
    const a: Buckets | undefined = prev === undefined ? undefined : histogramBuckets(prev.samples, name, by);
    for (const [k, h] of b) for (const q of qs) out.set(`${k} p${Math.round(q * 100)}`, intervalQuantile(a?.get(k), h, q));
    return out;
  }

  private readonly specs: readonly ChartSpec[] = [
    { id: 'device_iops', title: 'Device IOPS', unit: 'ops', point: (c) => c.clientRates('rmr_device_io_total', ['device', 'op']) },
    { id: 'device_bytes', title: 'Device throughput', unit: 'bytes', point: (c) => c.clientRates('rmr_device_io_bytes_total', ['device', 'op']) },
    { id: 'device_latency', title: 'Device latency (p50, p99)', unit: 'seconds', point: (c) => c.clientQuantiles('rmr_device_io_duration_seconds', ['device', 'op']) },
    { id: 'leg_iops', title: 'Leg IOPS (per member)', unit: 'ops', point: (c) => c.clientRates('rmr_leg_io_total', ['pool', 'leg', 'op']) },
    { id: 'leg_bytes', title: 'Leg throughput (per member)', unit: 'bytes', point: (c) => c.clientRates('rmr_leg_io_bytes_total', ['pool', 'leg', 'op']) },
    { id: 'leg_latency', title: 'Leg latency (p50, p99)', unit: 'seconds', point: (c) => c.clientQuantiles('rmr_leg_io_duration_seconds', ['pool', 'leg', 'op']) },
    {
      id: 'sync_bytes',
      title: 'Resync throughput (per member)',
      unit: 'bytes',
      point: (c) => rates(c.syncBytesPrev, c.syncBytes, c.syncDt),
    },
  ];

  private readonly rw = (l: Readonly<Record<string, string>>): boolean => l.op === 'read' || l.op === 'write';

  private clientRates(name: string, by: readonly string[]): Map<string, number | null> {
    const c = this.layout.client_node;
    return c === null ? new Map<string, number | null>() : this.counterRates(c, name, by, this.rw);
  }

  private clientQuantiles(name: string, by: readonly string[]): Map<string, number | null> {
    const c = this.layout.client_node;
    if (c === null) return new Map<string, number | null>();
    const out = this.quantiles(c, name, by, [0.5, 0.99]);
    for (const k of [...out.keys()]) if (!/\/(read|write) p/.test(k)) out.delete(k);
    return out;
  }

  private updateCharts(t_s: number): { points: Record<string, ChartPoint>; new_charts: ChartData[] } {
    const points: Record<string, ChartPoint> = {};
    const new_charts: ChartData[] = [];
    const max = this.o.history_points;
    for (const spec of this.specs) {
      const values = spec.point(this);
      let ch = this.charts.get(spec.id);
      if (ch === undefined) {
        ch = { id: spec.id, title: spec.title, unit: spec.unit, labels: [], t: [], values: [] };
        this.charts.set(spec.id, ch);
        new_charts.push(ch);
      }
      // Series met for the first time start with gaps; series gone keep their history.
      for (const label of [...values.keys()].sort()) {
        if (ch.labels.includes(label)) continue;
        ch.labels.push(label);
        ch.values.push(new Array<number | null>(ch.t.length).fill(null));
      }
      ch.t.push(t_s);
      ch.labels.forEach((l, i) => ch.values[i]?.push(values.get(l) ?? null));
      if (ch.t.length > max) {
        const cut = ch.t.length - max;
        ch.t.splice(0, cut);
        for (const v of ch.values) v.splice(0, cut);
      }
      points[spec.id] = { labels: [...ch.labels], values: ch.labels.map((l) => values.get(l) ?? null) };
    }
    return { points, new_charts: new_charts.map((c) => ({ ...c, labels: [...c.labels], t: [...c.t], values: c.values.map((v) => [...v]) })) };
  }

  // ---------------------------------------------------------------- actions

  /**
   * An operator action from the page, checked field by field (the body is hostile), then the
   * same control-tree write `rmr sync` / `rmr verify` makes.
   */
  async act(input: unknown): Promise<ActionReply> {
    const req = checkAction(input, this.layout);
    if (typeof req === 'string') return { ok: false, error: req };
    const writes: { node: string; path: string; value: string }[] = [];
    const base = `rmr-server/pools/${req.pool}`;
    switch (req.op) {
      case 'sync_start':
      case 'sync_stop':
        writes.push({ node: req.node as string, path: `${base}/sync`, value: req.op === 'sync_start' ? 'start' : 'stop' });
        break;
      case 'sync_rate':
        writes.push({ node: req.node as string, path: `${base}/sync_rate`, value: String(req.bytes_per_s) });
        break;
      case 'verify_start':
      case 'verify_stop': {
        const c = this.layout.client_node as string;
        const opts = req.op === 'verify_stop' ? ['stop'] : ['start', ...(req.source !== undefined ? [`source=${req.source}`] : []), ...(req.bytes_per_s !== undefined ? [`rate=${req.bytes_per_s}`] : [])];
        writes.push({ node: c, path: `rmr-client/pools/${req.pool}/verify`, value: opts.join(' ') });
        break;
      }
    }
    const done: string[] = [];
    let result = '';
    for (const w of writes) {
      const port = this.port(w.node);
      if (port === undefined) return { ok: false, error: `no node ${w.node}` };
      let r: DaemonReply;
      try {
        r = await port.request('PUT', tree(w.path, false), w.value);
      } catch (e) {
        return { ok: false, done, error: `${w.node}: ${e instanceof Error ? e.message : String(e)}` };
      }
      if (r.status < 200 || r.status >= 300) return { ok: false, done, error: `${w.node}: ${w.path} <- ${w.value}: ${errorText(r)}` };
      done.push(`${w.node}: ${w.path} <- ${w.value}`);
      try {
        result = str(obj(JSON.parse(r.body)).result) ?? '';
      } catch {
        result = '';
      }
    }
    return { ok: true, done, result };
  }
}

/** The action of a request body, or why it is refused. */
export function checkAction(input: unknown, layout: ClusterLayout): ActionRequest | string {
  const o = obj(input);
  const allowed = ['op', 'pool', 'node', 'bytes_per_s', 'source'];
  const extra = Object.keys(o).filter((k) => !allowed.includes(k));
  if (extra.length > 0) return `unknown field ${extra[0] ?? ''}`;
  const op = o.op;
  if (op !== 'sync_start' && op !== 'sync_stop' && op !== 'sync_rate' && op !== 'verify_start' && op !== 'verify_stop') return 'op must be sync_start, sync_stop, sync_rate, verify_start or verify_stop';
  if (typeof o.pool !== 'string' || !POOL_RE.test(o.pool)) return 'pool: a pool name';
  const pool = layout.pools.find((p) => p.name === o.pool);
  if (pool === undefined) return `no pool ${o.pool} in cluster ${layout.cluster}`;
  const req: ActionRequest = { op, pool: pool.name };
  if (op.startsWith('sync_')) {
    if (typeof o.node !== 'string' || !pool.members.some((m) => m.node === o.node)) return `node: one of the members' nodes of pool ${pool.name}`;
    req.node = o.node;
  } else if (o.node !== undefined) return 'node: not for verify';
  if (o.bytes_per_s !== undefined || op === 'sync_rate') {
    if (op !== 'sync_rate' && op !== 'verify_start') return 'bytes_per_s: only for sync_rate and verify_start';
    if (typeof o.bytes_per_s !== 'number' || !Number.isSafeInteger(o.bytes_per_s) || o.bytes_per_s < RATE_MIN || o.bytes_per_s > RATE_MAX) return `bytes_per_s: an integer ${RATE_MIN}..${RATE_MAX}`;
    req.bytes_per_s = o.bytes_per_s;
  }
  if (o.source !== undefined) {
    if (op !== 'verify_start') return 'source: only for verify_start';
    if (typeof o.source !== 'number' || !pool.members.some((m) => m.member_id === o.source)) return `source: a member id of pool ${pool.name}`;
    req.source = o.source;
  }
  if (op.startsWith('verify_') && layout.client_node === null) return `cluster ${layout.cluster} has no client to verify from`;
  return req;
}
