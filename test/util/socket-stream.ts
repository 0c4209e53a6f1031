// A plain node:net socket (TCP or Unix) as the transport's NetStream, so test clients built
// on NetStream (the NBD WireClient) can reach any server: ours, nbdkit, or one behind the
// fault proxy.

import net from 'node:net';
import tls from 'node:tls';
import type { NetStream, StreamHandlers } from '../../src/transport/net.js';

export type SocketTarget = { host: string; port: number } | { path: string };

/** The client side of a TLS upgrade (NBD STARTTLS): node:tls options without the socket. */
export type ClientTls = Omit<tls.ConnectionOptions, 'socket' | 'host' | 'port' | 'path'>;

export class SocketStream implements NetStream {
  private h: StreamHandlers | null = null;
  private closed = false;
  private err: Error | null = null;
  private early: Buffer[] = [];
  private s: net.Socket;
  readonly remote: string;
  readonly local: string;
  private readonly onData = (c: Buffer): void => void (this.h !== null ? this.h.onData(c) : this.early.push(c));
  private readonly onDrain = (): void => this.h?.onDrain();
  private readonly onError = (e: Error): void => void (this.err = e);
  private readonly onClose = (): void => {
    this.closed = true;
    this.h?.onClose(this.err);
  };

  constructor(s: net.Socket) {
    this.s = s;
    this.remote = s.remoteAddress !== undefined ? `${s.remoteAddress}:${s.remotePort}` : 'unix';
    this.local = s.localAddress !== undefined ? `${s.localAddress}:${s.localPort}` : 'unix';
    s.setNoDelay?.(true);
    this.listen(s);
  }

  private listen(s: net.Socket): void {
    s.on('data', this.onData);
    s.on('drain', this.onDrain);
    s.on('error', this.onError);
    s.on('close', this.onClose);
  }

  /**
   * The client's TLS handshake over this socket (after the server acknowledged STARTTLS);
   * resolves once the server is verified, rejects (and closes) when the handshake fails.
   */
  startClientTls(o: ClientTls, timeout_ms = 5000): Promise<void> {
    const raw = this.s;
    for (const [ev, f] of [['data', this.onData], ['drain', this.onDrain], ['error', this.onError], ['close', this.onClose]] as const) raw.removeListener(ev, f);
    const t = tls.connect({ ...o, socket: raw });
    this.s = t;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => t.destroy(new Error('client TLS handshake timed out')), timeout_ms);
      let settled = false;
      const failed = (e: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        t.destroy();
        this.err ??= e;
        this.onClose();
        reject(e);
      };
      const closed = (): void => failed(new Error('closed during the TLS handshake'));
      t.once('error', failed);
      t.once('close', closed);
      t.once('secureConnect', () => {
        settled = true;
        clearTimeout(timer);
        t.removeListener('error', failed);
        t.removeListener('close', closed);
        this.listen(t);
        resolve();
      });
    });
  }

  attach(h: StreamHandlers): void {
    if (this.h !== null) throw new Error('attached twice');
    this.h = h;
    for (const c of this.early) h.onData(c);
    this.early = [];
    if (this.closed) h.onClose(this.err);
  }

  write(chunks: readonly Buffer[]): boolean {
    if (this.closed || this.s.destroyed) return true;
    let ok = true;
    for (const c of chunks) ok = this.s.write(c) && ok;
    return ok;
  }

  get pendingWriteBytes(): number {
    return this.s.writableLength;
  }

  pauseReading(): void {
    this.s.pause();
  }

  resumeReading(): void {
    this.s.resume();
  }

  end(linger_ms: number): void {
    this.s.end();
    setTimeout(() => this.s.destroy(), linger_ms).unref();
  }

  destroy(err?: Error): void {
    if (err !== undefined) this.err = err;
    this.s.destroy();
  }
}

/** Connects; rejects on error or after timeout_ms. */
export function connectStream(t: SocketTarget, timeout_ms = 5000): Promise<NetStream> {
  return new Promise((resolve, reject) => {
    const s = 'path' in t ? net.connect(t.path) : net.connect(t.port, t.host);
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error(`connect to ${JSON.stringify(t)} timed out`), { code: 'ETIMEDOUT' }));
    }, timeout_ms);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(new SocketStream(s));
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
