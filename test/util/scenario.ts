// One fault scenario's load and checks on a FaultCluster: fio (crc32c verified while it
// runs) on one region of the device and the history workload (unique values, invoke/ack
// times, FUA and flushes, read-back) on another, both from real NBD clients on the export's
// Unix socket; the faults run while the load runs; then the cluster must come back NORMAL
// with every dirty map empty, the read-back happens, and the checker judges the history.
// The result carries what the final report counts: faults injected, IO operations checked,
// violations.

import assert from 'node:assert/strict';
import { checkHistory, describeOp, type CheckResult } from './history/checker.js';
import { runWorkload, type WorkloadOptions, type WorkloadResult } from './history/nbd-workload.js';
import { describeFio, fioDone, startFio, type FioJob, type FioOutcome } from './fio-run.js';
import type { FaultCluster } from './fault-cluster.js';
import { waitFor } from './wait.js';
import { runOk } from './nbd-checks.js';

/**
 * The history workload's region: 128 blocks of 4 KiB (512 KiB, four 128 KiB chunks) at offset
 * 0. A read concurrent with a write of its block may return bytes of both values (the stores'
 * page cache copies while another thread reads): the checker judges such a torn read piece
 * by piece (model.ts TORN).
 */
export const HISTORY_BLOCKS = 128;
export const HISTORY_BLOCK_BYTES = 4096;
/**
 * Each load of a cluster writes its history into a fresh 512 KiB slot of the first 4 MiB
 * (the checker assumes blocks start as zeroes); a slot used before is zeroed first.
 */
const HISTORY_SLOTS = 8;
const HISTORY_SLOT_BYTES = HISTORY_BLOCKS * HISTORY_BLOCK_BYTES;
export const FIO_OFFSET = HISTORY_SLOTS * HISTORY_SLOT_BYTES;
const slotsUsed = new WeakMap<FaultCluster, number>();

/** The byte offset of the next history slot of a cluster, zeroed if it was used before. */
async function historySlot(c: FaultCluster): Promise<number> {
  const n = slotsUsed.get(c) ?? 0;
  slotsUsed.set(c, n + 1);
  const base = (n % HISTORY_SLOTS) * HISTORY_SLOT_BYTES;
  if (n >= HISTORY_SLOTS) await runOk('qemu-io', ['-f', 'raw', '-c', `write -z ${base} ${HISTORY_SLOT_BYTES}`, c.nbdUri], 60_000);
  return base;
}

export interface LoadOptions {
  seed: number;
  runtime_s: number;
  /** fio job settings (region defaults: from 1 MiB to the end of the device); null: no fio. */
  fio?: Partial<FioJob> | null;
  history?: Partial<WorkloadOptions> | null;
  /** Faults, started once the device has taken this many requests (default 300). */
  start_after_requests?: number;
  faults: (log: (line: string) => void) => Promise<void>;
  /** After the faults and the load: what brings the cluster back (default: wait NORMAL + clean). */
  settle?: () => Promise<void>;
  settle_timeout_ms?: number;
  /** The NBD clients must see no error and lose no connection (default true: a member fault is hidden by the others). */
  no_client_errors?: boolean;
  /**
   * No NBD request may be answered with an error (default true), also when connections are
   * lost (a client crash: its requests in flight have unknown outcomes, none fails).
   */
  no_failed_ops?: boolean;
}

export interface LoadReport {
  fio: FioOutcome | null;
  workload: WorkloadResult | null;
  check: CheckResult | null;
  /** IO operations whose results were checked: fio's verified writes and reads plus the history's ops. */
  ops_checked: number;
  violations: number;
  faults: string[];
  /** Longest time an acknowledged history op took (how long a fault stalled IO). */
  max_latency_ms: number;
  /** When history ops failed (NBD error replies), in seconds after the load started: [first, last], or null. */
  failed_window_s: [number, number] | null;
}

/** Runs the load with the faults and checks it; throws on an fio error or a history violation. */
export async function runLoad(c: FaultCluster, o: LoadOptions): Promise<LoadReport> {
  const faults: string[] = [];
  const t0 = performance.now();
  const log = (line: string): void => {
    faults.push(`${((performance.now() - t0) / 1000).toFixed(1)}s ${line}`);
  };
  const base_offset = o.history === null ? 0 : await historySlot(c);
  const fio =
    o.fio === null
      ? null
      : startFio({ uri: c.nbdUri, dir: c.dir, offset: FIO_OFFSET, size: c.store_size - FIO_OFFSET, runtime_s: o.runtime_s, ...o.fio });
  if (fio !== null) c.track(fio.child);
  // The faults begin once the load is visibly flowing through the device.
  const threshold = (await c.deviceRequests()) + (o.start_after_requests ?? 300);
  const faultsDone = (async () => {
    let seen = 0;
    await waitFor(`the load to start (${threshold} device requests)`, async () => (seen = await c.deviceRequests()) >= threshold, 30_000, 20, () => `${seen} so far`);
    await o.faults(log);
  })();
  // A fault failing must not leave the workload waiting: remember it, rethrow after.
  const faultsSettled: Promise<Error | null> = faultsDone.then(
    () => null,
    (e: unknown) => (e instanceof Error ? e : new Error('the faults failed', { cause: e })),
  );
  const settle = async (): Promise<void> => {
    if ((await faultsSettled) !== null) return;
    if (o.settle !== undefined) await o.settle();
    else await c.waitClean('after the faults', o.settle_timeout_ms ?? 90_000);
  };
  let workload: WorkloadResult | null = null;
  let check: CheckResult | null = null;
  if (o.history !== null) {
    workload = await runWorkload({
      base_offset,
      target: c.nbdTarget,
      export_name: 'disk0',
      seed: o.seed,
      duration_ms: o.runtime_s * 1000,
      connections: 3,
      depth: 4,
      blocks: HISTORY_BLOCKS,
      block_size: HISTORY_BLOCK_BYTES,
      op_timeout_ms: 10_000,
      reconnect_delay_ms: 100,
      final_deadline_ms: 60_000,
      ...o.history,
      beforeReadBack: settle,
    });
  } else {
    await settle();
  }
  // The history workload ran its duration and the settle: fio's runtime is over by now.
  const fioOut = fio === null ? null : await fioDone(fio, 'the scenario\'s fio job', 120_000);
  const faultError = await faultsSettled;
  if (faultError !== null) throw faultError;
  if (workload !== null) check = checkHistory(workload.ops, { multi_conn: workload.multi_conn, trim: 'undefined', final: 'register' });
  const violations = check?.violations.length ?? 0;
  const report: LoadReport = {
    fio: fioOut,
    workload,
    check,
    ops_checked: (fioOut?.write_ios ?? 0) + (fioOut?.read_ios ?? 0) + (workload?.ops.length ?? 0),
    violations,
    faults,
    failed_window_s: failedWindow(workload, t0),
    max_latency_ms: Math.round((workload?.ops ?? []).reduce((m, x) => (x.outcome === 'ok' && x.final !== true ? Math.max(m, x.complete - x.invoke) : m), 0)),
  };
  if (fioOut !== null) {
    assert.equal(fioOut.code, 0, `fio saw an error: ${describeFio(fioOut)}`);
    assert.equal(fioOut.error, 0, `fio saw an error: ${describeFio(fioOut)}`);
    assert.ok(fioOut.write_ios > 0 && fioOut.read_ios > 0, `fio wrote and verified: ${describeFio(fioOut)}`);
  }
  if (check !== null && workload !== null) {
    assert.deepEqual(check.violations.map((v) => v.message), [], `the history checker finds no violation; around them:\n${explain(check, workload)}`);
    if (o.no_failed_ops !== false) {
      const failed = workload.ops.filter((x) => x.outcome === 'fail');
      assert.equal(failed.length, 0, `no NBD request failed (${failed.length} did between ${String(report.failed_window_s?.[0])}s and ${String(report.failed_window_s?.[1])}s: ${[...new Set(failed.map((x) => x.note ?? '?'))].join(' | ')}); faults: ${faults.join('; ')}`);
    }
    if (o.no_client_errors !== false) {
      const s = workload.stats;
      assert.ok(s.failed === 0 && s.unknown === 0 && s.connection_failures === 0, `the history's NBD clients saw no error: ${s.failed} failed, ${s.unknown} unknown, ${s.connection_failures} connection failures (${[...new Set(workload.ops.filter((x) => x.outcome !== 'ok').map((x) => `${x.note ?? '?'} at ${((x.invoke - t0) / 1000).toFixed(1)}s`))].join(' | ')}); faults: ${faults.join('; ')}`);
    }
    assert.ok(workload.stats.by_kind.write > 50 && check.stats.final_reads === HISTORY_BLOCKS, `the history did work: ${JSON.stringify(workload.stats)}`);
  }
  return report;
}

function failedWindow(w: WorkloadResult | null, t0: number): [number, number] | null {
  const failed = (w?.ops ?? []).filter((x) => x.outcome === 'fail').map((x) => Math.round((x.invoke - t0) / 100) / 10);
  return failed.length === 0 ? null : [Math.min(...failed.slice(0, 100_000)), Math.max(...failed.slice(0, 100_000))];
}

/** One line per scenario run for the suite's report (t.diagnostic). */
export function describeLoad(name: string, r: LoadReport): string {
  const h = r.workload?.stats;
  return `${name}: faults [${r.faults.join('; ')}]; fio ${r.fio?.write_ios ?? 0} writes + ${r.fio?.read_ios ?? 0} verified reads; history ${r.workload?.ops.length ?? 0} ops (${h?.unknown ?? 0} unknown, ${h?.failed ?? 0} failed${r.failed_window_s !== null ? ` between ${r.failed_window_s[0]}s and ${r.failed_window_s[1]}s` : ''}, ${h?.connection_failures ?? 0} connection failures, longest op ${r.max_latency_ms} ms); ${r.ops_checked} IO operations checked; ${r.violations} violations`;
}

/** The ops on each violation's block that overlap it in time (±50 ms), for the failure message. */
function explain(check: CheckResult, w: WorkloadResult): string {
  const lines: string[] = [];
  for (const v of check.violations.slice(0, 5)) {
    const from = Math.min(...v.ops.map((o) => o.invoke)) - 50;
    const to = Math.max(...v.ops.map((o) => (Number.isFinite(o.complete) ? o.complete : o.invoke))) + 50;
    lines.push(`${v.kind} on block ${v.block}:`);
    for (const o of w.ops) if ((o.block === v.block || o.kind === 'flush') && o.invoke <= to && (o.complete >= from || !Number.isFinite(o.complete)) && o.kind !== 'flush') lines.push(`  ${describeOp(o)}`);
  }
  return lines.join('\n');
}
