// The dashboard's HTTP routing, without sockets: a request in, a response out (or "stream
// server-sent events"). node-dashboard.ts does the HTTP around it. Input is hostile:
//   * static files: only the files of the bundle, looked up by exact name in a map built at
//     start (no path from the request ever reaches the file system);
//   * off loopback every request needs the token (`Authorization: Bearer`, or the cookie the
//     `/?token=` login sets), checked like the control API's (SHA-256 digests, constant time);
//   * on loopback the Host header must name the listener (a page of another site resolving
//     its name to 127.0.0.1, DNS rebinding, gets nothing);
//   * actions are POSTs of a small JSON body, same origin only (Origin and Sec-Fetch-Site
//     checked), so another site's page cannot make the browser send one.
// Routes:
//   GET  /                 the page (index.html); `/?token=T` logs in (cookie) and redirects
//   GET  /assets/<file>    a file of the bundle
//   GET  /api/state        the snapshot (JSON)
//   GET  /api/stream       server-sent events: `snapshot`, then `update` per tick
//   POST /api/action       {"op", "pool", "node"?, "bytes_per_s"?, "source"?}

import { bearerMatches } from '../daemon/control-api.js';
import type { ActionReply, Snapshot } from './model.js';

export interface DashRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Buffer;
}

export type DashResponse =
  | { readonly kind: 'body'; readonly status: number; readonly headers: Readonly<Record<string, string>>; readonly body: string | Buffer }
  | { readonly kind: 'sse'; readonly headers: Readonly<Record<string, string>> };

export interface StaticFile {
  readonly type: string;
  readonly body: Buffer;
}

export interface DashApiOptions {
  /** The bundle: file name → content (index.html among them). */
  readonly files: ReadonlyMap<string, StaticFile>;
  /** tokenDigest() of the token every request must present; null: none needed (loopback). */
  readonly token_digest: Buffer | null;
  /** Host header values accepted; null: any (a token guards the listener). */
  readonly hosts: ReadonlySet<string> | null;
  readonly max_body_bytes: number;
  /** Whether the page is served over TLS (cookies get `Secure`). */
  readonly tls: boolean;
  snapshot(): Snapshot;
  act(body: unknown): Promise<ActionReply>;
}

export const COOKIE = 'rmr_dashboard';
const URL_MAX = 2048;
const FILE_RE = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/;

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

function header(req: DashRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

function text(status: number, body: string, extra: Record<string, string> = {}): DashResponse {
  return { kind: 'body', status, headers: { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...extra }, body: `${body}\n` };
}

function json(status: number, value: unknown): DashResponse {
  return { kind: 'body', status, headers: { ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }, body: `${JSON.stringify(value)}\n` };
}

/** The value of cookie `name` in a Cookie header. */
export function cookieValue(h: string | undefined, name: string): string | undefined {
  if (h === undefined || h.length > 8192) return undefined;
  for (const part of h.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export class DashboardApi {
  constructor(private readonly o: DashApiOptions) {}

  async handle(req: DashRequest): Promise<DashResponse> {
    if (req.url.length > URL_MAX || !req.url.startsWith('/')) return text(400, 'bad request target');
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1));
    if (this.o.hosts !== null && !this.o.hosts.has((header(req, 'host') ?? '').toLowerCase())) return text(421, 'this dashboard answers only to the address it listens on');
    // Login: the token in the URL once, a cookie after (EventSource cannot send headers).
    if (path === '/' && query.has('token') && this.o.token_digest !== null) {
      const t = query.get('token') ?? '';
      if (!bearerMatches(t, this.o.token_digest, true)) return text(401, 'wrong token');
      // Encoded: a token may hold `;` or `,`, which end a cookie value.
      const cookie = `${COOKIE}=${encodeURIComponent(t)}; Path=/; HttpOnly; SameSite=Strict${this.o.tls ? '; Secure' : ''}`;
      return { kind: 'body', status: 303, headers: { ...SECURITY_HEADERS, location: '/', 'set-cookie': cookie, 'cache-control': 'no-store', 'content-type': 'text/plain; charset=utf-8' }, body: 'logged in\n' };
    }
    if (this.o.token_digest !== null && !this.authorized(req, this.o.token_digest)) {
      return text(401, 'this dashboard needs its token: open it as https://<host>:<port>/?token=<token>', { 'www-authenticate': 'Bearer' });
    }
    const get = req.method === 'GET' || req.method === 'HEAD';
    if (path === '/api/action') {
      if (req.method !== 'POST') return text(405, 'POST only', { allow: 'POST' });
      return this.action(req);
    }
    if (!get) return text(405, 'GET only', { allow: 'GET, HEAD' });
    if (path === '/' || path === '/index.html') return this.file('index.html');
    if (path === '/api/state') return json(200, this.o.snapshot());
    if (path === '/api/stream') return { kind: 'sse', headers: { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' } };
    if (path.startsWith('/assets/')) {
      const name = path.slice('/assets/'.length);
      if (FILE_RE.test(name) && name !== 'index.html') return this.file(name);
    }
    return text(404, 'not found');
  }

  private authorized(req: DashRequest, digest: Buffer): boolean {
    if (bearerMatches(header(req, 'authorization'), digest)) return true;
    const c = cookieValue(header(req, 'cookie'), COOKIE);
    if (c === undefined) return false;
    try {
      return bearerMatches(decodeURIComponent(c), digest, true);
    } catch {
      return false;
    }
  }

  private file(name: string): DashResponse {
    const f = this.o.files.get(name);
    if (f === undefined) return text(404, 'not found');
    return { kind: 'body', status: 200, headers: { ...SECURITY_HEADERS, 'content-type': f.type, 'cache-control': 'no-cache' }, body: f.body };
  }

  private async action(req: DashRequest): Promise<DashResponse> {
    // Same origin only: a cross-site form or fetch carries another Origin, or says so in
    // Sec-Fetch-Site; a JSON content type forces a preflight we never answer.
    const origin = header(req, 'origin');
    const host = header(req, 'host') ?? '';
    if (origin !== undefined && origin.replace(/^https?:\/\//, '').toLowerCase() !== host.toLowerCase()) return text(403, 'cross-origin action refused');
    const site = header(req, 'sec-fetch-site');
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return text(403, 'cross-site action refused');
    if (!(header(req, 'content-type') ?? '').startsWith('application/json')) return text(415, 'send application/json');
    if (req.body.length > this.o.max_body_bytes) return text(413, `body larger than ${this.o.max_body_bytes} bytes`);
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(req.body));
    } catch {
      return json(400, { ok: false, error: 'body is not JSON' });
    }
    const r = await this.o.act(body);
    return json(r.ok ? 200 : 400, r);
  }
}
