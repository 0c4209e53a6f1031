// Driving real daemons through the real `rmr` CLI in tests: run a command with a deadline,
// read status JSON, follow a daemon's events until a condition holds, compare store files.

import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitUntil } from './wait.js';

export const MAIN = join(process.cwd(), 'dist/src/cli/main.js');

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function rmr(args: string[], timeout_ms = 60_000): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: timeout_ms, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

export async function rmrOk(args: string[], timeout_ms = 60_000): Promise<string> {
  const r = await rmr(args, timeout_ms);
  if (r.code !== 0) throw new Error(`rmr ${args.join(' ')} exited ${String(r.code)}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** Polls `probe` until it returns a value, or fails at the deadline (waitUntil with CLI-sized defaults). */
export function until<T>(what: string, probe: () => Promise<T | null>, timeout_ms = 30_000, poll_ms = 100): Promise<T> {
  return waitUntil(what, probe, { timeout_ms, poll_ms });
}

export interface EventLine {
  seq: number;
  kind: string;
  subject: string;
  from?: string;
  to?: string;
  detail?: Record<string, unknown>;
}

/** Long-polls a daemon's events (rmr events --wait-ms) until one matches; returns it. */
export function waitEvent(socket: string, pred: (e: EventLine) => boolean, timeout_ms = 60_000, since = 0): Promise<EventLine> {
  let next = since;
  let last_error: string | null = null;
  // The long poll is the wait, so no pause between polls, except after a failed request.
  return waitUntil(
    `an event on ${socket}`,
    async (left_ms) => {
      const r = await rmr(['events', '--socket', socket, '--since', String(next), '--wait-ms', String(Math.min(left_ms, 5000)), '--json'], left_ms + 10_000);
      if (r.code !== 0) {
        // The daemon may be restarting: try again until the deadline.
        last_error = `rmr events exited ${String(r.code)}: ${r.stderr.trim()}`;
        await new Promise((res) => setTimeout(res, 200));
        return null;
      }
      last_error = null;
      for (const line of r.stdout.split('\n')) {
        if (line === '') continue;
        const e = JSON.parse(line) as EventLine;
        next = Math.max(next, e.seq);
        if (pred(e)) return e;
      }
      return null;
    },
    { timeout_ms, poll_ms: 0, explain: () => `events up to seq ${next} seen, none matched${last_error !== null ? `; last request failed: ${last_error}` : ''}` },
  );
}

/** The data area of a store file (after its 4 KiB header). */
export function dataArea(path: string, size_bytes: number): Buffer {
  return readFileSync(path).subarray(4096, 4096 + size_bytes);
}

export function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}
