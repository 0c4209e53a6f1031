// The daemon's Logger port: level filter, human or JSON lines, to stderr or an append-only
// file. Writes are synchronous so the last lines before a crash are on disk; a failed write
// is counted and dropped, never thrown into the code that logged.
//
// Bounded: repeated lines are rate-limited (log-limit.ts: `burst` lines of one message per
// window, then a count of the suppressed ones), and the file is rotated when it grows past
// `max_bytes` (to <file>.1 ... <file>.<keep>); SIGHUP still reopens it for logrotate. The
// file is opened without following a symlink at its name.

import { closeSync, constants, fstatSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import type { Logger, LogFields, LogLevel } from '../util/ports.js';
import type { LogFormat } from './config.js';
import { formatLogLine, LEVEL_RANK } from './log-format.js';
import { LogLimiter, type Suppressed } from './log-limit.js';

export interface NodeLoggerOptions {
  readonly daemon: string;
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Append to this file; null = stderr. */
  readonly file: string | null;
  /** Rotate the file past this many bytes (0 or absent: never), keeping `keep` old ones. */
  readonly max_bytes?: number;
  readonly keep?: number;
  /** Rate limit of repeated lines (absent: none). */
  readonly burst?: number;
  readonly window_ms?: number;
  /** Wall clock (tests). */
  readonly now?: () => number;
}

function openLog(file: string): number {
  return openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o640);
}

export class NodeLogger implements Logger {
  level: LogLevel;
  readonly format: LogFormat;
  private readonly daemon: string;
  private fd: number;
  private readonly owned: boolean;
  private readonly file: string | null;
  private size = 0;
  private readonly max_bytes: number;
  private readonly keep: number;
  private readonly limiter: LogLimiter | null;
  private readonly now: () => number;
  write_errors_total = 0;
  suppressed_total = 0;
  rotations_total = 0;

  constructor(o: NodeLoggerOptions) {
    this.daemon = o.daemon;
    this.level = o.level;
    this.format = o.format;
    this.owned = o.file !== null;
    this.file = o.file;
    this.fd = o.file === null ? 2 : openLog(o.file);
    if (this.owned) this.size = fstatSync(this.fd).size;
    this.max_bytes = o.max_bytes ?? 0;
    this.keep = Math.max(1, o.keep ?? 1);
    this.limiter = o.burst !== undefined ? new LogLimiter(o.burst, o.window_ms ?? 10_000) : null;
    this.now = o.now ?? Date.now;
  }

  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (LEVEL_RANK[level] < LEVEL_RANK[this.level] || this.fd < 0) return;
    const now = this.now();
    if (this.limiter !== null && !this.limiter.admit(level, msg, now, (s) => this.reportSuppressed(s, now))) {
      this.suppressed_total++;
      return;
    }
    this.write(formatLogLine({ time_ms: now, level, daemon: this.daemon, msg, fields }, this.format));
  }

  private reportSuppressed(s: Suppressed, now: number): void {
    const level = (Object.hasOwn(LEVEL_RANK, s.level) ? s.level : 'warn') as LogLevel;
    this.write(formatLogLine({ time_ms: now, level, daemon: this.daemon, msg: 'repeated log lines suppressed', fields: { msg: s.msg, suppressed: s.count, window_s: s.window_ms / 1000 } }, this.format));
  }

  private write(line: string): void {
    const bytes = Buffer.byteLength(line);
    if (this.owned && this.max_bytes > 0 && this.size > 0 && this.size + bytes > this.max_bytes) this.rotate();
    try {
      writeSync(this.fd, line);
      this.size += bytes;
    } catch {
      this.write_errors_total++;
    }
  }

  /** <file>.<keep-1> → <file>.<keep>, ..., <file> → <file>.1, then a new <file>. Kept on failure. */
  private rotate(): void {
    const f = this.file as string;
    try {
      try {
        unlinkSync(`${f}.${this.keep}`);
      } catch {
        // none yet
      }
      for (let i = this.keep - 1; i >= 1; i--) {
        try {
          renameSync(`${f}.${i}`, `${f}.${i + 1}`);
        } catch {
          // a gap: nothing to move
        }
      }
      renameSync(f, `${f}.1`);
      const fd = openLog(f);
      closeSync(this.fd);
      this.fd = fd;
      this.size = 0;
      this.rotations_total++;
    } catch {
      this.write_errors_total++;
      // Not rotated: stop trying until the file shrinks (a reopen) rather than at every line.
      this.size = 0;
    }
  }

  /**
   * Opens the log file again by its name (SIGHUP, after logrotate moved it away): later lines
   * go to the new file. If it cannot be opened the old one is kept and the reason returned.
   */
  reopen(): string | null {
    if (!this.owned || this.file === null || this.fd < 0) return null;
    let fd: number;
    try {
      fd = openLog(this.file);
    } catch (e) {
      return (e as Error).message;
    }
    const old = this.fd;
    this.fd = fd;
    this.size = fstatSync(fd).size;
    closeSync(old);
    return null;
  }

  close(): void {
    this.limiter?.sweep(this.now(), (s) => this.reportSuppressed(s, this.now()), true);
    if (this.owned && this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
