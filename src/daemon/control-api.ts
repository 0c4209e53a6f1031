// The control API's routing, without sockets: a request (method, raw URL, headers, body) in,
// a response out. node-control-server.ts does the HTTP/1.1 around it. Routes:
//   GET  /v1/tree/<path>[?json]   read a file, or list a directory
//   PUT|POST /v1/tree/<path>      write; body = the value (text, or JSON {"value": "..."})
//   GET  /v1/status               daemon and role status (JSON)
//   GET  /v1/events?since=N[&limit=M][&wait_ms=W][&follow=1]   JSON lines
//   GET  /metrics                 Prometheus text format 0.0.4
// Every failure is a JSON body {"error": {"code", "errno", "message"}} with a 4xx/5xx status.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../util/ports.js';
import { ControlError, httpStatusOf, toControlError } from './control-error.js';
import { formatLs, printable, type ControlTree, type JsonValue } from './control-tree.js';
import { eventLine, type EventLog } from './events.js';
import type { Counter, Histogram, MetricsRegistry } from './metrics.js';

export interface ApiRequest {
  readonly method: string;
  /** The raw request target, as sent (not normalised: `..` must be seen to be refused). */
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Buffer;
  /** Unix-socket clients are trusted by file permissions; TCP clients need the token. */
  readonly via: 'unix' | 'tcp';
}

export type ApiResponse =
  | { readonly kind: 'body'; readonly status: number; readonly headers: Readonly<Record<string, string>>; readonly body: string }
  /** Stream events with seq > since as JSON lines until the client goes (the server does it). */
  | { readonly kind: 'follow'; readonly since: number; readonly headers: Readonly<Record<string, string>> };

export interface ControlApiOptions {
  readonly tree: ControlTree;
  readonly events: EventLog;
  readonly metrics: MetricsRegistry;
  readonly status: () => JsonValue | Promise<JsonValue>;
  readonly clock: Clock;
  /** Bearer token TCP clients must send; null = TCP clients are refused. */
  readonly token: string | null;
  readonly max_wait_ms?: number;
}

const JSON_TYPE = 'application/json; charset=utf-8';
const TEXT_TYPE = 'text/plain; charset=utf-8';
const NDJSON_TYPE = 'application/x-ndjson; charset=utf-8';
export const PROM_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
const URL_MAX = 2048;
const EVENTS_LIMIT_MAX = 10_000;

type Route = 'tree' | 'status' | 'events' | 'metrics' | 'other';

export class ControlApi {
  private readonly o: ControlApiOptions;
  private readonly max_wait_ms: number;
  private readonly tokenDigest: Buffer | null;
  private readonly requests: Counter;
  private readonly duration: Histogram;
  /** Long polls in progress: close() answers them at once. */
  private readonly waiters = new Set<() => void>();
  private closed = false;

  constructor(o: ControlApiOptions) {
    this.o = o;
    this.max_wait_ms = o.max_wait_ms ?? 60_000;
    this.tokenDigest = o.token === null ? null : digest(o.token);
    this.requests = o.metrics.counter('rmr_control_requests_total', 'Control API requests by route and HTTP status.', ['route', 'code']);
    this.duration = o.metrics.histogram('rmr_control_request_duration_seconds', 'Control API request handling time (long polls included).', ['route']);
  }

  async handle(req: ApiRequest): Promise<ApiResponse> {
    const start = this.o.clock.now();
    let route: Route = 'other';
    let res: ApiResponse;
    try {
      const parsed = this.parse(req);
      route = parsed.route;
      res = await this.dispatch(req, parsed);
    } catch (e) {
      res = errorResponse(e);
    }
    const status = res.kind === 'body' ? res.status : 200;
    this.requests.inc({ route, code: String(status) });
    this.duration.observe({ route }, (this.o.clock.now() - start) / 1000);
    return res;
  }

  /** Ends long polls (the daemon is stopping); later requests get 503. */
  close(): void {
    this.closed = true;
    for (const w of [...this.waiters]) w();
  }

  private parse(req: ApiRequest): { route: Route; path: string; query: URLSearchParams } {
    if (req.url.length > URL_MAX) throw new ControlError('EINVAL', `request target longer than ${URL_MAX} characters`);
    if (!req.url.startsWith('/')) throw new ControlError('EINVAL', 'request target must be an absolute path');
    const q = req.url.indexOf('?');
    const raw = q < 0 ? req.url : req.url.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1));
    if (this.closed) throw new ControlError('ESHUTDOWN', 'the daemon is shutting down');
    if (req.via === 'tcp') this.authorize(req);
    if (raw === '/v1/tree' || raw.startsWith('/v1/tree/')) return { route: 'tree', path: decodeTreePath(raw.slice('/v1/tree'.length)), query };
    if (raw === '/v1/status') return { route: 'status', path: '', query };
    if (raw === '/v1/events') return { route: 'events', path: '', query };
    if (raw === '/metrics') return { route: 'metrics', path: '', query };
    throw new ControlError('ENOENT', `no such endpoint: ${printable(raw)} (try /v1/tree/, /v1/status, /v1/events, /metrics)`);
  }

  private authorize(req: ApiRequest): void {
    if (!this.tokenOk(req.headers)) throw new ControlError('EKEYREJECTED', 'missing or wrong bearer token (Authorization: Bearer <token>)');
  }

  /** Whether the headers carry the bearer token (the server checks it as soon as the headers are in). */
  tokenOk(headers: ApiRequest['headers']): boolean {
    return this.tokenDigest !== null && bearerMatches(headers.authorization, this.tokenDigest);
  }

  private async dispatch(req: ApiRequest, p: { route: Route; path: string; query: URLSearchParams }): Promise<ApiResponse> {
    const allow = p.route === 'tree' ? ['GET', 'PUT', 'POST'] : ['GET'];
    if (!allow.includes(req.method)) {
      return json(405, { error: { code: 'EOPNOTSUPP', errno: -95, message: `method ${printable(req.method)} not allowed here (allowed: ${allow.join(', ')})` } }, { allow: allow.join(', ') });
    }
    switch (p.route) {
      case 'tree':
        return req.method === 'GET' ? this.treeGet(p.path, p.query) : this.treeWrite(p.path, req);
      case 'status':
        return json(200, await this.o.status());
      case 'metrics':
        return { kind: 'body', status: 200, headers: { 'content-type': PROM_TYPE }, body: this.o.metrics.expose() };
      case 'events':
        return this.eventsGet(p.query);
      case 'other':
        throw new ControlError('ENOENT', 'no such endpoint');
    }
  }

  private async treeGet(path: string, query: URLSearchParams): Promise<ApiResponse> {
    const tree = this.o.tree;
    const wantJson = flag(query, 'json');
    // A file or a directory: ls for directories, read for files.
    try {
      if (wantJson) return json(200, await tree.readJson(path));
      const text = await tree.read(path);
      return { kind: 'body', status: 200, headers: { 'content-type': TEXT_TYPE }, body: text };
    } catch (e) {
      if (!(e instanceof ControlError) || e.code !== 'EISDIR') throw e;
      return { kind: 'body', status: 200, headers: { 'content-type': TEXT_TYPE, 'x-rmr-kind': 'dir' }, body: formatLs(await tree.ls(path)) };
    }
  }

  private async treeWrite(path: string, req: ApiRequest): Promise<ApiResponse> {
    const text = decodeUtf8(req.body);
    let value = text;
    const ct = typeof req.headers['content-type'] === 'string' ? req.headers['content-type'] : '';
    if (ct.startsWith('application/json')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new ControlError('EINVAL', 'body is not valid JSON (send {"value": "..."} or a text/plain body)');
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) || typeof (parsed as { value?: unknown }).value !== 'string') {
        throw new ControlError('EINVAL', 'JSON body must be {"value": "<string>"}');
      }
      value = (parsed as { value: string }).value;
    }
    const result = await this.o.tree.write(path, value);
    return json(200, { ok: true, path: `/${path.replace(/^\/+/, '')}`, result });
  }

  private async eventsGet(query: URLSearchParams): Promise<ApiResponse> {
    const since = intParam(query, 'since', 0, Number.MAX_SAFE_INTEGER, 0);
    const limit = intParam(query, 'limit', 1, EVENTS_LIMIT_MAX, 1000);
    const wait_ms = intParam(query, 'wait_ms', 0, this.max_wait_ms, 0);
    const events = this.o.events;
    if (flag(query, 'follow')) {
      const r = events.since(since, 0);
      return { kind: 'follow', since: r.reset ? 0 : since, headers: { 'content-type': NDJSON_TYPE, 'x-rmr-events-lost': String(r.lost), 'x-rmr-events-reset': String(r.reset) } };
    }
    if (wait_ms > 0 && since >= events.last_seq) await this.waitForEvent(since, wait_ms);
    const r = events.since(since, limit);
    return {
      kind: 'body',
      status: 200,
      headers: { 'content-type': NDJSON_TYPE, 'x-rmr-events-lost': String(r.lost), 'x-rmr-events-next': String(r.next), 'x-rmr-events-reset': String(r.reset) },
      body: r.events.map(eventLine).join(''),
    };
  }

  /** Resolves when an event after `since` exists, at the deadline, or at close(). */
  private waitForEvent(since: number, wait_ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer = 0;
      const done = (): void => {
        unsub();
        this.o.clock.cancel(timer);
        this.waiters.delete(done);
        resolve();
      };
      const unsub = this.o.events.subscribe((e) => {
        if (e.seq > since) done();
      });
      timer = this.o.clock.setTimer(wait_ms, done);
      this.waiters.add(done);
    });
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * A bearer token needs at least this many characters (control.token_file, the dashboard's):
 * as many as the cluster secret's bytes, so that it cannot be guessed.
 */
export const TOKEN_MIN_CHARS = 32;

/** The digest `bearerMatches` compares against. */
export function tokenDigest(token: string): Buffer {
  return digest(token);
}

/**
 * Whether `value` presents the token of `expected` (its tokenDigest). Accepts the header
 * form `Bearer <token>` or, with `bare`, the token alone (a cookie). Digests are compared:
 * constant time, and independent of the token's length.
 */
export function bearerMatches(value: unknown, expected: Buffer, bare = false): boolean {
  const m = typeof value === 'string' ? (bare ? /^([\x21-\x7e]{1,512})$/ : /^Bearer ([\x21-\x7e]{1,512})$/).exec(value) : null;
  return m !== null && timingSafeEqual(digest(m[1] as string), expected);
}

/** `/a/b%40c` → `a/b@c`; a segment that decodes to a slash or fails to decode is refused. */
export function decodeTreePath(raw: string): string {
  const out: string[] = [];
  for (const seg of raw.split('/')) {
    let d: string;
    try {
      d = decodeURIComponent(seg);
    } catch {
      throw new ControlError('EINVAL', `path component '${printable(seg)}' is not valid percent-encoding`);
    }
    if (d.includes('/')) throw new ControlError('EINVAL', `path component '${printable(d)}' contains an encoded slash`);
    out.push(d);
  }
  return out.join('/');
}

function decodeUtf8(b: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    throw new ControlError('EINVAL', 'body is not valid UTF-8');
  }
}

function flag(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  return v !== null && v !== '0' && v !== 'false';
}

function intParam(q: URLSearchParams, name: string, min: number, max: number, def: number): number {
  const v = q.get(name);
  if (v === null) return def;
  if (!/^[0-9]{1,16}$/.test(v)) throw new ControlError('EINVAL', `query parameter ${name}: '${printable(v)}' is not a non-negative integer`);
  const n = Number(v);
  if (n < min || n > max) throw new ControlError('EINVAL', `query parameter ${name}: ${n} is outside ${min}..${max}`);
  return n;
}

export function json(status: number, value: JsonValue, extra: Readonly<Record<string, string>> = {}): ApiResponse {
  return { kind: 'body', status, headers: { 'content-type': JSON_TYPE, ...extra }, body: `${JSON.stringify(value)}\n` };
}

export function errorResponse(e: unknown): ApiResponse {
  const ce = toControlError(e);
  const status = httpStatusOf(ce.code);
  const extra: Record<string, string> = status === 401 ? { 'www-authenticate': 'Bearer' } : {};
  return json(status, { error: { code: ce.code, errno: ce.errno, message: ce.message } }, extra);
}
