// Scenario 5: the compute client's daemon is SIGKILLed mid-load, then started again with
// the same config: it resumes its pool with every leg in assemble mode, the members are
// reassembled and reconciled (recovery Cases 3/4: every member back after a client crash),
// the legs go NORMAL, the device is exported again once the pool serves. The history
// workload runs across the crash (its operations in flight have unknown outcomes, none may
// fail, every acknowledged write must survive); an fio job that completed before the crash
// is verified again afterwards (fio --verify_only), one that ran into the crash dies with
// its connection. At the end every map is clean, the history is valid and the stores are
// identical. See test/util/crash-scenario.ts.

import { test } from 'node:test';
import { crashScenario } from '../util/crash-scenario.js';

test('SIGKILL of the compute client under load, restart: reassembly, reconciliation, NORMAL; history valid, fio data intact; stores identical', { timeout: 400_000 }, async (t) => {
  await crashScenario(t, 'ccrash', 501, [{ kill: 'cli' }, { restart: 'cli' }]);
});
