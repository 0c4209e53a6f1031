// The benchmark's RMR cluster behind one function: the product itself, N `rmr daemon`
// processes with the storage role (file stores) and one with the client role exporting the
// device over NBD on TCP, brought up as `rmr up` does it: a cluster file, the daemons started
// by the CLI's spawner (src/cli/node-cluster.ts), the admin guide's bring-up as control-tree
// writes (src/cli/cluster-ops.ts). The caller gets the NBD URI, every daemon pid (for CPU
// accounting), the store files, and control of resync.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { up } from '../src/cli/cluster-cmds.js';
import { loadCluster, nodeCtl, nodeTarget, stopDaemons, stopOrder, type LoadedCluster, type Started } from '../src/cli/node-cluster.js';
import { call, errorLine, type Target } from '../src/cli/node-client.js';

/** Where a store's data area starts in its file (BRMR header before it). */
export const STORE_DATA_OFFSET = 4096;

export interface RmrSetupOptions {
  nodes: number;
  /** Directory of the store files (store<member_id>.img), the cluster file and the daemons' state. */
  dir: string;
  size_bytes: number;
  chunk_size?: number;
  /** Extra node arguments of every daemon (e.g. --cpu-prof). */
  node_args?: string[];
  /**
   * Extra environment of every daemon. Without UV_THREADPOOL_SIZE the spawner gives the
   * storage daemons its default (src/cli/node-cluster.ts storageThreadpoolSize).
   */
  env?: NodeJS.ProcessEnv;
  initial_sync_timeout_ms?: number;
  /** Progress lines of the bring-up (default: none). */
  say?: (line: string) => void;
  /**
   * A server certificate directory (server-cert.pem, server-key.pem): the export then offers
   * STARTTLS (nbd.tls: on), so one cluster serves nbd_uri in clear and nbds_uri over TLS.
   */
  nbd_tls_certificates?: string;
  /**
   * Gets the cluster's stop() before any daemon starts: the daemons run in their own process
   * groups, so a caller's Ctrl-C handler must be able to stop a cluster still coming up.
   */
  onStop?: (stop: () => Promise<void>) => void;
}

export interface RmrSetup {
  nbd_uri: string;
  /** The same export over TLS (nbds://), when nbd_tls_certificates was given. */
  nbds_uri: string | null;
  /** Every daemon: storage nodes first, then the compute client. */
  pids: number[];
  /** Store files, member 1 first; the device's bytes start at STORE_DATA_OFFSET. */
  dataFiles: string[];
  /** Makes member `member_id` fully dirty; resolves with the time its resync took. */
  resync(member_id: number, timeout_ms?: number): Promise<{ ms: number; bytes: number }>;
  /** Every storage node's state, dirty chunks and sync progress. */
  status(): Promise<Record<string, unknown>[]>;
  /**
   * How long the initial sync took: a new pool's members after the first start fully
   * dirty and copy the device from the first (startRmr waits for it).
   */
  initial_sync_ms: number;
  stop(): Promise<void>;
}

/** Path of member `member_id`'s store file in `dir`. */
export function storePath(dir: string, member_id: number): string {
  return join(dir, `store${member_id}.img`);
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
  });
}

const POOL = 'bench';
const EXPORT = 'rmr';

/** The cluster file: storage nodes stg1..N with a file store each, the client exporting EXPORT. */
async function clusterFile(o: RmrSetupOptions, host: string, nbd_port: number): Promise<Record<string, unknown>> {
  const stg = [];
  for (let i = 1; i <= o.nodes; i++) stg.push({ name: `stg${i}`, addresses: [host], port: await freePort() });
  return {
    cluster: 'bench',
    state_dir: join(o.dir, 'daemons'),
    nodes: [...stg, { name: 'client', addresses: [host], port: await freePort() }],
    pools: [{ name: POOL, chunk_size: o.chunk_size ?? 128 * 1024, members: stg.map((n, i) => ({ node: n.name, member_id: i + 1 })) }],
    stores: stg.map((n, i) => ({ node: n.name, pool: POOL, path: storePath(o.dir, i + 1), size: o.size_bytes })),
    client: {
      node: 'client',
      devices: [{ name: 'disk0', pool: POOL, size: o.size_bytes, export: EXPORT }],
      nbd: { socket_dir: join(o.dir, 'nbd'), tcp: `${host}:${nbd_port}`, ...(o.nbd_tls_certificates !== undefined ? { tls: 'on', tls_certificates: o.nbd_tls_certificates } : {}) },
    },
  };
}

type J = Record<string, unknown>;
const obj = (v: unknown): J => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as J) : {});

/** The daemon's events after `since` (long poll of up to `wait_ms`), and the next `since`. */
async function events(t: Target, since: number, wait_ms: number): Promise<{ next: number; events: J[] }> {
  const r = await call(t, 'GET', `/v1/events?since=${since}&wait_ms=${wait_ms}`, undefined, wait_ms + 10_000);
  if (r.status !== 200) throw new Error(errorLine(r));
  const next = Number(r.headers['x-rmr-events-next'] ?? since);
  return { next, events: r.body.split('\n').filter((l) => l.trim() !== '').map((l) => obj(JSON.parse(l))) };
}

async function lastEventSeq(t: Target): Promise<number> {
  const r = await call(t, 'GET', '/v1/status');
  if (r.status !== 200) throw new Error(errorLine(r));
  return Number(obj(obj(JSON.parse(r.body)).daemon).last_event_seq ?? 0);
}

export async function startRmr(o: RmrSetupOptions): Promise<RmrSetup> {
  const host = '127.0.0.1';
  const say = o.say ?? ((): void => undefined);
  const nbd_port = await freePort();
  const path = join(o.dir, 'cluster.yaml');
  const cf = await clusterFile(o, host, nbd_port);
  writeFileSync(path, `# the benchmark's cluster (bench/rmr-setup.ts)\n${toYaml(cf)}`);
  const lc: LoadedCluster = loadCluster(path);
  const storage = lc.file.nodes.filter((n) => n.name !== 'client');
  const ctl = (name: string): ReturnType<typeof nodeCtl> => {
    const n = lc.file.nodes.find((x) => x.name === name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return nodeCtl(name, nodeTarget(lc, n));
  };
  let started: Started[] = [];
  const stop = async (): Promise<void> => {
    // SIGTERM, client first (a profiled daemon writes its profile as it exits).
    await stopDaemons(lc, stopOrder(lc.file), say);
    // stopDaemons gives each 15 s; one still running then (stopped under a debugger, wedged)
    // is killed, so stop() always ends.
    for (const s of started) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
    await Promise.all(started.map((s) => s.exited));
  };
  o.onStop?.(stop);
  const status = async (): Promise<Record<string, unknown>[]> => {
    const out: Record<string, unknown>[] = [];
    for (const n of storage) {
      const c = ctl(n.name);
      const sync = obj(JSON.parse((await c.read(`rmr-server/pools/${POOL}/sync_progress`)) ?? 'null'));
      const state = ((await c.read(`rmr-server/pools/${POOL}/state`)) ?? '').split('\n')[0] ?? '';
      const stats = JSON.parse((await c.read(`rmr-server/pools/${POOL}/stats`)) ?? 'null') as unknown;
      out.push({ node: n.name, state: state.toUpperCase(), dirty_chunks: typeof sync.dirty_chunks === 'number' ? sync.dirty_chunks : -1, sync, stats });
    }
    return out;
  };
  try {
    const r = await up(lc, { attached: true, wait_ms: 120_000, say, spawn: { node_args: o.node_args ?? [], env: o.env ?? {} } });
    started = r.started;
    const byName = new Map(r.started.map((s) => [s.node, s.child.pid ?? 0]));
    const pids = [...storage.map((n) => byName.get(n.name) ?? 0), byName.get('client') ?? 0];
    if (pids.some((p) => p === 0)) throw new Error(`startRmr: a daemon was running already (pids ${pids.join(',')}): stop the daemons under ${lc.state_dir}`);
    const clientClean = async (): Promise<boolean> => {
      const j = obj(JSON.parse((await ctl('client').read(`rmr-client/pools/${POOL}/status`)) ?? 'null'));
      const legs = Array.isArray(j.legs) ? j.legs.map(obj) : [];
      return legs.length === storage.length && legs.every((l) => l.state === 'normal' && l.dirty_chunks === 0);
    };
    // Every member but the first joined a pool that had members already: it starts fully
    // dirty and copies the device from them. Measurements start once all are clean, as
    // both the members and the client see it.
    const t0 = performance.now();
    const deadline = Date.now() + (o.initial_sync_timeout_ms ?? 600_000);
    let members_ms: number | null = null;
    for (;;) {
      const st = await status();
      const members = !st.some((x) => x.dirty_chunks !== 0 || x.state !== 'NORMAL');
      if (members) members_ms ??= performance.now() - t0;
      if (members && (await clientClean())) break;
      if (Date.now() > deadline) throw new Error(`the initial sync did not finish within ${o.initial_sync_timeout_ms ?? 600_000} ms: ${members ? "the members are clean, the client's maps not" : st.map((x) => `${String(x.node)} ${String(x.state)} ${String(x.dirty_chunks)} dirty`).join(', ')}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    // The client learns that a member became clean from its periodic map checks, some
    // seconds after the member did: the sync itself is the members' time.
    const initial_sync_ms = members_ms ?? performance.now() - t0;
    say(`initial sync: members clean after ${(initial_sync_ms / 1000).toFixed(1)} s, the client's maps after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const chunk_size = lc.file.pools[0]?.chunk_size ?? 128 * 1024;
    const chunks = Math.ceil(o.size_bytes / chunk_size);
    return {
      initial_sync_ms,
      nbd_uri: `nbd://${host}:${nbd_port}/${EXPORT}`,
      nbds_uri: o.nbd_tls_certificates !== undefined ? `nbds://${host}:${nbd_port}/${EXPORT}` : null,
      pids,
      dataFiles: storage.map((_, i) => storePath(o.dir, i + 1)),
      resync: async (member_id, timeout_ms = 600_000) => {
        const n = storage[member_id - 1];
        if (n === undefined) throw new Error(`no member ${member_id}`);
        const t = nodeTarget(lc, n);
        // The member's own map entirely dirty: what add_store mode=replace leaves for a new
        // disk. The background sync starts by itself (the node is NORMAL with a dirty own
        // map) and reports progress as events: `sync_progress` about once a second, and the
        // `sync` transition running -> stopped once the map is clean; either carries the
        // dirty count.
        let since = await lastEventSeq(t);
        const t1 = performance.now();
        await ctl(n.name).write(`rmr-server/pools/${POOL}/map`, `${chunks} 0 ${member_id}`);
        const end = Date.now() + timeout_ms;
        for (;;) {
          const e = await events(t, since, Math.max(1, Math.min(10_000, end - Date.now())));
          since = e.next;
          if (e.events.some((x) => (x.kind === 'sync_progress' || x.kind === 'sync') && x.subject === POOL && obj(x.detail).dirty_chunks === 0)) break;
          if (Date.now() > end) throw new Error(`the resync of member ${member_id} did not finish within ${timeout_ms} ms`);
        }
        return { ms: performance.now() - t1, bytes: chunks * chunk_size };
      },
      status,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
