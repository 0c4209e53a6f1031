// The NBD benchmark's arithmetic, apart from any process so a test can check it on a
// recorded fio JSON sample: parsing fio's --output-format=json (run with
// --unified_rw_reporting=mixed, so each job has one "mixed" block), medians over rounds,
// ratios against nbdkit, the targets, and the table and JSON line the benchmark prints.

/** One fio run against one server. */
export interface FioSample {
  iops: number;
  bw_bytes_per_s: number;
  io_bytes: number;
  runtime_ms: number;
  p50_us: number;
  p99_us: number;
}

/** A sample with the servers' CPU time over the run. */
export interface Sample extends FioSample {
  cpu_s: number;
  /** The same, per server process (rmr: storage nodes, then the compute client). */
  cpu_per_process?: number[];
}

/** Medians of one job on one server over all rounds. */
export interface Summary {
  iops: number;
  bw_mib_s: number;
  p50_us: number;
  p99_us: number;
  /** Server CPU seconds per GiB moved (read + written). */
  cpu_s_per_gib: number;
  rounds: number;
}

export const SERVERS = ['nbdkit', 'rmr2', 'rmr3'] as const;
export type Server = (typeof SERVERS)[number];

export interface JobResult {
  name: string;
  nbdkit: Summary;
  rmr2: Summary;
  rmr3: Summary;
  /** rmr2 IOPS / nbdkit IOPS (bandwidth ratio for the same block size). */
  ratio2: number;
  ratio3: number;
}

export interface ResyncResult {
  bytes: number;
  bytes_per_s: number;
  cp_bytes_per_s: number;
  ratio: number;
  /** The application job that ran during the resync. */
  app_iops: number;
  app_p99_us: number;
}

/**
 * Parses fio's JSON output (the text of --output=FILE). fio may put a line such as
 * "fio: terminating on signal 2" before the JSON: everything before the first "{" is skipped.
 */
export function parseFio(text: string): FioSample {
  const start = text.indexOf('{');
  if (start < 0) throw new Error('no JSON in fio output');
  const doc = JSON.parse(text.slice(start)) as { jobs?: unknown[] };
  const job = doc.jobs?.[0] as { error?: number; mixed?: Record<string, unknown> } | undefined;
  if (job === undefined) throw new Error('fio output has no jobs');
  if ((job.error ?? 0) !== 0) throw new Error(`fio job failed with error ${job.error}`);
  const m = job.mixed;
  if (m === undefined) throw new Error('fio output has no "mixed" block (run fio with --unified_rw_reporting=mixed)');
  const num = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`fio output: ${what} is not a number`);
    return v;
  };
  const pct = ((m.clat_ns as { percentile?: Record<string, unknown> } | undefined)?.percentile ?? {});
  return {
    iops: num(m.iops, 'iops'),
    bw_bytes_per_s: num(m.bw_bytes, 'bw_bytes'),
    io_bytes: num(m.io_bytes, 'io_bytes'),
    runtime_ms: num(m.runtime, 'runtime'),
    p50_us: num(pct['50.000000'] ?? 0, 'clat p50') / 1000,
    p99_us: num(pct['99.000000'] ?? 0, 'clat p99') / 1000,
  };
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

const round = (x: number, digits: number): number => Number(x.toFixed(digits));

export function summarise(samples: readonly Sample[]): Summary {
  return {
    iops: Math.round(median(samples.map((s) => s.iops))),
    bw_mib_s: round(median(samples.map((s) => s.bw_bytes_per_s / 2 ** 20)), 1),
    p50_us: round(median(samples.map((s) => s.p50_us)), 1),
    p99_us: round(median(samples.map((s) => s.p99_us)), 1),
    cpu_s_per_gib: round(median(samples.map((s) => (s.io_bytes > 0 ? s.cpu_s / (s.io_bytes / 2 ** 30) : NaN))), 2),
    rounds: samples.length,
  };
}

export function jobResult(name: string, samples: Record<Server, readonly Sample[]>): JobResult {
  const nbdkit = summarise(samples.nbdkit);
  const rmr2 = summarise(samples.rmr2);
  const rmr3 = summarise(samples.rmr3);
  return { name, nbdkit, rmr2, rmr3, ratio2: round(rmr2.iops / nbdkit.iops, 3), ratio3: round(rmr3.iops / nbdkit.iops, 3) };
}

export interface TargetCheck {
  what: string;
  value: number;
  target: string;
  met: boolean;
}

/** The targets, checked against one run's medians. */
export function checkTargets(jobs: readonly JobResult[], resync: ResyncResult | null): TargetCheck[] {
  const out: TargetCheck[] = [];
  const job = (n: string): JobResult | undefined => jobs.find((j) => j.name === n);
  const atLeast = (what: string, value: number | undefined, min: number): void => {
    if (value !== undefined) out.push({ what, value, target: `>= ${min}`, met: value >= min });
  };
  const w = job('randwrite-4k-qd32');
  atLeast('randwrite-4k-qd32 ratio2', w?.ratio2, 1.0);
  atLeast('randwrite-4k-qd32 ratio3', w?.ratio3, 0.8);
  const r = job('randread-4k-qd32');
  atLeast('randread-4k-qd32 ratio2', r?.ratio2, 0.7);
  atLeast('randread-4k-qd32 ratio3', r?.ratio3, 0.7);
  atLeast('write-1m-qd8 ratio2', job('write-1m-qd8')?.ratio2, 0.5);
  const sr = job('read-1m-qd8');
  atLeast('read-1m-qd8 ratio2', sr?.ratio2, 0.7);
  atLeast('read-1m-qd8 ratio3', sr?.ratio3, 0.7);
  if (w !== undefined) {
    const p99 = round(w.rmr2.p99_us / w.nbdkit.p99_us, 3);
    out.push({ what: 'randwrite-4k-qd32 p99 rmr2/nbdkit', value: p99, target: '<= 2', met: p99 <= 2 });
  }
  if (resync !== null) atLeast('resync / cp', resync.ratio, 0.5);
  return out;
}

/** One job on one server in clear and over TLS (`--tls`): the same server, another URI. */
export interface TlsRow {
  job: string;
  server: 'nbdkit' | 'rmr2';
  plain: Summary;
  tls: Summary;
  /** TLS IOPS / plaintext IOPS. */
  ratio: number;
}

export function tlsRow(job: string, server: TlsRow['server'], plain: readonly Sample[], tls: readonly Sample[]): TlsRow {
  const p = summarise(plain);
  const t = summarise(tls);
  return { job, server, plain: p, tls: t, ratio: round(t.iops / p.iops, 3) };
}

/** The TLS table: per job and server, IOPS, p99 and CPU per GiB in clear and over TLS. */
export function formatTlsTable(rows: readonly TlsRow[]): string {
  const lines = [`${'job'.padEnd(20)}${pad('server', 8)}${pad('IOPS', 9)}${pad('TLS IOPS', 10)}${pad('p99 us', 9)}${pad('TLS p99', 9)}${pad('cpu s/GiB', 11)}${pad('TLS cpu', 9)}${pad('TLS/plain', 11)}`];
  for (const r of rows) {
    lines.push(`${r.job.padEnd(20)}${pad(r.server, 8)}${pad(r.plain.iops, 9)}${pad(r.tls.iops, 10)}${pad(r.plain.p99_us, 9)}${pad(r.tls.p99_us, 9)}${pad(r.plain.cpu_s_per_gib, 11)}${pad(r.tls.cpu_s_per_gib, 9)}${pad(r.ratio.toFixed(2), 11)}`);
  }
  return lines.join('\n');
}

const pad = (s: string | number, n: number): string => String(s).padStart(n);

/** The human table: medians per job and server, ratios, targets. */
export function formatTable(jobs: readonly JobResult[], resync: ResyncResult | null, targets: readonly TargetCheck[]): string {
  const lines: string[] = [];
  lines.push(`${'job'.padEnd(20)}${pad('server', 8)}${pad('IOPS', 10)}${pad('MiB/s', 9)}${pad('p50 us', 9)}${pad('p99 us', 9)}${pad('cpu s/GiB', 11)}${pad('ratio', 8)}`);
  for (const j of jobs) {
    for (const s of SERVERS) {
      const v = j[s];
      const ratio = s === 'nbdkit' ? '' : (s === 'rmr2' ? j.ratio2 : j.ratio3).toFixed(2);
      lines.push(`${(s === 'nbdkit' ? j.name : '').padEnd(20)}${pad(s, 8)}${pad(v.iops, 10)}${pad(v.bw_mib_s, 9)}${pad(v.p50_us, 9)}${pad(v.p99_us, 9)}${pad(v.cpu_s_per_gib, 11)}${pad(ratio, 8)}`);
    }
  }
  if (resync !== null) {
    lines.push('');
    lines.push(
      `resync of ${(resync.bytes / 2 ** 30).toFixed(2)} GiB: ${(resync.bytes_per_s / 2 ** 20).toFixed(0)} MiB/s, cp ${(resync.cp_bytes_per_s / 2 ** 20).toFixed(0)} MiB/s, ratio ${resync.ratio.toFixed(2)}; ` +
        `application IO meanwhile ${Math.round(resync.app_iops)} IOPS, p99 ${resync.app_p99_us.toFixed(0)} us`,
    );
  }
  lines.push('');
  for (const t of targets) lines.push(`${t.met ? 'met   ' : 'MISSED'} ${t.what.padEnd(36)} ${t.value.toFixed(2).padStart(7)} (target ${t.target})`);
  return lines.join('\n');
}

/** The one JSON line of a run. */
export function jsonLine(jobs: readonly JobResult[], resync: ResyncResult | null, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    bench: 'nbd',
    ...extra,
    jobs,
    resync:
      resync === null
        ? null
        : { bytes: resync.bytes, bytes_per_s: Math.round(resync.bytes_per_s), cp_bytes_per_s: Math.round(resync.cp_bytes_per_s), ratio: round(resync.ratio, 3), app_iops: Math.round(resync.app_iops), app_p99_us: round(resync.app_p99_us, 1) },
  });
}
