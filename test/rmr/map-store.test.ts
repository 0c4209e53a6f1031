// Dirty maps persisted through a MetaStore: round trips of random maps, compact images for
// clean and full pages, and crash safety: a crash in the middle of a store leaves the
// previous maps loadable, a corrupted image is reported, never read as clean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DirtyMap, CHUNKS_PER_PAGE } from '../../src/rmr/protocol/dirty-map.js';
import { MapStore, decodeMapImage, encodeMapImage, mapStoreBytes } from '../../src/rmr/server/map-store.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemDisk } from '../../src/sim/mem-disk.js';

const N = 3 * CHUNKS_PER_PAGE + 77;

function randomMaps(r: SeededRandom, count: number): DirtyMap<unknown>[] {
  return Array.from({ length: count }, (_, i) => {
    const m = new DirtyMap<unknown>(i + 1, N);
    const mode = r.int(4);
    if (mode === 1) m.setAll();
    for (let k = 0; k < r.int(20); k++) {
      const first = r.int(N);
      const len = 1 + r.int(Math.min(N - first, 5000));
      if (r.float() < 0.6) m.setDirty(first, len);
      else m.clear(first, len);
    }
    return m;
  });
}

function same(a: DirtyMap<unknown>[], b: DirtyMap<unknown>[]): void {
  assert.equal(a.length, b.length);
  a.forEach((m, i) => {
    const o = b[i] as DirtyMap<unknown>;
    assert.equal(o.member_id, m.member_id);
    assert.equal(o.dirtyCount, m.dirtyCount);
    for (let p = 0; p < m.page_count; p++) assert.deepEqual(o.encodePage(p), m.encodePage(p));
  });
}

test('map images round-trip and stay small for clean and full pages', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1e9 }), fc.integer({ min: 0, max: 4 }), (seed, count) => {
      const maps = randomMaps(new SeededRandom(seed), count);
      const img = encodeMapImage(maps);
      const back = decodeMapImage(img, N);
      if (typeof back === 'string') assert.fail(back);
      same(maps, back);
    }),
    { numRuns: 100 },
  );
  const full = new DirtyMap<unknown>(1, N);
  full.setAll();
  assert.ok(encodeMapImage([full, new DirtyMap<unknown>(2, N)]).length < 64, 'full and clean pages cost a byte each');
});

test('maps persist across a reopen; a torn image in the other bank is harmless; a corrupt live image is reported', () => {
  const clock = new SimClock();
  const r = new SeededRandom(5);
  const pages = Math.ceil(N / CHUNKS_PER_PAGE);
  const disk = new MemDisk(mapStoreBytes(pages) + 4096, clock, r);
  const BASE = 4096;
  const bank = (mapStoreBytes(pages) - 2 * 4096) / 2;
  const bankOffset = (b: number): number => BASE + 2 * 4096 + b * bank;
  const load = (): { s: number; maps: DirtyMap<unknown>[] | null; ver: number; why: string | null } => {
    let out: { s: number; maps: DirtyMap<unknown>[] | null; ver: number; why: string | null } | null = null;
    new MapStore(disk, BASE, pages).load(N, (s, maps, ver, why) => (out = { s, maps, ver, why }));
    clock.runUntil(clock.now() + 10);
    assert.ok(out !== null);
    return out;
  };
  assert.equal(load().maps, null, 'nothing stored yet');
  const store = new MapStore(disk, BASE, pages);
  const v1 = randomMaps(r, 3);
  store.store(v1, 7, (s) => assert.equal(s, 0)); // bank 0
  clock.runUntil(clock.now() + 10);
  let got = load();
  same(v1, got.maps as DirtyMap<unknown>[]);
  assert.equal(got.ver, 7);
  // A crash while the next image is being written leaves garbage in bank 1 and the
  // directory still pointing at bank 0.
  disk.write(bankOffset(1), r.bytes(8000), true, () => undefined);
  clock.runUntil(clock.now() + 10);
  same(v1, load().maps as DirtyMap<unknown>[]);
  const v2 = randomMaps(r, 4);
  store.store(v2, 9, (s) => assert.equal(s, 0)); // bank 1, then the directory flips
  clock.runUntil(clock.now() + 10);
  got = load();
  same(v2, got.maps as DirtyMap<unknown>[]);
  assert.equal(got.ver, 9);
  // Corruption of the live image is reported, never read as "clean".
  disk.write(bankOffset(1) + 3, Buffer.from([0xee]), true, () => undefined);
  clock.runUntil(clock.now() + 10);
  got = load();
  assert.notEqual(got.s, 0);
  assert.match(got.why ?? '', /checksum/);
});

test('storing maps equal to the stored ones costs no IO; a failed store is not taken as durable', () => {
  const clock = new SimClock();
  const pages = Math.ceil(N / CHUNKS_PER_PAGE);
  const disk = new MemDisk(mapStoreBytes(pages) + 4096, clock, new SeededRandom(9));
  const store = new MapStore(disk, 4096, pages);
  const m = new DirtyMap<unknown>(1, N);
  m.setDirty(10, 3);
  const statuses: number[] = [];
  const put = (ver: number): void => {
    store.store([m], ver, (s) => statuses.push(s));
    clock.runUntil(clock.now() + 10);
  };
  put(3);
  const after_first = disk.stats.writes;
  assert.equal(after_first, 2, 'image and directory');
  put(3);
  assert.equal(disk.stats.writes, after_first, 'the same maps and version: nothing written');
  put(4);
  assert.equal(disk.stats.writes, after_first + 2, 'a new version is written');
  m.clear(10, 1);
  disk.faults.write_error_rate = 1;
  put(4);
  disk.faults.write_error_rate = 0;
  put(4);
  assert.deepEqual(statuses.slice(-2).map((s) => s === 0), [false, true]);
  assert.equal(disk.stats.writes, after_first + 2 + 1 + 2, 'after a failed store the same maps are written again');
  // A reopened store knows what is on disk, too.
  const again = new MapStore(disk, 4096, pages);
  again.load(N, () => undefined);
  clock.runUntil(clock.now() + 10);
  const before = disk.stats.writes;
  again.store([m], 4, (s) => assert.equal(s, 0));
  clock.runUntil(clock.now() + 10);
  assert.equal(disk.stats.writes, before, 'loaded maps equal to the stored ones: nothing written');
});
