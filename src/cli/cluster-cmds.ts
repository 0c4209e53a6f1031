// Commands over a whole cluster: `rmr up`, `rmr down`, `rmr demo`, and the cluster views of
// `rmr status`, `rmr sync` and `rmr verify` (given `--cluster FILE`, or `--data-dir DIR`
// of a demo). Each node is reached through its own control API.

import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { call, CliError, errorLine, EXIT_FAILED, EXIT_USAGE, type Target } from './node-client.js';
import { clusterDown, clusterUp, type NodeCtl } from './cluster-ops.js';
import { ensureDaemons, loadCluster, nodeCtl, nodeTarget, stopDaemons, stopOrder, type LoadedCluster, type SpawnOptions, type Started } from './node-cluster.js';
import { formatTable, type Cell } from './format.js';
import { daemonLiveness } from '../node/liveness.js';
import { writeFileAtomic } from '../node/files.js';
import { addDaemonStatus, addUnreachable, emptyClusterStatus, type ClusterStatus } from '../daemon/cluster-status.js';

type J = unknown;
const obj = (v: J): Record<string, J> => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, J>) : {});

function ctlOf(lc: LoadedCluster): (node: string) => NodeCtl {
  const cache = new Map<string, NodeCtl>();
  return (name) => {
    let c = cache.get(name);
    if (c === undefined) {
      const n = lc.file.nodes.find((x) => x.name === name);
      if (n === undefined) throw new CliError(`no node ${name} in ${lc.path}`, EXIT_USAGE);
      c = nodeCtl(name, nodeTarget(lc, n));
      cache.set(name, c);
    }
    return c;
  };
}

/** Runs `up`'s steps; a refused step becomes one line naming the node and the step. */
async function runSteps(what: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`rmr ${what} failed: ${e instanceof Error ? e.message : String(e)} (fix it and run rmr ${what} again: done steps are skipped)`, EXIT_FAILED);
  }
}

export type { ClusterStatus };

export async function clusterStatus(lc: LoadedCluster): Promise<ClusterStatus> {
  const out = emptyClusterStatus(lc.file.cluster);
  for (const n of lc.file.nodes) {
    const t = nodeTarget(lc, n);
    const control = 'socket' in t ? t.socket : t.url;
    let body: unknown;
    try {
      const r = await call(t, 'GET', '/v1/status', undefined, 5000);
      if (r.status !== 200) throw new Error(errorLine(r));
      body = JSON.parse(r.body);
    } catch (e) {
      // A local node's pid file tells a starting or hung daemon from one that is gone.
      const live = n.control_url === null ? daemonLiveness(join(lc.state_dir, n.name, 'rmr.pid')) : null;
      addUnreachable(out, n.name, control, e instanceof Error ? e.message : String(e), live === null ? null : { running: live.running, pid: live.running ? live.pid : null, evidence: live.evidence });
      continue;
    }
    addDaemonStatus(out, n.name, control, body);
  }
  return out;
}

export function formatClusterStatus(s: ClusterStatus): string {
  let out = `cluster ${s.cluster}\n\n`;
  out += formatTable(
    ['daemon', 'state', 'pid', 'roles', 'data address'],
    s.daemons.map((d): Cell[] => [d.name, d.reachable ? d.state : `unreachable (${d.error ?? ''})`, d.pid, d.roles.join(',') || '-', d.data_address ?? '-']),
  );
  if (s.legs.length > 0) {
    out += `\n${formatTable(
      ['node', 'pool', 'side', 'member', 'session', 'state', 'dirty'],
      s.legs.map((l): Cell[] => [l.node, l.pool, l.side, l.member_id as Cell, (l.session as Cell) ?? '-', l.state as Cell, typeof l.dirty_chunks === 'number' ? `${l.dirty_chunks}/${String(l.total_chunks)}` : '-']),
    )}`;
  }
  const syncing = s.sync.filter((x) => obj(x.progress).state === 'running');
  if (syncing.length > 0) {
    out += `\n${formatTable(
      ['node', 'pool', 'sync', 'dirty chunks', 'rate', 'eta'],
      syncing.map((x): Cell[] => {
        const p = obj(x.progress);
        return [x.node, x.pool, 'running', p.dirty_chunks as Cell, `${((Number(p.bytes_per_s) || 0) / 2 ** 20).toFixed(1)} MiB/s`, typeof p.eta_s === 'number' ? `${p.eta_s} s` : '-'];
      }),
    )}`;
  }
  if (s.devices.length > 0) out += `\n${formatTable(['device', 'pool', 'state', 'nbd uri'], s.devices.map((d): Cell[] => [d.name, d.pool, `${d.state}${d.degraded ? ' (degraded)' : ''}`, d.uris.join('  ')]))}`;
  if (s.pending.length > 0) out += `\n${formatTable(['node', 'pending step', 'last error'], s.pending.map((p): Cell[] => [p.node, p.step, p.reason]))}`;
  return out;
}

/** Every leg the client reports NORMAL, every member's server pool NORMAL, every device ready. */
export function clusterNormal(lc: LoadedCluster, s: ClusterStatus): boolean {
  const cf = lc.file;
  for (const p of cf.pools) {
    for (const m of p.members) {
      if (!s.legs.some((l) => l.node === m.node && l.pool === p.name && l.side === 'server' && l.state === 'normal')) return false;
      if (cf.client !== null && !s.legs.some((l) => l.node === cf.client?.node && l.pool === p.name && l.side === 'client' && l.member_id === m.member_id && l.state === 'normal')) return false;
    }
  }
  for (const d of cf.client?.devices ?? []) if (!s.devices.some((x) => x.name === d.name && x.state === 'ready')) return false;
  return true;
}

export async function waitNormal(lc: LoadedCluster, timeout_ms: number, say: (l: string) => void): Promise<ClusterStatus> {
  const deadline = Date.now() + timeout_ms;
  let last = '';
  for (;;) {
    const s = await clusterStatus(lc);
    if (clusterNormal(lc, s)) return s;
    const line = s.legs.map((l) => `${l.node}/${l.pool}/${typeof l.session === 'string' ? l.session : 'server'}=${typeof l.state === 'string' ? l.state : '?'}`).join(' ');
    if (line !== last) say(`waiting for NORMAL: ${line}`);
    last = line;
    if (Date.now() > deadline) throw new CliError(`the cluster is not NORMAL after ${timeout_ms / 1000} s (${line}); see rmr status --cluster ${lc.path}`, EXIT_FAILED);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function up(lc: LoadedCluster, o: { attached: boolean; wait_ms: number; say: (l: string) => void; spawn?: SpawnOptions }): Promise<{ started: Started[]; status: ClusterStatus }> {
  const started = await ensureDaemons(lc, o.attached, o.say, o.spawn);
  await runSteps('up', () => clusterUp(lc.file, ctlOf(lc), o.say));
  const status = o.wait_ms > 0 ? await waitNormal(lc, o.wait_ms, o.say) : await clusterStatus(lc);
  return { started, status };
}

export async function down(lc: LoadedCluster, o: { mode: 'disassemble' | 'delete'; stop: boolean; say: (l: string) => void }): Promise<void> {
  await runSteps('down', () => clusterDown(lc.file, ctlOf(lc), o.mode, o.say));
  if (o.stop) await stopDaemons(lc, stopOrder(lc.file), o.say);
}

// ------------------------------------------------------------------ demo

export interface DemoOptions {
  data_dir: string;
  nodes: number;
  size_bytes: number;
  address: string;
  data_port: number;
  nbd_port: number;
}

export function defaultDemoDir(): string {
  const base = process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state');
  return join(base, 'rmr-demo');
}

/** The demo's cluster file: N storage nodes with file stores, one client exporting `disk0`. */
export function demoCluster(o: DemoOptions): Record<string, unknown> {
  const nodes = Array.from({ length: o.nodes }, (_, i) => ({ name: `stg${i + 1}`, addresses: [o.address], port: o.data_port + i }));
  return {
    cluster: 'demo',
    state_dir: join(o.data_dir, 'daemons'),
    nodes: [...nodes, { name: 'client', addresses: [o.address], port: o.data_port + o.nodes }],
    pools: [{ name: 'demo', chunk_size: '128K', members: nodes.map((n, i) => ({ node: n.name, member_id: i + 1 })) }],
    stores: nodes.map((n) => ({ node: n.name, pool: 'demo', path: join(o.data_dir, 'stores', `${n.name}.img`), size: o.size_bytes })),
    client: { node: 'client', devices: [{ name: 'disk0', pool: 'demo', size: o.size_bytes, export: 'disk0' }], nbd: { socket_dir: join(o.data_dir, 'nbd'), tcp: `${o.address}:${o.nbd_port}` } },
  };
}

export function writeDemoCluster(o: DemoOptions): string {
  const dir = resolve(o.data_dir);
  mkdirSync(join(dir, 'stores'), { recursive: true, mode: 0o700 });
  const path = join(dir, 'cluster.yaml');
  // 0600 whatever the umask (under umask 000 it was 0666): it names the secret and key files.
  if (!existsSync(path)) writeFileAtomic(path, `# rmr demo cluster (written by rmr demo; edit freely)\n${toYaml(demoCluster({ ...o, data_dir: dir }))}`, 0o600, false);
  return path;
}

export function demoBanner(lc: LoadedCluster, s: ClusterStatus, dataDir: string, dashboard: string | null = null): string {
  const dev = s.devices[0];
  const tcp = dev?.uris.find((u) => u.startsWith('nbd://')) ?? '';
  const unix = dev?.uris.find((u) => u.startsWith('nbd+unix')) ?? '';
  const cli = `node ${process.argv[1] ?? 'rmr'}`;
  return [
    '',
    `RMR demo is up: pool "demo" replicated on ${lc.file.pools[0]?.members.length ?? 0} storage daemons, device disk0 exported over NBD.`,
    '',
    `  NBD (TCP):   ${tcp}`,
    `  NBD (Unix):  ${unix}`,
    '',
    'Use it:',
    `  nbdinfo ${tcp}`,
    `  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' ${tcp}`,
    `  qemu-img convert -n -f raw -O raw some.img ${tcp}`,
    `  fio --name=t --ioengine=nbd --uri=${tcp} --rw=randwrite --bs=4k --iodepth=32 --size=64M --direct=1`,
    `  mkdir -p fuse && nbdfuse fuse ${tcp} &   # fuse/nbd is the disk as a file`,
    '',
    'Watch it:',
    ...(dashboard !== null ? [`  ${dashboard}   (the web dashboard)`] : []),
    `  ${cli} status --data-dir ${dataDir}`,
    `  ${cli} events --socket ${join(lc.state_dir, 'stg1', 'control.sock')} --follow`,
    `  curl --unix-socket ${join(lc.state_dir, 'client', 'control.sock')} http://rmr/metrics`,
    `  ${cli} ctl ls rmr-server/pools/demo --socket ${join(lc.state_dir, 'stg1', 'control.sock')}`,
    '',
    `Data and logs: ${dataDir} (running the demo again reuses them). Ctrl-C stops the demo.`,
    '',
  ].join('\n');
}

/**
 * SIGINT/SIGTERM stop the daemons (client first); the promise resolves (exit code 0) once
 * they are gone. `watch` reports daemons that die on their own; `now` stops at once.
 */
export function untilSignal(lc: LoadedCluster, say: (l: string) => void): Promise<number> & { watch(started: Started[]): void; now(): Promise<number> } {
  let stopping: Promise<number> | null = null;
  let resolveOuter: (code: number) => void = () => undefined;
  const outer = new Promise<number>((r) => (resolveOuter = r));
  const now = (): Promise<number> => {
    stopping ??= stopDaemons(lc, stopOrder(lc.file), say).then(() => {
      resolveOuter(0);
      return 0;
    });
    return stopping;
  };
  const onSignal = (sig: string): void => {
    if (stopping !== null) return;
    say(`\n${sig}: stopping the demo`);
    void now();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  return Object.assign(outer, {
    watch: (started: Started[]): void => {
      for (const s of started) {
        void s.exited.then((code) => {
          if (stopping === null) say(`${s.node}: daemon exited unexpectedly (code ${String(code)}); see ${join(lc.state_dir, s.node, 'daemon.log')}`);
        });
      }
    },
    now,
  });
}

export function clusterTarget(lc: LoadedCluster, node: string): Target {
  const n = lc.file.nodes.find((x) => x.name === node);
  if (n === undefined) throw new CliError(`no node ${node}`, EXIT_USAGE);
  return nodeTarget(lc, n);
}

export { loadCluster };
