// A NetStream decorator with a stand-in for NetStream.startTls, so the NBD server's STARTTLS
// state machine runs over in-memory streams (unit tests, thousands of fuzz cases) without
// OpenSSL. The "handshake" is the client sending CLIENT_HELLO; anything else where it belongs
// fails the handshake the way a real one fails: the stream closes with an error. Nothing is
// encrypted: what this checks is which bytes the server takes as protected.
//
//   const [c, s] = memStreamPair();
//   server.accept(new FakeTlsStream(s));     // the server may now accept STARTTLS
//   ... client sends STARTTLS, reads the ACK, then c.write([CLIENT_HELLO]) ...

import type { NetStream, ServerTls, StreamHandlers } from '../../src/transport/net.js';

export const CLIENT_HELLO = Buffer.from('FAKE-TLS-CLIENT-HELLO', 'latin1');

/** What a server configured with a fake handshake passes to startTls. */
export const FAKE_SERVER_TLS: ServerTls = { mode: 'x509' };

export class FakeTlsStream implements NetStream {
  private state: 'plain' | 'upgrading' | 'tls' = 'plain';
  private handlers: StreamHandlers | null = null;
  private hello = Buffer.alloc(0);
  private done: ((err: Error | null) => void) | null = null;
  /** Upgrades started and completed (for assertions). */
  started = 0;
  established = 0;

  constructor(private readonly inner: NetStream) {}

  get remote(): string {
    return this.inner.remote;
  }

  get local(): string {
    return this.inner.local;
  }

  get pendingWriteBytes(): number {
    return this.inner.pendingWriteBytes;
  }

  get tls(): boolean {
    return this.state === 'tls';
  }

  attach(h: StreamHandlers): void {
    if (this.handlers !== null) throw new Error('attach twice');
    this.handlers = h;
    this.inner.attach({
      onData: (c) => this.onData(c),
      readTarget: () => (this.state === 'plain' ? (h.readTarget?.() ?? null) : null),
      onDrain: () => h.onDrain(),
      onClose: (err) => h.onClose(err),
    });
  }

  private onData(c: Buffer): void {
    const h = this.handlers as StreamHandlers;
    if (this.state !== 'upgrading') return h.onData(c);
    this.hello = Buffer.concat([this.hello, c]);
    const n = Math.min(this.hello.length, CLIENT_HELLO.length);
    if (!this.hello.subarray(0, n).equals(CLIENT_HELLO.subarray(0, n))) {
      this.inner.destroy(new Error('fake TLS: not a ClientHello'));
      return;
    }
    if (this.hello.length < CLIENT_HELLO.length) return;
    const rest = this.hello.subarray(CLIENT_HELLO.length);
    this.state = 'tls';
    this.established++;
    (this.done as (err: Error | null) => void)(null);
    if (rest.length > 0) h.onData(rest);
  }

  startTls(tls: ServerTls, cb: (err: Error | null) => void): void {
    if (this.state !== 'plain') throw new Error('startTls twice');
    if (tls !== FAKE_SERVER_TLS) throw new Error('fake TLS: unexpected ServerTls');
    this.state = 'upgrading';
    this.started++;
    this.done = cb;
  }

  write(chunks: readonly Buffer[]): boolean {
    return this.inner.write(chunks);
  }

  pauseReading(): void {
    this.inner.pauseReading();
  }

  resumeReading(): void {
    this.inner.resumeReading();
  }

  end(linger_ms: number): void {
    this.inner.end(linger_ms);
  }

  destroy(err?: Error): void {
    this.inner.destroy(err);
  }
}
