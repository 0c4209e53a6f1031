// What the dashboard's server sends the page (server-sent events, JSON): a snapshot when the
// page connects, then one update per tick with only what changed among the map pictures, one
// new point per chart and the new events. Shared by the server and the browser code (types
// only; no imports, so the browser bundle takes nothing else from the server side).

/** How a member (or a device) is doing, worst first for sorting and colours. */
export type Health = 'down' | 'fenced' | 'degraded' | 'syncing' | 'normal';
export const HEALTH_ORDER: readonly Health[] = ['down', 'fenced', 'degraded', 'syncing', 'normal'];

export interface DaemonView {
  name: string;
  reachable: boolean;
  state: string | null;
  pid: number | null;
  roles: string[];
  data_address: string | null;
  error: string | null;
}

export interface SyncView {
  state: string;
  dirty_chunks: number;
  total_chunks: number;
  synced_bytes: number;
  bytes_per_s: number;
  eta_s: number | null;
  rate_limit_bytes_per_s: number | null;
  last_error: string | null;
}

export interface MemberView {
  pool: string;
  member_id: number;
  node: string;
  health: Health;
  /** Why it is not normal (null when normal). */
  reason: string | null;
  /** The member's own server pool state as its daemon reports it (null: not reachable). */
  server_state: string | null;
  /** The client's leg to this member (null: no client or not reachable). */
  leg_state: string | null;
  dirty_chunks: number | null;
  total_chunks: number | null;
  /** Whose record of this member's dirty map the picture shows: `stg2` (its own), `stg1`, `client`. */
  map_seen_by: string | null;
  sync: SyncView | null;
}

export interface VerifyView {
  state: string;
  chunks_done: number;
  chunks_total: number;
  differing: number;
  /** The last report's summary line (null before any verify). */
  report: string | null;
}

export interface PoolView {
  name: string;
  chunk_size: number;
  members: MemberView[];
  verify: VerifyView | null;
}

export interface DeviceView {
  name: string;
  node: string;
  pool: string;
  export: string;
  state: string;
  degraded: boolean;
  health: Health;
  uris: string[];
}

export interface HealthSummary {
  daemons_up: number;
  daemons_down: number;
  members: Record<Health, number>;
  devices: Record<Health, number>;
  /** One line per thing that is not normal, worst first. */
  problems: string[];
}

export interface DashState {
  cluster: string;
  /** Server time of the tick (ms since the epoch). */
  time_ms: number;
  tick: number;
  health: HealthSummary;
  daemons: DaemonView[];
  pools: PoolView[];
  devices: DeviceView[];
  pending: { node: string; step: string; reason: string }[];
  /** Time between ticks. */
  interval_ms: number;
}

/** Dirty chunks in each of at most 1024 equal ranges of a member's map. */
export interface Picture {
  /** `<pool>/<member_id>` */
  key: string;
  /** `<node>:<version>`: changes when the map, or whose record of it is shown, changes. */
  version: string;
  chunks: number;
  dirty: number;
  chunks_per_cell: number;
  cells: number[];
}

export type ChartUnit = 'ops' | 'bytes' | 'seconds';

export interface ChartData {
  id: string;
  title: string;
  unit: ChartUnit;
  labels: string[];
  /** Seconds since the epoch, one per point. */
  t: number[];
  /** One array per label, aligned with `t`; null where a series had no value. */
  values: (number | null)[][];
}

export interface ChartPoint {
  labels: string[];
  values: (number | null)[];
}

export interface EventRow {
  node: string;
  seq: number;
  time: string;
  kind: string;
  subject: string;
  text: string;
}

export interface Snapshot {
  state: DashState;
  pictures: Record<string, Picture>;
  charts: ChartData[];
  events: EventRow[];
}

export interface Update {
  state: DashState;
  /** Only pictures whose version changed; keys of members gone are listed in `gone`. */
  pictures: Record<string, Picture>;
  gone: string[];
  /** Time of the points (s since the epoch) and one point per chart. */
  t: number;
  points: Record<string, ChartPoint>;
  /** Charts met for the first time in this tick. */
  new_charts: ChartData[];
  events: EventRow[];
}

export type ActionOp = 'sync_start' | 'sync_stop' | 'sync_rate' | 'verify_start' | 'verify_stop';

export interface ActionRequest {
  op: ActionOp;
  pool: string;
  /** The member's node, for the sync actions. */
  node?: string;
  /** Bytes per second for sync_rate, and optionally for verify_start. */
  bytes_per_s?: number;
  /** verify_start: the source member. */
  source?: number;
}

export interface ActionReply {
  ok: boolean;
  /** What was written where, e.g. `stg2: rmr-server/pools/p3/sync <- start`. */
  done?: string[];
  result?: string;
  error?: string;
}
