// The state of a whole cluster as its daemons report it (`GET /v1/status` of each): daemons,
// legs with dirty counts, devices with their NBD URIs, sync progress and pending resume
// steps. Pure: the caller reaches the daemons (`rmr status` through the CLI's client, the
// dashboard through its ports) and hands each answer, or the reason there was none, here.

type J = unknown;
const obj = (v: J): Record<string, J> => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, J>) : {});
const arr = (v: J): J[] => (Array.isArray(v) ? v : []);

export interface DaemonRow {
  name: string;
  reachable: boolean;
  pid: number | null;
  state: string | null;
  roles: string[];
  data_address: string | null;
  control: string;
  error?: string;
  /** Wall-clock start of the daemon (ISO text) when it answered. */
  started_at?: string | null;
}

export interface ClusterStatus {
  cluster: string;
  daemons: DaemonRow[];
  legs: { node: string; pool: string; side: string; member_id: J; session: J; state: J; dirty_chunks: J; total_chunks: J }[];
  devices: { node: string; name: string; pool: string; export: string; state: string; degraded: boolean; uris: string[] }[];
  sync: { node: string; pool: string; progress: J }[];
  pending: { node: string; step: string; reason: string }[];
}

export function emptyClusterStatus(cluster: string): ClusterStatus {
  return { cluster, daemons: [], legs: [], devices: [], sync: [], pending: [] };
}

/** A daemon that answered: its `/v1/status` body (parsed JSON). */
export function addDaemonStatus(out: ClusterStatus, node: string, control: string, body: J): void {
  const b = obj(body);
  const d = obj(b.daemon);
  const roles = arr(b.roles).map(obj);
  let data_address: string | null = null;
  for (const r of roles) {
    const st = obj(r.status);
    const det = obj(st.detail);
    if (typeof det.listen === 'string') data_address = det.listen;
    for (const l of arr(st.legs).map(obj)) out.legs.push({ node, pool: String(l.pool), side: String(l.side), member_id: l.member_id, session: l.session, state: l.state, dirty_chunks: l.dirty_chunks ?? null, total_chunks: l.total_chunks ?? null });
    for (const dv of arr(det.devices).map(obj)) {
      out.devices.push({ node, name: String(dv.name), pool: String(dv.pool), export: String(dv.export), state: String(dv.state), degraded: dv.degraded === true, uris: arr(dv.uris).map(String) });
    }
    for (const [pool, p] of Object.entries(obj(det.sync))) out.sync.push({ node, pool, progress: p });
    for (const [step, reason] of Object.entries(obj(det.pending))) out.pending.push({ node, step, reason: String(reason) });
  }
  out.daemons.push({
    name: node,
    reachable: true,
    pid: typeof d.pid === 'number' ? d.pid : null,
    state: typeof d.state === 'string' ? d.state : null,
    roles: roles.map((r) => String(r.name)),
    data_address,
    control,
    started_at: typeof d.started_at === 'string' ? d.started_at : null,
  });
}

/** A daemon that did not answer; `state`/`pid` from local evidence (its pid file) if any. */
export function addUnreachable(out: ClusterStatus, node: string, control: string, error: string, local: { running: boolean; pid: number | null; evidence: string } | null): void {
  const state = local === null ? null : local.running ? 'not answering' : 'stopped';
  out.daemons.push({ name: node, reachable: false, pid: local?.running === true ? local.pid : null, state, roles: [], data_address: null, control, error: local === null ? error : `${error}; ${local.evidence}` });
}
