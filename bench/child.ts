// A child process of the benchmark that talks JSON lines: it prints one JSON object per line
// on stdout (readiness, answers) and takes commands as JSON lines on stdin. Also the /proc
// readers the benchmark uses for CPU accounting.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

export type Json = Record<string, unknown>;

export class JsonChild {
  readonly proc: ChildProcess;
  readonly name: string;
  private readonly lines: Json[] = [];
  private waiters: { pred: (m: Json) => boolean; resolve: (m: Json) => void; reject: (e: Error) => void }[] = [];
  private exited: string | null = null;

  constructor(name: string, file: string, args: string[], opts: { node_args?: string[]; env?: NodeJS.ProcessEnv } = {}) {
    this.name = name;
    this.proc = spawn(process.execPath, [...(opts.node_args ?? []), file, ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...opts.env } });
    let buf = '';
    this.proc.stdout?.setEncoding('utf8');
    this.proc.stdout?.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim() === '') continue;
        let m: Json;
        try {
          m = JSON.parse(line) as Json;
        } catch {
          process.stderr.write(`[${name}] ${line}\n`);
          continue;
        }
        this.deliver(m);
      }
    });
    this.proc.once('exit', (code, sig) => {
      this.exited = `${name} exited (code ${code}, signal ${sig})`;
      for (const w of this.waiters) w.reject(new Error(this.exited));
      this.waiters = [];
    });
  }

  get pid(): number {
    return this.proc.pid as number;
  }

  private deliver(m: Json): void {
    if (typeof m.error === 'string') process.stderr.write(`[${this.name}] error: ${m.error}\n`);
    const w = this.waiters.find((x) => x.pred(m));
    if (w !== undefined) {
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve(m);
    } else this.lines.push(m);
  }

  /** The first message (already received or still to come) that `pred` accepts. */
  wait(pred: (m: Json) => boolean, timeout_ms = 60_000): Promise<Json> {
    const i = this.lines.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.lines.splice(i, 1)[0] as Json);
    if (this.exited !== null) return Promise.reject(new Error(this.exited));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x.resolve !== resolve);
        reject(new Error(`${this.name}: no answer within ${timeout_ms} ms`));
      }, timeout_ms);
      this.waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(t);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
    });
  }

  send(m: Json): void {
    this.proc.stdin?.write(`${JSON.stringify(m)}\n`);
  }

  /** SIGTERM (a profiled process writes its profile), SIGKILL after `grace_ms`. */
  stop(grace_ms = 10_000): Promise<void> {
    if (this.exited !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => this.proc.kill('SIGKILL'), grace_ms);
      this.proc.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      this.proc.kill('SIGTERM');
    });
  }
}

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
