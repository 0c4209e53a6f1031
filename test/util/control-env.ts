// A daemon without roles and its control server on a real Unix socket and a TCP port with a
// bearer token, in this process: what the control API fuzzer and the security checks talk
// to. Raw exchanges send exactly the bytes a test chooses.

import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon } from '../../src/daemon/daemon.js';
import { resolveDaemonConfig } from '../../src/daemon/config.js';
import { ControlServer } from '../../src/daemon/node-control-server.js';
import { NodeClock } from '../../src/node/ports.js';
import { MemoryLogger } from './memory-logger.js';

export const TOKEN = 'fuzz-token-0123456789abcdef-0123456789abcdef';

export interface ControlEnv {
  daemon: Daemon;
  server: ControlServer;
  logger: MemoryLogger;
  sock: string;
  port: number;
  dir: string;
  close(): Promise<void>;
}

export async function controlEnv(o: { max_connections?: number; max_unauthenticated?: number; max_unauthenticated_per_address?: number; headers_timeout_ms?: number; request_timeout_ms?: number; tls?: { cert: Buffer; key: Buffer } } = {}): Promise<ControlEnv> {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-control-'));
  const sock = join(dir, 'control.sock');
  const config = resolveDaemonConfig({ name: 'fz', control: { socket: sock, max_body_bytes: 4096 } }, { hostname: 'h', state_root: dir, vars: {} });
  const logger = new MemoryLogger();
  let level: 'debug' | 'info' | 'warn' | 'error' = 'info';
  const daemon = new Daemon({
    config,
    logger,
    clock: new NodeClock({ unref: true }),
    wall_ms: () => Date.now(),
    roles: [],
    version: 't',
    pid: process.pid,
    control_token: TOKEN,
    log_level: { get: () => level, set: (l) => (level = l) },
  });
  const server = new ControlServer({
    api: daemon.api,
    events: daemon.events,
    logger,
    max_body_bytes: 4096,
    max_connections: o.max_connections ?? 64,
    // The fuzzer's workers all come from 127.0.0.1; the limits have tests of their own.
    max_unauthenticated: o.max_unauthenticated ?? 64,
    max_unauthenticated_per_address: o.max_unauthenticated_per_address ?? 64,
    max_followers: 4,
    ...(o.tls !== undefined ? { tls: o.tls } : {}),
    headers_timeout_ms: o.headers_timeout_ms ?? 1000,
    request_timeout_ms: o.request_timeout_ms ?? 1500,
  });
  await server.listenUnix(sock);
  const port = await server.listenTcp('127.0.0.1', 0);
  await daemon.start();
  return {
    daemon,
    server,
    logger,
    sock,
    port,
    dir,
    close: async () => {
      await daemon.stop();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RawAnswer {
  /** Everything the server sent. */
  text: string;
  /** Status codes of every response in it. */
  statuses: number[];
  /** The server closed the connection (else we gave up at the deadline). */
  closed: boolean;
}

/** Sends bytes, collects the answer until the server closes or `wait_ms` passes. */
export function rawExchange(to: { path: string } | { port: number }, data: Buffer | string, wait_ms = 300, end = false): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const s = 'path' in to ? net.connect(to.path) : net.connect(to.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const finish = (): void => {
      clearTimeout(timer);
      s.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ text, statuses: [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1])), closed });
    };
    const timer = setTimeout(finish, wait_ms);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => undefined);
    s.on('close', () => {
      closed = true;
      finish();
    });
    s.on('connect', () => {
      s.write(data);
      if (end) s.end();
    });
  });
}

/** A well-formed request and its parsed answer. */
export async function httpGet(to: { path: string } | { port: number }, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const h = Object.entries({ host: 'x', connection: 'close', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const r = await rawExchange(to, `GET ${path} HTTP/1.1\r\n${h}\r\n`, 5000);
  // No answer is a failure of its own, not "status 0" for the caller's assertion to puzzle over.
  if (r.statuses.length === 0) throw new Error(`GET ${path}: ${r.closed ? 'the server closed the connection without an answer' : 'no answer within 5000 ms'}${r.text !== '' ? ` (got ${JSON.stringify(r.text.slice(0, 200))})` : ''}`);
  const at = r.text.indexOf('\r\n\r\n');
  return { status: r.statuses[0] as number, body: at < 0 ? '' : r.text.slice(at + 4) };
}
