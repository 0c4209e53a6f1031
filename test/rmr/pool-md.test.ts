// pool_md round-trips through its codec and through the alternating slots of a memory disk;
// invalid content is refused with a reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { POOL_MD_MAGIC, SERVER_POOL_STATES, decodePoolMd, emptySrvMd, encodePoolMd, legacyOwner, type PoolMd } from '../../src/rmr/protocol/pool-md.js';
import { MD_PAGE, encodeSlotPage } from '../../src/rmr/server/md-slots.js';
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
    owner: fc.option(
      fc.record({
        epoch: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        id: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b.map((x, i) => (i === 0 ? x | 1 : x)))),
        name: fc.stringMatching(/^[a-z0-9-]{1,64}$/),
        released: fc.boolean(),
        back: fc.nat(),
        svc_ver: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      }),
    ),
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
    owner:
      r.owner === null
        ? legacyOwner([])
        : {
            epoch: r.owner.epoch,
            id: r.owner.id,
            name: r.owner.name,
            released: r.owner.released,
            maps_epoch: r.owner.epoch - (r.owner.back % r.owner.epoch),
            svc_epoch: r.owner.epoch,
            svc_ver: r.owner.svc_ver,
            svc: r.members.slice(0, 1 + (r.owner.back % 4)),
          },
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
      assert.deepEqual(d.owner, md.owner);
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
    owner: legacyOwner([]),
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
    owner: legacyOwner([{ ...emptySrvMd(), member_id: 1 }]),
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

test('the owner section: garbage is refused (an epoch without an id, maps or service beyond the owner epoch)', () => {
  const md = onePoolMd();
  const id = Buffer.alloc(16, 3);
  const good = { epoch: 5, id, name: 'rmr-a', released: false, maps_epoch: 5, svc_epoch: 4, svc_ver: 9, svc: [1] };
  assert.deepEqual((decodePoolMd(encodePoolMd({ ...md, owner: good })) as PoolMd).owner, good);
  for (const bad of [
    { ...good, id: Buffer.alloc(16) },
    { ...good, epoch: 0 },
    { ...good, name: '' },
    { ...good, maps_epoch: 6 },
    { ...good, svc_epoch: 6 },
    { ...good, svc: [1, 1] },
  ]) {
    assert.throws(() => encodePoolMd({ ...md, owner: bad }), RangeError, JSON.stringify(bad));
  }
  const b = encodePoolMd({ ...md, owner: good });
  b[b.length - 5 - 24 - 1] = 2; // owner_flags: an unknown bit
  assert.match(decodePoolMd(b) as string, /owner flags/);
  assert.match(decodePoolMd(encodePoolMd(md), 3) as string, /version 3/);
});

test('a version-1 pool_md loads with the legacy owner (no owner, every member in service); the next store writes version 2', () => {
  const clock = new SimClock();
  const disk = new MemDisk(1 << 20, clock);
  const md = onePoolMd();
  md.srv_md[1] = { ...emptySrvMd(), member_id: 3, srv_state: 'NO_IO' };
  // Version 1 is version 2 without the owner section (56 bytes with an empty owner name).
  const v1 = encodePoolMd(md).subarray(0, -56);
  assert.equal(decodePoolMd(v1, 1) !== null && typeof decodePoolMd(v1, 1) !== 'string', true);
  assert.equal(typeof decodePoolMd(v1), 'string', 'not a version-2 record');
  disk.write(4096, encodeSlotPage(POOL_MD_MAGIC, 1, 7, v1), true, () => undefined);
  clock.runUntil(1);
  const store = new PoolMdStore(disk, 4096);
  let got: PoolMd | null = null;
  store.load((s, m, notes) => {
    assert.equal(s, 0);
    assert.deepEqual(notes, []);
    got = m;
  });
  clock.runUntil(2);
  const loaded = got as PoolMd | null;
  assert.ok(loaded !== null);
  assert.deepEqual(loaded.header, md.header);
  assert.deepEqual(loaded.srv_md, md.srv_md);
  assert.deepEqual(loaded.owner, { epoch: 0, id: Buffer.alloc(16), name: '', released: false, maps_epoch: 0, svc_epoch: 0, svc_ver: 0, svc: [1, 3] });
  // Storing the same content is not "unchanged": the record must become version 2.
  const w = disk.stats.writes;
  store.store(loaded, (s) => assert.equal(s, 0));
  clock.runUntil(3);
  assert.equal(disk.stats.writes, w + 1);
  let page: Buffer | null = null;
  disk.read(4096 + MD_PAGE, MD_PAGE, (_s, d) => (page = d));
  clock.runUntil(4);
  assert.equal((page as Buffer | null)?.readUInt16LE(4), 2);
  let again: PoolMd | null = null;
  new PoolMdStore(disk, 4096).load((_s, m) => (again = m));
  clock.runUntil(5);
  assert.deepEqual((again as PoolMd | null)?.owner, loaded.owner);
});
