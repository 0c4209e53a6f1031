// Does watching the cluster slow it down? 4k random reads (QD32, fio's nbd engine) against a
// 3-member RMR device, in interleaved rounds without the dashboard and with `rmr dashboard`
// running and a headless Chromium page connected to it (live: a tick a second, map pictures,
// charts). Prints the medians and every sample.
// Usage: npm run build && node dist/bench/dashboard-bench.js [--rounds N] [--runtime S] [--size MiB]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium, type Browser } from 'playwright-core';
import { freePort, startRmr, storePath, STORE_DATA_OFFSET } from './rmr-setup.js';
import { prefill } from './prefill.js';
import { median, parseFio } from './fio-report.js';

const { values: a } = parseArgs({ options: { rounds: { type: 'string' }, runtime: { type: 'string' }, size: { type: 'string' } } });
const ROUNDS = Number(a.rounds ?? 5);
const RUNTIME_S = Number(a.runtime ?? 10);
const SIZE = Number(a.size ?? 256) * 2 ** 20;
const MAIN = resolve('dist/src/cli/main.js');
const say = (s: string): void => void process.stderr.write(`${s}\n`);

const dir = mkdtempSync(join(tmpdir(), 'rmr-dash-bench-'));
prefill([1, 2, 3].map((i) => storePath(dir, i)), STORE_DATA_OFFSET, SIZE);
const rmr = await startRmr({ nodes: 3, dir, size_bytes: SIZE, say });

function fio(out: string): Promise<void> {
  return new Promise((res, rej) => {
    const p = spawn('fio', ['--name=rr', '--ioengine=nbd', `--uri=${rmr.nbd_uri}`, '--rw=randread', '--bs=4k', '--iodepth=32', `--size=${SIZE}`, '--time_based', `--runtime=${RUNTIME_S}`, '--unified_rw_reporting=mixed', '--output-format=json', `--output=${out}`], { stdio: ['ignore', 'ignore', 'inherit'] });
    p.once('error', rej);
    p.once('exit', (c) => (c === 0 ? res() : rej(new Error(`fio exited ${String(c)}`))));
  });
}

/** CPU seconds (user + system) of `pid` and every process below it, from /proc. */
function treeCpu(pids: readonly number[]): number {
  const stats = new Map<number, { ppid: number; cpu: number }>();
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(name), { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / 100 });
    } catch {
      // gone meanwhile
    }
  }
  let sum = 0;
  const todo = [...pids];
  const seen = new Set<number>();
  while (todo.length > 0) {
    const p = todo.pop() as number;
    if (seen.has(p)) continue;
    seen.add(p);
    sum += stats.get(p)?.cpu ?? 0;
    for (const [q, s] of stats) if (s.ppid === p) todo.push(q);
  }
  return sum;
}

/** The headless browser: this process's child running chromium. */
function browserPid(): number {
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && readFileSync(`/proc/${name}/cmdline`, 'utf8').includes('chromium')) return Number(name);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error('no chromium process found');
}

/** The dashboard and a connected page; resolves once the page shows live data. */
async function openDashboard(): Promise<{ pids: number[]; close(): Promise<void> }> {
  const port = await freePort();
  const d: ChildProcess = spawn(process.execPath, [MAIN, 'dashboard', '--cluster', join(dir, 'cluster.yaml'), '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((res, rej) => {
    let out = '';
    d.stdout?.on('data', (c: Buffer) => ((out += c.toString()), out.includes(' at http') ? res() : undefined));
    d.once('exit', (c) => rej(new Error(`rmr dashboard exited ${String(c)}`)));
  });
  const browser: Browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.locator('article.member').first().waitFor();
  return {
    pids: [d.pid ?? 0, browserPid()],
    close: async () => {
      await browser.close();
      d.kill('SIGTERM');
      await new Promise((r) => (d.exitCode !== null ? r(null) : d.once('exit', r)));
    },
  };
}

const samples: Record<'without' | 'with', number[]> = { without: [], with: [] };
/** Storage and client daemons' CPU µs per IO, and the watchers' CPU (dashboard, browser) per second. */
const daemonUs: Record<'without' | 'with', number[]> = { without: [], with: [] };
const watcherCpu: { dashboard: number[]; browser: number[] } = { dashboard: [], browser: [] };
/** The daemons' own CPU for the dashboard: the cluster idle (no IO) for IDLE_S, without and with. */
const IDLE_S = 10;
const idle: Record<'without' | 'with', number> = { without: 0, with: 0 };
try {
  for (const mode of ['without', 'with'] as const) {
    const dash = mode === 'with' ? await openDashboard() : null;
    const c0 = treeCpu(rmr.pids);
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    idle[mode] = (treeCpu(rmr.pids) - c0) / IDLE_S;
    await dash?.close();
    say(`idle ${mode} the dashboard: daemons ${idle[mode].toFixed(3)} CPU s/s`);
  }
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate the order so drift of the machine falls on both sides.
    for (const mode of r % 2 === 0 ? (['without', 'with'] as const) : (['with', 'without'] as const)) {
      const dash = mode === 'with' ? await openDashboard() : null;
      const out = join(dir, `fio-${r}-${mode}.json`);
      const d0 = treeCpu(rmr.pids);
      const w0 = dash === null ? [0, 0] : dash.pids.map((p) => treeCpu([p]));
      await fio(out);
      const d1 = treeCpu(rmr.pids);
      const w1 = dash === null ? [0, 0] : dash.pids.map((p) => treeCpu([p]));
      await dash?.close();
      const s = parseFio(readFileSync(out, 'utf8'));
      samples[mode].push(Math.round(s.iops));
      const ios = s.iops * (s.runtime_ms / 1000);
      daemonUs[mode].push(Math.round(((d1 - d0) * 1e6) / ios));
      if (dash !== null) {
        watcherCpu.dashboard.push(Number((((w1[0] ?? 0) - (w0[0] ?? 0)) / RUNTIME_S).toFixed(3)));
        watcherCpu.browser.push(Number((((w1[1] ?? 0) - (w0[1] ?? 0)) / RUNTIME_S).toFixed(3)));
      }
      say(`round ${r + 1}/${ROUNDS} ${mode} the dashboard: ${Math.round(s.iops)} IOPS, daemons ${daemonUs[mode].at(-1) ?? 0} µs CPU per IO`);
    }
  }
} finally {
  await rmr.stop();
  rmSync(dir, { recursive: true, force: true });
}
const mw = median(samples.without);
const mo = median(samples.with);
console.log(`4k randread QD32, ${ROUNDS} interleaved rounds x ${RUNTIME_S} s, 3 members, ${SIZE / 2 ** 20} MiB`);
console.log(`without the dashboard: median ${mw} IOPS  (${samples.without.join(', ')})`);
console.log(`with the page open:    median ${mo} IOPS  (${samples.with.join(', ')})  ${(((mo - mw) / mw) * 100).toFixed(1)} %`);
console.log(`daemons' CPU per IO: median ${median(daemonUs.without)} µs without, ${median(daemonUs.with)} µs with the page open`);
console.log(`daemons' CPU with no IO: ${idle.without.toFixed(3)} s/s without, ${idle.with.toFixed(3)} s/s with the page open (what answering the dashboard costs them)`);
console.log(`the watchers' CPU while open: dashboard ${median(watcherCpu.dashboard)} s/s, headless browser ${median(watcherCpu.browser)} s/s (of 2 cores)`);
console.log(JSON.stringify({ bench: 'dashboard', rounds: ROUNDS, runtime_s: RUNTIME_S, without: samples.without, with: samples.with, median_without: mw, median_with: mo, daemon_us_per_io: daemonUs, watcher_cpu_s_per_s: watcherCpu, idle_daemon_cpu_s_per_s: idle }));
