// Scenario 7: disk errors on one member. Its store sits behind the error-injecting filter
// (roles.storage.fault_injection); under fio and the history workload the filter starts
// failing reads and writes of stg2's store: the store closes at its first error, stg2 leaves
// IO service (NO_IO), the client fails its leg and goes on with the other two, and no NBD
// client sees an error. Then the operator replaces the disk: remove_store, an empty file in
// its place, `add_store ... mode=replace` with the pool's UUID (store-manager.ts replace());
// the client's failed leg comes back through its store check by itself, every chunk is dirty
// for the new member, which copies the whole device from its peers under load. At the end
// every map is clean, the history is valid and the three stores are identical.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { FaultCluster, POOL, parseMapText } from '../util/fault-cluster.js';
import { describeLoad, runLoad } from '../util/scenario.js';
import { until } from '../util/cli-cluster.js';

test('disk errors on one member under load: it leaves IO service, the others serve; replaced by an empty disk it resyncs fully; stores identical', { timeout: 300_000 }, async (t) => {
  await FaultCluster.run({ label: 'disk', storage: { fault_injection: true }, heartbeat_interval_ms: 250, heartbeat_timeout_ms: 2000 }, async (c) => {
    await c.waitClean('after bring-up (initial sync)');
    const stg2 = c.node('stg2');
    const errors = await runLoad(c, {
      seed: 701,
      runtime_s: 10,
      settle: async () => {
        // stg2 stays out of service until its disk is replaced: the others are clean.
        await until('members 1 and 3 clean', async () => {
          const u = (await c.unclean()).filter((l) => !/member 2|stg2/.test(l));
          return u.length === 0 ? true : null;
        }, 60_000, 250);
      },
      faults: async (log) => {
        await c.write('stg2', `brmr-server/stores/${POOL}/fault_injection`, 'read_error_rate=0.1 write_error_rate=0.1 error=EIO seed=7');
        log('stg2 store: 10% read and write errors (EIO)');
        await until('stg2 leaves IO service', async () => ((await c.tryRead('stg2', `rmr-server/pools/${POOL}/state`))?.startsWith('no_io') === true ? true : null), 15_000, 50);
        await until('the client fails member 2', async () => ((await c.legStates()).get(2) === 'failed' ? true : null), 15_000, 50);
        assert.match(await c.read('stg2', `brmr-server/stores/${POOL}/state`), /^closed/, 'the failed store is closed');
        const injected = await c.read('stg2', `brmr-server/stores/${POOL}/fault_injection`);
        assert.match(injected, /(read|write)_errors=[1-9]/, `errors were injected: ${injected}`);
        log(`stg2 NO_IO, its leg failed (${injected.split('\n')[1] ?? ''})`);
        const before = await c.deviceRequests();
        await until('IO goes on without member 2', async () => ((await c.deviceRequests()) > before + 500 ? true : null), 30_000, 50);
        const missed = parseMapText(await c.read('cli', `rmr-client/pools/${POOL}/map`)).find((l) => l.member === 2);
        assert.ok(missed !== undefined && missed.dirty > 0, 'writes member 2 missed are dirty for it');
      },
    });
    t.diagnostic(describeLoad('disk errors', errors));
    // The failed store's metadata ticker fails every 500 ms: reported, not two lines a second.
    const mdErrors = readFileSync(stg2.log, 'utf8').split('\n').filter((l) => l.includes('pool metadata write failed')).length;
    assert.ok(mdErrors >= 1 && mdErrors <= 2, `metadata write failures logged ${mdErrors} times`);

    const syncs_before = await c.chunkSyncs('stg2');
    const replaced = await runLoad(c, { seed: 702, runtime_s: 10, faults: (log) => c.replaceDisk('stg2', log) });
    t.diagnostic(describeLoad('disk replaced', replaced));
    const copied = (await c.chunkSyncs('stg2')) - syncs_before;
    const chunks = c.store_size / c.chunk_size;
    assert.ok(copied >= chunks, `the new disk copied every chunk: ${copied} chunk syncs for ${chunks} chunks`);
    t.diagnostic(`replacement: ${copied} chunk syncs for ${chunks} chunks`);
    await c.downAndCompare();
  });
});
