// HTTP/1.1 around ControlApi on a Unix socket (and optionally TCP, as HTTPS with a
// certificate). Bounds on everything a client controls: header size, body size (413 and the
// connection closed), time to send the request, connections, followers of the event stream
// and how far behind one may fall.
//
// TCP clients must show the bearer token; until one has, its connection is unauthenticated
// and counts against limits of its own (security review, finding 6: 64 trickling sockets
// filled every slot and locked token holders out for 11 s a wave): at most
// `max_unauthenticated` of them (a new one pushes out the oldest), `per_address` from one
// address, and the token is checked as soon as a request's headers are in (a wrong one gets
// 401 and the connection closed, its body unread). Connections that showed the token have
// the `max_connections` slots to themselves.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { chmodSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { Logger } from '../util/ports.js';
import { ControlError } from './control-error.js';
import { errorResponse, type ApiResponse, type ControlApi } from './control-api.js';
import { eventLine, type EventLog } from './events.js';

export interface ControlServerOptions {
  readonly api: ControlApi;
  readonly events: EventLog;
  readonly logger: Logger;
  readonly max_body_bytes: number;
  /** Unix socket: connections; TCP: connections that showed the token. */
  readonly max_connections: number;
  /** TCP connections that have not shown the token yet, in all and per remote address. */
  readonly max_unauthenticated?: number;
  readonly max_unauthenticated_per_address?: number;
  readonly max_followers: number;
  /** HTTPS on TCP: PEM certificate chain and key. */
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer } | null;
  /** Deadline of a TLS handshake (default 10 s). */
  readonly tls_handshake_timeout_ms?: number;
  /** Time a client has to send the request headers (default 10 s) and the whole request (15 s). */
  readonly headers_timeout_ms?: number;
  readonly request_timeout_ms?: number;
}

/** After answering a malformed request, how long the client has to read the 400 and go. */
const CLIENT_ERROR_LINGER_MS = 1000;

/** A follower this far behind (bytes queued in the socket) is cut off instead of buffered. */
const FOLLOWER_BACKLOG_MAX = 1 << 20;

/** A TCP control connection, by its raw socket. */
interface TcpConn {
  readonly socket: Socket;
  readonly address: string;
  authenticated: boolean;
}

export class ControlServer {
  private readonly o: ControlServerOptions;
  private readonly servers: Server[] = [];
  private readonly followers = new Set<ServerResponse>();
  /** TCP connections by `address:port`, in arrival order (the oldest first). */
  private readonly tcp = new Map<string, TcpConn>();
  private tcp_authenticated = 0;
  /** TCP connections dropped by the unauthenticated limits (tests, metrics). */
  refused_unauthenticated = 0;

  constructor(o: ControlServerOptions) {
    this.o = o;
  }

  /**
   * Listens on a Unix socket (mode 0600: the file permission is the authentication). The
   * socket is bound under umask 0177, so it is 0600 from the moment it exists: a chmod after
   * listen() left a window in which anyone could connect. bind() happens inside listen()'s
   * synchronous part, so the process umask is changed for no longer than that call.
   */
  async listenUnix(path: string): Promise<void> {
    const s = this.make('unix');
    await listen(s, () => {
      const umask = process.umask(0o177);
      try {
        s.listen(path);
      } finally {
        process.umask(umask);
      }
    });
    chmodSync(path, 0o600);
  }

  /** TCP (HTTPS with `tls`): every request must carry the bearer token. Returns the port. */
  async listenTcp(host: string, port: number): Promise<number> {
    const s = this.make('tcp');
    s.on('connection', (socket: Socket) => this.admitTcp(socket));
    await listen(s, () => s.listen(port, host));
    const a = s.address();
    return typeof a === 'object' && a !== null ? a.port : port;
  }

  /** Unauthenticated TCP connections now open. */
  get unauthenticatedCount(): number {
    return this.tcp.size - this.tcp_authenticated;
  }

  private admitTcp(socket: Socket): void {
    const address = (socket.remoteAddress ?? '?').replace(/^::ffff:/, '');
    const key = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    // Over a limit, the oldest unauthenticated connection (of that address, or of all) goes:
    // it has had the longest to show a token, and a newcomer (maybe a token holder behind a
    // slow attacker) gets its chance. One address can never hold more than its share.
    let from = 0;
    let oldest: TcpConn | null = null;
    let oldestHere: TcpConn | null = null;
    for (const c of this.tcp.values()) {
      if (c.authenticated) continue;
      oldest ??= c;
      if (c.address !== address) continue;
      oldestHere ??= c;
      from++;
    }
    const victim = from >= (this.o.max_unauthenticated_per_address ?? 8) ? oldestHere : this.unauthenticatedCount >= (this.o.max_unauthenticated ?? 32) ? oldest : null;
    if (victim !== null) {
      this.refused_unauthenticated++;
      this.o.logger.log('warn', 'control connection dropped: unauthenticated, and the oldest of too many', { address: victim.address });
      this.dropTcp(victim);
    }
    const c: TcpConn = { socket, address, authenticated: false };
    this.tcp.set(key, c);
    socket.once('close', () => {
      if (this.tcp.get(key) === c) this.tcp.delete(key);
      if (c.authenticated) this.tcp_authenticated--;
    });
  }

  private dropTcp(c: TcpConn): void {
    for (const [k, v] of this.tcp) {
      if (v !== c) continue;
      this.tcp.delete(k);
      break;
    }
    c.socket.destroy();
  }

  /**
   * A TCP request's headers are in: a missing or wrong token ends the connection with 401
   * before any body is read; the first good one makes the connection authenticated, if a
   * slot is free. False: answered here.
   */
  private authorizeTcp(req: IncomingMessage, res: ServerResponse): boolean {
    if (!this.o.api.tokenOk(req.headers)) {
      res.shouldKeepAlive = false;
      this.send(req, res, errorResponse(new ControlError('EKEYREJECTED', 'missing or wrong bearer token (Authorization: Bearer <token>)')));
      req.socket.destroySoon();
      return false;
    }
    const c = this.tcp.get(`${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? 0}`);
    if (c === undefined || c.authenticated) return true;
    if (this.tcp_authenticated >= this.o.max_connections) {
      res.shouldKeepAlive = false;
      this.send(req, res, errorResponse(new ControlError('EAGAIN', `all ${this.o.max_connections} control connections are in use`)));
      req.socket.destroySoon();
      return false;
    }
    c.authenticated = true;
    this.tcp_authenticated++;
    return true;
  }

  /** Stops accepting, ends follow streams and drops every connection. */
  async close(): Promise<void> {
    for (const f of this.followers) f.end();
    this.followers.clear();
    await Promise.all(
      this.servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
  }

  private make(via: 'unix' | 'tcp'): Server {
    // Node checks the header and request deadlines only every connectionsCheckingInterval
    // (30 s by default): a slowloris client held a connection slot for up to 40 s, not 10.
    const headersTimeout = this.o.headers_timeout_ms ?? 10_000;
    const requestTimeout = this.o.request_timeout_ms ?? 15_000;
    const opts = { maxHeaderSize: 16 * 1024, requestTimeout, headersTimeout, keepAliveTimeout: 5_000, connectionsCheckingInterval: Math.min(1000, headersTimeout / 4) };
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      if (via === 'tcp' && !this.authorizeTcp(req, res)) return;
      this.onRequest(via, req, res);
    };
    const tls = via === 'tcp' ? (this.o.tls ?? null) : null;
    const s: Server = tls === null ? createServer(opts, handler) : createHttpsServer({ ...opts, cert: tls.cert, key: tls.key, handshakeTimeout: this.o.tls_handshake_timeout_ms ?? 10_000 }, handler);
    // A hard cap on sockets; on TCP the finer accounting is admitTcp's.
    s.maxConnections = via === 'unix' ? this.o.max_connections : this.o.max_connections + (this.o.max_unauthenticated ?? 32);
    if (tls !== null) s.on('tlsClientError', () => undefined);
    s.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
      // Garbage that is not HTTP: answer 400 if the socket can still take it, then close.
      this.o.logger.log('debug', 'control API client error', { via, code: err.code ?? err.message });
      if (!socket.writable) return void socket.destroy();
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      // end() only half-closes: a client that neither reads nor closes (a slowloris that
      // ignores the answer) would hold its connection slot for ever. Give it a moment to
      // read the 400, then drop it.
      const t = setTimeout(() => socket.destroy(), CLIENT_ERROR_LINGER_MS);
      t.unref();
      socket.once('close', () => clearTimeout(t));
    });
    this.servers.push(s);
    return s;
  }

  private onRequest(via: 'unix' | 'tcp', req: IncomingMessage, res: ServerResponse): void {
    const max = this.o.max_body_bytes;
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > max) {
      this.tooLarge(req, res, max);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (c: Buffer) => {
      if (refused) return;
      size += c.length;
      if (size > max) {
        refused = true;
        this.tooLarge(req, res, max);
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => res.destroy());
    req.on('end', () => {
      if (refused) return;
      const body = Buffer.concat(chunks, size);
      this.o.api.handle({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, via }).then(
        (r) => this.send(req, res, r),
        (e: unknown) => this.send(req, res, errorResponse(e)),
      );
    });
  }

  private tooLarge(req: IncomingMessage, res: ServerResponse, max: number): void {
    const r = errorResponse(new ControlError('E2BIG', `request body larger than ${max} bytes`));
    // Stop reading: the rest of the body is not wanted, the connection goes after the answer.
    res.shouldKeepAlive = false;
    this.send(req, res, r);
    req.pause();
  }

  private send(req: IncomingMessage, res: ServerResponse, r: ApiResponse): void {
    if (res.headersSent || res.destroyed) return;
    if (r.kind === 'follow') {
      this.follow(req, res, r.since, r.headers);
      return;
    }
    res.writeHead(r.status, { ...r.headers, 'content-length': Buffer.byteLength(r.body) });
    res.end(req.method === 'HEAD' ? undefined : r.body);
  }

  private follow(req: IncomingMessage, res: ServerResponse, since: number, headers: Readonly<Record<string, string>>): void {
    if (this.followers.size >= this.o.max_followers) {
      this.send(req, res, errorResponse(new ControlError('EAGAIN', `too many event followers (${this.o.max_followers})`)));
      return;
    }
    this.followers.add(res);
    res.writeHead(200, { ...headers, 'cache-control': 'no-store' });
    let last = since;
    const push = (line: string, seq: number): boolean => {
      if (seq <= last) return true;
      last = seq;
      res.write(line);
      if (res.writableLength > FOLLOWER_BACKLOG_MAX) {
        this.o.logger.log('warn', 'event follower fell behind; closing its stream', { queued_bytes: res.writableLength });
        res.destroy();
        return false;
      }
      return true;
    };
    // Subscribe first, then replay: nothing emitted in between is missed (seq filters repeats).
    const unsub = this.o.events.subscribe((e) => {
      push(eventLine(e), e.seq);
    });
    res.on('close', () => {
      unsub();
      this.followers.delete(res);
    });
    for (const e of this.o.events.since(since).events) if (!push(eventLine(e), e.seq)) break;
  }
}

function listen(s: Server, start: () => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    s.once('error', onError);
    s.once('listening', () => {
      s.off('error', onError);
      resolve();
    });
    start();
  });
}
