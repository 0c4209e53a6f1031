// The CLI's side of the control API: HTTP/1.1 over the daemon's Unix socket, or TCP with a
// bearer token. Every call has a deadline; a daemon that cannot be reached is a CliError
// telling the operator what to do.

import { request, type IncomingMessage, type RequestOptions } from 'node:http';

export type Target = { readonly socket: string } | { readonly url: string; readonly token: string | null };

export interface Reply {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

/** A CLI failure: one line for the operator and the exit code. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exit_code: number,
  ) {
    super(message);
  }
}

export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_UNREACHABLE = 3;
export const EXIT_CONFIG = 4;

function describe(t: Target): string {
  return 'socket' in t ? t.socket : t.url;
}

function options(t: Target, method: string, path: string, headers: Record<string, string>): RequestOptions {
  if ('socket' in t) return { socketPath: t.socket, method, path, headers };
  const u = new URL(t.url);
  if (u.protocol !== 'http:') throw new CliError(`--daemon ${t.url}: only http:// URLs are supported`, EXIT_USAGE);
  const h = t.token === null ? headers : { ...headers, authorization: `Bearer ${t.token}` };
  return { host: u.hostname, port: u.port === '' ? 80 : Number(u.port), method, path, headers: h };
}

function unreachable(t: Target, e: NodeJS.ErrnoException): CliError {
  const how = 'socket' in t ? 'start it with `rmr daemon` or pass --socket PATH' : 'check --daemon URL and that the daemon listens on TCP';
  return new CliError(`cannot reach the daemon at ${describe(t)} (${e.code ?? e.message}): ${how}`, EXIT_UNREACHABLE);
}

/** One request; resolves with the whole reply. */
export function call(t: Target, method: string, path: string, body?: string, timeout_ms = 60_000): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)) };
    const req = request(options(t, method, path, headers), (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e) => reject(unreachable(t, e)));
    });
    req.setTimeout(timeout_ms, () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => reject(unreachable(t, e)));
    req.end(body);
  });
}

/** A streaming GET: `onLine` per complete line until the daemon ends the stream. */
export function stream(t: Target, path: string, onLine: (line: string) => void): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    const req = request(options(t, 'GET', path, {}), (res) => {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        return;
      }
      let rest = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        rest += c;
        let nl: number;
        while ((nl = rest.indexOf('\n')) >= 0) {
          onLine(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
      });
      res.on('end', () => resolve({ status: 200, headers: res.headers, body: rest }));
      res.on('error', (e) => reject(unreachable(t, e)));
    });
    req.on('error', (e: NodeJS.ErrnoException) => reject(unreachable(t, e)));
    req.end();
  });
}

/** The daemon's error body as one line: `EINVAL: chunk_size: 1 is below the minimum 4096`. */
export function errorLine(r: Reply): string {
  try {
    const j = JSON.parse(r.body) as { error?: { code?: unknown; message?: unknown } };
    if (j.error !== undefined && typeof j.error.message === 'string') {
      return `${typeof j.error.code === 'string' ? j.error.code : `HTTP ${r.status}`}: ${j.error.message}`;
    }
  } catch {
    // not JSON: fall through
  }
  return `HTTP ${r.status}${r.body.trim() === '' ? '' : `: ${r.body.trim().split('\n')[0] ?? ''}`}`;
}
