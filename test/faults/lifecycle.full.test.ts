// Scenario 8: the pool's lifecycle operations under load (fio and the history workload
// each time), on one cluster of four storage daemons of which three start as members:
//   maintenance  stg3's leg into maintenance mode (`enable 0`: out of IO service, what it
//                misses is dirty for it) and back (`enable 1`: recovery, resync);
//   extend       stg4 joins the live pool as a fourth member (`rmr up` of the cluster file
//                with the new member: create_store, add_sess mode=create + enable, sync
//                pools both ways) and copies the device from its peers;
//   removal      stg1, the pool's first member, leaves for good (del_sess mode=delete on
//                the client, its peers drop their sync sessions to it, and it deletes its
//                store and leaves the pool).
// After each: every leg NORMAL, every map clean, the history valid; at the end the remaining
// members' stores are identical. In test:faults only (*.full.test.ts): four daemons and three
// loads make it the longest scenario. The extend test found that a new member's store was
// not mapped (the device's MAP now reaches it before it joins, ec47d95).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FaultCluster, POOL, parseMapText } from '../util/fault-cluster.js';
import { describeLoad, runLoad } from '../util/scenario.js';
import { until } from '../util/cli-cluster.js';

let c: FaultCluster;

before(async () => {
  c = await FaultCluster.start({ label: 'life', storage_nodes: 4, members: 3, heartbeat_interval_ms: 250, heartbeat_timeout_ms: 2000 });
  await c.waitClean('after bring-up (initial sync)');
});

after(async () => {
  await c?.close();
});

const sess = (node: string): string => `rmr-client/pools/${POOL}/sessions/cli@${node}`;

test('maintenance mode of a member under load: out of IO service, then back through recovery and resync', { timeout: 240_000 }, async (t) => {
  try {
    const r = await runLoad(c, {
      seed: 801,
      runtime_s: 12,
      faults: async (log) => {
        await c.write('cli', `${sess('stg3')}/enable`, '0');
        assert.match(await c.read('cli', `${sess('stg3')}/state`), /Maintenance mode: 1/);
        log('stg3 into maintenance');
        const before_io = await c.deviceRequests();
        await until('writes during maintenance', async () => ((await c.deviceRequests()) > before_io + 500 ? true : null), 30_000, 50);
        const missed = parseMapText(await c.read('cli', `rmr-client/pools/${POOL}/map`)).find((l) => l.member === 3);
        assert.ok(missed !== undefined && missed.dirty > 0, 'what member 3 missed in maintenance is dirty for it');
        await c.write('cli', `${sess('stg3')}/enable`, '1');
        log('stg3 out of maintenance');
        await until('member 3 NORMAL again', async () => ((await c.legStates()).get(3) === 'normal' ? true : null), 60_000, 100);
        assert.match(await c.read('cli', `${sess('stg3')}/state`), /Maintenance mode: 0/);
      },
    });
    t.diagnostic(describeLoad('maintenance', r));
  } catch (e) {
    c.markFailed();
    throw e;
  }
});

test('extend under load: a fourth member joins the live pool with rmr up and copies the device', { timeout: 240_000 }, async (t) => {
  try {
    const syncs_before = await c.chunkSyncs('stg4').catch(() => 0);
    const r = await runLoad(c, {
      seed: 802,
      runtime_s: 12,
      faults: async (log) => {
        c.addMember('stg4');
        await c.up();
        log('stg4 added to the pool (rmr up)');
        await until('member 4 NORMAL', async () => ((await c.legStates()).get(4) === 'normal' ? true : null), 60_000, 100);
      },
    });
    t.diagnostic(describeLoad('extend', r));
    const copied = (await c.chunkSyncs('stg4')) - syncs_before;
    const chunks = c.store_size / c.chunk_size;
    assert.ok(copied >= chunks, `the new member copied every chunk: ${copied} of ${chunks}`);
  } catch (e) {
    c.markFailed();
    throw e;
  }
});

test('removal under load: the first member leaves the pool for good; the others go on and stay identical', { timeout: 240_000 }, async (t) => {
  try {
    const gone = 'stg1';
    const r = await runLoad(c, {
      seed: 803,
      runtime_s: 12,
      faults: async (log) => {
        await c.write('cli', `${sess(gone)}/del_sess`, 'mode=delete');
        log(`client: member 1 deleted (del_sess mode=delete)`);
        c.dropMember(gone);
        for (const peer of c.memberNames) {
          const s = `rmr-client/pools/${POOL}/sessions/${peer}@${gone}`;
          if ((await c.tryRead(peer, `${s}/state`)) !== null) await c.write(peer, `${s}/del_sess`, 'mode=delete');
          const back = `rmr-client/pools/${POOL}/sessions/${gone}@${peer}`;
          if ((await c.tryRead(gone, `${back}/state`)) !== null) await c.write(gone, `${back}/del_sess`, 'mode=delete');
        }
        await c.write(gone, `rmr-server/pools/${POOL}/remove_clt`, '1');
        await c.write(gone, `brmr-server/stores/${POOL}/delete_store`, '1');
        await c.write(gone, `rmr-server/pools/${POOL}/leave_pool`, '1');
        await c.write(gone, `rmr-client/pools/${POOL}/leave_pool`, '1');
        log(`${gone}: sync sessions, store and pools gone`);
        const left = await c.legStates();
        assert.equal(left.has(1), false, 'the client has no leg of member 1');
        const maps = parseMapText(await c.read('stg2', `rmr-server/pools/${POOL}/map_summary`));
        assert.equal(maps.some((l) => l.member === 1), false, `the peers forget member 1: ${JSON.stringify(maps)}`);
      },
    });
    t.diagnostic(describeLoad('removal', r));
    await c.downAndCompare();
  } catch (e) {
    c.markFailed();
    throw e;
  }
});
