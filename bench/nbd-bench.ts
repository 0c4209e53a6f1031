// `npm run bench`: the NBD export of this project against nbdkit's file plugin, on the same
// kind of backing (pre-filled files of the same size in one directory), in one invocation:
//   nbdkit  nbdkit file, one file over TCP (one copy)
//   rmr2    2 `rmr daemon` processes with the storage role (file stores) + one with the
//           client role exporting NBD over TCP, brought up as `rmr up` does (rmr-setup.ts)
//   rmr3    the same with 3 storage daemons
// fio (--ioengine=nbd) jobs run interleaved nbdkit, rmr2, rmr3, nbdkit, ... for every round;
// the table shows medians per job and the ratios rmr/nbdkit. Then the resync of a fully
// dirty member of the rmr2 device from its peer, under application IO, against cp of the
// same file. A benchmark, never a test: figures from a shared 2-core machine are noisy, so
// compare only within one run. Results go to bench/results/ (git-ignored).
//
// Options: --quick (1 round, short jobs, 256 MiB), --rounds N, --runtime S, --size MiB,
//          --jobs a,b (names below), --no-resync, --profile (node --cpu-prof of the rmr
//          processes, profiles under bench/results/), --threadpool N (UV_THREADPOOL_SIZE
//          of every rmr daemon; default: what `rmr up` gives them, i.e. the core count
//          clamped to 2..4 for storage daemons), --servers nbdkit,rmr2 (run only these),
//          --keep (leave the work directory), --tls (also over TLS: nbdkit --tls=on and
//          the rmr2 export with nbd.tls: on, each measured through nbds:// right after its
//          plaintext run; a second table gives TLS/plaintext per job).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { prefill } from './prefill.js';
import { tmpdir, cpus, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuSecondsOf } from './child.js';
import { freePort, startRmr, storePath, STORE_DATA_OFFSET, type RmrSetup } from './rmr-setup.js';
import { storageThreadpoolSize } from '../src/cli/node-cluster.js';
import { checkTargets, formatTable, formatTlsTable, jobResult, jsonLine, parseFio, tlsRow, type FioSample, type JobResult, type ResyncResult, type Sample, type Server, type TlsRow } from './fio-report.js';

interface Job {
  name: string;
  rw: string;
  bs: string;
  iodepth: number;
  extra?: string[];
}
const ALL_JOBS: Job[] = [
  { name: 'randwrite-4k-qd32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  { name: 'randread-4k-qd32', rw: 'randread', bs: '4k', iodepth: 32 },
  { name: 'write-1m-qd8', rw: 'write', bs: '1M', iodepth: 8 },
  { name: 'read-1m-qd8', rw: 'read', bs: '1M', iodepth: 8 },
  { name: 'randrw70-4k-qd32', rw: 'randrw', bs: '4k', iodepth: 32, extra: ['--rwmixread=70'] },
];

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    runtime: { type: 'string' },
    size: { type: 'string' },
    jobs: { type: 'string' },
    'no-resync': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    threadpool: { type: 'string' },
    keep: { type: 'boolean', default: false },
    servers: { type: 'string' },
    tls: { type: 'boolean', default: false },
  },
});
const TLS = args.tls === true;
const quick = args.quick === true;
const ROUNDS = Number(args.rounds ?? (quick ? 1 : 3));
const RUNTIME_S = Number(args.runtime ?? (quick ? 3 : 10));
const SIZE = Number(args.size ?? (quick ? 256 : 1024)) * 2 ** 20;
const JOBS = args.jobs !== undefined ? ALL_JOBS.filter((j) => (args.jobs as string).split(',').includes(j.name)) : ALL_JOBS;
const THREADPOOL = args.threadpool ?? null;
const ONLY = args.servers !== undefined ? args.servers.split(',') : null;
if (JOBS.length === 0) throw new Error(`no such jobs: ${args.jobs}; known: ${ALL_JOBS.map((j) => j.name).join(', ')}`);

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const results_dir = resolve('bench/results');
mkdirSync(results_dir, { recursive: true });
const prof_dir = join(results_dir, `prof-${stamp}`);
const work = mkdtempSync(join(tmpdir(), 'rmr-bench-'));
const say = (s: string): void => void process.stderr.write(`${s}\n`);

async function waitFor(cond: () => boolean, what: string, timeout_ms = 10_000): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function fioArgs(uri: string, job: Job, runtime_s: number, out: string, extra: string[] = []): string[] {
  return [
    `--name=${job.name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${SIZE}`,
    '--time_based',
    `--runtime=${runtime_s}`,
    '--unified_rw_reporting=mixed',
    '--output-format=json',
    `--output=${out}`,
    ...(job.extra ?? []),
    ...extra,
  ];
}

function runFio(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  return new Promise((res, rej) => {
    const p = spawn('fio', argv, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...env } });
    p.once('error', rej);
    p.once('exit', (code) => (code === 0 ? res() : rej(new Error(`fio exited ${code}: fio ${argv.join(' ')}`))));
  });
}

interface Target {
  name: Server;
  /** The same server through nbds:// (--tls). */
  tls: boolean;
  uri: string;
  pids: number[];
  /** fio's environment: libnbd in fio reads the TLS certificates from $HOME/.pki/libnbd. */
  env?: NodeJS.ProcessEnv;
}

/**
 * --tls: a CA and a server certificate for 127.0.0.1 made with openssl, in the layout nbdkit
 * and the rmr daemon read (server-cert.pem, server-key.pem), and a $HOME whose .pki/libnbd
 * holds the CA for fio's libnbd (which takes no file from the URI). As root libnbd looks in
 * /etc/pki/libnbd instead and, finding nothing, encrypts without checking the server: the
 * cost measured is the same (the check is once per connection).
 */
function makeTlsFiles(dir: string): { server_dir: string; home: string } {
  const server_dir = join(dir, 'server');
  const libnbd = join(dir, 'home', '.pki', 'libnbd');
  mkdirSync(server_dir, { recursive: true });
  mkdirSync(libnbd, { recursive: true });
  const ossl = (a: string[]): void => void execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl(['req', '-x509', ...ec, '-keyout', join(dir, 'ca-key.pem'), '-out', join(dir, 'ca-cert.pem'), '-days', '2', '-subj', '/CN=bench CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  ossl(['req', ...ec, '-keyout', join(server_dir, 'server-key.pem'), '-out', join(dir, 'server.csr'), '-subj', '/CN=127.0.0.1']);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  ossl(['x509', '-req', '-in', join(dir, 'server.csr'), '-CA', join(dir, 'ca-cert.pem'), '-CAkey', join(dir, 'ca-key.pem'), '-CAcreateserial', '-out', join(server_dir, 'server-cert.pem'), '-days', '2', '-extfile', join(dir, 'server.ext')]);
  for (const d of [server_dir, libnbd]) writeFileSync(join(d, 'ca-cert.pem'), readFileSync(join(dir, 'ca-cert.pem')));
  return { server_dir, home: join(dir, 'home') };
}

let fio_seq = 0;
async function measure(t: Target, job: Job, runtime_s: number): Promise<Sample> {
  const out = join(work, `fio-${fio_seq++}.json`);
  const cpu0 = t.pids.map((p) => cpuSecondsOf([p]));
  await runFio(fioArgs(t.uri, job, runtime_s, out), t.env);
  const per_process = t.pids.map((p, i) => cpuSecondsOf([p]) - (cpu0[i] as number));
  const s: FioSample = parseFio(readFileSync(out, 'utf8'));
  return { ...s, cpu_s: per_process.reduce((a, b) => a + b, 0), cpu_per_process: per_process };
}

/** cp of a file of the device's size (and its fsync: a resync is durable), bytes per second. */
function cpSpeed(src: string): { with_sync: number; without_sync: number } {
  const dst = join(work, 'cp-copy.img');
  const t0 = performance.now();
  execFileSync('cp', ['--sparse=never', src, dst]);
  const t1 = performance.now();
  execFileSync('sync', ['-d', dst]);
  const t2 = performance.now();
  const bytes = Number(execFileSync('stat', ['-c', '%s', src]).toString().trim());
  rmSync(dst);
  return { with_sync: bytes / ((t2 - t0) / 1000), without_sync: bytes / ((t1 - t0) / 1000) };
}

/** Resync of member 2 of `rmr` (fully dirty) while an application job keeps running. */
async function measureResync(rmr: RmrSetup): Promise<ResyncResult> {
  const cp = cpSpeed(storePath(join(work, 'rmr2'), 1));
  say(`cp: ${(cp.with_sync / 2 ** 20).toFixed(0)} MiB/s with fsync, ${(cp.without_sync / 2 ** 20).toFixed(0)} MiB/s without`);
  const app: Job = { name: 'app-during-resync', rw: 'randrw', bs: '4k', iodepth: 4, extra: ['--rwmixread=70'] };
  const out = join(work, 'fio-resync.json');
  const fio: ChildProcess = spawn('fio', fioArgs(rmr.nbd_uri, app, 3600, out), { stdio: ['ignore', 'ignore', 'inherit'] });
  const fio_done = new Promise<void>((res) => fio.once('exit', () => res()));
  let r: { ms: number; bytes: number };
  try {
    // The resync starts once the application's IO reaches the members (their app_ios
    // counters move), so it is measured under load; a job that ended (bad URI, NBD error)
    // or never got going within 30 s stops the benchmark instead.
    const appIos = async (): Promise<number> => (await rmr.status()).reduce((n, m) => n + Number((m.stats as { app_ios?: number } | null)?.app_ios ?? 0), 0);
    const ios0 = await appIos();
    const until = Date.now() + 30_000;
    for (;;) {
      if (fio.exitCode !== null || fio.signalCode !== null) throw new Error(`the application fio job ended before the resync (exit ${String(fio.exitCode ?? fio.signalCode)})`);
      if ((await appIos()) >= ios0 + 200) break;
      if (Date.now() > until) throw new Error('the application fio job did no IO within 30 s');
      await new Promise((res) => setTimeout(res, 100));
    }
    r = await rmr.resync(2);
  } finally {
    // Also when the wait or the resync fails: the job is time-bound to an hour.
    fio.kill('SIGINT');
    await fio_done;
  }
  const a = parseFio(readFileSync(out, 'utf8'));
  const bytes_per_s = r.bytes / (r.ms / 1000);
  return { bytes: r.bytes, bytes_per_s, cp_bytes_per_s: cp.with_sync, ratio: bytes_per_s / cp.with_sync, app_iops: a.iops, app_p99_us: a.p99_us };
}

const started: { stop: () => Promise<void> }[] = [];
let nbdkit: ChildProcess | null = null;
// The rmr daemons run in their own process groups (as `rmr up` starts them): a Ctrl-C or
// SIGTERM of the benchmark stops them, and nbdkit, before it exits.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    say(`${sig}: stopping the servers`);
    void Promise.all(started.map((s) => s.stop())).finally(() => {
      nbdkit?.kill('SIGTERM');
      if (args.keep !== true && existsSync(work)) rmSync(work, { recursive: true, force: true });
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  });
}
try {
  say(`work dir ${work}; size ${SIZE / 2 ** 20} MiB, ${ROUNDS} round(s) x ${JOBS.length} jobs x ${RUNTIME_S} s`);
  const kit_file = join(work, 'nbdkit.img');
  // Only the servers asked for run (rmr2 also for the resync), and only their files are made.
  const wanted = (name: Server): boolean => ONLY === null || ONLY.includes(name);
  const runs = (name: 'rmr2' | 'rmr3'): boolean => wanted(name) || (name === 'rmr2' && args['no-resync'] !== true);
  prefill([kit_file], 0, SIZE);
  for (const [name, nodes] of [['rmr2', 2], ['rmr3', 3]] as const) {
    if (!runs(name)) continue;
    mkdirSync(join(work, name));
    prefill(Array.from({ length: nodes }, (_, i) => storePath(join(work, name), i + 1)), STORE_DATA_OFFSET, SIZE);
  }
  execFileSync('sync');
  say('files pre-filled');
  const tls_files = TLS ? makeTlsFiles(join(work, 'tls')) : null;
  const tls_env = tls_files === null ? undefined : { HOME: tls_files.home };

  const kit_port = await freePort();
  const kit_pid = join(work, 'nbdkit.pid');
  const kit_tls = tls_files === null ? [] : ['--tls=on', `--tls-certificates=${tls_files.server_dir}`];
  nbdkit = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(kit_port), '-P', kit_pid, ...kit_tls, 'file', kit_file], { stdio: ['ignore', 'inherit', 'inherit'] });
  await waitFor(() => existsSync(kit_pid), 'nbdkit to write its pid file (it does once it listens)');
  const node_args = args.profile === true ? ['--cpu-prof', `--cpu-prof-dir=${prof_dir}`] : [];
  const env = THREADPOOL === null ? {} : { UV_THREADPOOL_SIZE: THREADPOOL };
  const start = async (name: 'rmr2' | 'rmr3', nodes: number): Promise<RmrSetup | null> => {
    if (!runs(name)) return null;
    // Known to the signal handlers before its daemons start (an interrupted bring-up stops too).
    const tls_opt = tls_files !== null && name === 'rmr2' ? { nbd_tls_certificates: tls_files.server_dir } : {};
    const c = await startRmr({ nodes, dir: join(work, name), size_bytes: SIZE, node_args, env, ...tls_opt, onStop: (stop) => started.push({ stop }) });
    say(`${name}: initial sync (members 2.. copy the device from member 1) ${(c.initial_sync_ms / 1000).toFixed(1)} s; pids ${c.pids.join(',')} (storage daemons, then the client)`);
    return c;
  };
  const rmr2 = await start('rmr2', 2);
  const rmr3 = await start('rmr3', 3);
  const targets: Target[] = [{ name: 'nbdkit', tls: false, uri: `nbd://127.0.0.1:${kit_port}/`, pids: [nbdkit.pid as number] }];
  if (tls_env !== undefined) targets.push({ name: 'nbdkit', tls: true, uri: `nbds://127.0.0.1:${kit_port}/`, pids: [nbdkit.pid as number], env: tls_env });
  if (rmr2 !== null) targets.push({ name: 'rmr2', tls: false, uri: rmr2.nbd_uri, pids: rmr2.pids });
  if (rmr2 !== null && rmr2.nbds_uri !== null && tls_env !== undefined) targets.push({ name: 'rmr2', tls: true, uri: rmr2.nbds_uri, pids: rmr2.pids, env: tls_env });
  if (rmr3 !== null) targets.push({ name: 'rmr3', tls: false, uri: rmr3.nbd_uri, pids: rmr3.pids });
  if (!quick) {
    // Warm up every server (JIT, page cache, connections) before anything is recorded.
    for (const t of targets) if (wanted(t.name)) await measure(t, ALL_JOBS[4] as Job, 3);
  }
  const samples = new Map<string, Record<Server, Sample[]>>();
  const tls_samples = new Map<string, Record<Server, Sample[]>>();
  for (const j of JOBS) {
    samples.set(j.name, { nbdkit: [], rmr2: [], rmr3: [] });
    tls_samples.set(j.name, { nbdkit: [], rmr2: [], rmr3: [] });
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const j of JOBS) {
      const line: string[] = [];
      for (const t of targets) {
        if (!wanted(t.name)) continue;
        const s = await measure(t, j, RUNTIME_S);
        (t.tls ? tls_samples : samples).get(j.name)?.[t.name].push(s);
        line.push(`${t.name}${t.tls ? '+tls' : ''} ${Math.round(s.iops)} IOPS p99 ${s.p99_us.toFixed(0)} us cpu ${s.cpu_s.toFixed(2)} s (${(s.cpu_per_process ?? []).map((c) => c.toFixed(2)).join('+')})`);
      }
      say(`round ${r + 1}/${ROUNDS} ${j.name}: ${line.join(', ')}`);
    }
  }
  const jobs: JobResult[] = JOBS.map((j) => jobResult(j.name, samples.get(j.name) as Record<Server, Sample[]>));
  let resync: ResyncResult | null = null;
  if (args['no-resync'] !== true) {
    await rmr3?.stop(); // idle, but one process fewer on two cores
    if (rmr2 === null) throw new Error('invariant: rmr2 runs for the resync');
    resync = await measureResync(rmr2);
  }
  const checks = checkTargets(jobs, resync);
  const machine = `${hostname()}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}, node ${process.version}`;
  console.log(`\nNBD benchmark ${new Date().toISOString()} on ${machine}`);
  console.log(`medians of ${ROUNDS} interleaved round(s) x ${RUNTIME_S} s, device ${SIZE / 2 ** 20} MiB; ratio = rmr IOPS / nbdkit IOPS\n`);
  console.log(formatTable(jobs, resync, checks));
  const tls_rows: TlsRow[] = [];
  if (TLS) {
    for (const j of JOBS) {
      for (const server of ['nbdkit', 'rmr2'] as const) {
        const plain = samples.get(j.name)?.[server] ?? [];
        const tls = tls_samples.get(j.name)?.[server] ?? [];
        if (plain.length > 0 && tls.length > 0) tls_rows.push(tlsRow(j.name, server, plain, tls));
      }
    }
    console.log(`\nNBD over TLS (STARTTLS, X.509, nbds://) against the same server in clear, measured right after it in each round\n`);
    console.log(formatTlsTable(tls_rows));
  }
  const line = jsonLine(jobs, resync, {
    ...(TLS ? { tls: tls_rows } : {}), date: new Date().toISOString(), machine, rounds: ROUNDS, runtime_s: RUNTIME_S, size_bytes: SIZE, quick, threadpool: THREADPOOL === null ? `storage ${storageThreadpoolSize()} (rmr up default)` : Number(THREADPOOL) });
  writeFileSync(join(results_dir, `nbd-${stamp}.json`), `${JSON.stringify({ summary: JSON.parse(line) as unknown, targets: checks, samples: Object.fromEntries(samples), ...(TLS ? { tls_samples: Object.fromEntries(tls_samples) } : {}) })}\n`);
  console.log(`\n${line}`);
  if (args.profile === true) say(`profiles in ${prof_dir} (summarise: node dist/bench/prof-top.js ${prof_dir})`);
} finally {
  for (const s of started) await s.stop();
  nbdkit?.kill('SIGTERM');
  if (args.keep !== true && existsSync(work)) rmSync(work, { recursive: true, force: true });
}
