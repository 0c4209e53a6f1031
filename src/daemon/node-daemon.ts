// `rmr daemon`: the Daemon on real ports. Owns the pid and state files, the control
// sockets, the signals (SIGTERM/SIGINT: stop roles in reverse order, close listeners, exit 0)
// and the shutdown deadline (exit 1 if a role hangs).
//
// Fail-stop: an exception nobody caught (thrown in a callback, or a rejected promise nobody
// handles) leaves the daemon in a state no code expected. It is logged with its stack,
// recorded in state.json (`state: failed` and the reason), the control socket and pid file
// are removed, and the process exits 70 (EX_SOFTWARE), so that a service manager restarts
// it (Restart=on-failure) and the restart resumes from objects.json as after a crash.

import { readFileSync, unlinkSync, existsSync } from 'node:fs';
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
import { ensurePrivateDir, writeFileAtomic, UnsafePathError } from '../node/files.js';
import { readSecret } from './node-role-ports.js';
import type { Logger } from '../util/ports.js';
import { TOKEN_MIN_CHARS } from './control-api.js';

/** Exit code of a fail-stop (sysexits' EX_SOFTWARE: an internal error). */
export const EXIT_INTERNAL = 70;

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
  // The state directory holds the pid, state and object files and the control socket: another
  // user able to write into it could plant symlinks or a forged objects.json.
  try {
    ensurePrivateDir(c.state_dir, 'state_dir');
    if (dirname(c.control.socket) !== c.state_dir) ensurePrivateDir(dirname(c.control.socket), 'the directory of control.socket');
  } catch (e) {
    if (e instanceof UnsafePathError) throw new StartError(e.message);
    throw e;
  }
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
  let logger: NodeLogger;
  try {
    logger = new NodeLogger({ daemon: c.name, level: c.log.level, format: c.log.format, file: c.log.file, max_bytes: c.log.max_bytes, keep: c.log.keep, burst: c.log.burst, window_ms: c.log.window_ms });
  } catch (e) {
    throw new StartError(`cannot open log.file ${c.log.file ?? ''}: ${(e as Error).message}`);
  }
  try {
    return await runLogged(o, roles, pidFile, replaced, logger);
  } finally {
    logger.close();
  }
}

function readToken(c: DaemonConfig, logger: Logger): string | null {
  if (c.control.token_file === null) return null;
  const token = readSecret(c, logger, c.control.token_file, 'control.token_file').toString('utf8').trim();
  if (token.length < TOKEN_MIN_CHARS) throw new StartError(`control.token_file ${c.control.token_file}: the token has ${token.length} characters, it needs at least ${TOKEN_MIN_CHARS} random ones (e.g. openssl rand -hex 32 > ${c.control.token_file})`);
  return token;
}

async function runLogged(o: RunDaemonOptions, roles: Role[], pidFile: string, replaced: string | null, logger: NodeLogger): Promise<number> {
  const c = o.config;
  if (replaced !== null) logger.log('warn', 'took over the pid file of a daemon that no longer runs', { pid_file: pidFile, evidence: replaced });
  const token = readToken(c, logger);
  // Roles that serve data need the secret and TLS files; read them before anything starts.
  const ports = roles.length > 0 ? nodeRolePorts(c, logger) : undefined;
  const controlTls = c.control.tls_cert !== null && c.control.tls_key !== null ? { cert: readCert(c.control.tls_cert), key: readSecret(c, logger, c.control.tls_key, 'control.tls_key') } : null;
  if (c.control.tcp !== null && controlTls === null && c.control.allow_insecure) {
    logger.log('warn', 'control API over plain HTTP on a non-loopback address (control.allow_insecure): the token travels in clear', { address: formatListen(c.control.tcp) });
  }
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
    max_unauthenticated: c.control.max_unauthenticated,
    max_unauthenticated_per_address: c.control.max_unauthenticated_per_address,
    max_followers: c.control.max_followers,
    tls: controlTls,
  });
  const writeState = (state: string, reason: string | null = null): void => {
    const record = { name: c.name, pid: process.pid, state, ...(reason !== null ? { reason } : {}), control_socket: c.control.socket, control_tcp: c.control.tcp === null ? null : formatListen(c.control.tcp), version: o.version, time: new Date().toISOString() };
    writeFileAtomic(stateFilePath(c), `${JSON.stringify(record)}\n`, 0o644, false);
  };
  const cleanup = (): void => {
    unlinkQuiet(c.control.socket);
    releasePidFile(pidFile);
  };
  writeState('starting');
  const stopFailStop = installFailStop(logger, (reason) => {
    try {
      writeState('failed', reason);
    } catch {
      // the log has it
    }
    cleanup();
  });

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
    const reason = e instanceof Error ? e.message : String(e);
    writeState('failed', reason);
    stopFailStop();
    throw new StartError(reason);
  }
  writeState('running');
  logger.log('info', 'daemon ready', { socket: c.control.socket, pid: process.pid, roles: roles.map((r) => r.name).join(',') || 'none' });

  const code = await new Promise<number>((resolve) => {
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
        writeState('failed', `shutdown did not finish within ${c.shutdown_timeout_ms} ms`);
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
          resolve(clean ? 0 : 1);
        },
        (e: unknown) => {
          const reason = e instanceof Error ? e.message : String(e);
          logger.log('error', 'shutdown failed', { reason });
          cleanup();
          writeState('failed', `shutdown failed: ${reason}`);
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
  stopFailStop();
  return code;
}

function readCert(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new StartError(`cannot read control.tls_cert ${path}: ${(e as Error).message}`);
  }
}

/**
 * Makes an uncaught exception or unhandled rejection stop the daemon on the spot (see the top
 * of this file): `record` writes state.json and removes the socket and pid file. Returns a
 * function that removes the handlers (a start that failed normally).
 */
function installFailStop(logger: NodeLogger, record: (reason: string) => void): () => void {
  let failed = false;
  const fail = (kind: string, e: unknown): void => {
    if (failed) return;
    failed = true;
    const reason = `${kind}: ${e instanceof Error ? e.message : String(e)}`;
    logger.log('error', 'internal error; stopping the daemon (fail-stop: a service manager restarts it, and it resumes its objects)', { reason, stack: e instanceof Error ? (e.stack ?? null) : null });
    record(reason);
    logger.close();
    process.exit(EXIT_INTERNAL);
  };
  const onException = (e: unknown): void => fail('uncaught exception', e);
  const onRejection = (e: unknown): void => fail('unhandled promise rejection', e);
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}
