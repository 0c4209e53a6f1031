// The CLI's view of a whole cluster: the cluster file (relative paths taken from the file's
// directory), one control target per node, and the daemons `rmr up` starts itself for
// nodes whose daemon does not answer (local nodes only; a node reached by control_url
// must run its own daemon). A started daemon gets a generated config under
// `<state_dir>/<node>/` and logs to `<state_dir>/<node>/daemon.log`.
//
// Credentials: unless the cluster file says otherwise (data_tls), the daemons `up` starts
// authenticate as themselves on the data plane with per-node TLS-PSK keys, which `up`
// generates into one key file (data_psk_file, mode 0600) the first time and extends when
// nodes are added. PSKs, not certificates, because they need nothing but random bytes (no
// openssl on the host, no CA to keep), and TLS 1.3 with a PSK still does an (EC)DHE exchange
// (forward secrecy). The daemons `up` starts share one host and one user, so one file for
// all of them gives nothing away that a per-node file would keep; across hosts each host
// gets its own line and those of the nodes that connect to it, or certificates
// (docs/security.md).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, fchmodSync, lstatSync, mkdirSync, openSync, readFileSync, writeFileSync, closeSync, chmodSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { validateClusterFile, type ClusterFile, type ClusterNode } from '../daemon/cluster.js';
import { formatMode, isLoopbackHost, parseConfigText } from '../daemon/config.js';
import { formatDataPskLine, parseDataPskFile, ROLE_CLIENT, ROLE_STORAGE, type DataPskEntry } from '../daemon/data-tls.js';
import { readSecretFile, writeFileAtomic } from '../node/files.js';
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
  /** Absolute path of the per-node data-plane keys (data_tls: psk), else null. */
  readonly data_psk_file: string | null;
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
    control_ca_file: absOrNull(raw.control_ca_file),
    data_psk_file: absOrNull(raw.data_psk_file),
  };
  const data_psk_file = raw.data_tls !== 'psk' ? null : (file.data_psk_file ?? join(state_dir, 'data.psk'));
  return { file, path: resolve(path), state_dir, secret_file: raw.secret_file === null ? join(state_dir, 'secret') : abs(raw.secret_file), data_psk_file };
}

/** The data-plane roles of a node in the cluster file (none: it runs no daemon). */
export function nodeRoles(cf: ClusterFile, node: string): string[] {
  return [...(cf.client?.node === node ? [ROLE_CLIENT] : []), ...(cf.stores.some((s) => s.node === node) ? [ROLE_STORAGE] : [])];
}

/**
 * The per-node keys: generated when the file is missing (if the cluster file names none of
 * its own); a node missing from it gets a new key, and roles follow the cluster file
 * (running daemons read the file again when an unknown identity connects). Keys already
 * there are kept. Mode 0600.
 */
export function ensureDataPsk(lc: LoadedCluster): void {
  const path = lc.data_psk_file;
  if (path === null) return;
  let have = new Map<string, DataPskEntry>();
  if (existsSync(path)) {
    try {
      have = parseDataPskFile(readSecretFile(path, 'data_psk_file', 'strict', () => undefined).toString('utf8'), path);
    } catch (e) {
      throw new CliError(`data_psk_file: ${(e as Error).message}`, EXIT_CONFIG);
    }
  } else if (lc.file.data_psk_file !== null) {
    throw new CliError(`data_psk_file ${path} does not exist: create it (a line name:$(openssl rand -hex 32):roles per node), or leave data_psk_file out and rmr up makes one`, EXIT_CONFIG);
  }
  let text = '# per-node TLS-PSK keys of the data plane: identity:hexkey:roles (written by rmr up; mode 0600)\n';
  let changed = !existsSync(path);
  for (const [id, e] of have) {
    const roles = nodeRoles(lc.file, id);
    const keep = roles.length === 0 ? e.roles : roles;
    if (keep.join(',') !== e.roles.join(',')) changed = true;
    text += formatDataPskLine(id, e.key, keep);
  }
  for (const n of lc.file.nodes) {
    const roles = nodeRoles(lc.file, n.name);
    if (roles.length === 0 || have.has(n.name)) continue;
    text += formatDataPskLine(n.name, randomBytes(32), roles);
    changed = true;
  }
  if (!changed) return;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileAtomic(path, text, 0o600, true);
}

const warned = new Set<string>();

function warnOnce(msg: string): void {
  if (warned.has(msg)) return;
  warned.add(msg);
  process.stderr.write(`rmr: warning: ${msg}\n`);
}

export function nodeTarget(lc: LoadedCluster, n: ClusterNode): Target {
  if (n.control_url !== null) {
    let token: string | null = null;
    const tf = lc.file.token_file;
    if (tf !== null) {
      try {
        token = readSecretFile(tf, 'token_file', 'warn', warnOnce).toString('utf8').trim();
      } catch (e) {
        throw new CliError(`cannot read token_file ${tf}: ${(e as Error).message}`, EXIT_CONFIG);
      }
    }
    const u = new URL(n.control_url);
    if (u.protocol === 'http:' && !isLoopbackHost(u.hostname.replace(/^\[(.*)\]$/, '$1'))) warnOnce(`node ${n.name}: ${n.control_url} is plain HTTP: the bearer token travels in clear (use https://)`);
    let ca: Buffer | null = null;
    const caf = lc.file.control_ca_file;
    if (caf !== null) {
      try {
        ca = readFileSync(caf);
      } catch (e) {
        throw new CliError(`cannot read control_ca_file ${caf}: ${(e as Error).message}`, EXIT_CONFIG);
      }
    }
    return { url: n.control_url, token, ca };
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
  const tls = cf.data_tls === 'psk' ? { tls_psk_file: lc.data_psk_file } : cf.data_tls === 'insecure' ? { allow_insecure: true } : {};
  return {
    name: n.name,
    state_dir: dir,
    control: { socket: n.control_socket ?? join(dir, 'control.sock') },
    log: { file: join(dir, 'daemon.log'), format: 'json' },
    secret_file: lc.secret_file,
    data: { listen, ...tls },
    ...(nbd !== undefined ? { nbd } : {}),
    roles: { ...(storage ? { storage: storageSettings(cf, n) } : {}), ...(client ? { client: {} } : {}) },
  };
}

/**
 * The store allow-list of a node `up` starts: the directories of its stores' files, a block
 * device by its exact path (never all of /dev); symlinks only when a store path is one.
 */
function storageSettings(cf: ClusterFile, n: ClusterNode): Record<string, unknown> {
  const paths = cf.stores.filter((s) => s.node === n.name).map((s) => s.path);
  const dirs = [...new Set(paths.map((p) => (p.startsWith('/dev/') ? p : dirname(p))))];
  const symlinks = paths.some((p) => {
    try {
      return lstatSync(p).isSymbolicLink();
    } catch {
      return false;
    }
  });
  return { store_dirs: dirs, ...(symlinks ? { store_symlinks: true } : {}) };
}

/** The cluster secret, generated (owner-only) when the file names none and none exists yet. */
export function ensureSecret(lc: LoadedCluster): void {
  if (existsSync(lc.secret_file)) return;
  if (lc.file.secret_file !== null) throw new CliError(`secret_file ${lc.secret_file} does not exist: create it (at least 32 bytes, e.g. head -c 32 /dev/urandom | base64 > ${lc.secret_file}; chmod 600 ${lc.secret_file})`, EXIT_CONFIG);
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
 * The environment of a daemon `rmr up` starts: this process's without its RMR_* variables,
 * plus `extra`, plus UV_THREADPOOL_SIZE for a node with a store unless either sets it, and
 * for every node the malloc keys of DAEMON_MALLOC_TUNABLES that their GLIBC_TUNABLES does not
 * set. RMR_* variables are the CLI's (RMR_TOKEN, a secret the daemon has no use for) or
 * daemon settings that would override the config `up` wrote for that node (RMR_STATE_DIR
 * would give every daemon one state directory); only `extra` passes them on.
 */
export function daemonEnv(lc: LoadedCluster, n: ClusterNode, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RMR_')));
  const env: NodeJS.ProcessEnv = { ...inherited, ...extra };
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
    // Only daemons started here read the key file: nodes with their own daemon have their own config.
    ensureDataPsk(lc);
    const cfgPath = join(dir, 'daemon.yaml');
    writeFileSync(cfgPath, `# written by rmr up from ${lc.path}\n${toYaml(daemonConfigFor(lc, n))}`, { mode: 0o600 });
    const out = openSync(join(dir, 'stderr.log'), 'a', 0o600);
    // Explicit, whatever the umask (under umask 000 it was 0666).
    fchmodSync(out, 0o600);
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
