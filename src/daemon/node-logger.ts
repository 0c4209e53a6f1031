// The daemon's Logger port: level filter, human or JSON lines, to stderr or an append-only
// file. Writes are synchronous so the last lines before a crash are on disk; a failed write
// is counted and dropped, never thrown into the code that logged.

import { openSync, writeSync, closeSync } from 'node:fs';
import type { Logger, LogFields, LogLevel } from '../util/ports.js';
import type { LogFormat } from './config.js';
import { formatLogLine, LEVEL_RANK } from './log-format.js';

export interface NodeLoggerOptions {
  readonly daemon: string;
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Append to this file; null = stderr. */
  readonly file: string | null;
}

export class NodeLogger implements Logger {
  level: LogLevel;
  readonly format: LogFormat;
  private readonly daemon: string;
  private fd: number;
  private readonly owned: boolean;
  private readonly file: string | null;
  write_errors_total = 0;

  constructor(o: NodeLoggerOptions) {
    this.daemon = o.daemon;
    this.level = o.level;
    this.format = o.format;
    this.owned = o.file !== null;
    this.file = o.file;
    this.fd = o.file === null ? 2 : openSync(o.file, 'a', 0o640);
  }

  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (LEVEL_RANK[level] < LEVEL_RANK[this.level] || this.fd < 0) return;
    const line = formatLogLine({ time_ms: Date.now(), level, daemon: this.daemon, msg, fields }, this.format);
    try {
      writeSync(this.fd, line);
    } catch {
      this.write_errors_total++;
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
      fd = openSync(this.file, 'a', 0o640);
    } catch (e) {
      return (e as Error).message;
    }
    const old = this.fd;
    this.fd = fd;
    closeSync(old);
    return null;
  }

  close(): void {
    if (this.owned && this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
