// The pool simulator in the test suite: the regression seeds of bugs it found, replay
// determinism, and mutation checks proving the oracle catches known bugs (the checks fail if
// the simulator stops seeing them). The bulk of fresh seeds is in pool-sim-seeds.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FAULT_KINDS, runSeed, type FaultKind, type Mutation, type Schedule } from '../../src/sim/pool-sim.js';

/**
 * Seeds that once found a bug (the commit that fixed each names it; docs/rmr-core.md lists
 * them). Histories change with the code, so these keep the shapes, not the exact traces.
 * Each names the fault schedule version it was found with (a seed's faults depend on it).
 */
/** The kinds the early seeds ran with (a seed's fault schedule depends on the kinds listed). */
const FIRST_KINDS: FaultKind[] = ['link_cut', 'partition', 'disk_error'];
const NET_KINDS: FaultKind[] = ['link_cut', 'partition', 'disk_error', 'crash', 'one_way', 'bandwidth', 'stop_reading'];
const LIFECYCLE_KINDS: FaultKind[] = [...NET_KINDS, 'client_crash', 'maintenance', 'remove', 'extend', 'replace'];
const REGRESSION_SEEDS: { seed: number; schedule: Schedule; swarm?: boolean; faults?: FaultKind[]; duration_ms?: number }[] = [
  { seed: 2, schedule: 1, faults: FIRST_KINDS },
  { seed: 10, schedule: 1, faults: FIRST_KINDS },
  { seed: 15, schedule: 1, faults: FIRST_KINDS },
  { seed: 45, schedule: 1, faults: FIRST_KINDS },
  { seed: 3050, schedule: 1, faults: FIRST_KINDS },
  { seed: 1011, schedule: 1, swarm: true, faults: FIRST_KINDS },
  { seed: 5088, schedule: 1, faults: FIRST_KINDS },
  { seed: 5092, schedule: 1, faults: FIRST_KINDS },
  { seed: 5140, schedule: 1, faults: FIRST_KINDS },
  { seed: 7008, schedule: 1, swarm: true, faults: FIRST_KINDS },
  { seed: 8, schedule: 1, faults: ['crash'] },
  { seed: 9, schedule: 1, faults: ['crash'] },
  { seed: 17, schedule: 1, faults: ['crash'] },
  { seed: 100, schedule: 1, faults: ['link_cut', 'partition', 'disk_error', 'crash'], duration_ms: 1500 },
  { seed: 4009, schedule: 1, faults: ['link_cut', 'partition', 'disk_error', 'crash'] },
  { seed: 4057, schedule: 1, faults: ['link_cut', 'partition', 'disk_error', 'crash'] },
  { seed: 4127, schedule: 1, faults: ['link_cut', 'partition', 'disk_error', 'crash'] },
  { seed: 14, schedule: 1, faults: NET_KINDS },
  { seed: 26, schedule: 1, faults: NET_KINDS },
  { seed: 49, schedule: 1, faults: NET_KINDS },
  // With compute-client crashes, maintenance and membership changes:
  { seed: 8, schedule: 1, faults: LIFECYCLE_KINDS },
  { seed: 20, schedule: 1, faults: LIFECYCLE_KINDS },
  { seed: 27, schedule: 1, faults: LIFECYCLE_KINDS },
  { seed: 28, schedule: 1, faults: LIFECYCLE_KINDS },
  { seed: 72, schedule: 1, faults: LIFECYCLE_KINDS },
  { seed: 2000, schedule: 1, swarm: true, faults: LIFECYCLE_KINDS, duration_ms: 1500 },
  { seed: 2026, schedule: 1, swarm: true, faults: LIFECYCLE_KINDS, duration_ms: 1500 },
  { seed: 2098, schedule: 1, faults: LIFECYCLE_KINDS, duration_ms: 1500 },
  { seed: 10084, schedule: 1, faults: LIFECYCLE_KINDS },
  { seed: 60008, schedule: 1, swarm: true, faults: LIFECYCLE_KINDS, duration_ms: 1500 },
  // Every fault kind, the default 3 s workload:
  { seed: 61002973, schedule: 1 },
  { seed: 63000709, schedule: 1 },
  { seed: 58183127, schedule: 1 },
  { seed: 57684138, schedule: 1, swarm: true },
  { seed: 55308163, schedule: 1, swarm: true },
  { seed: 61002823, schedule: 1 },
  { seed: 72000901, schedule: 1 },
  { seed: 72001092, schedule: 1 },
  { seed: 72000061, schedule: 1 },
  // Schedule 2 (faults triggered by protocol events):
  { seed: 2023, schedule: 2, swarm: true, duration_ms: 1500 },
  { seed: 5000269, schedule: 2, swarm: true },
  { seed: 10000770, schedule: 2 },
  // Schedule 3:
  { seed: 10000872, schedule: 3 },
  { seed: 10000085, schedule: 3, swarm: true },
  { seed: 30000953, schedule: 3, swarm: true },
  { seed: 40002141, schedule: 3, swarm: true },
  { seed: 50002168, schedule: 3 },
  { seed: 60000136, schedule: 3 },
  { seed: 61000688, schedule: 3 },
  // Flush errors (opt-in kind, issue 19 item 1): a FLUSH acknowledged by a member whose copy was stale.
  { seed: 184, schedule: 1, faults: ['flush_error', 'link_cut', 'partition'] },
];

test('regression seeds stay fixed', async () => {
  for (const { seed, schedule, swarm, faults, duration_ms } of REGRESSION_SEEDS) {
    const r = await runSeed({ seed, schedule, swarm: swarm === true, ...(faults ? { faults } : {}), ...(duration_ms ? { duration_ms } : {}) });
    assert.equal(r.violation, null, `seed ${seed}: ${r.violation ?? ''}\n${r.trace_tail.join('\n')}`);
  }
});

test('the same seed replays the same history, byte for byte', async () => {
  const a = await runSeed({ seed: 77, faults: ['link_cut', 'crash'] });
  const b = await runSeed({ seed: 77, faults: ['link_cut', 'crash'] });
  const c = await runSeed({ seed: 78, faults: ['link_cut', 'crash'] });
  assert.equal(a.trace_hash, b.trace_hash);
  assert.notEqual(a.trace_hash, c.trace_hash);
  assert.ok(a.ops > 100, 'the workload ran');
});

test('leaving a scheduled fault out changes only that fault', async () => {
  const all = await runSeed({ seed: 21, duration_ms: 1500 });
  assert.ok(all.scheduled_faults >= 1);
  const fewer = await runSeed({ seed: 21, duration_ms: 1500, drop_faults: [0] });
  assert.equal(fewer.fault_log.some((f) => f.startsWith('#0 ')), false, 'fault #0 left out');
  for (const f of fewer.fault_log) assert.ok(all.fault_log.includes(f) || !f.startsWith('#'), `fault ${f} is one of the original schedule`);
});

test('every fault kind takes effect within a few seeds of its own, and triggered faults fire', async () => {
  // An `extend` once never happened at all (the step after an await ran after the seed
  // ended) while the summary counted it: kinds_hit counts a fault only once it took effect.
  const missing: string[] = [];
  let fired = 0;
  for (const kind of FAULT_KINDS) {
    let hit = false;
    for (let seed = 1; seed <= 8 && !hit; seed++) {
      const r = await runSeed({ seed, faults: [kind], duration_ms: 1500 });
      assert.equal(r.violation, null, `${kind} seed ${seed}: ${r.violation ?? ''}`);
      hit = r.kinds_hit.includes(kind);
      fired += r.fault_log.filter((l) => l.includes('(on ')).length;
    }
    if (!hit) missing.push(kind);
  }
  assert.deepEqual(missing, [], 'kinds that never took effect');
  assert.ok(fired > 0, 'some triggered fault fired');
});

/** Runs seeds from 1 until the mutation is caught; the number of seeds it took, or null. */
async function seedsToCatch(mutation: Mutation, limit: number, faults?: FaultKind[]): Promise<{ seeds: number; violation: string } | null> {
  for (let seed = 1; seed <= limit; seed++) {
    // Schedule 1: the figures below were measured with it. Schedule 3 catches these two less
    // often (no piggyback: 3 of the first 10 seeds, 6 with schedule 1; a skipped MAP_ADD: 3
    // of the first 60, first at seed 40): its many short outages fail writes everywhere more
    // often than on one leg, and a client crash gives legs the mutation never touched.
    const r = await runSeed({ seed, mutation, duration_ms: 1500, schedule: 1, ...(faults ? { faults } : {}) });
    if (r.violation !== null) return { seeds: seed, violation: r.violation };
  }
  return null;
}

test('mutation checks: the oracle catches a client that skips piggyback or MAP_ADD, and a node whose intent record never reaches its disk, within 30 seeds', async () => {
  // When this was written (1.5 s each): no piggyback caught by the 2nd seed, a skipped MAP_ADD
  // by the 14th (all fault kinds); the intent record matters only when a storage node crashes,
  // so that mutation runs with crashes alone: caught by the 1st seed (with every kind mixed
  // in, about one seed in 60 crashes a node where it shows).
  const piggy = await seedsToCatch('no_piggyback', 30);
  assert.ok(piggy !== null, 'dropping the piggyback must be caught');
  assert.match(piggy.violation, /read validity|convergence|stability/);
  const mapAdd = await seedsToCatch('skip_map_add', 30);
  assert.ok(mapAdd !== null, 'skipping MAP_ADD must be caught');
  assert.match(mapAdd.violation, /convergence|read validity|stability/);
  const intent = await seedsToCatch('drop_intent', 30, ['crash']);
  assert.ok(intent !== null, 'dropping the intent record must be caught');
  assert.match(intent.violation, /convergence|read validity|stability/);
});
