// The CLI's side of the control API: HTTP/1.1 over the daemon's Unix socket, or TCP with a
// bearer token: https:// (the daemon's certificate checked against `ca`, or the system's
// CAs), or http:// (a loopback listener, or one the operator allowed to be insecure). Every
// call has a deadline; a daemon that cannot be reached is a CliError telling the operator
// what to do.

import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest, type RequestOptions as HttpsRequestOptions } from 'node:https';

export type Target = { readonly socket: string } | { readonly url: string; readonly token: string | null; readonly ca?: Buffer | null };

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

function options(t: Target, method: string, path: string, headers: Record<string, string>): HttpsRequestOptions & { https: boolean } {
  if ('socket' in t) return { socketPath: t.socket, method, path, headers, https: false };
  const u = new URL(t.url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CliError(`--daemon ${t.url}: give an http:// or https:// URL`, EXIT_USAGE);
  const https = u.protocol === 'https:';
  const h = t.token === null ? headers : { ...headers, authorization: `Bearer ${t.token}` };
  // URL keeps IPv6 hosts in brackets; the socket layer wants them bare.
  const o: RequestOptions = { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port === '' ? (https ? 443 : 80) : Number(u.port), method, path, headers: h };
  return https ? { ...o, ...(t.ca !== undefined && t.ca !== null ? { ca: t.ca } : {}), rejectUnauthorized: true, https } : { ...o, https };
}

function send(o: HttpsRequestOptions & { https: boolean }, onResponse: (res: IncomingMessage) => void): ClientRequest {
  const { https, ...rest } = o;
  return https ? httpsRequest(rest, onResponse) : httpRequest(rest, onResponse);
}

function unreachable(t: Target, e: NodeJS.ErrnoException): CliError {
  // OpenSSL verification codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...) name no "CERT".
  const tlsProblem = e.code !== undefined && /CERT|SELF_SIGNED|TLS|SSL|ALTNAME|VERIFY|ISSUER|SIGNATURE/.test(e.code);
  const how = 'socket' in t ? 'start it with `rmr daemon` or pass --socket PATH' : tlsProblem ? `the daemon's certificate was not accepted (${e.message}): give its CA with --ca-file (or RMR_CA_FILE, or control_ca_file in the cluster file)` : 'check --daemon URL and that the daemon listens on TCP';
  return new CliError(`cannot reach the daemon at ${describe(t)} (${e.code ?? e.message}): ${how}`, EXIT_UNREACHABLE);
}

/** One request; resolves with the whole reply. */
export function call(t: Target, method: string, path: string, body?: string, timeout_ms = 60_000): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)) };
    const req = send(options(t, method, path, headers), (res) => {
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
    const req = send(options(t, 'GET', path, {}), (res) => {
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
