// Is the daemon of a state directory running? One rule for the daemon's start-up check,
// `rmr up`/`down`/`status`/`demo`, the benchmark and the test helpers.
//
// A bare pid is not evidence: `kill(pid, 0)` succeeds on a zombie (a SIGKILLed daemon whose
// parent exited waits there until PID 1 reaps it, which some inits do late or never), and a
// pid can be reused by an unrelated program. So the pid file records the process's identity
// — its pid, its start time in clock ticks since boot (field 22 of /proc/<pid>/stat) and the
// boot id — and a process counts as that daemon only while /proc shows the same pid with
// the same start time, in the same boot, in a state other than zombie or dead. Where /proc
// is not there (not Linux), the pid alone is all there is, as before.
//
// Pid file (text):
//   line 1: <pid>                         (so `kill $(head -1 rmr.pid)` still works)
//   line 2: start=<ticks> boot=<boot id>  (absent in files written by 0.1.0)

import { closeSync, constants, existsSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';

/** Linux's USER_HZ: the unit of /proc/<pid>/stat's start time on every architecture Node runs on. */
const CLOCK_TICKS_PER_S = 100;

export interface ProcessIdentity {
  readonly pid: number;
  /** Start time in clock ticks since boot; null when unknown (an old pid file, no /proc). */
  readonly start_ticks: number | null;
  readonly boot_id: string | null;
}

export interface ProcStat {
  /** One letter: R, S, D, Z, T, t, X, I, ... */
  readonly state: string;
  readonly start_ticks: number;
}

/**
 * Parses /proc/<pid>/stat. The command name (field 2) sits in parentheses and may itself hold
 * spaces and parentheses, so the fields are counted from the last ')'.
 */
export function parseProcStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const rest = text.slice(close + 1).trim().split(/\s+/);
  // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
  const state = rest[0];
  const start = Number(rest[19]);
  if (state === undefined || !/^[A-Za-z]$/.test(state) || !Number.isSafeInteger(start) || start < 0) return null;
  return { state, start_ticks: start };
}

function procAvailable(): boolean {
  return existsSync('/proc/self/stat');
}

export function readProcStat(pid: number): ProcStat | null {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

function bootId(): string | null {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
  } catch {
    return null;
  }
}

/** This process's identity, as its pid file records it. */
export function selfIdentity(): ProcessIdentity {
  return { pid: process.pid, start_ticks: readProcStat(process.pid)?.start_ticks ?? null, boot_id: bootId() };
}

export function formatPidFile(id: ProcessIdentity): string {
  const extra = [id.start_ticks !== null ? `start=${id.start_ticks}` : '', id.boot_id !== null ? `boot=${id.boot_id}` : ''].filter((s) => s !== '');
  return `${id.pid}\n${extra.length > 0 ? `${extra.join(' ')}\n` : ''}`;
}

/** The identity a pid file records; null when the file holds no usable pid. */
export function parsePidFile(text: string): ProcessIdentity | null {
  const [first = '', second = ''] = text.split('\n');
  const pid = Number(first.trim());
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  const kv = new Map(second.trim().split(/\s+/).filter((s) => s.includes('=')).map((s) => [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)]));
  const start = kv.has('start') ? Number(kv.get('start')) : NaN;
  return { pid, start_ticks: Number.isSafeInteger(start) && start >= 0 ? start : null, boot_id: kv.get('boot') ?? null };
}

export function readPidFile(path: string): ProcessIdentity | null {
  try {
    return parsePidFile(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}

export type Liveness =
  | { readonly running: true; readonly evidence: string }
  | { readonly running: false; readonly why: 'gone' | 'zombie' | 'reused' | 'other_boot'; readonly evidence: string };

function wallTime(start_ticks: number): string | null {
  // Boot time (btime in /proc/stat) plus the start ticks: the process's start, wall clock.
  try {
    const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
    if (m === null) return null;
    return new Date((Number(m[1]) + start_ticks / CLOCK_TICKS_PER_S) * 1000).toISOString();
  } catch {
    return null;
  }
}

function killZero(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the process a pid file names still runs: not exited, not a zombie, not someone else. */
export function liveness(id: ProcessIdentity): Liveness {
  if (!procAvailable()) {
    return killZero(id.pid) ? { running: true, evidence: `pid ${id.pid} exists` } : { running: false, why: 'gone', evidence: `pid ${id.pid} does not exist` };
  }
  const here = bootId();
  if (id.boot_id !== null && here !== null && id.boot_id !== here) return { running: false, why: 'other_boot', evidence: `pid ${id.pid} was recorded before the last reboot` };
  const st = readProcStat(id.pid);
  if (st === null) return { running: false, why: 'gone', evidence: `pid ${id.pid} has exited` };
  if (st.state === 'Z' || st.state === 'X') return { running: false, why: 'zombie', evidence: `pid ${id.pid} has exited (a zombie not yet reaped by its parent)` };
  if (id.start_ticks !== null && st.start_ticks !== id.start_ticks) {
    return { running: false, why: 'reused', evidence: `pid ${id.pid} now belongs to another process (started at ${wallTime(st.start_ticks) ?? `tick ${st.start_ticks}`}, not ${wallTime(id.start_ticks) ?? `tick ${id.start_ticks}`})` };
  }
  const started = wallTime(st.start_ticks);
  return { running: true, evidence: `pid ${id.pid}${started !== null ? ` started at ${started}` : ''} is running (state ${st.state})` };
}

/** Whether a process known by its pid alone runs (exists and is not a zombie). */
export function pidRunning(pid: number): boolean {
  return liveness({ pid, start_ticks: null, boot_id: null }).running;
}

export class StateDirBusy extends Error {
  constructor(
    message: string,
    readonly holder: ProcessIdentity,
  ) {
    super(message);
  }
}

/**
 * Takes the pid file for this process: created exclusively (O_EXCL, never through a symlink).
 * A file left by a daemon that no longer runs (exited, a zombie, its pid reused, written
 * before a reboot) is replaced; a file of a running daemon (starting or serving) refuses
 * with StateDirBusy naming the evidence. Returns what it replaced, for the log.
 */
export function claimPidFile(path: string, self: ProcessIdentity = selfIdentity()): { replaced: string | null } {
  const text = formatPidFile(self);
  let replaced: string | null = null;
  for (let attempt = 0; attempt < 8; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const before = readPidFileText(path);
      if (before === null) continue; // vanished meanwhile: try again
      const holder = parsePidFile(before);
      if (holder !== null && holder.pid !== self.pid) {
        const l = liveness(holder);
        if (l.running) throw new StateDirBusy(`another daemon holds this state directory: ${l.evidence} (pid file ${path})`, holder);
        replaced = l.evidence;
      } else {
        replaced = holder === null ? 'an unreadable pid file' : 'a pid file of this process';
      }
      // Move the stale file aside, then check that what moved is what was judged: a rival
      // that replaced it meanwhile must keep its file.
      const aside = `${path}.stale-${self.pid}`;
      try {
        renameSync(path, aside);
      } catch {
        continue;
      }
      const moved = readPidFileText(aside);
      if (moved !== before) {
        try {
          linkSync(aside, path);
        } catch {
          // someone else holds the name again; their file wins
        }
        unlinkQuiet(aside);
        const rival = moved === null ? null : parsePidFile(moved);
        throw new StateDirBusy(`another daemon started on this state directory at the same time${rival !== null ? ` (pid ${rival.pid})` : ''} (pid file ${path})`, rival ?? self);
      }
      unlinkQuiet(aside);
      continue;
    }
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    return { replaced };
  }
  throw new Error(`cannot take pid file ${path}: it keeps changing`);
}

function readPidFileText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // gone already
  }
}

/** Removes the pid file only if it still names this process. */
export function releasePidFile(path: string, self: ProcessIdentity = selfIdentity()): void {
  const id = readPidFile(path);
  if (id !== null && id.pid === self.pid && (id.start_ticks === null || id.start_ticks === self.start_ticks)) unlinkQuiet(path);
}

/** The daemon of a state directory, judged by its pid file. */
export function daemonLiveness(pid_file: string): (Liveness & { readonly pid: number }) | null {
  const id = readPidFile(pid_file);
  if (id === null) return null;
  return { ...liveness(id), pid: id.pid };
}

/**
 * Waits until the process stops (exits or turns zombie), polling every `poll_ms`, for at
 * most `timeout_ms`. Resolves true if it stopped.
 */
export async function waitStopped(id: ProcessIdentity, timeout_ms: number, poll_ms = 50): Promise<boolean> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    if (!liveness(id).running) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, poll_ms));
  }
}
