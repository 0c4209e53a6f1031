// Log line formatting for the daemon's Logger (node-logger.ts does the writing): JSON lines
// for machines, `time LEVEL msg key=value` for people. Pure, so the formats are tested.

import type { LogFields, LogLevel } from '../util/ports.js';
import type { LogFormat } from './config.js';

export const LEVEL_RANK: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogRecord {
  readonly time_ms: number;
  readonly level: LogLevel;
  readonly daemon: string;
  readonly msg: string;
  readonly fields: LogFields;
}

/** Keys the line itself uses; a field of the same name is written as `field_<name>`. */
const RESERVED = new Set(['time', 'level', 'daemon', 'msg']);

export function formatLogLine(r: LogRecord, format: LogFormat): string {
  const time = new Date(r.time_ms).toISOString();
  if (format === 'json') {
    const o: Record<string, string | number | boolean | null> = { time, level: r.level, daemon: r.daemon, msg: r.msg };
    for (const [k, v] of Object.entries(r.fields)) {
      if (v === undefined) continue;
      o[RESERVED.has(k) ? `field_${k}` : k] = typeof v === 'number' && !Number.isFinite(v) ? String(v) : v;
    }
    return `${JSON.stringify(o)}\n`;
  }
  let line = `${time} ${r.level.toUpperCase().padEnd(5)} ${r.daemon}: ${oneLine(r.msg)}`;
  for (const [k, v] of Object.entries(r.fields)) {
    if (v === undefined) continue;
    line += ` ${k}=${humanValue(v)}`;
  }
  return `${line}\n`;
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' | ');
}

/** Bare when unambiguous, JSON-quoted when it has spaces, quotes, `=` or control characters. */
function humanValue(v: string | number | boolean | null): string {
  if (typeof v !== 'string') return String(v);
  return v !== '' && /^[!#-<>-[\]-~\u00a0-\uffff]+$/.test(v) ? v : JSON.stringify(v);
}
