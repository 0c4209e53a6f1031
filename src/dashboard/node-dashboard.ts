// The dashboard's Node side: the HTTP(S) listener around DashboardApi, the bundle read from
// disk once at start, the tick timer that drives the Collector, and the server-sent-event
// streams. Bounds on what a client controls: header size, time to send a request, body size,
// connections, streams, and how far a stream may fall behind before it is cut.

import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isIP } from 'node:net';
import type { Socket } from 'node:net';
import { TOKEN_MIN_CHARS, tokenDigest } from '../daemon/control-api.js';
import { Collector, type ClusterLayout } from './collector.js';
import { DashboardApi, type DashResponse, type StaticFile } from './http-api.js';
import type { Update } from './model.js';

/** Where `npm run build` puts the bundle: dist/web beside dist/src. */
export const BUNDLE_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.map': 'application/json; charset=utf-8',
};
const FILE_MAX = 8 << 20;
const BODY_MAX = 4096;
const STREAMS_MAX = 32;
const STREAM_BACKLOG_MAX = 4 << 20;

export interface DashboardOptions {
  readonly layout: ClusterLayout;
  readonly host: string;
  readonly port: number;
  /** TLS certificate and key (PEM); required off loopback. */
  readonly tls: { cert: Buffer; key: Buffer } | null;
  /** Required off loopback (at least 32 characters). */
  readonly token: string | null;
  readonly interval_ms: number;
  readonly bundle_dir?: string;
  readonly history_points?: number;
  readonly log?: (line: string) => void;
}

export interface RunningDashboard {
  readonly url: string;
  readonly port: number;
  readonly collector: Collector;
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/** The files of the bundle by name (regular files with a known type, nothing below). */
export function loadBundle(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new Error(`the dashboard's page is not built (${dir}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}): run npm run build`, { cause: e });
  }
  for (const name of names) {
    const ext = name.slice(name.lastIndexOf('.'));
    const type = TYPES[ext];
    const p = join(dir, name);
    const st = statSync(p);
    if (type === undefined || !st.isFile() || st.size > FILE_MAX) continue;
    files.set(name, { type, body: readFileSync(p) });
  }
  if (!files.has('index.html')) throw new Error(`the dashboard's page is not built (${dir} has no index.html): run npm run build`);
  return files;
}

function sseFrame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export async function startDashboard(o: DashboardOptions): Promise<RunningDashboard> {
  const loopback = isLoopback(o.host);
  if (!loopback && (o.tls === null || o.token === null)) throw new Error(`--listen ${o.host}: an address other than loopback needs TLS (--tls-cert, --tls-key) and a token (--token-file)`);
  if (o.token !== null && o.token.length < TOKEN_MIN_CHARS) throw new Error(`the dashboard token must have at least ${TOKEN_MIN_CHARS} characters`);
  const files = loadBundle(o.bundle_dir ?? BUNDLE_DIR);
  const collector = new Collector(o.layout, () => Date.now(), { interval_ms: o.interval_ms, history_points: o.history_points ?? 300 });
  const streams = new Set<ServerResponse>();
  let hosts: Set<string> | null = null;
  const api = new DashboardApi({
    files,
    token_digest: o.token === null ? null : tokenDigest(o.token),
    get hosts() {
      return hosts;
    },
    max_body_bytes: BODY_MAX,
    tls: o.tls !== null,
    snapshot: () => collector.snapshot(),
    act: async (body) => {
      const r = await collector.act(body);
      // Show the effect at once instead of at the next tick.
      if (r.ok) void collector.tick().then(broadcast, () => undefined);
      return r;
    },
  });

  const broadcast = (u: Update): void => {
    const frame = sseFrame('update', u);
    for (const res of streams) {
      res.write(frame);
      if (res.writableLength > STREAM_BACKLOG_MAX) res.destroy();
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > BODY_MAX) return send(res, req, { kind: 'body', status: 413, headers: { 'content-type': 'text/plain', connection: 'close' }, body: 'request body too large\n' });
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (c: Buffer) => {
      if (refused) return;
      size += c.length;
      if (size > BODY_MAX) {
        refused = true;
        res.shouldKeepAlive = false;
        send(res, req, { kind: 'body', status: 413, headers: { 'content-type': 'text/plain' }, body: 'request body too large\n' });
        req.pause();
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      if (refused) return;
      api.handle({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks, size) }).then(
        (r) => send(res, req, r),
        () => send(res, req, { kind: 'body', status: 500, headers: { 'content-type': 'text/plain' }, body: 'internal error\n' }),
      );
    });
  };

  const send = (res: ServerResponse, req: IncomingMessage, r: DashResponse): void => {
    if (res.headersSent || res.destroyed) return;
    if (r.kind === 'sse') {
      if (streams.size >= STREAMS_MAX) return send(res, req, { kind: 'body', status: 503, headers: { 'content-type': 'text/plain', 'retry-after': '5' }, body: 'too many open dashboards\n' });
      res.writeHead(200, r.headers);
      res.write(`retry: 2000\n\n${sseFrame('snapshot', collector.snapshot())}`);
      streams.add(res);
      res.on('close', () => streams.delete(res));
      return;
    }
    res.writeHead(r.status, { ...r.headers, 'content-length': Buffer.byteLength(r.body) });
    res.end(req.method === 'HEAD' ? undefined : r.body);
  };

  const opts = { maxHeaderSize: 16 * 1024, requestTimeout: 15_000, headersTimeout: 10_000, keepAliveTimeout: 5_000, connectionsCheckingInterval: 1000 };
  const server: Server = o.tls === null ? createHttp(opts, onRequest) : createHttps({ ...opts, cert: o.tls.cert, key: o.tls.key }, onRequest);
  server.maxConnections = 64;
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    const head = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${head}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    const t = setTimeout(() => socket.destroy(), 1000);
    t.unref();
    socket.once('close', () => clearTimeout(t));
  });
  // A TLS handshake that fails is not an HTTP client error: drop the socket quietly.
  server.on('tlsClientError', (_err: Error, socket: Socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : o.port;
  const hostPart = o.host.includes(':') ? `[${o.host}]` : o.host;
  // On loopback the page must be asked for by the listener's own name (DNS rebinding).
  if (loopback) hosts = new Set([`${hostPart}:${port}`, `localhost:${port}`].map((h) => h.toLowerCase()));

  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  const loop = async (): Promise<void> => {
    if (stopped) return;
    const t0 = Date.now();
    try {
      broadcast(await collector.tick());
    } catch (e) {
      o.log?.(`dashboard: tick failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!stopped) timer = setTimeout(() => void loop(), Math.max(0, o.interval_ms - (Date.now() - t0)));
  };
  await loop();

  return {
    url: `${o.tls === null ? 'http' : 'https'}://${hostPart}:${port}/`,
    port,
    collector,
    close: async () => {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      for (const s of streams) s.end();
      streams.clear();
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      });
    },
  };
}
