// 300 fresh seeds of the pool simulator (half of them in swarm mode), on a shorter workload
// (1.5 simulated seconds each) so that they fit in the test run: any invariant violated fails
// the test with the seed, the invariant and the end of the trace (replay it with
// `npm run sim -- --replay SEED [--swarm] --duration 1500 --schedule V`). Half run fault
// schedule 3 (faults triggered in the windows recovery opens), half schedule 1 (uniform
// times, longer outages), which catches some bugs more often (test/sim/pool-sim.test.ts,
// mutation checks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSeed, type Schedule } from '../../src/sim/pool-sim.js';

const FROM = 2000;
const COUNT = 300;

test(`${COUNT} fresh seeds: no invariant violated (swarm mode on odd seeds, schedule 3 and 1 in turn)`, async () => {
  let reads = 0;
  for (let seed = FROM; seed < FROM + COUNT; seed++) {
    const schedule: Schedule = (seed >> 1) % 2 === 0 ? 3 : 1;
    const r = await runSeed({ seed, swarm: seed % 2 === 1, duration_ms: 1500, schedule });
    assert.equal(r.violation, null, `seed ${seed} (schedule ${schedule}): ${r.violation ?? ''}\n${r.trace_tail.join('\n')}`);
    reads += r.reads_checked;
  }
  assert.ok(reads > COUNT * 100, 'reads were checked');
});
