// An in-memory NetStream pair on the real event loop (setImmediate delivery), with the
// contract the NBD server relies on: read pause/resume, write backpressure (false above the
// high-water mark, one onDrain once the peer consumed enough), end() after delivery,
// destroy() resetting the peer. No sockets: thousands of connections cost nothing.

import type { NetStream, StreamHandlers } from '../../src/transport/net.js';

let next_id = 1;

export class MemEnd implements NetStream {
  readonly remote: string;
  readonly local: string;
  peer!: MemEnd;
  /** Bytes the peer has written that this side has not delivered yet. */
  private inbox: Buffer[] = [];
  private handlers: StreamHandlers | null = null;
  private paused = false;
  private closed = false;
  private ending = false;
  private scheduled = false;
  private waiting_drain = false;
  /** Bytes this side wrote that the peer has not consumed. */
  pending = 0;
  /** Bytes handed to this side's onData so far. */
  delivered = 0;
  private linger: NodeJS.Timeout | null = null;

  constructor(
    name: string,
    private readonly hwm: number,
  ) {
    this.local = name;
    this.remote = name;
  }

  attach(handlers: StreamHandlers): void {
    if (this.handlers !== null) throw new Error('attach twice');
    this.handlers = handlers;
    if (this.closed) setImmediate(() => handlers.onClose(null));
    else this.schedule();
  }

  write(chunks: readonly Buffer[]): boolean {
    if (this.closed || this.ending) return true;
    for (const c of chunks) {
      if (c.length === 0) continue;
      this.pending += c.length;
      this.peer.inbox.push(c);
    }
    this.peer.schedule();
    if (this.pending > this.hwm) {
      this.waiting_drain = true;
      return false;
    }
    return true;
  }

  get pendingWriteBytes(): number {
    return this.pending;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  pauseReading(): void {
    this.paused = true;
  }

  resumeReading(): void {
    this.paused = false;
    this.schedule();
  }

  end(linger_ms: number): void {
    if (this.closed || this.ending) return;
    this.ending = true;
    if (this.pending === 0) return this.closeBoth(null);
    this.linger = setTimeout(() => this.destroy(new Error('linger expired')), linger_ms);
  }

  destroy(err?: Error): void {
    if (this.closed) return;
    this.inbox = [];
    this.closeSelf(err ?? null);
    const reset: Error & { code?: string } = new Error('connection reset by peer');
    reset.code = 'ECONNRESET';
    this.peer.inbox = [];
    this.peer.closeSelf(reset);
  }

  private closeBoth(err: Error | null): void {
    this.closeSelf(err);
    this.peer.closeSelf(null);
  }

  private closeSelf(err: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    if (this.linger !== null) clearTimeout(this.linger);
    const h = this.handlers;
    if (h !== null) setImmediate(() => h.onClose(err));
  }

  private schedule(): void {
    if (this.scheduled || this.handlers === null) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.deliver();
    });
  }

  private deliver(): void {
    const h = this.handlers;
    while (h !== null && !this.closed && !this.paused && this.inbox.length > 0) {
      const c = this.inbox.shift() as Buffer;
      this.delivered += c.length;
      this.peer.consumed(c.length);
      h.onData(c);
    }
  }

  /** The peer took `n` of this side's bytes. */
  private consumed(n: number): void {
    this.pending -= n;
    if (this.ending && this.pending === 0) {
      setImmediate(() => this.closeBoth(null));
      return;
    }
    if (this.waiting_drain && this.pending <= this.hwm / 2 && !this.closed) {
      this.waiting_drain = false;
      const h = this.handlers;
      if (h !== null) setImmediate(() => h.onDrain());
    }
  }
}

/** [client end, server end]. */
export function memStreamPair(hwm = 1024 * 1024): [MemEnd, MemEnd] {
  const id = next_id++;
  const a = new MemEnd(`mem-client-${id}`, hwm);
  const b = new MemEnd(`mem-server-${id}`, hwm);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
