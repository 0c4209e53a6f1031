// The real Net adapter: TCP through node:net, TLS (certificates or TLS-PSK) through node:tls.
// It owns the socket details the sans-IO transport must not see: batching writes into one
// writev per event-loop iteration, holding reads until attach(), and turning socket events into one onClose.

import net from 'node:net';
import tls from 'node:tls';
import { chmodSync, chownSync, lstatSync, unlinkSync } from 'node:fs';
import type { Address, Listener, Net, NetStream, ServerTls, ServerTlsOptions, StreamHandlers, TlsOptions, TlsPeer } from '../transport/net.js';

/**
 * TLS-PSK settings. Node hands the PSK to OpenSSL through the TLS 1.2-style callbacks; in
 * TLS 1.3 OpenSSL then ties that PSK to SHA-256, so only a SHA-256 suite can carry it: with
 * TLS_AES_256_GCM_SHA384 as the only choice the server ignores the PSK and falls back to a
 * certificate it does not have (seen on Node 20 / OpenSSL 3.0 and Node 24 / OpenSSL 3.5).
 * Listing just the SHA-256 suites keeps that from depending on suite preferences.
 * TLS 1.3 is pinned because its PSK mode (psk_dhe_ke) adds ECDHE, hence forward secrecy,
 * which plain TLS 1.2 PSK suites lack; both ends are always this adapter.
 */
export const PSK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';
const PSK_TLS_VERSION = 'TLSv1.3';
/** OpenSSL limits (RFC 4279 asks for at least 128 / 64 bytes). */
const PSK_MAX_IDENTITY_BYTES = 128;
const PSK_MAX_KEY_BYTES = 256;
/** setTimeout turns longer delays (and NaN) into 1 ms; clamp instead. */
const TIMEOUT_MAX_MS = 2 ** 31 - 1;

export interface NodeNetOptions {
  /** write() returns false above this many pending bytes. Default 1 MiB. */
  highWaterMark?: number;
  /** TCP keepalive probe delay. Default 30 s. */
  keepAliveInitialDelayMs?: number;
  /** Server side: an incoming TLS handshake not done by then is dropped. Default 10 s. */
  tlsHandshakeTimeoutMs?: number;
  /**
   * Plain TCP and Unix sockets read through `onread` (DirectReader: large payloads land in
   * the receiver's readTarget). Default true; false gives Node's 'data' events, as TLS
   * sockets always have (the tests run both).
   */
  directReads?: boolean;
}

type NetError = Error & { code?: string };

function netError(code: string, msg: string): NetError {
  const err: NetError = new Error(msg);
  err.code = code;
  return err;
}

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function hostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? '?';
  // Brackets keep an IPv6 address and its port apart.
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? 0}`;
}

function checkPsk(psk: { identity: string; key: Buffer }): Error | null {
  const idLen = Buffer.byteLength(psk.identity, 'utf8');
  if (idLen === 0 || idLen > PSK_MAX_IDENTITY_BYTES) {
    return netError('ERR_PSK_CONFIG', `PSK identity must be 1..${PSK_MAX_IDENTITY_BYTES} bytes`);
  }
  if (psk.key.length === 0 || psk.key.length > PSK_MAX_KEY_BYTES) {
    return netError('ERR_PSK_CONFIG', `PSK key must be 1..${PSK_MAX_KEY_BYTES} bytes`);
  }
  return null;
}

/**
 * Receive buffers: a read into the slab gets this much room (Node's own read size), so at
 * most this much of a large message arrives before its receiver can offer a target; a
 * target is used from this size on.
 */
const MIN_READ_BYTES = 64 * 1024;
const SLAB_BYTES = 256 * 1024;

/**
 * The receive side of a plain TCP or Unix socket opened with `onread`: libuv reads into
 * memory chosen here before every read. That is the receiver's own buffer when it is
 * assembling a large message (StreamHandlers.readTarget: a 1 MiB payload then lands where it
 * is used, with no copy in user space), else the free tail of a slab shared by consecutive
 * reads. Chunks are views of that memory, never reused: they belong to the receiver, as
 * with 'data' events.
 */
class DirectReader {
  private slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
  private used = 0;
  /** Bytes read before a stream took them over (none in practice: reads start on attach). */
  private early: Buffer[] = [];
  private sink: ((chunk: Buffer) => boolean) | null = null;
  private target: (() => Buffer | null) | null = null;
  readonly onread = {
    buffer: (): Buffer => this.next(),
    callback: (n: number, buf: Uint8Array): boolean => this.got(n, buf as Buffer),
  };

  /** `sink` returns false to stop reading (the socket pauses). */
  bind(sink: (chunk: Buffer) => boolean, target: (() => Buffer | null) | null): void {
    this.sink = sink;
    this.target = target;
    const early = this.early;
    this.early = [];
    for (const c of early) sink(c);
  }

  private next(): Buffer {
    const t = this.target !== null ? this.target() : null;
    if (t !== null && t.length >= MIN_READ_BYTES) return t;
    if (SLAB_BYTES - this.used < MIN_READ_BYTES) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.used = 0;
    }
    return this.slab.subarray(this.used, this.used + MIN_READ_BYTES);
  }

  private got(n: number, buf: Buffer): boolean {
    // buf is what next() returned last: the slab's tail, or the receiver's target.
    if (buf.buffer === this.slab.buffer && buf.byteOffset === this.used) this.used += n;
    const chunk = buf.subarray(0, n);
    if (this.sink === null) {
      this.early.push(Buffer.from(chunk));
      return true;
    }
    return this.sink(chunk);
  }
}

/**
 * The same connection as a socket that reads through `reader`, for an accepted connection
 * (net.Server offers no `onread`): its handle moves to a new net.Socket created with one, as
 * net.Server itself creates sockets around accepted handles. null when this Node keeps the
 * handle elsewhere; the caller then goes on with 'data' events.
 */
function rewrapWithReader(socket: net.Socket, reader: DirectReader): net.Socket | null {
  const holder = socket as unknown as { _handle?: { useUserBuffer?: unknown } | null };
  const handle = holder._handle;
  if (handle === null || handle === undefined || typeof handle.useUserBuffer !== 'function') return null;
  let fresh: net.Socket;
  try {
    const opts = { handle, onread: reader.onread, pauseOnCreate: true, readable: true, writable: true };
    fresh = new net.Socket(opts);
  } catch {
    return null;
  }
  // The old socket lets go of the handle; destroying it only settles the server's count.
  holder._handle = null;
  socket.destroy();
  return fresh;
}

/** ServerTls of this adapter: the secure context built once, used by every upgrade. */
class NodeServerTls implements ServerTls {
  constructor(
    readonly mode: 'x509' | 'psk',
    readonly context: tls.SecureContext,
    readonly verifyPeer: boolean,
    readonly psk: ((identity: string) => Buffer | null) | null,
    readonly handshakeTimeoutMs: number,
  ) {}
}

/**
 * The client-certificate check of a server-side TLSSocket made by hand. Node verifies the
 * chain during the handshake but accepts the connection whatever the result (its VerifyCallback
 * always says yes), and only tls.Server's own 'secure' listener turns a bad result into a
 * refusal, reading it from the TLS handle. A socket upgraded in place has no tls.Server, so
 * we read it the same way; a Node without that method refuses every client (fail closed).
 */
function peerVerifyError(socket: tls.TLSSocket): Error | null {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => Error | null } | null })._handle;
  if (handle === null || handle === undefined || typeof handle.verifyError !== 'function') {
    return netError('ERR_TLS_VERIFY_UNAVAILABLE', 'cannot check the client certificate (no verifyError on this Node)');
  }
  const err = handle.verifyError();
  if (err !== null && err !== undefined) return netError('ERR_TLS_CLIENT_CERT', `client certificate refused: ${err.message}`);
  const cert = socket.getPeerCertificate() as tls.PeerCertificate | null;
  if (cert === null || Object.keys(cert).length === 0) return netError('ERR_TLS_CLIENT_CERT', 'the client sent no certificate');
  return null;
}

type TlsState = 'plain' | 'upgrading' | 'tls';

/** The PSK identity a server-side TLS socket accepted (set by the PSK callbacks). */
const pskIdentities = new WeakMap<tls.TLSSocket, string>();

/** A certificate subject as attribute → values (Node gives a string, or an array when repeated). */
function subjectOf(cert: tls.PeerCertificate | null | undefined): Record<string, string[]> | null {
  if (cert === null || cert === undefined || Object.keys(cert).length === 0) return null;
  const out: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(cert.subject ?? {}) as [string, unknown][]) {
    if (typeof v === 'string') out[k] = [v];
    else if (Array.isArray(v)) out[k] = v.filter((x): x is string => typeof x === 'string');
  }
  return out;
}

/** A connected socket (TLS handshake done) as a NetStream. */
class NodeStream implements NetStream {
  readonly remote: string;
  readonly local: string;
  private handlers: StreamHandlers | null = null;
  private closed = false;
  private closeErr: Error | null = null;
  private closeReported = false;
  private readPaused = false;
  /** end() was called: received bytes are dropped, reading goes on to see the peer's close. */
  private ending = false;
  private corked = false;
  private waitingDrain = false;
  /** startTls: the socket is the raw one until 'upgrading', then the TLS socket over it. */
  private tlsState: TlsState = 'plain';
  private socket: net.Socket;
  /** Set when the socket reads through onread (plain TCP and Unix sockets). */
  private reader: DirectReader | null;
  /** The handshake checked the client's certificate against a CA (startTls with verifyPeer, or a listener's requestCert). */
  peerVerified = false;
  private readonly onSocketData = (chunk: Buffer): void => {
    if (this.handlers !== null && !this.closed && !this.ending) this.handlers.onData(chunk);
  };
  private readonly onSocketDrain = (): void => {
    if (!this.waitingDrain || this.closed || this.handlers === null) return;
    this.waitingDrain = false;
    this.handlers.onDrain();
  };
  // 'error' is always followed by 'close': keep the first error, report once on 'close'.
  private readonly onSocketError = (err: Error): void => {
    this.closeErr ??= err;
  };
  private readonly onSocketClose = (): void => {
    this.closed = true;
    this.reportClose();
  };

  constructor(
    socket: net.Socket,
    private readonly highWaterMark: number,
    reader: DirectReader | null,
    unixPath: string,
  ) {
    this.socket = socket;
    this.reader = reader;
    // A Unix-socket peer has no address; name it after the socket path.
    this.remote = unixPath !== '' ? `unix:${unixPath}` : hostPort(socket.remoteAddress, socket.remotePort);
    this.local = unixPath !== '' ? `unix:${unixPath}` : hostPort(socket.localAddress, socket.localPort);
    this.listenTo(socket);
  }

  private listenTo(socket: net.Socket): void {
    // pause() before the 'data' listener keeps the socket out of flowing mode: bytes stay
    // in the kernel (or up to the readable high-water mark) until attach().
    socket.pause();
    socket.on('data', this.onSocketData);
    socket.on('drain', this.onSocketDrain);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
  }

  attach(handlers: StreamHandlers): void {
    if (this.handlers !== null) throw new Error('NetStream.attach called twice');
    this.handlers = handlers;
    if (this.reader !== null) {
      const target = handlers.readTarget === undefined ? null : (): Buffer | null => (this.closed || this.ending || this.tlsState !== 'plain' ? null : (handlers.readTarget?.() ?? null));
      this.reader.bind((chunk) => {
        if (this.ending) return true;
        // Once startTls began, the handle's bytes belong to TLS: a clear byte that still
        // came this way must never reach the receiver as if it had been protected.
        if (this.tlsState !== 'plain') {
          this.socket.destroy(netError('ERR_TLS_PLAINTEXT', 'plaintext bytes after the TLS upgrade began'));
          return false;
        }
        if (!this.closed) handlers.onData(chunk);
        return !this.readPaused;
      }, target);
    }
    if (this.closed) {
      // Closed before anyone listened; the caller still gets its one onClose, but not from
      // inside attach().
      process.nextTick(() => this.reportClose());
      return;
    }
    if (!this.readPaused) this.socket.resume();
    // A write that returned false before attach() is owed an onDrain.
    if (this.waitingDrain && this.socket.writableLength === 0) {
      process.nextTick(() => {
        if (!this.waitingDrain || this.closed) return;
        this.waitingDrain = false;
        handlers.onDrain();
      });
    }
  }

  write(chunks: readonly Buffer[]): boolean {
    // After close, bytes have nowhere to go; onClose already tells the caller.
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return true;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      // After the poll phase, not after this callback: every socket read and file-IO
      // completion of this loop iteration adds its replies to the same writev.
      setImmediate(this.uncork);
    }
    for (const c of chunks) this.socket.write(c);
    if (this.socket.writableLength > this.highWaterMark) {
      this.waitingDrain = true;
      return false;
    }
    return true;
  }

  private readonly uncork = (): void => {
    if (!this.corked) return;
    this.corked = false;
    // Everything written this loop iteration leaves in one writev.
    if (!this.socket.destroyed) this.socket.uncork();
  };

  get pendingWriteBytes(): number {
    return this.closed ? 0 : this.socket.writableLength;
  }

  pauseReading(): void {
    this.readPaused = true;
    if (!this.closed && !this.ending) this.socket.pause();
  }

  resumeReading(): void {
    this.readPaused = false;
    // During a TLS upgrade reading starts when the handshake is done.
    if (this.handlers !== null && !this.closed && this.tlsState !== 'upgrading') this.socket.resume();
  }

  /**
   * The socket's handle moves under a server-side TLSSocket (node:tls wraps the handle in
   * place: every byte the kernel delivers from now on goes to OpenSSL first). What was
   * written before leaves in clear ahead of the first TLS record (Node queues the TLS
   * output behind writes still in flight); bytes the raw socket had read but not handed
   * over are fed to TLS too (Node's initRead), so an early byte can only ever be TLS input.
   */
  startTls(t: ServerTls, cb: (err: Error | null) => void): void {
    if (this.tlsState !== 'plain') throw new Error('NetStream.startTls called twice');
    if (this.handlers === null) throw new Error('NetStream.startTls before attach');
    this.tlsState = 'upgrading';
    if (this.closed || this.ending || this.socket.destroyed) return; // onClose comes or came
    if (!(t instanceof NodeServerTls)) {
      this.socket.destroy(netError('ERR_TLS_CONFIG', 'startTls needs a ServerTls made by NodeNet.serverTls'));
      return;
    }
    const raw = this.socket;
    this.uncork();
    raw.pause();
    raw.removeListener('data', this.onSocketData);
    raw.removeListener('drain', this.onSocketDrain);
    raw.removeListener('error', this.onSocketError);
    raw.removeListener('close', this.onSocketClose);
    // Node's TLSSocket adds its own 'error' listener on raw; this one covers the gap.
    raw.on('error', () => undefined);
    this.reader = null;
    let secure: tls.TLSSocket;
    try {
      secure = new tls.TLSSocket(raw, {
        isServer: true,
        secureContext: t.context,
        requestCert: t.verifyPeer,
        rejectUnauthorized: t.verifyPeer,
        ...(t.psk !== null ? { pskCallback: pskServerCallback(t.psk) } : {}),
      });
    } catch (e) {
      this.socket = raw;
      this.listenTo(raw);
      raw.destroy(toError(e));
      return;
    }
    this.socket = secure;
    this.listenTo(secure);
    const timer = setTimeout(() => secure.destroy(netError('ETIMEDOUT', `TLS handshake not done within ${t.handshakeTimeoutMs} ms`)), Math.min(Math.max(0, t.handshakeTimeoutMs), TIMEOUT_MAX_MS));
    secure.once('close', () => clearTimeout(timer));
    secure.once('secure', () => {
      clearTimeout(timer);
      if (this.closed || secure.destroyed) return;
      const bad = t.verifyPeer ? peerVerifyError(secure) : null;
      if (bad !== null) {
        secure.destroy(bad);
        return;
      }
      this.peerVerified = t.verifyPeer;
      this.tlsState = 'tls';
      cb(null);
      if (!this.readPaused && !this.closed && !this.ending) secure.resume();
    });
  }

  tlsPeer(): TlsPeer | null {
    const s = this.socket;
    if (!(s instanceof tls.TLSSocket) || this.closed) return null;
    const id = pskIdentities.get(s);
    if (id !== undefined) return { kind: 'psk', identity: id };
    // Only a certificate the handshake verified names anyone.
    if (!this.peerVerified) return null;
    const subject = subjectOf(s.getPeerCertificate());
    return subject === null ? null : { kind: 'x509', subject };
  }

  end(linger_ms: number): void {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return;
    if (this.corked) this.uncork();
    this.socket.end();
    // Keep reading (and drop what comes) to see the peer's close: with onread a paused
    // socket reads nothing at all, so its FIN would wait for the linger timer. A 'data'
    // socket took it anyway, since pause() there stops only the 'data' events.
    this.ending = true;
    this.socket.resume();
    // A peer that never reads would keep the socket (and its buffers) forever.
    const t = setTimeout(() => this.socket.destroy(), Math.max(0, linger_ms));
    t.unref();
    this.socket.once('close', () => clearTimeout(t));
  }

  destroy(err?: Error): void {
    if (this.closed || this.socket.destroyed) return;
    this.socket.destroy(err);
  }

  private reportClose(): void {
    if (this.closeReported || this.handlers === null) return;
    this.closeReported = true;
    this.waitingDrain = false;
    this.handlers.onClose(this.closeErr);
  }
}

class NodeListener implements Listener {
  constructor(
    private readonly server: net.Server,
    private readonly state: { open: boolean },
    readonly address: { host: string; port: number },
  ) {}

  close(): Promise<void> {
    if (this.state.open) {
      this.state.open = false;
      // server.close()'s callback waits for every accepted connection to end, but those
      // belong to the transport; closing the listening handle is what stops accepting,
      // and it releases the port at once.
      this.server.close(() => undefined);
    }
    return Promise.resolve();
  }
}

export class NodeNet implements Net {
  private readonly highWaterMark: number;
  private readonly keepAliveDelay: number;
  private readonly handshakeTimeout: number;
  private readonly directReads: boolean;

  constructor(opts: NodeNetOptions = {}) {
    this.highWaterMark = opts.highWaterMark ?? 1024 * 1024;
    this.directReads = opts.directReads ?? true;
    this.keepAliveDelay = opts.keepAliveInitialDelayMs ?? 30_000;
    this.handshakeTimeout = opts.tlsHandshakeTimeoutMs ?? 10_000;
  }

  private tune(socket: net.Socket): void {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, this.keepAliveDelay);
  }

  private stream(socket: net.Socket, reader: DirectReader | null = null, unixPath = ''): NodeStream {
    // Never below the socket's own mark: then a false return implies the socket owes a 'drain'.
    return new NodeStream(socket, Math.max(this.highWaterMark, socket.writableHighWaterMark), reader, unixPath);
  }

  /** An accepted plain socket as a stream that reads through a DirectReader when it can. */
  private acceptedStream(socket: net.Socket, unixPath: string): NodeStream {
    if (!this.directReads) return this.stream(socket, null, unixPath);
    const reader = new DirectReader();
    const fresh = rewrapWithReader(socket, reader);
    return fresh === null ? this.stream(socket, null, unixPath) : this.stream(fresh, reader, unixPath);
  }

  connect(addr: Address, timeout_ms: number, cb: (err: Error | null, stream: NetStream | null) => void): void {
    let settled = false;
    let socket: net.Socket | null = null;
    let timer: NodeJS.Timeout | null = null;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      if (timer !== null) clearTimeout(timer);
      socket?.destroy();
      cb(err, null);
    };

    const tlsOpts = addr.tls;
    if (tlsOpts?.psk !== undefined) {
      const bad = checkPsk(tlsOpts.psk);
      if (bad !== null) {
        process.nextTick(fail, bad);
        return;
      }
    }

    const reader = tlsOpts === undefined && this.directReads ? new DirectReader() : null;
    const connected = (): void => {
      if (settled || socket === null) return;
      if (tlsOpts?.psk !== undefined && socket instanceof tls.TLSSocket && !pskOnly(socket)) {
        fail(netError('ERR_TLS_PSK_NOT_USED', `${hostPort(addr.host, addr.port)} answered with a certificate, not the PSK`));
        return;
      }
      settled = true;
      if (timer !== null) clearTimeout(timer);
      socket.removeListener('error', onConnectError);
      socket.removeListener('close', onSetupClose);
      // The stream installs its own 'error' listener in the same tick: no gap to crash in.
      cb(null, this.stream(socket, reader));
    };
    const onConnectError = (err: Error): void => fail(err);
    const onSetupClose = (): void =>
      fail(netError('ECONNRESET', `connection to ${hostPort(addr.host, addr.port)} closed during setup`));

    try {
      if (tlsOpts === undefined) {
        socket = net.connect(reader === null ? { host: addr.host, port: addr.port } : { host: addr.host, port: addr.port, onread: reader.onread });
        socket.once('connect', connected);
      } else {
        socket = tls.connect(clientTlsOptions(addr, tlsOpts));
        socket.once('secureConnect', connected);
      }
    } catch (e) {
      // Bad PEM and similar option errors throw synchronously; cb stays asynchronous.
      process.nextTick(fail, toError(e));
      return;
    }
    this.tune(socket);
    socket.on('error', onConnectError);
    socket.once('close', onSetupClose);
    const delay = timeout_ms >= 0 ? Math.min(timeout_ms, TIMEOUT_MAX_MS) : 0;
    timer = setTimeout(() => {
      fail(netError('ETIMEDOUT', `connect to ${hostPort(addr.host, addr.port)} timed out after ${timeout_ms} ms`));
    }, delay);
  }

  listen(addr: Address, onConnection: (stream: NetStream) => void): Promise<Listener> {
    const tlsOpts = addr.tls;
    const state = { open: true };
    const accept = (socket: net.Socket): void => {
      // A TLS handshake begun before close() can finish after it; the listener is gone.
      if (!state.open) {
        socket.destroy();
        return;
      }
      const stream = this.stream(socket);
      // A TLS listener with requestCert refuses unverified clients: one that got here is verified.
      if (tlsOpts?.requestCert === true && socket instanceof tls.TLSSocket && socket.authorized) stream.peerVerified = true;
      onConnection(stream);
    };
    let server: net.Server;
    try {
      if (tlsOpts === undefined) {
        server = net.createServer({ pauseOnConnect: true }, (socket) => {
          this.tune(socket);
          if (!state.open) {
            socket.destroy();
            return;
          }
          onConnection(this.acceptedStream(socket, ''));
        });
      } else {
        const psk = tlsOpts.psk;
        if (psk !== undefined) {
          const bad = checkPsk(psk);
          if (bad !== null) return Promise.reject(bad);
        } else if (tlsOpts.cert === undefined || tlsOpts.key === undefined) {
          return Promise.reject(netError('ERR_TLS_CONFIG', 'a TLS listener needs cert and key, or psk'));
        }
        // Without cert/key in PSK mode, no session can complete except by the PSK.
        server = tls.createServer(serverTlsOptions(tlsOpts, this.handshakeTimeout), accept);
        server.on('connection', (raw: net.Socket) => this.tune(raw));
        // A failed incoming handshake is the peer's problem: Node already destroys the socket.
        server.on('tlsClientError', () => undefined);
      }
    } catch (e) {
      return Promise.reject(toError(e));
    }

    return new Promise<Listener>((resolve, reject) => {
      const onBindError = (err: Error): void => reject(err);
      server.once('error', onBindError);
      server.listen({ host: addr.host, port: addr.port }, () => {
        server.removeListener('error', onBindError);
        // An accept error after bind (EMFILE, say) must not crash the daemon; libuv keeps listening.
        server.on('error', () => undefined);
        const a = server.address();
        const bound = a !== null && typeof a === 'object' ? { host: a.address, port: a.port } : { host: addr.host, port: addr.port };
        resolve(new NodeListener(server, state, bound));
      });
    });
  }

  /**
   * Server TLS for NetStream.startTls: the PEM material is parsed here, once, so a bad
   * certificate or key fails at configuration time rather than at the first client.
   * Certificates (with `verifyPeer`, clients must show one signed by `ca`) or PSK, not both.
   */
  serverTls(o: ServerTlsOptions): ServerTls {
    const timeout = o.handshakeTimeoutMs ?? this.handshakeTimeout;
    if (o.psk !== undefined) {
      if (o.cert !== undefined || o.key !== undefined || o.verifyPeer === true) throw netError('ERR_TLS_CONFIG', 'server TLS takes certificates or a PSK, not both');
      // Same suites and version as the transport's PSK mode (see PSK_CIPHERS): TLS 1.3
      // with (EC)DHE, so a recorded session stays secret even if the key leaks later.
      const context = tls.createSecureContext({ ciphers: PSK_CIPHERS, minVersion: PSK_TLS_VERSION, maxVersion: PSK_TLS_VERSION });
      return new NodeServerTls('psk', context, false, o.psk, timeout);
    }
    if (o.cert === undefined || o.key === undefined) throw netError('ERR_TLS_CONFIG', 'server TLS needs a certificate and its key, or a PSK');
    if (o.verifyPeer === true && o.ca === undefined) throw netError('ERR_TLS_CONFIG', 'verifying client certificates needs a CA');
    const context = tls.createSecureContext({ cert: o.cert, key: o.key, ...(o.ca !== undefined ? { ca: o.ca } : {}) });
    return new NodeServerTls('x509', context, o.verifyPeer === true, null, timeout);
  }

  /**
   * Listens on a Unix socket (plain, no TLS). A stale socket file at `path` (left by a
   * process that died) is removed first; any other kind of file there is an error.
   * The listener's address is { host: path, port: 0 }; close() removes the socket file.
   * The socket file gets `mode` (default 0600) and, when given, group `gid`; it is bound
   * owner-only (umask 0177), so it never exists with the umask's wider mode, and widened
   * to `mode` only after the group is set.
   */
  listenUnix(path: string, onConnection: (stream: NetStream) => void, access: { mode?: number; gid?: number } = {}): Promise<Listener> {
    const mode = access.mode ?? 0o600;
    try {
      if (lstatSync(path, { throwIfNoEntry: false })?.isSocket() === true) unlinkSync(path);
    } catch (e) {
      return Promise.reject(toError(e));
    }
    const state = { open: true };
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      if (!state.open) {
        socket.destroy();
        return;
      }
      onConnection(this.acceptedStream(socket, path));
    });
    return new Promise<Listener>((resolve, reject) => {
      const onBindError = (err: Error): void => reject(err);
      server.once('error', onBindError);
      // bind() runs inside listen()'s synchronous part: the umask changes for that call only.
      const umask = process.umask(0o177);
      try {
        server.listen({ path }, () => {
          server.removeListener('error', onBindError);
          server.on('error', () => undefined);
          const listener = new NodeListener(server, state, { host: path, port: 0 });
          try {
            if (access.gid !== undefined) chownSync(path, -1, access.gid);
            chmodSync(path, mode);
          } catch (e) {
            void listener.close();
            reject(toError(e));
            return;
          }
          resolve(listener);
        });
      } finally {
        process.umask(umask);
      }
    });
  }
}

function pskServerCallback(keyOf: (identity: string) => Buffer | null): (socket: tls.TLSSocket, identity: string) => Buffer | null {
  // null: unknown identity, the handshake fails with an alert.
  return (socket, identity) => {
    const key = keyOf(identity);
    if (key === null || key.length === 0 || key.length > PSK_MAX_KEY_BYTES) return null;
    pskIdentities.set(socket, identity);
    return key;
  };
}

/** True when the server proved itself with the PSK rather than with a certificate. */
function pskOnly(socket: tls.TLSSocket): boolean {
  // Node returns {} when the peer sent no certificate (null once destroyed).
  const cert = socket.getPeerCertificate() as tls.PeerCertificate | null;
  return cert === null || Object.keys(cert).length === 0;
}

function clientTlsOptions(addr: Address, t: TlsOptions): tls.ConnectionOptions {
  if (t.psk !== undefined) {
    const { identity, key } = t.psk;
    return {
      host: addr.host,
      port: addr.port,
      ...(t.servername !== undefined ? { servername: t.servername } : {}),
      ciphers: PSK_CIPHERS,
      minVersion: PSK_TLS_VERSION,
      maxVersion: PSK_TLS_VERSION,
      pskCallback: () => ({ identity, psk: key }),
      // No certificate to check: the PSK handshake itself authenticates the server. A server
      // that ignores the PSK and shows a certificate (trusted through `ca` or the system
      // roots) gets through Node's checks, and is refused in connect() instead.
      checkServerIdentity: () => undefined,
      ...(t.ca !== undefined ? { ca: t.ca } : {}),
    };
  }
  const opts: tls.ConnectionOptions = { host: addr.host, port: addr.port, rejectUnauthorized: true };
  if (t.ca !== undefined) opts.ca = t.ca;
  if (t.cert !== undefined) opts.cert = t.cert;
  if (t.key !== undefined) opts.key = t.key;
  // Node refuses an IP address as SNI; without servername it checks the host (IP SANs work).
  if (t.servername !== undefined) opts.servername = t.servername;
  return opts;
}

function serverTlsOptions(t: TlsOptions, handshakeTimeout: number): tls.TlsOptions {
  if (t.psk !== undefined) {
    const { identity, key } = t.psk;
    return {
      ciphers: PSK_CIPHERS,
      minVersion: PSK_TLS_VERSION,
      maxVersion: PSK_TLS_VERSION,
      handshakeTimeout,
      // null: unknown identity, the handshake fails with an alert.
      pskCallback: (socket: tls.TLSSocket, id: string) => {
        if (id !== identity) return null;
        pskIdentities.set(socket, id);
        return key;
      },
    };
  }
  const opts: tls.TlsOptions = { handshakeTimeout };
  if (t.cert !== undefined) opts.cert = t.cert;
  if (t.key !== undefined) opts.key = t.key;
  if (t.ca !== undefined) opts.ca = t.ca;
  if (t.requestCert === true) {
    opts.requestCert = true;
    opts.rejectUnauthorized = true;
  }
  return opts;
}
