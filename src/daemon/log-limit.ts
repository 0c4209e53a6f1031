// Rate limit of repeated log lines: lines with the same level and message pass `burst` times
// per window; further ones in that window are counted, and the count is reported once the
// window is over (by the next line of that kind, or by a sweep). The security review
// (finding 5) made 2,000 refused handshakes write 378 KB of warnings in 0.5 s. Pure: the
// caller passes the time.

export interface Suppressed {
  readonly level: string;
  readonly msg: string;
  readonly count: number;
  readonly window_ms: number;
}

interface Window {
  start: number;
  passed: number;
  suppressed: number;
}

/** Message kinds tracked at once; beyond it the oldest windows are reported and dropped. */
const MAX_KEYS = 1024;

export class LogLimiter {
  private readonly windows = new Map<string, Window>();
  private next_sweep = 0;

  constructor(
    readonly burst: number,
    readonly window_ms: number,
  ) {}

  /**
   * Whether a line of this kind is written now; `report` gets the count of lines of any kind
   * suppressed in a window that has ended (write those first).
   */
  admit(level: string, msg: string, now: number, report: (s: Suppressed) => void): boolean {
    if (now >= this.next_sweep) this.sweep(now, report);
    const key = `${level}\u0000${msg}`;
    let w = this.windows.get(key);
    if (w !== undefined && now - w.start >= this.window_ms) {
      if (w.suppressed > 0) report({ level, msg, count: w.suppressed, window_ms: this.window_ms });
      this.windows.delete(key);
      w = undefined;
    }
    if (w === undefined) {
      if (this.windows.size >= MAX_KEYS) this.evictOldest(report);
      w = { start: now, passed: 0, suppressed: 0 };
      this.windows.set(key, w);
    }
    if (w.passed < this.burst) {
      w.passed++;
      return true;
    }
    w.suppressed++;
    return false;
  }

  /** Reports and forgets every window that has ended; with `all`, every window (shutdown). */
  sweep(now: number, report: (s: Suppressed) => void, all = false): void {
    this.next_sweep = now + this.window_ms;
    for (const [key, w] of this.windows) {
      if (!all && now - w.start < this.window_ms) continue;
      this.windows.delete(key);
      if (w.suppressed > 0) report({ ...split(key), count: w.suppressed, window_ms: this.window_ms });
    }
  }

  private evictOldest(report: (s: Suppressed) => void): void {
    const [key, w] = this.windows.entries().next().value as [string, Window];
    this.windows.delete(key);
    if (w.suppressed > 0) report({ ...split(key), count: w.suppressed, window_ms: this.window_ms });
  }
}

function split(key: string): { level: string; msg: string } {
  const i = key.indexOf('\u0000');
  return { level: key.slice(0, i), msg: key.slice(i + 1) };
}
