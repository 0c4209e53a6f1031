// Scenario 2: a storage daemon is frozen with SIGSTOP for several heartbeat timeouts while
// fio and the history workload run: its sockets stay open (the kernel keeps accepting
// bytes), so only the heartbeat bound tells the client and its peers that it is gone. The
// client fails its leg within the bound and goes on with the others; after SIGCONT the
// daemon finds its sessions dead, the client reconnects, the member rejoins and resyncs
// what it missed. No NBD client sees an error, the history is valid, every map ends clean
// and the stores are identical.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultCluster, parseMapText } from '../util/fault-cluster.js';
import { describeLoad, runLoad } from '../util/scenario.js';
import { until } from '../util/cli-cluster.js';

const HB_INTERVAL_MS = 200;
const HB_TIMEOUT_MS = 1200;

test('SIGSTOP of a storage daemon beyond the heartbeat bound under load, then SIGCONT: leg failed within the bound, rejoin, resync; stores identical', { timeout: 240_000 }, async (t) => {
  await FaultCluster.run({ label: 'stop', heartbeat_interval_ms: HB_INTERVAL_MS, heartbeat_timeout_ms: HB_TIMEOUT_MS }, async (c) => {
    await c.waitClean('after bring-up (initial sync)');
    const victim = 'stg3';
    let detected_ms = 0;
    const r = await runLoad(c, {
      seed: 202,
      runtime_s: 14,
      faults: async (log) => {
        const t0 = Date.now();
        c.stop(victim);
        log(`SIGSTOP ${victim}`);
        await until('the client fails member 3', async () => ((await c.legStates()).get(3) !== 'normal' ? true : null), 15_000, 20);
        detected_ms = Date.now() - t0;
        log(`member 3 failed after ${detected_ms} ms`);
        // Stopped for four heartbeat timeouts in all, writing all the while.
        await until('stopped long enough', () => Promise.resolve(Date.now() - t0 >= 4 * HB_TIMEOUT_MS ? true : null), 30_000, 50);
        const missed = parseMapText(await c.read('cli', 'rmr-client/pools/fp/map')).find((l) => l.member === 3);
        assert.ok(missed !== undefined && missed.dirty > 0, `the writes member 3 missed are dirty for it: ${JSON.stringify(missed)}`);
        c.cont(victim);
        log(`SIGCONT ${victim} after ${Date.now() - t0} ms`);
        await until('member 3 NORMAL again', async () => ((await c.legStates()).get(3) === 'normal' ? true : null), 60_000, 100);
      },
    });
    t.diagnostic(describeLoad('storage SIGSTOP', r));
    // Detection is bounded by the heartbeat timeout plus one interval, with slack for a loaded machine.
    assert.ok(detected_ms <= HB_TIMEOUT_MS + HB_INTERVAL_MS + 1500, `the leg failed ${detected_ms} ms after SIGSTOP (heartbeat bound ${HB_TIMEOUT_MS + HB_INTERVAL_MS} ms)`);
    await c.downAndCompare();
  });
});
