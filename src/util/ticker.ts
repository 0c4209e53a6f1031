// A periodic callback on the injected Clock: re-armed after each run, so runs never overlap
// and a slow run delays the next one instead of piling up. The pools' tickers (rmr/client and
// rmr/server tickers.ts) are made of it.

import type { Clock, TimerId } from './ports.js';

export class Ticker {
  private timer: TimerId | null = null;
  private stopped = false;
  constructor(
    private readonly clock: Clock,
    private readonly every_ms: number,
    private readonly fn: () => void,
  ) {
    this.arm();
  }
  private arm(): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimer(this.every_ms, () => {
      this.timer = null;
      this.fn();
      this.arm();
    });
  }
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) this.clock.cancel(this.timer);
    this.timer = null;
  }
}
