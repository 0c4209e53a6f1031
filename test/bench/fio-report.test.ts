// The NBD benchmark's arithmetic on recorded fio output (no benchmark runs here, nothing is
// timed): parsing fio's JSON (also with the line fio prints before it when stopped by a
// signal), medians, ratios against nbdkit, the targets' verdicts, the table and JSON line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { checkTargets, formatTable, formatTlsTable, jobResult, jsonLine, median, parseFio, summarise, tlsRow, type JobResult, type Sample } from '../../bench/fio-report.js';

const fixture = (name: string): string => readFileSync(new URL(`../../../test/fixtures/fio/${name}`, import.meta.url), 'utf8');

test('parseFio reads IOPS, bandwidth, bytes, runtime and completion-latency percentiles', () => {
  const s = parseFio(fixture('randread-mixed.json'));
  assert.equal(s.iops, 15247.188203);
  assert.equal(s.bw_bytes_per_s, 62452482);
  assert.equal(s.io_bytes, 249872384);
  assert.equal(s.runtime_ms, 4001);
  assert.equal(s.p50_us, 1384.448);
  assert.equal(s.p99_us, 11862.016);
});

test('parseFio skips what fio prints before the JSON when it is stopped by SIGINT', () => {
  const text = fixture('randrw-sigint.json');
  assert.ok(text.startsWith('\nfio: terminating on signal 2'));
  const s = parseFio(text);
  assert.equal(Math.round(s.iops), 1999);
  assert.equal(s.p99_us, 1548.288);
});

test('parseFio refuses output without a mixed block, a failed job, or no JSON', () => {
  const doc = JSON.parse(fixture('randread-mixed.json')) as { jobs: Record<string, unknown>[] };
  const job = doc.jobs[0] as Record<string, unknown>;
  const { mixed, ...no_mixed } = job;
  assert.ok(mixed !== undefined);
  assert.throws(() => parseFio(JSON.stringify({ jobs: [no_mixed] })), /unified_rw_reporting/);
  assert.throws(() => parseFio(JSON.stringify({ jobs: [{ ...job, error: 5 }] })), /error 5/);
  assert.throws(() => parseFio('fio: failed to connect'), /no JSON/);
});

const sample = (iops: number, p99_us: number, cpu_s = 1): Sample => ({ iops, bw_bytes_per_s: iops * 4096, io_bytes: iops * 4096 * 10, runtime_ms: 10_000, p50_us: p99_us / 4, p99_us, cpu_s });

test('medians over rounds, ratios against nbdkit, CPU seconds per GiB', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  const s = summarise([sample(100, 10), sample(300, 30), sample(200, 20)]);
  assert.equal(s.iops, 200);
  assert.equal(s.p99_us, 20);
  assert.equal(s.rounds, 3);
  // 200 IOPS x 4 KiB x 10 s = 8,192,000 bytes for 1 CPU second.
  assert.equal(s.cpu_s_per_gib, Number((2 ** 30 / 8_192_000).toFixed(2)));
  const j = jobResult('randwrite-4k-qd32', {
    nbdkit: [sample(1000, 100), sample(1200, 120), sample(800, 90)],
    rmr2: [sample(1100, 150), sample(900, 160), sample(1000, 170)],
    rmr3: [sample(700, 200), sample(800, 210), sample(900, 220)],
  });
  assert.equal(j.ratio2, 1);
  assert.equal(j.ratio3, 0.8);
});

test('targets: each verdict from the medians; the table and the JSON line carry them', () => {
  const s = (iops: number, p99_us: number): JobResult['nbdkit'] => ({ iops, bw_mib_s: 0, p50_us: 0, p99_us, cpu_s_per_gib: 0, rounds: 3 });
  const jobs: JobResult[] = [
    { name: 'randwrite-4k-qd32', nbdkit: s(1000, 100), rmr2: s(1000, 250), rmr3: s(700, 300), ratio2: 1, ratio3: 0.7 },
    { name: 'randread-4k-qd32', nbdkit: s(1000, 100), rmr2: s(700, 100), rmr3: s(690, 100), ratio2: 0.7, ratio3: 0.69 },
  ];
  const resync = { bytes: 2 ** 30, bytes_per_s: 60e6, cp_bytes_per_s: 100e6, ratio: 0.6, app_iops: 1000, app_p99_us: 900 };
  const checks = checkTargets(jobs, resync);
  const verdict = (what: string): boolean | undefined => checks.find((c) => c.what === what)?.met;
  assert.equal(verdict('randwrite-4k-qd32 ratio2'), true);
  assert.equal(verdict('randwrite-4k-qd32 ratio3'), false);
  assert.equal(verdict('randread-4k-qd32 ratio2'), true);
  assert.equal(verdict('randread-4k-qd32 ratio3'), false);
  assert.equal(verdict('randwrite-4k-qd32 p99 rmr2/nbdkit'), false, '2.5 x nbdkit is over the 2 x bound');
  assert.equal(verdict('resync / cp'), true);
  assert.equal(verdict('write-1m-qd8 ratio2'), undefined, 'a job not run has no verdict');
  const table = formatTable(jobs, resync, checks);
  assert.match(table, /randwrite-4k-qd32 +nbdkit +1000/);
  assert.match(table, /MISSED randwrite-4k-qd32 ratio3/);
  const line = JSON.parse(jsonLine(jobs, resync, { rounds: 3 })) as { bench: string; rounds: number; jobs: JobResult[]; resync: { ratio: number } };
  assert.equal(line.bench, 'nbd');
  assert.equal(line.rounds, 3);
  assert.deepEqual(line.jobs.map((x) => [x.name, x.ratio2, x.ratio3]), [
    ['randwrite-4k-qd32', 1, 0.7],
    ['randread-4k-qd32', 0.7, 0.69],
  ]);
  assert.equal(line.resync.ratio, 0.6);
});

test('--tls: TLS/plaintext per job and server from the medians, and its table', () => {
  const r = tlsRow('randread-4k-qd32', 'rmr2', [sample(1000, 100, 2), sample(1200, 120, 2), sample(800, 90, 2)], [sample(900, 130, 3), sample(700, 110, 3), sample(800, 150, 3)]);
  assert.equal(r.plain.iops, 1000);
  assert.equal(r.tls.iops, 800);
  assert.equal(r.ratio, 0.8);
  assert.equal(r.tls.p99_us, 130);
  assert.ok(r.tls.cpu_s_per_gib > r.plain.cpu_s_per_gib, 'more CPU per GiB over TLS in this sample');
  assert.match(formatTlsTable([r]), /randread-4k-qd32 +rmr2 +1000 +800 +100 +130 .* 0\.80$/m);
});
