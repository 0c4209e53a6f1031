// Ports shared by every sans-IO layer (ARCHITECTURE.md §5). The core never reads the wall
// clock, arms a timer or draws a random number itself: the daemon injects real ports, the
// simulator injects deterministic ones, and the same code runs under both.

/** Opaque handle of an armed timer. */
export type TimerId = number;

export interface Clock {
  /** Monotonic time in milliseconds (may be fractional). */
  now(): number;
  /**
   * Calls `fn` once after `delay_ms`, never before now() reaches the deadline. Timers with
   * equal deadlines fire in arming order.
   */
  setTimer(delay_ms: number, fn: () => void): TimerId;
  /** Cancels an armed timer; cancelling a fired or unknown timer is a no-op. */
  cancel(id: TimerId): void;
}

export interface Random {
  /** Uniform in [0, 1). */
  float(): number;
  /** `n` random bytes. Production implementations are cryptographically strong (nonces). */
  bytes(n: number): Buffer;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Readonly<Record<string, string | number | boolean | null | undefined>>;

export interface Logger {
  log(level: LogLevel, msg: string, fields?: LogFields): void;
}

/** Discards everything; the default where no logger is given. */
export const nullLogger: Logger = { log: () => undefined };
