// `rmr daemon`: the Daemon on real ports. Owns the pid and state files, the control
// sockets, the signals (SIGTERM/SIGINT: stop roles in reverse order, close listeners, exit 0)
// and the shutdown deadline (exit 1 if a role hangs).

import { mkdirSync, readFileSync, writeFileSync, unlinkSync, existsSync, renameSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { NodeClock } from '../node/ports.js';
import { claimPidFile, releasePidFile, StateDirBusy } from '../node/liveness.js';
import type { DaemonConfig } from './config.js';
import { Daemon, type Role, type RoleFactory } from './daemon.js';
import { NodeLogger } from './node-logger.js';
import { ControlServer } from './node-control-server.js';
import { ConfigError } from './validate.js';
import { StartError } from './start-error.js';
import { nodeRolePorts } from './node-role-ports.js';
import { formatListen } from './validate.js';

export interface RunDaemonOptions {
  readonly config: DaemonConfig;
  readonly role_factories: Readonly<Record<string, RoleFactory>>;
  readonly version: string;
}

export { StartError };

export function pidFilePath(c: DaemonConfig): string {
  return join(c.state_dir, 'rmr.pid');
}

export function stateFilePath(c: DaemonConfig): string {
  return join(c.state_dir, 'state.json');
}

/** Builds the configured roles (in file order), each validating its own settings. */
export function buildRoles(c: DaemonConfig, factories: Readonly<Record<string, RoleFactory>>): Role[] {
  const problems: string[] = [];
  const roles: Role[] = [];
  for (const [name, settings] of Object.entries(c.roles)) {
    const f = Object.hasOwn(factories, name) ? factories[name] : undefined;
    if (f === undefined) {
      const known = Object.keys(factories);
      problems.push(`roles.${name}: unknown role (known: ${known.length === 0 ? 'none in this build' : known.join(', ')})`);
      continue;
    }
    try {
      roles.push(f(settings, `roles.${name}`));
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return roles;
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(false));
  });
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

/** Runs the daemon until SIGTERM/SIGINT; resolves with the exit code. */
export async function runDaemon(o: RunDaemonOptions): Promise<number> {
  const c = o.config;
  const roles = buildRoles(c, o.role_factories);
  mkdirSync(c.state_dir, { recursive: true, mode: 0o700 });
  mkdirSync(dirname(c.control.socket), { recursive: true, mode: 0o700 });
  const pidFile = pidFilePath(c);
  // The pid file is the state directory's lock: taken exclusively before anything else,
  // released on every way out (liveness.ts says when a file left by a dead daemon is stale).
  let replaced: string | null;
  try {
    replaced = claimPidFile(pidFile).replaced;
  } catch (e) {
    if (e instanceof StateDirBusy) throw new StartError(`${e.message}; stop it (kill ${e.holder.pid}) or give another --state-dir`);
    throw new StartError(`cannot take pid file ${pidFile}: ${(e as Error).message}`);
  }
  try {
    return await runClaimed(o, roles, pidFile, replaced);
  } finally {
    releasePidFile(pidFile);
  }
}

async function runClaimed(o: RunDaemonOptions, roles: Role[], pidFile: string, replaced: string | null): Promise<number> {
  const c = o.config;
  if (existsSync(c.control.socket)) {
    if (await socketAnswers(c.control.socket)) throw new StartError(`control socket ${c.control.socket} answers: a running daemon uses it; stop it or give another --control-socket`);
    unlinkQuiet(c.control.socket); // left by a daemon that died
  }
  let token: string | null = null;
  if (c.control.token_file !== null) {
    try {
      token = readFileSync(c.control.token_file, 'utf8').trim();
    } catch (e) {
      throw new StartError(`cannot read control.token_file ${c.control.token_file}: ${(e as Error).message}`);
    }
    if (token.length < 16) throw new StartError(`control.token_file ${c.control.token_file}: the token must have at least 16 characters`);
  }

  // Roles that serve data need the secret and TLS files; read them before anything starts.
  const ports = roles.length > 0 ? nodeRolePorts(c) : undefined;
  const logger = new NodeLogger({ daemon: c.name, level: c.log.level, format: c.log.format, file: c.log.file });
  if (replaced !== null) logger.log('warn', 'took over the pid file of a daemon that no longer runs', { pid_file: pidFile, evidence: replaced });
  const clock = new NodeClock();
  const daemon = new Daemon({
    config: c,
    logger,
    clock,
    wall_ms: () => Date.now(),
    roles,
    version: o.version,
    pid: process.pid,
    log_level: { get: () => logger.level, set: (l) => (logger.level = l) },
    control_token: token,
    ...(ports !== undefined ? { ports } : {}),
  });
  const server = new ControlServer({
    api: daemon.api,
    events: daemon.events,
    logger,
    max_body_bytes: c.control.max_body_bytes,
    max_connections: c.control.max_connections,
    max_followers: c.control.max_followers,
  });
  const writeState = (state: string): void => {
    writeAtomic(
      stateFilePath(c),
      `${JSON.stringify({ name: c.name, pid: process.pid, state, control_socket: c.control.socket, control_tcp: c.control.tcp === null ? null : formatListen(c.control.tcp), version: o.version, time: new Date().toISOString() })}\n`,
    );
  };
  const cleanup = (): void => {
    unlinkQuiet(c.control.socket);
    releasePidFile(pidFile);
  };
  writeState('starting');

  try {
    await server.listenUnix(c.control.socket);
    if (c.control.tcp !== null) {
      const port = await server.listenTcp(c.control.tcp.host, c.control.tcp.port);
      logger.log('info', 'control API on TCP', { address: formatListen({ host: c.control.tcp.host, port }) });
    }
    await daemon.start();
  } catch (e) {
    await server.close();
    cleanup();
    writeState('failed');
    logger.close();
    throw new StartError(e instanceof Error ? e.message : String(e));
  }
  writeState('running');
  logger.log('info', 'daemon ready', { socket: c.control.socket, pid: process.pid, roles: roles.map((r) => r.name).join(',') || 'none' });

  return new Promise<number>((resolve) => {
    let stopping = false;
    const shutdown = (signal: string): void => {
      if (stopping) {
        logger.log('warn', `${signal} during shutdown; still stopping`);
        return;
      }
      stopping = true;
      logger.log('info', 'shutting down', { signal });
      writeState('stopping');
      const deadline = setTimeout(() => {
        logger.log('error', `shutdown did not finish within ${c.shutdown_timeout_ms} ms; exiting`, {});
        cleanup();
        writeState('failed');
        resolve(1);
      }, c.shutdown_timeout_ms);
      deadline.unref();
      const stop = async (): Promise<boolean> => {
        const clean = await daemon.stop();
        await server.close();
        return clean;
      };
      stop().then(
        (clean) => {
          cleanup();
          writeState('stopped');
          clearTimeout(deadline);
          logger.log('info', 'daemon exited', { clean });
          logger.close();
          resolve(clean ? 0 : 1);
        },
        (e: unknown) => {
          logger.log('error', 'shutdown failed', { reason: e instanceof Error ? e.message : String(e) });
          cleanup();
          writeState('failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
    // SIGHUP reopens the log file (logrotate's postrotate); the configuration is not reloaded.
    process.on('SIGHUP', () => {
      const failed = logger.reopen();
      if (failed !== null) logger.log('error', 'SIGHUP: cannot reopen the log file; still writing to the old one', { file: c.log.file ?? 'stderr', reason: failed });
      else logger.log('info', 'SIGHUP: log file reopened (the configuration is not reloaded: restart the daemon for that)', { file: c.log.file ?? 'stderr' });
    });
  });
}
