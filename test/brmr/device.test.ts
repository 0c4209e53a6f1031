// The BRMR device over a pool of two storage nodes with real stores, on the real clock: IO
// through the BlockDevice interface ends byte-identical on both stores; map and re-map
// rules; degraded and disconnected; the queue bound; dirty block status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeBrmrCluster, dev, type BrmrCluster } from '../util/brmr-cluster.js';
import { waitFor } from '../util/wait.js';
import { mapDevice, NBD_STATE_RMR_DIRTY, type BrmrDevice } from '../../src/brmr/client/device.js';
import { Errno } from '../../src/util/errno.js';
import type { Extent } from '../../src/util/block-device.js';

const KiB = 1024;

function cleanup(t: { after: (fn: () => Promise<void>) => void }, c: BrmrCluster): BrmrCluster {
  t.after(() => c.close());
  return c;
}

const status = (d: BrmrDevice, ctx: string, off: number, len: number) => new Promise<[number, Extent[] | null]>((r) => d.blockStatus(ctx, off, len, (s, e) => r([s, e])));

test('file stores: writes (FUA or not), reads, trim, write zeroes, flush, multi-chunk IO; both data areas byte-identical', async (t) => {
  const c = cleanup(t, await makeBrmrCluster({ backend: 'file', nodes: 2 }));
  const d = c.device as BrmrDevice;
  assert.equal(d.state, 'ready');
  assert.equal(d.first_map, true);
  assert.equal(d.size_bytes, c.size_bytes);
  assert.deepEqual(d.block_sizes, { minimum: 512, preferred: 64 * KiB, maximum: 1024 * KiB });
  assert.equal(d.multi_conn, true);
  assert.deepEqual(d.metaContexts(), ['rmr:dirty:1', 'rmr:dirty:2']);
  for (const n of c.nodes) assert.equal(n.manager.store('brmr1')?.stateText(), 'open mapped attached');
  const model = Buffer.alloc(c.size_bytes);
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const ios: Promise<void>[] = [];
  // Non-overlapping concurrent writes (the model needs no ordering), some spanning chunks.
  for (let i = 0; i < 24; i++) {
    const len = 4 * KiB * (1 + rnd(20));
    const off = i * 80 * KiB;
    const data = Buffer.alloc(len, 1 + i);
    data.copy(model, off);
    ios.push(dev.write(d, off, data, i % 3 === 0).then((s) => assert.equal(s, 0, `write ${i}`)));
  }
  await Promise.all(ios);
  assert.equal(await dev.flush(d), 0);
  // A multi-chunk write of the largest size, a trim and write-zeroes across chunks.
  const big = Buffer.alloc(1024 * KiB);
  for (let i = 0; i < big.length; i += 512) big.writeUInt32LE(i, i);
  assert.equal(await dev.write(d, 192 * KiB, big, true), 0);
  big.copy(model, 192 * KiB);
  assert.equal(await dev.trim(d, 100 * KiB, 80 * KiB), 0);
  model.fill(0, 100 * KiB, 180 * KiB);
  assert.equal(await dev.zero(d, 1500 * KiB, 300 * KiB, true), 0);
  model.fill(0, 1500 * KiB, 1800 * KiB);
  // A trim longer than the pool's max IO is split by the device.
  assert.equal(await dev.trim(d, c.size_bytes - 1536 * KiB, 1536 * KiB), 0);
  model.fill(0, c.size_bytes - 1536 * KiB);
  assert.equal(await dev.write(d, c.size_bytes - 4 * KiB, Buffer.alloc(4 * KiB, 0xee)), 0);
  model.fill(0xee, c.size_bytes - 4 * KiB);
  assert.equal(await dev.flush(d), 0);
  for (let off = 0; off < c.size_bytes; off += 256 * KiB) {
    const [s, data] = await dev.read(d, off, 256 * KiB);
    assert.equal(s, 0);
    assert.ok((data as Buffer).equals(model.subarray(off, off + 256 * KiB)), `read at ${off}`);
  }
  // Refusals: beyond the end, beyond max IO, fast zero.
  assert.equal((await dev.read(d, c.size_bytes - 512, 1024))[0], Errno.EINVAL);
  assert.equal(await dev.write(d, 0, Buffer.alloc(2048 * KiB)), Errno.EINVAL);
  assert.equal(await new Promise<number>((r) => d.writeZeroes(0, 4096, { fua: false, no_hole: false, fast_zero: true }, r)), Errno.EOPNOTSUPP);
  await c.waitSynced();
  assert.ok(c.dataArea(0).equals(model), 'member 1 holds the model');
  assert.ok(c.dataArea(1).equals(model), 'member 2 holds the model');
  const st = d.status();
  assert.equal(st.stats.writes, 26);
  assert.ok(st.stats.bytes_written > 1024 * KiB);
  assert.equal(st.stats.errors, 3);
  // Unmap: IO refused afterwards, the pool is free for another map.
  assert.equal(await new Promise<number>((r) => d.unmap(r)), 0);
  assert.equal(d.state, 'closed');
  assert.equal(await dev.write(d, 0, Buffer.alloc(4096)), Errno.ESHUTDOWN);
  assert.equal(c.client.inUse, false);
  for (const n of c.nodes) assert.equal(n.manager.store('brmr1')?.stateText(), 'open mapped');
});

test('map rules: first map needs every member; re-map tolerates a missing leg but refuses mapped beside unmapped', async (t) => {
  const c = cleanup(t, await makeBrmrCluster({ backend: 'memory', map: false }));
  const size_sectors = c.size_bytes / 512;
  const map = (): Promise<[number, BrmrDevice | null, string | null]> => new Promise((r) => mapDevice({ pool: c.client, size_sectors, log: c.log }, (s, x, w) => r([s, x, w])));
  const [ws, , wwhy] = await new Promise<[number, BrmrDevice | null, string | null]>((r) => mapDevice({ pool: c.client, size_sectors: size_sectors * 2 }, (s, x, w) => r([s, x, w])));
  assert.equal(ws, Errno.EINVAL);
  assert.match(wwhy ?? '', /differs/);
  const leg2 = c.nodes[1]?.channel;
  assert.ok(leg2 !== undefined && leg2 !== null);
  leg2.cut = true;
  const [s1, , why1] = await map();
  assert.equal(s1, Errno.EIO);
  assert.match(why1 ?? '', /first map needs every member: member 2/);
  assert.equal(c.client.inUse, false, 'a refused map leaves the pool free');
  leg2.cut = false;
  // MAP lost on member 2 after GET_PARAMS went through: member 1 is rolled back, so the
  // next map is a first map again and not a refused mixture.
  const send = leg2.command.bind(leg2);
  let user_cmds = 0;
  leg2.command = (cmd, cb) => {
    if (cmd.kind === 'user' && ++user_cmds === 2) return void setImmediate(() => cb(Errno.ENOTCONN, 0, 'dropped by the test'));
    send(cmd, cb);
  };
  const [sr, , whyr] = await map();
  leg2.command = send;
  assert.equal(sr, Errno.EIO);
  assert.match(whyr ?? '', /MAP failed: member 2/);
  assert.doesNotMatch(whyr ?? '', /not rolled back/);
  assert.equal(c.nodes[0]?.manager.store('brmr1')?.mapped, false, 'member 1 rolled back');
  const [s2, d2, why2] = await map();
  assert.equal(s2, 0, why2 ?? '');
  assert.equal(d2?.first_map, true);
  const pool_uuid = (d2).pool_uuid;
  assert.ok(c.nodes.every((n) => n.manager.store('brmr1')?.header.pool_uuid.equals(pool_uuid)), 'the first map gave every store the pool UUID');
  assert.equal((await map())[0], Errno.EBUSY, 'one device per pool');
  assert.equal(await new Promise<number>((r) => (d2).unmap(r)), 0);
  // Re-map after a graceful unmap: no MAP, same UUID.
  const [s3, d3, why3] = await map();
  assert.equal(s3, 0, why3 ?? '');
  assert.equal(d3?.first_map, false);
  assert.ok(d3?.pool_uuid.equals(pool_uuid));
  assert.equal(await new Promise<number>((r) => (d3).unmap(r)), 0);
  // Re-map with member 2 unreachable: tolerated.
  leg2.cut = true;
  const [s4, d4, why4] = await map();
  assert.equal(s4, 0, why4 ?? '');
  assert.equal(d4?.first_map, false);
  assert.equal(await new Promise<number>((r) => (d4).unmap(r)), 0);
  leg2.cut = false;
  // Member 2's store deleted and created again (instead of re-added): refused. A live member
  // (its client joined) is deleted only with force.
  const n2 = c.nodes[1];
  assert.ok(n2 !== undefined);
  assert.equal(await new Promise((r) => n2.manager.deleteStore('brmr1', (s) => r(s))), Errno.EBUSY);
  assert.deepEqual(await new Promise((r) => n2.manager.deleteStore('brmr1', (s, w) => r([s, w]), true)), [0, null]);
  const [cs, , cwhy] = await new Promise<[number, unknown, string | null]>((r) => n2.manager.createStore({ pool: 'brmr1', device: n2.path, mapped_size: c.size_bytes }, (s, x, w) => r([s, x, w])));
  assert.equal(cs, 0, cwhy ?? '');
  const [s5, , why5] = await map();
  assert.equal(s5, Errno.EINVAL);
  assert.match(why5 ?? '', /members 1 are mapped but 2 are not/);
});

test('degraded while a leg is cut, dirty block status for the missing member, healed and identical; disconnected without legs', async (t) => {
  const c = cleanup(t, await makeBrmrCluster({ backend: 'memory' }));
  const d = c.device as BrmrDevice;
  await c.waitSynced();
  await waitFor('client map of member 2 cleaned', () => c.client.maps.get(2)?.isEmpty() === true);
  assert.equal(d.degraded, false);
  const [s0, e0] = await status(d, 'rmr:dirty:2', 0, c.size_bytes);
  assert.equal(s0, 0);
  assert.deepEqual(e0, [{ length: c.size_bytes, flags: 0 }]);
  assert.equal((await status(d, 'rmr:dirty:9', 0, 4096))[0], Errno.EINVAL);
  assert.equal((await status(d, 'base:allocation', 0, 4096))[0], Errno.EINVAL);
  c.cut(1);
  assert.equal(await dev.write(d, 200 * KiB, Buffer.alloc(8 * KiB, 3)), 0, 'writes go on with one leg');
  assert.equal(c.legs[1]?.state, 'FAILED');
  assert.equal(d.degraded, true);
  assert.equal(d.state, 'ready');
  const [s1, e1] = await status(d, 'rmr:dirty:2', 0, c.size_bytes);
  assert.equal(s1, 0);
  assert.deepEqual(e1, [
    { length: 192 * KiB, flags: 0 },
    { length: 64 * KiB, flags: NBD_STATE_RMR_DIRTY },
    { length: c.size_bytes - 256 * KiB, flags: 0 },
  ]);
  const [, e2] = await status(d, 'rmr:dirty:2', 200 * KiB, 4 * KiB);
  assert.deepEqual(e2, [{ length: 4 * KiB, flags: NBD_STATE_RMR_DIRTY }], 'extents are clipped to the request');
  assert.deepEqual((await status(d, 'rmr:dirty:1', 0, c.size_bytes))[1], [{ length: c.size_bytes, flags: 0 }]);
  // Heal: the recovery tick brings the leg back through a map spread, the member resyncs.
  c.heal(1);
  await waitFor('not degraded', () => !d.degraded, 10_000);
  await c.waitSynced();
  const a0 = c.dataArea(0);
  const a1 = c.dataArea(1);
  if (!a0.equals(a1)) {
    let i = 0;
    while (a0[i] === a1[i]) i++;
    assert.fail(`members differ from byte ${i} (${a0[i]} vs ${a1[i]}); maps: ${JSON.stringify(c.nodes.map((n) => [...n.pool.maps.values()].map((m) => [m.member_id, m.dirtyCount])))}`);
  }
  assert.equal(c.dataArea(1)[200 * KiB], 3);
  // No leg at all: disconnected, IO fails instead of hanging.
  c.cut(0);
  c.cut(1);
  assert.notEqual(await dev.write(d, 0, Buffer.alloc(4096)), 0);
  assert.equal(d.state, 'disconnected');
  assert.equal((await dev.read(d, 0, 4096))[0], Errno.ENODEV);
});

test('over the real transport on loopback: map (USER channel on the wire), IO, flush, identical stores', async (t) => {
  const c = cleanup(t, await makeBrmrCluster({ backend: 'file', transport: 'loopback' }));
  const d = c.device as BrmrDevice;
  assert.equal(d.first_map, true);
  const model = Buffer.alloc(c.size_bytes);
  const ios: Promise<number>[] = [];
  for (let i = 0; i < 16; i++) {
    const data = Buffer.alloc(96 * KiB, 0x30 + i);
    data.copy(model, i * 128 * KiB + 16 * KiB);
    ios.push(dev.write(d, i * 128 * KiB + 16 * KiB, data, i % 2 === 0));
  }
  assert.deepEqual(await Promise.all(ios), new Array<number>(16).fill(0));
  assert.equal(await dev.zero(d, 0, 8 * KiB), 0);
  assert.equal(await dev.flush(d), 0);
  const [s, back] = await dev.read(d, 0, 1024 * KiB);
  assert.equal(s, 0);
  assert.ok((back as Buffer).equals(model.subarray(0, 1024 * KiB)));
  await c.waitSynced();
  assert.ok(c.dataArea(0).equals(model) && c.dataArea(1).equals(model));
  assert.equal(await new Promise<number>((r) => d.unmap(r)), 0);
  const [s2, d2, why2] = await c.map();
  assert.equal(s2, 0, why2 ?? '');
  assert.equal(d2?.first_map, false, 're-map over the wire');
});

test('backpressure: at most queue_depth IOs reach the pool, a bounded number wait, the rest get EBUSY', async (t) => {
  const c = cleanup(t, await makeBrmrCluster({ backend: 'memory', queue_depth: 4, max_waiting: 8 }));
  const d = c.device as BrmrDevice;
  let max_pool_inflight = 0;
  const results: Promise<number>[] = [];
  for (let i = 0; i < 20; i++) {
    results.push(
      dev.write(d, i * 8 * KiB, Buffer.alloc(8 * KiB, i + 1)).then((s) => {
        max_pool_inflight = Math.max(max_pool_inflight, c.client.status().in_flight);
        return s;
      }),
    );
  }
  const st = d.status();
  assert.equal(st.in_flight, 4);
  assert.equal(st.waiting, 8);
  assert.equal(c.client.status().in_flight, 4);
  const all = await Promise.all(results);
  assert.equal(all.filter((s) => s === 0).length, 12);
  assert.equal(all.filter((s) => s === Errno.EBUSY).length, 8);
  assert.ok(max_pool_inflight <= 4, `the pool saw ${max_pool_inflight} IOs at once`);
  assert.equal(d.status().stats.busy, 8);
  assert.equal(d.status().stats.max_waiting_seen, 8);
  for (let i = 0; i < 12; i++) {
    const [s, data] = await dev.read(d, i * 8 * KiB, 8 * KiB);
    assert.equal(s, 0);
    assert.ok((data as Buffer).equals(Buffer.alloc(8 * KiB, i + 1)));
  }
});
