// The /proc readers the benchmark uses for CPU accounting of its server processes.
import { readFileSync } from 'node:fs';

/** CPU seconds (user + system, all threads) a process has used so far, from /proc. */
export function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
}

/** Sum of procCpuSeconds over processes (0 for one that is gone). */
export function cpuSecondsOf(pids: readonly number[]): number {
  let s = 0;
  for (const p of pids) {
    try {
      s += procCpuSeconds(p);
    } catch {
      // exited
    }
  }
  return s;
}
