// A Logger that keeps its lines in memory: tests assert on the logged reasons. A test helper,
// so it lives under test/ (it was in src/util/ports.ts).

import type { LogFields, LogLevel, Logger } from '../../src/util/ports.js';

/** Keeps log lines in memory: tests assert on the logged reasons. */
export class MemoryLogger implements Logger {
  readonly lines: { level: LogLevel; msg: string; fields: LogFields }[] = [];
  private readonly limit: number;
  constructor(limit = 100_000) {
    this.limit = limit;
  }
  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (this.lines.length >= this.limit) this.lines.shift();
    this.lines.push({ level, msg, fields });
  }
  count(pred: (l: { level: LogLevel; msg: string; fields: LogFields }) => boolean): number {
    let n = 0;
    for (const l of this.lines) if (pred(l)) n++;
    return n;
  }
}
