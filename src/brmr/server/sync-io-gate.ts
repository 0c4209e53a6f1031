// When the file backend may do a small IO synchronously on the event loop. A pread or
// pwrite the page cache answers costs a few microseconds; the same call through the libuv
// thread pool costs a wake-up of a worker and of the loop on top, several times the IO
// itself. But a synchronous call the disk has to answer (a cache miss, a write held by
// writeback throttling) blocks every session of the node for that long. The gate watches
// how long synchronous calls take and sends that kind of IO to the thread pool while they
// are slow:
//
//   synchronous   a call slower than slow_call_us, or the running mean over slow_mean_us
//                   -> thread pool for backoff_ms, then the next call is a probe
//   probe         fast -> synchronous, backoff back to min_backoff_ms
//                 slow -> thread pool again for twice as long (at most max_backoff_ms)
//
// A sporadic slow call (the thread was preempted on a busy machine) costs one short
// interval; a disk that keeps answering keeps the IO in the thread pool, with the loop
// blocked for about one probe per interval. Pure logic on an injected clock.

export interface SyncIoGateOptions {
  /** One synchronous call this slow (microseconds) means the disk answered it. */
  slow_call_us: number;
  /** The mean over recent calls above this means misses are frequent. */
  slow_mean_us: number;
  min_backoff_ms: number;
  max_backoff_ms: number;
}

export const DEFAULT_SYNC_IO_GATE: SyncIoGateOptions = { slow_call_us: 2000, slow_mean_us: 60, min_backoff_ms: 100, max_backoff_ms: 10_000 };

export class SyncIoGate {
  private readonly o: SyncIoGateOptions;
  private readonly now_ms: () => number;
  private mean_us = 0;
  private async_until_ms = 0;
  private backoff_ms: number;
  private probing = false;
  readonly stats = { sync: 0, async: 0, slow: 0 };

  constructor(now_ms: () => number, o: Partial<SyncIoGateOptions> = {}) {
    this.now_ms = now_ms;
    this.o = { ...DEFAULT_SYNC_IO_GATE, ...o };
    this.backoff_ms = this.o.min_backoff_ms;
  }

  /** Whether the next small IO may run synchronously (counted either way). */
  allowed(): boolean {
    if (this.now_ms() >= this.async_until_ms) {
      this.stats.sync++;
      return true;
    }
    this.stats.async++;
    return false;
  }

  /** A synchronous IO the gate allowed took `us` microseconds. */
  took(us: number): void {
    const was_probe = this.probing;
    this.probing = false;
    this.mean_us += (us - this.mean_us) / 16;
    if (us <= this.o.slow_call_us && this.mean_us <= this.o.slow_mean_us) {
      if (was_probe) this.backoff_ms = this.o.min_backoff_ms;
      return;
    }
    this.stats.slow++;
    if (was_probe) this.backoff_ms = Math.min(this.o.max_backoff_ms, 2 * this.backoff_ms);
    this.mean_us = 0; // the probe is judged on its own
    this.probing = true;
    this.async_until_ms = this.now_ms() + this.backoff_ms;
  }

  /** True while small IO goes to the thread pool. */
  get asynchronous(): boolean {
    return this.now_ms() < this.async_until_ms;
  }
}
