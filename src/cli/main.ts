#!/usr/bin/env node
// `rmr`: one executable. `rmr daemon` runs the node daemon; every other command is a client
// of a daemon's control API. Errors: one line on stderr saying what failed and what to do,
// exit code 1 (operation failed), 2 (usage), 3 (daemon unreachable), 4 (configuration).

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseConfigText, resolveDaemonConfig, configToPlain, SETTINGS, flagName, envName, type ConfigEnv, type DaemonConfig } from '../daemon/config.js';
import { ConfigError } from '../daemon/validate.js';
import { runDaemon, StartError } from '../daemon/node-daemon.js';
import { ROLE_FACTORIES } from '../daemon/roles.js';
import { formatEvent, type DaemonEvent } from '../daemon/events.js';
import { call, stream, errorLine, CliError, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, type Target, type Reply } from './node-client.js';
import { formatStatus } from './format.js';

const VERSION = '0.1.0';

const CLIENT_HELP = `Daemon selection (every client command):
  --socket PATH        control socket (default: RMR_SOCKET, or the daemon default
                       <runtime dir>/rmr/<hostname>/control.sock)
  --config FILE        take the socket from this daemon config file
  --daemon URL         http://host:port of a daemon's TCP control listener
  --token TOKEN        bearer token for --daemon (or RMR_TOKEN, or --token-file FILE)`;

const HELP: Readonly<Record<string, string>> = {
  '': `rmr ${VERSION}: replicated network block store (RMR/BRMR) exported over NBD

Usage: rmr <command> [options]

Commands:
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
  status: `Usage: rmr status [--json]

Shows the daemon, its roles and every pool leg the roles report.

${CLIENT_HELP}`,
  events: `Usage: rmr events [--since N] [--follow] [--wait-ms MS] [--json]

Prints events after sequence number N (default 0: all the daemon still holds).
--follow keeps printing new events until interrupted; --wait-ms waits up to MS for
the first new event; --json prints the raw JSON lines.

${CLIENT_HELP}`,
  metrics: `Usage: rmr metrics

Prints the daemon's metrics in the Prometheus text format.

${CLIENT_HELP}`,
};

function configEnv(): ConfigEnv {
  return { hostname: hostname(), runtime_dir: process.env.XDG_RUNTIME_DIR ?? '/tmp', vars: process.env };
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
} as const;

function target(v: Flags): Target {
  const str = (k: string): string | undefined => (typeof v[k] === 'string' ? v[k] : undefined);
  const url = str('daemon');
  if (url !== undefined) {
    const tf = str('token-file');
    let token = str('token') ?? process.env.RMR_TOKEN ?? null;
    if (tf !== undefined) {
      try {
        token = readFileSync(tf, 'utf8').trim();
      } catch {
        throw new CliError(`cannot read --token-file ${tf}: check the path`, EXIT_USAGE);
      }
    }
    return { url, token };
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
  const { values, positionals } = parse('status', args, { ...CLIENT_OPTIONS, json: { type: 'boolean' } });
  if (values.help === true) return void process.stdout.write(`${HELP.status}\n`);
  if (positionals.length > 0) throw new CliError(`rmr status: unexpected argument '${positionals[0] ?? ''}' (see rmr status --help)`, EXIT_USAGE);
  const r = ok(await call(target(values), 'GET', '/v1/status'), 'status');
  process.stdout.write(values.json === true ? r.body : formatStatus(JSON.parse(r.body)));
}

async function cmdEvents(args: string[]): Promise<void> {
  const { values, positionals } = parse('events', args, { ...CLIENT_OPTIONS, since: { type: 'string' }, follow: { type: 'boolean' }, 'wait-ms': { type: 'string' }, json: { type: 'boolean' } });
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

async function cmdMetrics(args: string[]): Promise<void> {
  const { values } = parse('metrics', args, { ...CLIENT_OPTIONS });
  if (values.help === true) return void process.stdout.write(`${HELP.metrics}\n`);
  process.stdout.write(ok(await call(target(values), 'GET', '/metrics'), 'metrics').body);
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
