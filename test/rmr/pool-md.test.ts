// pool_md round-trips through its codec and through the alternating slots of a memory disk;
// invalid content is refused with a reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SERVER_POOL_STATES, decodePoolMd, emptySrvMd, encodePoolMd, type PoolMd } from '../../src/rmr/protocol/pool-md.js';
import { PoolMdStore } from '../../src/rmr/server/pool-md-store.js';
import { MAP_UPDATE_STATES } from '../../src/rmr/protocol/pool-md.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { MemDisk } from '../../src/sim/mem-disk.js';

const mdArb: fc.Arbitrary<PoolMd> = fc
  .record({
    pool_name: fc.stringMatching(/^[a-z0-9-]{1,30}$/),
    uuid: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    group_id: fc.integer({ min: 0, max: 0xffffffff }),
    shift: fc.integer({ min: 12, max: 20 }),
    sectors: fc.integer({ min: 1, max: 2 ** 37 }),
    qd: fc.integer({ min: 1, max: 512 }),
    map_ver: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    members: fc.uniqueArray(fc.integer({ min: 1, max: 255 }), { maxLength: 4 }),
    states: fc.array(fc.tuple(fc.constantFrom(...SERVER_POOL_STATES), fc.constantFrom(...MAP_UPDATE_STATES), fc.boolean(), fc.boolean()), { minLength: 4, maxLength: 4 }),
  })
  .map((r) => ({
    header: {
      pool_name: r.pool_name,
      pool_uuid: Buffer.from(r.uuid),
      group_id: r.group_id,
      chunk_size: 2 ** r.shift,
      mapped_size: r.sectors * 512,
      queue_depth: r.qd,
      map_ver: r.map_ver,
    },
    srv_md: Array.from({ length: 4 }, (_, i) => {
      const id = r.members[i];
      if (id === undefined) return emptySrvMd();
      const [srv_state, map_update_state, store_state, discard_entries] = r.states[i] as [typeof SERVER_POOL_STATES[number], typeof MAP_UPDATE_STATES[number], boolean, boolean];
      return { member_id: id, srv_state, map_update_state, store_state, discard_entries, map_ver: r.map_ver, mapped_size: r.sectors * 512 };
    }),
  }));

test('pool_md round-trips; mutated bytes are refused or canonical', () => {
  fc.assert(
    fc.property(mdArb, fc.nat(), fc.integer({ min: 0, max: 255 }), (md, at, val) => {
      const b = encodePoolMd(md);
      const d = decodePoolMd(b);
      if (typeof d === 'string') assert.fail(d);
      assert.deepEqual(encodePoolMd(d), b);
      assert.equal(d.header.pool_name, md.header.pool_name);
      assert.deepEqual(d.srv_md, md.srv_md);
      const m = Buffer.from(b);
      m[at % m.length] = val;
      const e = decodePoolMd(m);
      if (typeof e !== 'string') assert.deepEqual(encodePoolMd(e), m);
    }),
  );
});

test('a member listed twice or a bad chunk size is refused', () => {
  const md: PoolMd = {
    header: { pool_name: 'p', pool_uuid: Buffer.alloc(16), group_id: 1, chunk_size: 131072, mapped_size: 1 << 30, queue_depth: 128, map_ver: 1 },
    srv_md: [emptySrvMd(), emptySrvMd(), emptySrvMd(), emptySrvMd()],
  };
  (md.srv_md[0] as { member_id: number }).member_id = 3;
  (md.srv_md[2] as { member_id: number }).member_id = 3;
  assert.throws(() => encodePoolMd(md), /twice/);
  (md.srv_md[2] as { member_id: number }).member_id = 0;
  md.header.chunk_size = 100_000;
  assert.throws(() => encodePoolMd(md), /power of two/);
});

/** pool_md of a one-member pool (member 1 NORMAL with its store), map_ver 1. */
function onePoolMd(): PoolMd {
  return {
    header: { pool_name: 'pool1', pool_uuid: Buffer.alloc(16, 1), group_id: 7, chunk_size: 131072, mapped_size: 1 << 30, queue_depth: 128, map_ver: 1 },
    srv_md: [{ ...emptySrvMd(), member_id: 1, srv_state: 'NORMAL', store_state: true }, emptySrvMd(), emptySrvMd(), emptySrvMd()],
  };
}

test('pool_md persists in alternating slots and survives a torn update', () => {
  const clock = new SimClock();
  const disk = new MemDisk(1 << 20, clock);
  const store = new PoolMdStore(disk, 4096);
  const md = onePoolMd();
  store.store(md, (s) => assert.equal(s, 0));
  clock.runUntil(1);
  md.header.map_ver = 2;
  store.store(md, (s) => assert.equal(s, 0));
  clock.runUntil(2);
  // Tear the newest copy (slot 1).
  disk.write(4096 + 4096 + 30, Buffer.alloc(8, 0xff), true, () => undefined);
  clock.runUntil(3);
  let got: PoolMd | null = null;
  new PoolMdStore(disk, 4096).load((s, m) => {
    assert.equal(s, 0);
    got = m;
  });
  clock.runUntil(4);
  assert.equal((got as PoolMd | null)?.header.map_ver, 1, 'the previous good copy');
});

test('storing pool_md equal to the newest good copy costs no IO', () => {
  const clock = new SimClock();
  const disk = new MemDisk(1 << 20, clock);
  const store = new PoolMdStore(disk, 4096);
  const md = onePoolMd();
  const put = (): void => {
    store.store(md, (s) => assert.equal(s, 0));
    clock.runUntil(clock.now() + 1);
  };
  put();
  const w = disk.stats.writes;
  put();
  put();
  assert.equal(disk.stats.writes, w, 'unchanged: no write');
  md.srv_md[0] = { ...emptySrvMd(), member_id: 1, srv_state: 'NO_IO', store_state: true };
  put();
  assert.equal(disk.stats.writes, w + 1, 'changed: one write');
});
