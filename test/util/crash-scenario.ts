// The client-crash scenarios (5 and 6) of test/faults/: a cluster under the history
// workload, daemons SIGKILLed and restarted in a given order; fio's own record of data
// written before the crash is verified again after it.

import assert from 'node:assert/strict';
import { FaultCluster, sleepMs } from './fault-cluster.js';
import { FIO_OFFSET, describeLoad, runLoad } from './scenario.js';
import { describeFio, fioDone, startFio, type FioJob } from './fio-run.js';
import { until } from './cli-cluster.js';

const MIB = 1 << 20;

/** fio's own record of acknowledged data: a sequential, verified write that completes before the faults. */
function durableJob(c: FaultCluster): FioJob {
  return { uri: c.nbdUri, dir: c.dir, name: 'before', rw: 'write', bs: '64k', iodepth: 8, offset: FIO_OFFSET, size: 4 * MIB, runtime_s: 0, verify_backlog: 0, extra: ['--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--do_verify=1'] };
}

/** Runs a job to its end; returns the verified reads. */
async function fioOk(c: FaultCluster, j: FioJob, what: string): Promise<number> {
  const run = startFio(j);
  c.track(run.child);
  const o = await fioDone(run, what, 120_000);
  assert.ok(o.code === 0 && o.error === 0 && o.read_ios > 0, `${what}: ${describeFio(o)}`);
  return o.read_ios;
}

export async function allNormal(c: FaultCluster, timeout_ms = 90_000): Promise<void> {
  await until('every leg of the restarted client NORMAL', async () => {
    const legs = await c.legStates();
    return c.memberNames.every((m) => legs.get(c.node(m).member_id) === 'normal') ? true : null;
  }, timeout_ms, 200);
}

/** A daemon killed or restarted, or `io`: this many more device requests first (the load runs on). */
export type Step = { kill: string } | { restart: string } | { io: number };

/**
 * Runs the steps in order (each kill and restart followed by half a second of load), then
 * waits for every leg of the client NORMAL: the fault part of scenarios 5 and 6 and of the
 * soak's client crash.
 */
export async function runSteps(c: FaultCluster, steps: readonly Step[], log: (line: string) => void): Promise<void> {
  for (const s of steps) {
    if ('io' in s) {
      await c.moreRequests(s.io);
      log(`${s.io} more requests`);
      continue;
    }
    if ('kill' in s) {
      await c.kill(s.kill);
      log(`SIGKILL ${s.kill}`);
    } else {
      await c.restart(s.restart);
      log(`restart ${s.restart}`);
    }
    await sleepMs(500);
  }
  await allNormal(c);
  log('every leg NORMAL');
}

export async function crashScenario(t: { diagnostic: (s: string) => void }, label: string, seed: number, steps: Step[]): Promise<void> {
  await FaultCluster.run({ label, heartbeat_interval_ms: 250, heartbeat_timeout_ms: 2000 }, async (c) => {
    await c.waitClean('after bring-up (initial sync)');
    // A job without time_based: size-bound, verified after its write phase.
    const before = durableJob(c);
    const verified_before = await fioOk(c, before, 'fio before the crash');
    const dying = startFio({ uri: c.nbdUri, dir: c.dir, name: 'across', offset: FIO_OFFSET + 4 * MIB, size: 8 * MIB, runtime_s: 30 });
    c.track(dying.child);
    const r = await runLoad(c, {
      seed,
      runtime_s: 12,
      fio: null,
      no_client_errors: false,
      history: { op_timeout_ms: 5000, final_deadline_ms: 120_000 },
      faults: (log) => runSteps(c, steps, log),
      settle_timeout_ms: 120_000,
    });
    t.diagnostic(describeLoad(label, r));
    const across = await fioDone(dying, 'fio across the crash (runtime 30 s)', 120_000);
    t.diagnostic(`fio across the crash: ${describeFio(across)}`);
    // What fio wrote and verified before the crash reads back the same.
    const reverified = await fioOk(c, { ...before, name: 'reverify', extra: [...(before.extra ?? []), '--verify_only'] }, 'fio --verify_only after the restart');
    assert.equal(reverified, verified_before, 'fio verified the whole region again');
    t.diagnostic(`${label}: fio wrote and verified ${verified_before} blocks of 64 KiB before the crash and verified them again after it`);
    await c.downAndCompare();
  });
}

