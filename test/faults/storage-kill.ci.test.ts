// Scenario 1: a storage daemon is SIGKILLed while fio and the history workload write
// through the device; the client goes on with the two other members and records what the
// dead one misses; the daemon is started again with the same config, resumes its store,
// rejoins and resyncs from its peers. No NBD client sees an error, the history is valid,
// every dirty map ends empty and the three stores hold the same bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultCluster, parseMapText, sleepMs } from '../util/fault-cluster.js';
import { describeLoad, runLoad } from '../util/scenario.js';
import { until } from '../util/cli-cluster.js';

test('SIGKILL of a storage daemon under load: the others serve, it restarts, rejoins and resyncs; stores identical', { timeout: 240_000 }, async (t) => {
  await FaultCluster.run({ label: 'kill', heartbeat_interval_ms: 250, heartbeat_timeout_ms: 2000 }, async (c) => {
    await c.waitClean('after bring-up (initial sync)');
    const victim = 'stg2';
    const r = await runLoad(c, {
      seed: 101,
      runtime_s: 14,
      faults: async (log) => {
        await c.kill(victim);
        log(`SIGKILL ${victim}`);
        await until('the client sees member 2 gone', async () => ((await c.legStates()).get(2) !== 'normal' ? true : null), 15_000, 50);
        // Writes while it is gone are recorded dirty for it.
        const before = await c.deviceRequests();
        await until('writes while member 2 is gone', async () => ((await c.deviceRequests()) > before + 500 ? true : null), 30_000, 50);
        const missed = parseMapText(await c.read('cli', 'rmr-client/pools/fp/map')).find((l) => l.member === 2);
        assert.ok(missed !== undefined && missed.dirty > 0, `the writes member 2 missed are dirty for it: ${JSON.stringify(missed)}`);
        await sleepMs(500);
        await c.restart(victim);
        log(`restart ${victim}`);
        await until('member 2 NORMAL again', async () => ((await c.legStates()).get(2) === 'normal' ? true : null), 60_000, 100);
      },
    });
    t.diagnostic(describeLoad('storage SIGKILL', r));
    await c.downAndCompare();
  });
});
