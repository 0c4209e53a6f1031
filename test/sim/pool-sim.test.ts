// The pool simulator in the test suite: the regression seeds of bugs it found, a block of
// fresh seeds, replay determinism, and mutation checks proving the oracle catches known
// bugs (the checks fail if the simulator stops seeing them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSeed } from '../../src/sim/pool-sim.js';

/** Seeds that once found a bug (see the commit that fixed each); swarm seeds marked. */
const REGRESSION_SEEDS: { seed: number; swarm?: boolean }[] = [{ seed: 2 }, { seed: 10 }, { seed: 15 }, { seed: 45 }, { seed: 3050 }];

test('regression seeds stay fixed', async () => {
  for (const { seed, swarm } of REGRESSION_SEEDS) {
    const r = await runSeed({ seed, swarm: swarm === true });
    assert.equal(r.violation, null, `seed ${seed}: ${r.violation ?? ''}\n${r.trace_tail.join('\n')}`);
  }
});

test('fresh seeds: no invariant violated (swarm mode on odd seeds)', async () => {
  const from = 2000;
  for (let seed = from; seed < from + 16; seed++) {
    const r = await runSeed({ seed, swarm: seed % 2 === 1 });
    assert.equal(r.violation, null, `seed ${seed}: ${r.violation ?? ''}\n${r.trace_tail.join('\n')}`);
    assert.ok(r.reads_checked > 0, 'reads were checked');
  }
});

test('the same seed replays the same history, byte for byte', async () => {
  const a = await runSeed({ seed: 77 });
  const b = await runSeed({ seed: 77 });
  const c = await runSeed({ seed: 78 });
  assert.equal(a.trace_hash, b.trace_hash);
  assert.notEqual(a.trace_hash, c.trace_hash);
  assert.ok(a.ops > 100, 'the workload ran');
});

test('mutation checks: the oracle catches a client that skips piggyback or MAP_ADD', async () => {
  const piggy = await runSeed({ seed: 1, mutation: 'no_piggyback' });
  assert.match(piggy.violation ?? '', /read validity|convergence/, 'dropping the piggyback must be caught');
  const mapAdd = await runSeed({ seed: 13, mutation: 'skip_map_add' });
  assert.match(mapAdd.violation ?? '', /convergence|read validity/, 'skipping MAP_ADD must be caught');
});
