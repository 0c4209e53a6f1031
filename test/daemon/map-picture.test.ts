// Map pictures against a naive count: every cell holds exactly the dirty chunks of its range,
// whatever the page forms (absent, full, mixed) and however cells and pages overlap; the
// version changes with every change of the dirty set and only then; a 16 TiB map (2^27
// chunks of 128 KiB) and a 64 TiB map of 4 KiB chunks summarise through their pages.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CHUNKS_PER_PAGE, DirtyMap, PAGE_BYTES } from '../../src/rmr/dirty-map.js';
import { cellCounts, cellLayout, mapPicture, mapPictureDir, mapVersion, PICTURE_CELLS } from '../../src/daemon/map-picture.js';
import { ControlTree } from '../../src/daemon/control-tree.js';

function naive(m: DirtyMap, max: number): number[] {
  const { chunks_per_cell, cells } = cellLayout(m.no_of_chunks, max);
  const out = new Array<number>(cells).fill(0);
  for (let c = m.nextDirty(0); c >= 0; c = m.nextDirty(c + 1)) {
    const i = Math.floor(c / chunks_per_cell);
    out[i] = (out[i] ?? 0) + 1;
  }
  return out;
}

test('cells count exactly the dirty chunks of their ranges (random maps, random cell counts)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 * CHUNKS_PER_PAGE + 77 }),
      fc.integer({ min: 1, max: 2000 }),
      fc.array(fc.tuple(fc.boolean(), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })), { maxLength: 12 }),
      (chunks, max, ops) => {
        const m = new DirtyMap(1, chunks);
        for (const [set, a, b] of ops) {
          const first = Math.floor(a * chunks) % chunks;
          const count = Math.floor(b * (chunks - first));
          if (set) m.setDirty(first, count);
          else m.clear(first, count);
        }
        const { cells } = cellCounts(m, max);
        assert.deepEqual(Array.from(cells), naive(m, max));
        assert.equal(Array.from(cells).reduce((s, x) => s + x, 0), m.dirtyCount);
      },
    ),
    { numRuns: 150 },
  );
});

test('the version changes with the dirty set and only with it', () => {
  const m = new DirtyMap(2, 5000);
  const v0 = mapVersion(m);
  assert.equal(mapVersion(m), v0);
  m.setDirty(10, 5);
  const v1 = mapVersion(m);
  assert.notEqual(v1, v0);
  assert.equal(m.setDirty(10, 5), 0, 'already dirty');
  assert.equal(mapVersion(m), v1, 'no change, same version');
  m.entry(3);
  assert.equal(mapVersion(m), v1, 'sync entries are not the dirty set');
  m.clear(12, 1);
  assert.notEqual(mapVersion(m), v1);
  const page = new Uint8Array(PAGE_BYTES);
  page[0] = 1;
  const before = mapVersion(m);
  assert.equal(m.decodePage(0, page, 'overwrite'), null);
  assert.notEqual(mapVersion(m), before, 'a page load changes the version');
  // Another map object never shares a version with this one, even at the same change count.
  const other = new DirtyMap(2, 5000);
  assert.notEqual(mapVersion(other).split('.')[0], mapVersion(m).split('.')[0]);
  // Cached by version: the same object until the map changes.
  const p1 = mapPicture(2, m);
  assert.equal(mapPicture(2, m), p1);
  m.setAll();
  const p2 = mapPicture(2, m);
  assert.notEqual(p2, p1);
  assert.equal(p2.dirty, 5000);
  assert.deepEqual(p2.cells, naive(m, PICTURE_CELLS));
});

test('a 16 TiB map of 128 KiB chunks and a 64 TiB map of 4 KiB chunks summarise through their pages', () => {
  const chunks16 = 2 ** 27;
  const m = new DirtyMap(3, chunks16);
  m.setDirty(0, 3 * CHUNKS_PER_PAGE + 5); // three full pages and a mixed one
  for (let c = 50_000_000; c < 50_000_000 + 100_000; c += 7) m.setDirty(c, 1); // scattered
  m.setDirty(chunks16 - 10, 10); // the tail
  let encoded = 0;
  const enc = m.encodePage.bind(m);
  m.encodePage = (p, out) => (encoded++, enc(p, out));
  const { chunks_per_cell, cells } = cellCounts(m);
  assert.equal(chunks_per_cell, chunks16 / PICTURE_CELLS);
  assert.equal(cells.length, PICTURE_CELLS);
  assert.equal(encoded, 0, 'every page lies inside one cell: no bitmap is read');
  assert.equal(cells.reduce((s, x) => s + x, 0), m.dirtyCount);
  assert.equal(cells[0], 3 * CHUNKS_PER_PAGE + 5);
  assert.equal(cells[PICTURE_CELLS - 1], 10);
  const at = Math.floor(50_000_000 / chunks_per_cell);
  assert.equal((cells[at] as number) + (cells[at + 1] ?? 0), Math.ceil(100_000 / 7));
  const big = new DirtyMap(4, 2 ** 34); // 64 TiB of 4 KiB chunks: 524,288 pages
  big.setAll();
  big.clear(2 ** 33, 2 ** 20);
  const b = cellCounts(big);
  assert.equal(b.cells.reduce((s, x) => s + x, 0), big.dirtyCount);
  assert.equal(b.cells[PICTURE_CELLS / 2], 2 ** 24 - 2 ** 20);
});

test('map_picture/ in the control tree: versions, then one member picture', async () => {
  const maps = new Map([
    [1, new DirtyMap(1, 100)],
    [2, new DirtyMap(2, 100)],
  ]);
  maps.get(2)?.setDirty(40, 20);
  const t = new ControlTree();
  t.mount('p/map_picture', mapPictureDir(() => maps));
  assert.deepEqual((await t.ls('p/map_picture')).map((e) => e.name), ['versions', '1', '2']);
  const v = (await t.readJson('p/map_picture/versions')) as { members: { member_id: number; version: string; dirty: number }[] };
  assert.deepEqual(v.members.map((x) => [x.member_id, x.dirty]), [[1, 0], [2, 20]]);
  const p = (await t.readJson('p/map_picture/2')) as { version: string; cells: number[]; chunks_per_cell: number };
  assert.equal(p.version, v.members[1]?.version);
  assert.equal(p.chunks_per_cell, 1);
  assert.equal(p.cells.filter((x) => x === 1).length, 20);
  assert.match(await t.read('p/map_picture/2'), /^member 2: version \S+ 20\/100 dirty, 1 chunks per cell\n0 0 /);
  await assert.rejects(t.read('p/map_picture/3'), /ENOENT|no such/i);
});
