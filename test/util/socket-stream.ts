// A plain node:net socket (TCP or Unix) as the transport's NetStream, so test clients built
// on NetStream (the NBD WireClient) can reach any server: ours, nbdkit, or one behind the
// fault proxy.

import net from 'node:net';
import type { NetStream, StreamHandlers } from '../../src/transport/net.js';

export type SocketTarget = { host: string; port: number } | { path: string };

class SocketStream implements NetStream {
  private h: StreamHandlers | null = null;
  private closed = false;
  private err: Error | null = null;
  private early: Buffer[] = [];
  readonly remote: string;
  readonly local: string;

  constructor(private readonly s: net.Socket) {
    this.remote = s.remoteAddress !== undefined ? `${s.remoteAddress}:${s.remotePort}` : 'unix';
    this.local = s.localAddress !== undefined ? `${s.localAddress}:${s.localPort}` : 'unix';
    s.setNoDelay?.(true);
    s.on('data', (c: Buffer) => (this.h !== null ? this.h.onData(c) : this.early.push(c)));
    s.on('drain', () => this.h?.onDrain());
    s.on('error', (e) => (this.err = e));
    s.on('close', () => {
      this.closed = true;
      this.h?.onClose(this.err);
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
