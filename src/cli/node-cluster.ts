// The CLI's view of a whole cluster: the cluster file (relative paths taken from the file's
// directory), one control target per node, and the daemons `rmr up` starts itself for
// nodes whose daemon does not answer (local nodes only; a node reached by control_url
// must run its own daemon). A started daemon gets a generated config under
// `<state_dir>/<node>/` and logs to `<state_dir>/<node>/daemon.log`.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync, closeSync, chmodSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { validateClusterFile, type ClusterFile, type ClusterNode } from '../daemon/cluster.js';
import { formatMode, parseConfigText } from '../daemon/config.js';
import { formatListen } from '../daemon/validate.js';
import { call, CliError, errorLine, EXIT_CONFIG, EXIT_FAILED, EXIT_UNREACHABLE, type Target } from './node-client.js';
import type { NodeCtl } from './cluster-ops.js';
import { daemonLiveness, readPidFile, liveness, waitStopped } from '../node/liveness.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const START_DEADLINE_MS = 20_000;

export interface LoadedCluster {
  readonly file: ClusterFile;
  readonly path: string;
  /** Absolute: where daemons started by `up` keep their state. */
  readonly state_dir: string;
  /** Absolute path of the secret every daemon uses. */
  readonly secret_file: string;
}

/** Reads and validates a cluster file; relative paths are resolved against its directory. */
export function loadCluster(path: string): LoadedCluster {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read cluster file ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'}): check the path`, EXIT_CONFIG);
  }
  const base = dirname(resolve(path));
  const abs = (p: string): string => (isAbsolute(p) ? p : join(base, p));
  const absOrNull = (p: string | null): string | null => (p === null ? null : abs(p));
  const raw = validateClusterFile(parseConfigText(text, path));
  const state_dir = abs(raw.state_dir ?? `.rmr-${raw.cluster}`);
  const file: ClusterFile = {
    ...raw,
    stores: raw.stores.map((s) => ({ ...s, path: abs(s.path) })),
    nodes: raw.nodes.map((n) => ({ ...n, control_socket: n.control_socket === null ? null : abs(n.control_socket) })),
    client: raw.client === null ? null : { ...raw.client, nbd: { ...raw.client.nbd, socket_dir: absOrNull(raw.client.nbd.socket_dir), tls_certificates: absOrNull(raw.client.nbd.tls_certificates), tls_psk_file: absOrNull(raw.client.nbd.tls_psk_file) } },
    token_file: raw.token_file === null ? null : abs(raw.token_file),
  };
  return { file, path: resolve(path), state_dir, secret_file: raw.secret_file === null ? join(state_dir, 'secret') : abs(raw.secret_file) };
}

export function nodeTarget(lc: LoadedCluster, n: ClusterNode): Target {
  if (n.control_url !== null) {
    let token: string | null = null;
    if (lc.file.token_file !== null) {
      try {
        token = readFileSync(lc.file.token_file, 'utf8').trim();
      } catch {
        throw new CliError(`cannot read token_file ${lc.file.token_file}`, EXIT_CONFIG);
      }
    }
    return { url: n.control_url, token };
  }
  return { socket: n.control_socket ?? join(lc.state_dir, n.name, 'control.sock') };
}

/** A NodeCtl over the control API. */
export function nodeCtl(node: string, t: Target): NodeCtl {
  const url = (p: string): string => `/v1/tree/${p.split('/').filter((s) => s !== '').map(encodeURIComponent).join('/')}`;
  return {
    node,
    read: async (path) => {
      const r = await call(t, 'GET', url(path));
      if (r.status === 404) return null;
      if (r.status !== 200) throw new Error(errorLine(r));
      return r.body.replace(/\n$/, '');
    },
    write: async (path, value) => {
      const r = await call(t, 'PUT', url(path), value);
      if (r.status < 200 || r.status >= 300) throw new Error(errorLine(r));
      const res = (JSON.parse(r.body) as { result?: unknown }).result;
      return typeof res === 'string' ? res : '';
    },
  };
}

/** The daemon answers and has finished starting its roles. */
async function answers(t: Target): Promise<boolean> {
  try {
    const r = await call(t, 'GET', '/v1/status', undefined, 2000);
    if (r.status !== 200) return false;
    const st = (JSON.parse(r.body) as { daemon?: { state?: unknown } }).daemon?.state;
    return st === 'running';
  } catch {
    return false;
  }
}

/** The daemon config `rmr up` writes for a node it starts. */
export function daemonConfigFor(lc: LoadedCluster, n: ClusterNode): Record<string, unknown> {
  const cf = lc.file;
  const dir = join(lc.state_dir, n.name);
  const storage = cf.stores.some((s) => s.node === n.name);
  const client = cf.client?.node === n.name;
  const listen = n.addresses.length === 1 ? formatListen({ host: n.addresses[0] as string, port: n.port }) : formatListen({ host: '0.0.0.0', port: n.port });
  const cn = client && cf.client !== null ? cf.client.nbd : null;
  const nbd =
    cn !== null
      ? {
          socket_dir: cn.socket_dir ?? join(dir, 'nbd'),
          tcp: cn.tcp === null ? null : formatListen(cn.tcp),
          tls: cn.tls,
          tls_certificates: cn.tls_certificates,
          tls_psk_file: cn.tls_psk_file,
          tls_verify_peer: cn.tls_verify_peer,
          allow_insecure: cn.allow_insecure,
          ...(cn.socket_mode !== null ? { socket_mode: formatMode(cn.socket_mode) } : {}),
          socket_group: cn.socket_group,
        }
      : undefined;
  return {
    name: n.name,
    state_dir: dir,
    control: { socket: n.control_socket ?? join(dir, 'control.sock') },
    log: { file: join(dir, 'daemon.log'), format: 'json' },
    secret_file: lc.secret_file,
    data: { listen },
    ...(nbd !== undefined ? { nbd } : {}),
    roles: { ...(storage ? { storage: {} } : {}), ...(client ? { client: {} } : {}) },
  };
}

/** The cluster secret, generated (owner-only) when the file names none and none exists yet. */
export function ensureSecret(lc: LoadedCluster): void {
  if (existsSync(lc.secret_file)) return;
  if (lc.file.secret_file !== null) throw new CliError(`secret_file ${lc.secret_file} does not exist: create it (at least 16 bytes, e.g. head -c 32 /dev/urandom | base64 > ${lc.secret_file})`, EXIT_CONFIG);
  mkdirSync(dirname(lc.secret_file), { recursive: true, mode: 0o700 });
  writeFileSync(lc.secret_file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  chmodSync(lc.secret_file, 0o600);
}

/** How `rmr up` spawns the daemons it starts: extra node arguments and environment. */
export interface SpawnOptions {
  /** Node arguments before the script (e.g. `--cpu-prof`). */
  readonly node_args?: readonly string[];
  /** Added to this process's environment. */
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * libuv's thread-pool size for a storage daemon: the core count, at least 2 and at most 4
 * (libuv's own default). The pool serves the store's file IO; more threads than cores
 * contend for the CPUs and the file's inode lock (docs/bench.md: on 2 cores, 2 threads
 * instead of 4-8 gave +8-10 % IOPS at -15 % CPU per IO). libuv reads UV_THREADPOOL_SIZE once,
 * at the first use of the pool, so it has to be in the environment the process starts with.
 */
export function storageThreadpoolSize(cores = availableParallelism()): number {
  return Math.min(4, Math.max(2, cores));
}

/**
 * glibc malloc settings of every daemon (GLIBC_TUNABLES, read once at process start; other
 * C libraries ignore it). By default a block above 128 KiB is a fresh mmap, and freed heap
 * is trimmed back to the kernel: every 1 MiB payload then cost 256 page faults, each with a
 * page zeroed and charged to the memory cgroup (~7 % of a storage daemon's main thread under
 * 1 MiB writes, docs/bench.md). Up to 8 MiB comes from the heap instead, and up to 128 MiB of
 * freed heap is kept for the next payloads.
 */
export const DAEMON_MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=8388608:glibc.malloc.trim_threshold=134217728';

/**
 * The environment of a daemon `rmr up` starts: this process's, plus `extra`, plus
 * UV_THREADPOOL_SIZE for a node with a store unless either sets it, and for every node the
 * malloc keys of DAEMON_MALLOC_TUNABLES that their GLIBC_TUNABLES does not set.
 */
export function daemonEnv(lc: LoadedCluster, n: ClusterNode, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  const storage = lc.file.stores.some((s) => s.node === n.name);
  if (storage && (env.UV_THREADPOOL_SIZE ?? '') === '') env.UV_THREADPOOL_SIZE = String(storageThreadpoolSize());
  env.GLIBC_TUNABLES = withTunables(env.GLIBC_TUNABLES ?? '', DAEMON_MALLOC_TUNABLES);
  return env;
}

/** `ours` (key=value:…) added to `theirs`, each key only where `theirs` does not set it. */
export function withTunables(theirs: string, ours: string): string {
  const set = new Set(theirs.split(':').filter((kv) => kv !== '').map((kv) => kv.split('=')[0]));
  const add = ours.split(':').filter((kv) => !set.has(kv.split('=')[0]));
  return [...theirs.split(':').filter((kv) => kv !== ''), ...add].join(':');
}

/**
 * Node arguments of every daemon `rmr up` starts. A daemon's heap after start-up (control
 * tree, roles, modules: ~9 MB) sits close to V8's first old-generation limit; under large IO
 * every 1 MiB payload is an external allocation, and external-memory pressure then started
 * incremental marking and a full mark-compact several times a second (60-90 per 256 MiB
 * copied, against 1 for the same library code in a smaller process), ~30 % of a storage
 * daemon's busy time under 1 MiB writes. A larger initial old space keeps those collections
 * scavenges, which free the short-lived payloads just as well. It is a limit, not memory
 * taken: the heap only grows as far as garbage accumulates between collections.
 */
export const DAEMON_NODE_ARGS: readonly string[] = ['--initial-old-space-size=64'];

export interface Started {
  readonly node: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
}

/**
 * Makes sure every node's daemon answers: contacted if it runs, started otherwise (local
 * nodes). `attached` keeps the started daemons as children of this process (the demo);
 * otherwise they are detached and outlive it.
 */
export async function ensureDaemons(lc: LoadedCluster, attached: boolean, say: (l: string) => void, spawnOpts: SpawnOptions = {}): Promise<Started[]> {
  const started: Started[] = [];
  ensureSecret(lc);
  const need = lc.file.nodes.filter((n) => lc.file.stores.some((s) => s.node === n.name) || lc.file.client?.node === n.name);
  for (const n of need) {
    const t = nodeTarget(lc, n);
    if (await answers(t)) {
      say(`${n.name}: daemon answers at ${'socket' in t ? t.socket : t.url}`);
      continue;
    }
    if (n.control_url !== null) throw new CliError(`the daemon of node ${n.name} does not answer at ${n.control_url}: start \`rmr daemon\` on that host`, EXIT_UNREACHABLE);
    const dir = join(lc.state_dir, n.name);
    // A daemon that runs but does not answer yet is starting (or hung): wait for it rather
    // than start a second one, which its pid file would refuse anyway.
    const live = daemonLiveness(join(dir, 'rmr.pid'));
    if (live?.running === true) {
      say(`${n.name}: daemon ${live.evidence}; waiting for it to answer`);
      await waitAnswers(n.name, t, () => {
        const now = daemonLiveness(join(dir, 'rmr.pid'));
        return now?.running === true ? null : `stopped (${now?.running === false ? now.evidence : 'its pid file is gone'})`;
      }, join(dir, 'daemon.log'));
      continue;
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const cfgPath = join(dir, 'daemon.yaml');
    writeFileSync(cfgPath, `# written by rmr up from ${lc.path}\n${toYaml(daemonConfigFor(lc, n))}`, { mode: 0o600 });
    const out = openSync(join(dir, 'stderr.log'), 'a');
    // Its own process group either way: a Ctrl-C meant for the demo must not reach the
    // daemons, which the demo stops in order (client first) itself.
    const child = spawn(process.execPath, [...DAEMON_NODE_ARGS, ...(spawnOpts.node_args ?? []), MAIN, 'daemon', '--config', cfgPath], { stdio: ['ignore', out, out], detached: true, env: daemonEnv(lc, n, spawnOpts.env) });
    closeSync(out);
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    if (!attached) child.unref();
    started.push({ node: n.name, child, exited });
    say(`${n.name}: started daemon pid ${child.pid ?? '?'} (config ${cfgPath})`);
    let code: number | null | undefined;
    void exited.then((c) => (code = c));
    await waitAnswers(n.name, t, () => (code === undefined ? null : `exited with code ${String(code)}`), join(dir, 'stderr.log'));
  }
  return started;
}

/** Waits (bounded) until the node's daemon answers; fails at once when `stopped` says why it never will. */
async function waitAnswers(node: string, t: Target, stopped: () => string | null, log: string): Promise<void> {
  const deadline = Date.now() + START_DEADLINE_MS;
  while (!(await answers(t))) {
    const why = stopped();
    if (why !== null) throw new CliError(`the daemon of node ${node} ${why} at start: see ${log}: ${lastLine(log)}`, EXIT_FAILED);
    if (Date.now() > deadline) throw new CliError(`the daemon of node ${node} did not answer within ${START_DEADLINE_MS / 1000} s: see ${log}`, EXIT_FAILED);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function lastLine(path: string): string {
  try {
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    return lines[lines.length - 1] ?? '';
  } catch {
    return '';
  }
}

/**
 * Sends SIGTERM to the daemons of local nodes (named by their pid files) and waits, at most
 * 15 s each, for them to stop. A daemon that exited or is a zombie counts as stopped, and a
 * pid now used by another program is never signalled.
 */
export async function stopDaemons(lc: LoadedCluster, order: readonly string[], say: (l: string) => void): Promise<void> {
  for (const name of order) {
    const id = readPidFile(join(lc.state_dir, name, 'rmr.pid'));
    if (id === null) continue;
    const l = liveness(id);
    if (!l.running) continue;
    try {
      process.kill(id.pid, 'SIGTERM');
    } catch {
      continue;
    }
    say(`${name}: stopping daemon pid ${id.pid}`);
    if (!(await waitStopped(id, 15_000))) say(`${name}: daemon pid ${id.pid} did not stop within 15 s`);
  }
}

/** Storage nodes first in bring-up; at shutdown the client goes first. */
export function stopOrder(cf: ClusterFile): string[] {
  const storage = cf.nodes.filter((n) => cf.stores.some((s) => s.node === n.name)).map((n) => n.name);
  const client = cf.client?.node;
  return [...(client !== undefined && !storage.includes(client) ? [client] : []), ...storage.reverse()];
}
