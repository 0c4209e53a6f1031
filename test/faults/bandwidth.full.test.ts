// Scenario 4: a full resync of one member over a bandwidth-capped link while the
// application writes. stg3's link is capped both ways with tc tbf in the namespace lab (on
// its interface and on the switch port toward it); its disk is replaced by an empty one, so
// it copies the whole device from its peers through that link, competing with the client's
// writes to it. The storage role's rate controller gives the sync `sync_share_percent` of
// the traffic while the application is busy (sync_min_bytes_per_s set low, so the floor does
// not decide): the resync must finish, and the application must keep its share of what the
// member moved (measured from the node's counters over the resync: application bytes served
// vs chunks copied). No NBD client sees an error; stores identical at the end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultCluster, faultClusterUnavailable, hostOf } from '../util/fault-cluster.js';
import { FIO_OFFSET, describeLoad, runLoad } from '../util/scenario.js';
import { waitFor } from '../util/wait.js';

const skip = faultClusterUnavailable({ netns: true });
const SHARE_PERCENT = 30;
const LINK = '40mbit'; // 5 MB/s each way

test(`a full resync over a ${LINK} link under fio: it finishes and the application keeps its ${100 - SHARE_PERCENT}% share`, { skip: skip ?? false, timeout: 400_000 }, async (t) => {
  await FaultCluster.run({
    label: 'rate',
    netns: true,
    store_size: 16 << 20,
    storage: { sync_share_percent: SHARE_PERCENT, sync_min_bytes_per_s: 65536 },
    heartbeat_interval_ms: 250,
    heartbeat_timeout_ms: 3000,
  }, async (c) => {
    const lab = c.lab;
    assert.ok(lab !== null);
    await c.waitClean('after bring-up (initial sync)');
    const h3 = hostOf(c, 'stg3');
    lab.rate(h3, LINK);
    lab.rateInto(h3, LINK);
    let t_start = 0;
    let resync_ms = 0;
    let app0 = 0;
    let sync0 = 0;
    let app_bytes = 0;
    let sync_bytes = 0;
    const limits: number[] = [];
    const r = await runLoad(c, {
      seed: 401,
      runtime_s: 40,
      // Writes into a region of 8 chunks: after their first (on-demand) copies, the
      // application's traffic competes with the background sync only.
      fio: { offset: FIO_OFFSET, size: 1 << 20, bs: '16k', iodepth: 16 },
      faults: async (log) => {
        log(`stg3 link capped at ${LINK} both ways`);
        t_start = Date.now();
        app0 = await c.appBytes('stg3');
        sync0 = await c.chunkSyncs('stg3');
        await c.replaceDisk('stg3', log);
        // Each probe also records the rate limit the resync ran under.
        let dirty = -1;
        await waitFor(
          'the resync to finish',
          async () => {
            const p = JSON.parse(await c.read('stg3', 'rmr-server/pools/fp/sync_progress')) as { dirty_chunks: number; rate_limit_bytes_per_s: number };
            limits.push(p.rate_limit_bytes_per_s);
            dirty = p.dirty_chunks;
            return dirty === 0;
          },
          300_000,
          250,
          () => `${dirty} chunks still dirty`,
        );
        resync_ms = Date.now() - t_start;
        app_bytes = (await c.appBytes('stg3')) - app0;
        sync_bytes = ((await c.chunkSyncs('stg3')) - sync0) * c.chunk_size;
        log(`resync done after ${resync_ms} ms`);
        lab.unrate(h3);
        lab.unrateInto(h3);
        log('cap removed');
      },
      settle_timeout_ms: 120_000,
    });
    t.diagnostic(describeLoad('capped resync', r));
    const share = app_bytes / (app_bytes + sync_bytes);
    const line = `resync of ${c.store_size >> 20} MiB over ${LINK} in ${(resync_ms / 1000).toFixed(1)} s: application ${(app_bytes / 2 ** 20).toFixed(1)} MiB (${((app_bytes / resync_ms) * 1000 / 2 ** 20).toFixed(2)} MiB/s), sync ${(sync_bytes / 2 ** 20).toFixed(1)} MiB (${((sync_bytes / resync_ms) * 1000 / 2 ** 20).toFixed(2)} MiB/s); application share ${(share * 100).toFixed(1)}% (configured ${100 - SHARE_PERCENT}%)`;
    t.diagnostic(line);
    const sorted = [...limits].sort((a, b) => a - b);
    const mib = (x: number | undefined): string => ((x ?? 0) / 2 ** 20).toFixed(2);
    t.diagnostic(`sync rate limit over the resync (${limits.length} samples, MiB/s): median ${mib(sorted[sorted.length >> 1])}, 90th percentile ${mib(sorted[Math.floor(sorted.length * 0.9)])}`);
    assert.ok(sync_bytes >= c.store_size, `every chunk was copied: ${line}`);
    assert.ok(share >= (100 - SHARE_PERCENT) / 100 - 0.15, `the application kept its share: ${line}`);
    await c.downAndCompare();
  });
});
