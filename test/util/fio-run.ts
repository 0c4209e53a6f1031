// fio's nbd engine as the load of a fault scenario: time-based random writes (or a mix)
// with crc32c verification of what it wrote while it runs (verify_backlog: verifying only
// after a time-based write phase would never start), fatal on the first mismatch. The
// outcome comes from fio's JSON output file, not from stdout.

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { within } from './wait.js';

export interface FioJob {
  uri: string;
  /** Directory for the JSON output. */
  dir: string;
  name?: string;
  rw?: 'randwrite' | 'randrw' | 'write' | 'randread';
  bs?: string;
  iodepth?: number;
  /** Region of the device (bytes). */
  offset: number;
  size: number;
  /** Seconds of a time-based run; 0: the job ends when its region is done. */
  runtime_s: number;
  /** Verify each N blocks written while running (0: no verification, e.g. for bandwidth runs). */
  verify_backlog?: number;
  /** Extra fio options (`--rate=...`). */
  extra?: string[];
}

export interface FioOutcome {
  code: number | null;
  signal: string | null;
  /** fio's error for the job (0: none). */
  error: number;
  write_ios: number;
  read_ios: number;
  write_bytes: number;
  read_bytes: number;
  runtime_ms: number;
  stderr: string;
}

export interface FioRun {
  readonly child: ChildProcess;
  readonly done: Promise<FioOutcome>;
}

interface FioJson {
  jobs?: { error: number; job_runtime: number; read: { io_bytes: number; total_ios: number }; write: { io_bytes: number; total_ios: number } }[];
}

export function startFio(j: FioJob): FioRun {
  const out = join(j.dir, `fio-${j.name ?? 'load'}-${process.hrtime.bigint()}.json`);
  const verify = j.verify_backlog ?? 256;
  const args = [
    `--name=${j.name ?? 'load'}`,
    '--ioengine=nbd',
    `--uri=${j.uri}`,
    `--rw=${j.rw ?? 'randwrite'}`,
    `--bs=${j.bs ?? '4k'}`,
    `--iodepth=${j.iodepth ?? 16}`,
    `--offset=${j.offset}`,
    `--size=${j.size}`,
    ...(j.runtime_s > 0 ? ['--time_based', `--runtime=${j.runtime_s}`] : []),
    ...(verify > 0 ? ['--verify=crc32c', `--verify_backlog=${verify}`, '--verify_fatal=1', '--verify_state_save=0'] : []),
    '--output-format=json',
    `--output=${out}`,
    ...(j.extra ?? []),
  ];
  const child = spawn('fio', args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: j.dir });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => void (stderr.length < 1 << 16 && (stderr += d.toString())));
  const done = new Promise<FioOutcome>((resolve) => {
    child.once('exit', (code, signal) => {
      const o: FioOutcome = { code, signal, error: -1, write_ios: 0, read_ios: 0, write_bytes: 0, read_bytes: 0, runtime_ms: 0, stderr };
      try {
        const job = (JSON.parse(readFileSync(out, 'utf8')) as FioJson).jobs?.[0];
        if (job !== undefined) {
          o.error = job.error;
          o.write_ios = job.write.total_ios;
          o.read_ios = job.read.total_ios;
          o.write_bytes = job.write.io_bytes;
          o.read_bytes = job.read.io_bytes;
          o.runtime_ms = job.job_runtime;
        }
      } catch {
        // no JSON: fio failed before its report; error stays -1
      }
      o.stderr = stderr;
      resolve(o);
    });
  });
  return { child, done };
}

/** One line for assertion messages. */
export function describeFio(o: FioOutcome): string {
  return `fio exit ${String(o.code)}${o.signal !== null ? ` (${o.signal})` : ''} error ${o.error}, ${o.write_ios} writes, ${o.read_ios} verify reads in ${o.runtime_ms} ms${o.stderr.trim() !== '' ? `: ${o.stderr.trim().slice(-600)}` : ''}`;
}

/**
 * The outcome of a run, or an error naming `what` if fio has not ended within `timeout_ms`
 * (an NBD request stuck on a stopped server can hold fio past its runtime): the job is
 * killed, so the cluster's close() is not kept waiting by it either.
 */
export async function fioDone(run: FioRun, what: string, timeout_ms: number): Promise<FioOutcome> {
  try {
    return await within(`${what}: fio to end`, run.done, timeout_ms);
  } catch {
    run.child.kill('SIGKILL');
    // A fio in uninterruptible sleep on a dead request may outlive even SIGKILL for a while.
    const killed = await within(`${what}: fio to exit after SIGKILL`, run.done, 10_000);
    throw new Error(`${what}: fio had not ended within ${timeout_ms} ms (killed): ${describeFio(killed)}`);
  }
}
