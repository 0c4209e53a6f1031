#!/usr/bin/env node
// `rmr`: one executable. `rmr daemon` runs the node daemon; every other command is a client
// of a daemon's control API. Errors: one line on stderr saying what failed and what to do,
// exit code 1 (operation failed), 2 (usage), 3 (daemon unreachable), 4 (configuration).

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseConfigText, resolveDaemonConfig, configToPlain, defaultStateRoot, SETTINGS, flagName, envName, type ConfigEnv, type DaemonConfig } from '../daemon/config.js';
import { euid, readSecretFile } from '../node/files.js';
import { ConfigError } from '../daemon/validate.js';
import { runDaemon, StartError } from '../daemon/node-daemon.js';
import { ROLE_FACTORIES } from '../daemon/roles.js';
import { formatEvent, type DaemonEvent } from '../daemon/events.js';
import { call, stream, errorLine, CliError, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, type Target, type Reply } from './node-client.js';
import { formatStatus } from './format.js';
import { clusterStatus, defaultDemoDir, demoBanner, down, formatClusterStatus, loadCluster, up, untilSignal, writeDemoCluster, clusterTarget } from './cluster-cmds.js';
import { parseSize } from '../daemon/validate.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LoadedCluster } from './node-cluster.js';
import { DASHBOARD_DEFAULT_PORT, DASHBOARD_HELP, runDashboard } from './dashboard-cmd.js';

/** The package's version: package.json sits three levels above this file, in the tree and installed. */
const VERSION = ((): string => {
  try {
    const v = (JSON.parse(readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
})();

const CLIENT_HELP = `Daemon selection (every client command):
  --socket PATH        control socket (default: RMR_SOCKET, or the daemon default
                       <state dir>/control.sock: /var/lib/rmr/<hostname>/ as root,
                       else ~/.local/state/rmr/<hostname>/)
  --config FILE        take the socket from this daemon config file
  --daemon URL         https://host:port (or http:// on loopback) of a daemon's TCP
                       control listener
  --token-file FILE    file with the bearer token for --daemon (or RMR_TOKEN); mode 0600
  --ca-file FILE       CA certificate that signed the daemon's HTTPS certificate (or
                       RMR_CA_FILE; default: the system's CAs)
  --token TOKEN        the token itself: deprecated, every local user can read it in
                       /proc/<pid>/cmdline (a warning says so)`;

const HELP: Readonly<Record<string, string>> = {
  '': `rmr ${VERSION}: replicated network block store (RMR/BRMR) exported over NBD

Usage: rmr <command> [options]

Commands:
  demo       start a local 3-node cluster with an NBD disk, no configuration (rmr demo --help)
  up         start or contact a cluster's daemons and bring it up from a cluster file
  down       tear a cluster down in the documented order (disassemble; --delete wipes)
  sync       start, stop, rate-limit or watch the background sync of a pool
  verify     compare a pool's members chunk by chunk (hashes) and resync what differs
  dashboard  a live web page of the cluster: states, dirty maps, resync, IO, events
  daemon     run the node daemon (rmr daemon --help)
  ctl        read, write and list the control tree (rmr ctl --help)
  status     daemon, roles and pool legs (rmr status --help)
  events     event stream (rmr events --help)
  metrics    Prometheus metrics of a daemon

Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon unreachable, 4 bad configuration.`,
  daemon: `Usage: rmr daemon [--config FILE] [--print-config] [--<setting> VALUE ...]

Runs the node daemon until SIGTERM or SIGINT (then stops its roles and exits 0).
Every setting can be given in the config file (YAML or JSON), as an environment
variable, or as a flag; flags win over the environment, which wins over the file.

Settings:
${SETTINGS.map((s) => `  --${flagName(s.key).padEnd(26)} ${s.help} [${envName(s.key)}]`).join('\n')}

  --print-config               print the resolved configuration as JSON and exit`,
  ctl: `Usage: rmr ctl ls [PATH] [--json]
       rmr ctl read PATH [--json]
       rmr ctl write PATH VALUE...

The control tree has the paths of the reference's sysfs files, e.g.
  rmr ctl write rmr-client/ctl/join_pool poolname=ionos_pool chunk_size=131072
  rmr ctl read rmr-client/pools/ionos_pool/sessions/psrv0@stg-rmr0/state
VALUE words are joined with spaces, so key=value tokens need no quoting.

${CLIENT_HELP}`,
  status: `Usage: rmr status [--json] [--cluster FILE | --data-dir DIR]

Shows the daemon, its roles and every pool leg the roles report. With --cluster (or
--data-dir of a demo) every daemon of the cluster: process ids, roles, data addresses,
legs and dirty chunks, sync progress, and each device's NBD URIs.

${CLIENT_HELP}`,
  events: `Usage: rmr events [--since N] [--follow] [--wait-ms MS] [--json] [--cluster FILE | --data-dir DIR]

Prints events after sequence number N (default 0: all the daemon still holds); with
--cluster (or a demo's --data-dir) the events of every daemon, merged by time.
--follow keeps printing new events until interrupted; --wait-ms waits up to MS for
the first new event; --json prints the raw JSON lines.

${CLIENT_HELP}`,
  up: `Usage: rmr up CLUSTER.yaml [--no-wait] [--timeout S]

Starts the daemons of local nodes that do not answer yet (state under the file's
state_dir), then performs the bring-up (reference admin guide): server pools, stores
(re-added when the device holds one, created otherwise), the client's pool and legs
(new members in create mode and enabled, known ones assembled), the sync pools between
the members, and the devices with their NBD exports. Steps already done are skipped, so
running it again is safe. Waits until every leg is NORMAL unless --no-wait.`,
  down: `Usage: rmr down CLUSTER.yaml [--delete] [--keep-daemons]

Unmaps the devices, removes the sync sessions, the client's legs and the stores, and
leaves the pools, in the documented order. By default members are disassembled (data and
maps kept: rmr up brings the cluster back); --delete removes them for good and wipes the
stores' headers and metadata. Then stops the daemons rmr up started (--keep-daemons: no).`,
  demo: `Usage: rmr demo [--data-dir DIR] [--nodes N] [--size SIZE] [--address A] [--data-port P] [--nbd-port P]
                [--dashboard-port P]

Starts a local cluster with no configuration: N (default 3) storage daemons with file
stores and a compute client exporting the replicated device disk0 over NBD, waits until
it is NORMAL and prints how to use and watch it. Ctrl-C stops it; running it again
reuses the data. Defaults: --data-dir ${'$'}{XDG_STATE_HOME:-~/.local/state}/rmr-demo, --size 1G,
--address 127.0.0.1, --data-port 12340 (storage daemons use 12340, 12341, ...),
--nbd-port 10809. Use another --data-dir and ports to run demos side by side.
The web dashboard (rmr dashboard) runs on 127.0.0.1:--dashboard-port (default ${DASHBOARD_DEFAULT_PORT}; 0: none).`,
  sync: `Usage: rmr sync POOL start|stop|status|rate BYTES_PER_S [--wait] [--cluster FILE | --data-dir DIR]

Controls the background sync on every storage daemon of the pool (or the one daemon
given by --socket). start --wait (and status --wait) show progress until every member is
clean: a progress bar on a terminal, plain lines otherwise.`,
  verify: `Usage: rmr verify POOL [--source MEMBER] [--rate BYTES_PER_S] [--timeout S] [--json] [--cluster FILE | --data-dir DIR]

Online verify, with IO running: the client walks the device in batches; the source member
(default the lowest NORMAL one) hashes its chunks and asks every other NORMAL member for
theirs (hashes cross the network, data does not). Chunks that differ are marked dirty for
the members that disagree with the source and resynced. Shows progress (a bar on a
terminal), then the report. Exit code 0 when every member agreed, 1 when chunks differed
(they are being resynced) or the verify failed. --timeout (default 24 h) bounds the wait
for the report; the verify itself keeps running (its control file takes 'stop').
--cluster/--data-dir reach the client daemon of the cluster; otherwise --socket.`,
  dashboard: DASHBOARD_HELP,
  metrics: `Usage: rmr metrics

Prints the daemon's metrics in the Prometheus text format.

${CLIENT_HELP}`,
};

function configEnv(): ConfigEnv {
  return { hostname: hostname(), state_root: defaultStateRoot(euid(), process.env), vars: process.env };
}

function loadConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read config file ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'}): check the path`, EXIT_CONFIG);
  }
  if (text.length > 1 << 20) throw new CliError(`config file ${path} is larger than 1 MiB`, EXIT_CONFIG);
  return parseConfigText(text, path);
}

type Flags = Record<string, string | boolean | undefined>;

function parse(cmd: string, args: string[], options: Record<string, { type: 'string' | 'boolean' }>): { values: Flags; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...options, help: { type: 'boolean' } }, allowPositionals: true, strict: true });
    return { values: r.values, positionals: r.positionals };
  } catch (e) {
    throw new CliError(`rmr ${cmd}: ${(e as Error).message.split('\n')[0] ?? 'bad arguments'} (see rmr ${cmd} --help)`, EXIT_USAGE);
  }
}

const CLIENT_OPTIONS = {
  socket: { type: 'string' },
  config: { type: 'string' },
  daemon: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  'ca-file': { type: 'string' },
} as const;

/** A token or key file the CLI reads: a warning (not a refusal: it is the operator's own file) when others may read it. */
export function readCliSecret(path: string, what: string): string {
  try {
    return readSecretFile(path, what, 'warn', (msg) => process.stderr.write(`rmr: warning: ${msg}\n`)).toString('utf8').trim();
  } catch (e) {
    throw new CliError(`cannot read ${what} ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): check the path`, EXIT_USAGE);
  }
}

function target(v: Flags): Target {
  const str = (k: string): string | undefined => (typeof v[k] === 'string' ? v[k] : undefined);
  const url = str('daemon');
  if (url !== undefined) {
    const tf = str('token-file');
    const flag = str('token');
    // Kept for scripts, with a warning: argv is world-readable in /proc/<pid>/cmdline.
    if (flag !== undefined) process.stderr.write('rmr: warning: --token puts the token where every local user can read it (/proc/<pid>/cmdline, ps); use --token-file FILE or RMR_TOKEN\n');
    let token = flag ?? process.env.RMR_TOKEN ?? null;
    if (tf !== undefined) token = readCliSecret(tf, '--token-file');
    const caPath = str('ca-file') ?? process.env.RMR_CA_FILE;
    let ca: Buffer | null = null;
    if (caPath !== undefined) {
      try {
        ca = readFileSync(caPath);
      } catch (e) {
        throw new CliError(`cannot read --ca-file ${caPath} (${(e as NodeJS.ErrnoException).code ?? 'error'}): check the path`, EXIT_USAGE);
      }
    }
    return { url, token, ca };
  }
  const socket = str('socket') ?? process.env.RMR_SOCKET;
  if (socket !== undefined) return { socket };
  const cfgPath = str('config') ?? process.env.RMR_CONFIG;
  return { socket: resolveDaemonConfig(cfgPath === undefined ? undefined : loadConfigFile(cfgPath), configEnv()).control.socket };
}

function treeUrl(path: string, json: boolean): string {
  const enc = path
    .split('/')
    .filter((s) => s !== '')
    .map(encodeURIComponent)
    .join('/');
  return `/v1/tree/${enc}${json ? '?json' : ''}`;
}

function ok(r: Reply, what: string): Reply {
  if (r.status >= 200 && r.status < 300) return r;
  throw new CliError(`${what} failed: ${errorLine(r)}`, EXIT_FAILED);
}

async function cmdCtl(args: string[]): Promise<void> {
  const { values, positionals } = parse('ctl', args, { ...CLIENT_OPTIONS, json: { type: 'boolean' } });
  if (values.help === true) return void process.stdout.write(`${HELP.ctl}\n`);
  const [sub, path, ...rest] = positionals;
  const json = values.json === true;
  if (sub === 'ls') {
    const t = target(values);
    const r = ok(await call(t, 'GET', treeUrl(path ?? '', json)), `ls ${path ?? '/'}`);
    if (!json && r.headers['x-rmr-kind'] !== 'dir') throw new CliError(`ls ${path ?? '/'} failed: it is a file (use rmr ctl read)`, EXIT_FAILED);
    process.stdout.write(r.body);
    return;
  }
  if (sub === 'read') {
    if (path === undefined) throw new CliError('rmr ctl read: give the PATH to read (see rmr ctl --help)', EXIT_USAGE);
    const r = ok(await call(target(values), 'GET', treeUrl(path, json)), `read ${path}`);
    if (!json && r.headers['x-rmr-kind'] === 'dir') throw new CliError(`read ${path} failed: it is a directory (use rmr ctl ls)`, EXIT_FAILED);
    process.stdout.write(r.body);
    return;
  }
  if (sub === 'write') {
    if (path === undefined || rest.length === 0) throw new CliError('rmr ctl write: give PATH and VALUE (see rmr ctl --help)', EXIT_USAGE);
    const r = ok(await call(target(values), 'PUT', treeUrl(path, false), rest.join(' ')), `write ${path}`);
    if (json) process.stdout.write(r.body);
    else {
      const result = (JSON.parse(r.body) as { result?: unknown }).result;
      if (typeof result === 'string' && result !== '') process.stdout.write(`${result}\n`);
    }
    return;
  }
  throw new CliError(`rmr ctl: ${sub === undefined ? 'give a subcommand' : `unknown subcommand '${sub}'`} (ls, read or write; see rmr ctl --help)`, EXIT_USAGE);
}

async function cmdStatus(args: string[]): Promise<void> {
  const { values, positionals } = parse('status', args, { ...CLIENT_OPTIONS, ...CLUSTER_OPTIONS, json: { type: 'boolean' } });
  if (values.help === true) return void process.stdout.write(`${HELP.status}\n`);
  if (positionals.length > 0) throw new CliError(`rmr status: unexpected argument '${positionals[0] ?? ''}' (see rmr status --help)`, EXIT_USAGE);
  const lc = clusterOf(values);
  if (lc !== null) {
    const s = await clusterStatus(lc);
    process.stdout.write(values.json === true ? `${JSON.stringify(s, null, 2)}\n` : formatClusterStatus(s));
    return;
  }
  const r = ok(await call(target(values), 'GET', '/v1/status'), 'status');
  process.stdout.write(values.json === true ? r.body : formatStatus(JSON.parse(r.body)));
}

async function cmdEvents(args: string[]): Promise<void> {
  const { values, positionals } = parse('events', args, { ...CLIENT_OPTIONS, ...CLUSTER_OPTIONS, since: { type: 'string' }, follow: { type: 'boolean' }, 'wait-ms': { type: 'string' }, json: { type: 'boolean' } });
  if (values.help === true) return void process.stdout.write(`${HELP.events}\n`);
  if (positionals.length > 0) throw new CliError(`rmr events: unexpected argument '${positionals[0] ?? ''}' (see rmr events --help)`, EXIT_USAGE);
  const since = typeof values.since === 'string' ? values.since : '0';
  if (!/^[0-9]+$/.test(since)) throw new CliError(`rmr events: --since takes a sequence number, got '${since}'`, EXIT_USAGE);
  const wait = typeof values['wait-ms'] === 'string' ? values['wait-ms'] : '0';
  if (!/^[0-9]+$/.test(wait)) throw new CliError(`rmr events: --wait-ms takes milliseconds, got '${wait}'`, EXIT_USAGE);
  const print = (line: string): void => {
    if (line === '') return;
    process.stdout.write(values.json === true ? `${line}\n` : `${formatEvent(JSON.parse(line) as DaemonEvent)}\n`);
  };
  const lc = clusterOf(values);
  if (lc !== null) {
    // Every daemon of the cluster: followed side by side, or read and merged by time.
    const targets = lc.file.nodes.map((n) => ({ node: n.name, t: clusterTarget(lc, n.name) }));
    if (values.follow === true) {
      await Promise.all(targets.map(async (x) => ok(await stream(x.t, `/v1/events?since=${since}&follow=1`, print), `${x.node}: events --follow`)));
      return;
    }
    const lines: { time: string; line: string }[] = [];
    for (const x of targets) {
      const r = await call(x.t, 'GET', `/v1/events?since=${since}&wait_ms=${wait}`, undefined, Number(wait) + 30_000).catch((e: unknown) => {
        process.stderr.write(`rmr events: ${x.node}: ${e instanceof Error ? e.message : String(e)}\n`);
        return null;
      });
      if (r === null) continue;
      for (const line of ok(r, `${x.node}: events`).body.split('\n')) if (line !== '') lines.push({ time: (JSON.parse(line) as DaemonEvent).time, line });
    }
    lines.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
    for (const l of lines) print(l.line);
    return;
  }
  const t = target(values);
  if (values.follow === true) {
    const r = await stream(t, `/v1/events?since=${since}&follow=1`, print);
    ok(r, 'events --follow');
    return;
  }
  const r = ok(await call(t, 'GET', `/v1/events?since=${since}&wait_ms=${wait}`, undefined, Number(wait) + 30_000), 'events');
  const lost = Number(r.headers['x-rmr-events-lost'] ?? '0');
  if (lost > 0) process.stderr.write(`rmr events: ${lost} events after ${since} were dropped by the daemon before this read\n`);
  for (const line of r.body.split('\n')) print(line);
}

async function cmdDashboard(args: string[]): Promise<number> {
  const { values, positionals } = parse('dashboard', args, { ...CLUSTER_OPTIONS, listen: { type: 'string' }, 'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'token-file': { type: 'string' }, interval: { type: 'string' } });
  if (values.help === true) {
    process.stdout.write(`${HELP.dashboard}\n`);
    return 0;
  }
  if (positionals.length > 0) throw new CliError(`rmr dashboard: unexpected argument '${positionals[0] ?? ''}' (see rmr dashboard --help)`, EXIT_USAGE);
  const s = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const lc = clusterOf(values) ?? loadCluster(join(defaultDemoDir(), 'cluster.yaml'));
  const d = await runDashboard(lc, { listen: s('listen'), tls_cert: s('tls-cert'), tls_key: s('tls-key'), token_file: s('token-file'), interval: s('interval') }, say);
  process.stdout.write(`rmr dashboard: cluster ${lc.file.cluster} at ${d.url}\n`);
  return new Promise<number>((resolve) => {
    const stop = (): void => void d.close().then(() => resolve(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

async function cmdMetrics(args: string[]): Promise<void> {
  const { values } = parse('metrics', args, { ...CLIENT_OPTIONS });
  if (values.help === true) return void process.stdout.write(`${HELP.metrics}\n`);
  process.stdout.write(ok(await call(target(values), 'GET', '/metrics'), 'metrics').body);
}

const CLUSTER_OPTIONS = { cluster: { type: 'string' }, 'data-dir': { type: 'string' } } as const;

/** The cluster a command names by --cluster FILE or --data-dir DIR (a demo's), or null. */
function clusterOf(v: Flags): LoadedCluster | null {
  if (typeof v.cluster === 'string') return loadCluster(v.cluster);
  if (typeof v['data-dir'] === 'string') return loadCluster(join(v['data-dir'], 'cluster.yaml'));
  return null;
}

const say = (line: string): void => void process.stderr.write(`${line}\n`);

function seconds(v: Flags, name: string, def: number): number {
  const t = v[name];
  if (t === undefined) return def;
  if (typeof t !== 'string' || !/^[0-9]+$/.test(t)) throw new CliError(`--${name} takes seconds, got '${String(t)}'`, EXIT_USAGE);
  return Number(t);
}

async function cmdUp(args: string[]): Promise<void> {
  const { values, positionals } = parse('up', args, { 'no-wait': { type: 'boolean' }, timeout: { type: 'string' }, quiet: { type: 'boolean' } });
  if (values.help === true) return void process.stdout.write(`${HELP.up}\n`);
  const [file] = positionals;
  if (file === undefined || positionals.length > 1) throw new CliError('rmr up: give one CLUSTER.yaml (see rmr up --help)', EXIT_USAGE);
  const lc = loadCluster(file);
  const r = await up(lc, { attached: false, wait_ms: values['no-wait'] === true ? 0 : seconds(values, 'timeout', 120) * 1000, say: values.quiet === true ? () => undefined : say });
  process.stdout.write(formatClusterStatus(r.status));
}

async function cmdDown(args: string[]): Promise<void> {
  const { values, positionals } = parse('down', args, { delete: { type: 'boolean' }, 'keep-daemons': { type: 'boolean' } });
  if (values.help === true) return void process.stdout.write(`${HELP.down}\n`);
  const [file] = positionals;
  if (file === undefined || positionals.length > 1) throw new CliError('rmr down: give one CLUSTER.yaml (see rmr down --help)', EXIT_USAGE);
  await down(loadCluster(file), { mode: values.delete === true ? 'delete' : 'disassemble', stop: values['keep-daemons'] !== true, say });
}

async function cmdDemo(args: string[]): Promise<number> {
  const { values, positionals } = parse('demo', args, {
    'data-dir': { type: 'string' },
    nodes: { type: 'string' },
    size: { type: 'string' },
    address: { type: 'string' },
    'data-port': { type: 'string' },
    'nbd-port': { type: 'string' },
    'dashboard-port': { type: 'string' },
    timeout: { type: 'string' },
  });
  if (values.help === true) {
    process.stdout.write(`${HELP.demo}\n`);
    return 0;
  }
  if (positionals.length > 0) throw new CliError(`rmr demo: unexpected argument '${positionals[0] ?? ''}' (see rmr demo --help)`, EXIT_USAGE);
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const int = (k: string, def: number, min: number, max: number): number => {
    const t = str(k);
    if (t === undefined) return def;
    const n = /^[0-9]+$/.test(t) ? Number(t) : NaN;
    if (!(n >= min && n <= max)) throw new CliError(`rmr demo: --${k} must be ${min}..${max}, got '${t}'`, EXIT_USAGE);
    return n;
  };
  const size = parseSize(str('size') ?? '1G');
  if (size === null || size < 1 << 20 || size % 4096 !== 0) throw new CliError(`rmr demo: --size must be a size of at least 1M in 4K units (e.g. 256M, 1G), got '${str('size') ?? ''}'`, EXIT_USAGE);
  const dataDir = str('data-dir') ?? defaultDemoDir();
  const path = writeDemoCluster({ data_dir: dataDir, nodes: int('nodes', 3, 1, 4), size_bytes: size, address: str('address') ?? '127.0.0.1', data_port: int('data-port', 12340, 1, 65000), nbd_port: int('nbd-port', 10809, 1, 65535) });
  const lc = loadCluster(path);
  say(`rmr demo: cluster file ${path}`);
  // Signals from the start: a Ctrl-C during the bring-up stops what was started, too.
  const stop = untilSignal(lc, say);
  try {
    const r = await Promise.race([up(lc, { attached: true, wait_ms: seconds(values, 'timeout', 120) * 1000, say }), stop.then(() => null)]);
    if (r === null) return 130;
    stop.watch(r.started);
    const dport = int('dashboard-port', DASHBOARD_DEFAULT_PORT, 0, 65535);
    // The dashboard is a convenience: a port in use costs the demo its page, not its disk.
    const dash = dport === 0 ? null : await runDashboard(lc, { listen: `127.0.0.1:${dport}` }, say).catch((e: unknown) => (say(`rmr demo: no dashboard: ${e instanceof Error ? e.message : String(e)}`), null));
    process.stdout.write(demoBanner(lc, r.status, dataDir, dash?.url ?? null));
  } catch (e) {
    say('rmr demo: stopping the daemons it started');
    await stop.now();
    throw e;
  }
  return stop;
}

async function cmdSync(args: string[]): Promise<void> {
  const { values, positionals } = parse('sync', args, { ...CLIENT_OPTIONS, ...CLUSTER_OPTIONS, wait: { type: 'boolean' }, timeout: { type: 'string' } });
  if (values.help === true) return void process.stdout.write(`${HELP.sync}\n`);
  const [pool, what, arg] = positionals;
  if (pool === undefined || what === undefined || !['start', 'stop', 'status', 'rate'].includes(what)) throw new CliError('rmr sync: give POOL and start|stop|status|rate (see rmr sync --help)', EXIT_USAGE);
  const lc = clusterOf(values);
  const targets: { node: string; t: Target }[] = [];
  if (lc !== null) {
    const p = lc.file.pools.find((x) => x.name === pool);
    if (p === undefined) throw new CliError(`rmr sync: no pool ${pool} in ${lc.path}`, EXIT_USAGE);
    for (const m of p.members) targets.push({ node: m.node, t: clusterTarget(lc, m.node) });
  } else targets.push({ node: 'daemon', t: target(values) });
  const base = `rmr-server/pools/${pool}`;
  if (what === 'rate') {
    const n = parseSize(arg ?? '');
    if (n === null) throw new CliError(`rmr sync rate: give bytes per second (e.g. 100M), got '${arg ?? ''}'`, EXIT_USAGE);
    for (const x of targets) ok(await call(x.t, 'PUT', treeUrl(`${base}/sync_rate`, false), String(n)), `${x.node}: sync rate`);
  } else if (what === 'start' || what === 'stop') {
    for (const x of targets) {
      const r = await call(x.t, 'PUT', treeUrl(`${base}/sync`, false), what);
      // A clean member has nothing to sync: that is not an error for `start` of the pool.
      if (r.status === 503 && what === 'start') continue;
      ok(r, `${x.node}: sync ${what}`);
    }
  }
  if (what === 'status' || values.wait === true) await watchSync(targets, base, values.wait === true, seconds(values, 'timeout', 3600) * 1000);
}

async function cmdVerify(args: string[]): Promise<void> {
  const { values, positionals } = parse('verify', args, { ...CLIENT_OPTIONS, ...CLUSTER_OPTIONS, source: { type: 'string' }, rate: { type: 'string' }, json: { type: 'boolean' }, timeout: { type: 'string' } });
  if (values.help === true) return void process.stdout.write(`${HELP.verify}\n`);
  const [pool] = positionals;
  if (pool === undefined || positionals.length > 1) throw new CliError('rmr verify: give one POOL (see rmr verify --help)', EXIT_USAGE);
  const lc = clusterOf(values);
  let t: Target;
  if (lc !== null) {
    const node = lc.file.client?.node;
    if (node === undefined) throw new CliError(`rmr verify: ${lc.path} has no client`, EXIT_USAGE);
    t = clusterTarget(lc, node);
  } else t = target(values);
  const base = `rmr-client/pools/${pool}`;
  const opts: string[] = ['start'];
  if (typeof values.source === 'string') opts.push(`source=${values.source}`);
  if (typeof values.rate === 'string') {
    const n = parseSize(values.rate);
    if (n === null) throw new CliError(`rmr verify: --rate takes bytes per second (e.g. 200M), got '${values.rate}'`, EXIT_USAGE);
    opts.push(`rate=${n}`);
  }
  ok(await call(t, 'PUT', treeUrl(`${base}/verify`, false), opts.join(' ')), `verify ${pool}`);
  const tty = process.stdout.isTTY && values.json !== true;
  const deadline = Date.now() + seconds(values, 'timeout', 24 * 3600) * 1000;
  let last = 0;
  for (;;) {
    const p = JSON.parse(ok(await call(t, 'GET', treeUrl(`${base}/verify`, true)), 'verify progress').body) as { state: string; chunks_done: number; chunks_total: number; differing: number };
    const pct = p.chunks_total === 0 ? 100 : Math.floor((100 * p.chunks_done) / p.chunks_total);
    const line = `${tty ? `[${'#'.repeat(Math.floor(pct / 5)).padEnd(20, '.')}] ` : ''}${pct}% ${p.chunks_done}/${p.chunks_total} chunks, ${p.differing} differing`;
    const running = p.state === 'running' || p.state === 'stopping';
    if (tty) process.stdout.write(`\r${line}\x1b[K${running ? '' : '\n'}`);
    else if (values.json !== true && (!running || Date.now() - last >= 2000)) {
      process.stdout.write(`${line}\n`);
      last = Date.now();
    }
    if (!running) break;
    if (Date.now() > deadline) throw new CliError('rmr verify: not done before --timeout', EXIT_FAILED);
    await new Promise((r) => setTimeout(r, tty ? 250 : 500));
  }
  const rep = ok(await call(t, 'GET', treeUrl(`${base}/verify_report`, values.json === true)), 'verify report').body;
  process.stdout.write(rep.endsWith('\n') ? rep : `${rep}\n`);
  const r = JSON.parse(ok(await call(t, 'GET', treeUrl(`${base}/verify_report`, true)), 'verify report').body) as { differing: number; error: string | null; done: boolean };
  if (r.error !== null || !r.done) throw new CliError(`rmr verify: the verify of ${pool} did not complete${r.error !== null ? `: ${r.error}` : ''}`, EXIT_FAILED);
  if (r.differing > 0) throw new CliError(`rmr verify: ${r.differing} chunks of ${pool} differed between members; they are marked dirty and resync`, EXIT_FAILED);
}

async function watchSync(targets: { node: string; t: Target }[], base: string, wait: boolean, timeout_ms: number): Promise<void> {
  const tty = process.stdout.isTTY;
  const deadline = Date.now() + timeout_ms;
  let last_plain = 0;
  for (;;) {
    const rows: { node: string; dirty: number; total: number; rate: number; state: string }[] = [];
    for (const x of targets) {
      const r = ok(await call(x.t, 'GET', treeUrl(`${base}/sync_progress`, true)), `${x.node}: sync progress`);
      const p = JSON.parse(r.body) as { state: string; dirty_chunks: number; total_chunks: number; bytes_per_s: number };
      rows.push({ node: x.node, dirty: p.dirty_chunks, total: p.total_chunks, rate: p.bytes_per_s, state: p.state });
    }
    const done = rows.every((r) => r.dirty === 0);
    const line = rows
      .map((r) => {
        const pct = r.total === 0 ? 100 : Math.floor((100 * (r.total - r.dirty)) / r.total);
        const bar = tty ? `[${'#'.repeat(Math.floor(pct / 5)).padEnd(20, '.')}] ` : '';
        return `${r.node} ${bar}${pct}% clean, ${r.dirty} dirty, ${r.state}, ${(r.rate / 2 ** 20).toFixed(1)} MiB/s`;
      })
      .join('  |  ');
    if (tty) process.stdout.write(`\r${line}\x1b[K`);
    else if (done || !wait || Date.now() - last_plain >= 2000) {
      process.stdout.write(`${line}\n`);
      last_plain = Date.now();
    }
    if (!wait || done) {
      if (tty) process.stdout.write('\n');
      return;
    }
    if (Date.now() > deadline) throw new CliError(`sync not done after ${timeout_ms / 1000} s`, EXIT_FAILED);
    await new Promise((r) => setTimeout(r, tty ? 250 : 500));
  }
}

async function cmdDaemon(args: string[]): Promise<number> {
  const opts: Record<string, { type: 'string' | 'boolean' }> = { config: { type: 'string' }, 'print-config': { type: 'boolean' } };
  for (const s of SETTINGS) opts[flagName(s.key)] = { type: 'string' };
  const { values, positionals } = parse('daemon', args, opts);
  if (values.help === true) {
    process.stdout.write(`${HELP.daemon}\n`);
    return 0;
  }
  if (positionals.length > 0) throw new CliError(`rmr daemon: unexpected argument '${positionals[0] ?? ''}' (see rmr daemon --help)`, EXIT_USAGE);
  const flags: Record<string, string> = {};
  for (const s of SETTINGS) {
    const v = values[flagName(s.key)];
    if (typeof v === 'string') flags[s.key] = v;
  }
  const cfgPath = typeof values.config === 'string' ? values.config : process.env.RMR_CONFIG;
  const config: DaemonConfig = resolveDaemonConfig(cfgPath === undefined ? undefined : loadConfigFile(cfgPath), configEnv(), flags);
  if (values['print-config'] === true) {
    process.stdout.write(`${JSON.stringify(configToPlain(config), null, 2)}\n`);
    return 0;
  }
  return runDaemon({ config, role_factories: ROLE_FACTORIES, version: VERSION });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${HELP[args[0] ?? ''] ?? HELP['']}\n`);
      return 0;
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case 'daemon':
      return cmdDaemon(args);
    case 'demo':
      return cmdDemo(args);
    case 'up':
      await cmdUp(args);
      return 0;
    case 'down':
      await cmdDown(args);
      return 0;
    case 'sync':
      await cmdSync(args);
      return 0;
    case 'verify':
      await cmdVerify(args);
      return 0;
    case 'ctl':
      await cmdCtl(args);
      return 0;
    case 'status':
      await cmdStatus(args);
      return 0;
    case 'events':
      await cmdEvents(args);
      return 0;
    case 'metrics':
      await cmdMetrics(args);
      return 0;
    case 'dashboard':
      return cmdDashboard(args);
    default:
      throw new CliError(`rmr: unknown command '${cmd}' (see rmr --help)`, EXIT_USAGE);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof CliError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(e.exit_code);
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`rmr: bad configuration: ${e.problems.join('\n  ')}\n`);
      process.exit(EXIT_CONFIG);
    }
    if (e instanceof StartError) {
      process.stderr.write(`rmr daemon: cannot start: ${e.message}\n`);
      process.exit(EXIT_FAILED);
    }
    process.stderr.write(`rmr: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(70);
  },
);
