// The dirty map against a Set<number> model under random operations, page serialization
// round trips, and the memory bound at 64 TiB with 128 KiB chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CHUNKS_PER_PAGE, DirtyMap, PAGE_BYTES } from '../../src/rmr/protocol/dirty-map.js';
import { crc32c } from '../../src/util/crc32c.js';

type Op =
  | { k: 'set'; first: number; count: number }
  | { k: 'clear'; first: number; count: number }
  | { k: 'setAll' }
  | { k: 'clearAll' }
  | { k: 'roundtrip'; page: number; mode: 'overwrite' | 'merge' }
  | { k: 'unsynced'; first: number; count: number }
  | { k: 'zeroPage'; page: number };

function opArb(chunks: number): fc.Arbitrary<Op> {
  const range = fc
    .tuple(fc.integer({ min: 0, max: chunks - 1 }), fc.integer({ min: 0, max: Math.min(chunks, 3 * CHUNKS_PER_PAGE) }))
    .map(([first, count]) => ({ first, count: Math.min(count, chunks - first) }));
  const pages = Math.ceil(chunks / CHUNKS_PER_PAGE);
  return fc.oneof(
    { weight: 5, arbitrary: range.map((r) => ({ k: 'set' as const, ...r })) },
    { weight: 5, arbitrary: range.map((r) => ({ k: 'clear' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ k: 'setAll' as const }) },
    { weight: 1, arbitrary: fc.constant({ k: 'clearAll' as const }) },
    {
      weight: 2,
      arbitrary: fc.record({ k: fc.constant('roundtrip' as const), page: fc.integer({ min: 0, max: pages - 1 }), mode: fc.constantFrom('overwrite' as const, 'merge' as const) }),
    },
    { weight: 3, arbitrary: range.map((r) => ({ k: 'unsynced' as const, ...r })) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('zeroPage' as const), page: fc.integer({ min: 0, max: pages - 1 }) }) },
  );
}

test('dirty map matches a Set model under random operations (the unsynced filter too, and page checksums)', () => {
  const sizes = fc.constantFrom(1, 7, 100, CHUNKS_PER_PAGE - 1, CHUNKS_PER_PAGE, CHUNKS_PER_PAGE + 13, 3 * CHUNKS_PER_PAGE + 5);
  fc.assert(
    fc.property(sizes.chain((n) => fc.tuple(fc.constant(n), fc.array(opArb(n), { maxLength: 30 }))), ([n, ops]) => {
      const map = new DirtyMap(3, n);
      const model = new Set<number>();
      // The unsynced chunks: marked by markUnsynced, gone when the chunk is cleaned.
      const unsynced = new Set<number>();
      for (const op of ops) {
        switch (op.k) {
          case 'set': {
            let added = 0;
            for (let c = op.first; c < op.first + op.count; c++) {
              if (!model.has(c)) added++;
              model.add(c);
            }
            assert.equal(map.setDirty(op.first, op.count), added);
            break;
          }
          case 'clear': {
            let removed = 0;
            for (let c = op.first; c < op.first + op.count; c++) {
              if (model.delete(c)) removed++;
              unsynced.delete(c);
            }
            assert.equal(map.clear(op.first, op.count), removed);
            break;
          }
          case 'unsynced': {
            let added = 0;
            for (let c = op.first; c < op.first + op.count; c++) {
              if (!model.has(c)) added++;
              model.add(c);
              unsynced.add(c);
            }
            assert.equal(map.markUnsynced(op.first, op.count), added);
            break;
          }
          case 'zeroPage': {
            // A received page that is clean: its chunks leave both sets.
            assert.equal(map.decodePage(op.page, new Uint8Array(PAGE_BYTES), 'overwrite'), null);
            for (let c = op.page * CHUNKS_PER_PAGE; c < Math.min(n, (op.page + 1) * CHUNKS_PER_PAGE); c++) {
              model.delete(c);
              unsynced.delete(c);
            }
            break;
          }
          case 'setAll':
            map.setAll();
            for (let c = 0; c < n; c++) model.add(c);
            break;
          case 'clearAll':
            map.clearAll();
            model.clear();
            unsynced.clear();
            break;
          case 'roundtrip': {
            // Encode a page, scramble it in a copy of the map, decode it back.
            const page = map.encodePage(op.page);
            const other = new DirtyMap(3, n);
            assert.equal(other.decodePage(op.page, page, op.mode), null);
            assert.deepEqual(other.encodePage(op.page), page);
            assert.equal(map.decodePage(op.page, page, op.mode), null); // idempotent on itself
            break;
          }
        }
        assert.equal(map.dirtyCount, model.size);
        assert.equal(map.isEmpty(), model.size === 0);
        assert.equal(map.isFull(), model.size === n);
        assert.equal(map.unsyncedCount, unsynced.size);
        // The checksum MAP_TEST compares: the CRC32C of the page as it travels.
        const p = ops.indexOf(op) % map.page_count;
        assert.equal(map.pageCrc(p), crc32c(map.encodePage(p)), `page ${p} checksum`);
      }
      const fromUnsynced: number[] = [];
      for (const [first, count] of map.unsyncedRuns()) for (let c = first; c < first + count; c++) fromUnsynced.push(c);
      assert.deepEqual(fromUnsynced, [...unsynced].sort((a, b) => a - b));
      // Full agreement, point by point and through the iterator.
      const seen: number[] = [];
      for (let c = map.nextDirty(0); c !== -1; c = map.nextDirty(c + 1)) seen.push(c);
      assert.deepEqual(seen, [...model].sort((a, b) => a - b));
      for (let c = 0; c < n; c += Math.max(1, Math.floor(n / 500))) assert.equal(map.isDirty(c), model.has(c), `chunk ${c}`);
      // Runs: maximal, in order, covering exactly the model.
      const runs = map.runs();
      const fromRuns: number[] = [];
      for (const [first, count] of runs) {
        assert.ok(count > 0);
        assert.ok(first === 0 || !model.has(first - 1), `run at ${first} is maximal`);
        assert.ok(first + count === n || !model.has(first + count), `run at ${first}+${count} is maximal`);
        for (let c = first; c < first + count; c++) fromRuns.push(c);
      }
      assert.deepEqual(fromRuns, seen);
    }),
    { numRuns: 300 },
  );
});

test('merge adds dirtiness, overwrite replaces it', () => {
  const n = CHUNKS_PER_PAGE + 10;
  const a = new DirtyMap(1, n);
  const b = new DirtyMap(2, n);
  a.setDirty(5, 3);
  b.setDirty(100, 1);
  b.setDirty(CHUNKS_PER_PAGE + 2, 1);
  assert.equal(a.decodePage(0, b.encodePage(0), 'merge'), null);
  assert.equal(a.dirtyCount, 4);
  assert.equal(a.decodePage(0, b.encodePage(0), 'overwrite'), null);
  assert.equal(a.dirtyCount, 1);
  assert.equal(a.isDirty(100), true);
  assert.equal(a.decodePage(1, b.encodePage(1), 'overwrite'), null);
  assert.equal(a.isDirty(CHUNKS_PER_PAGE + 2), true);
});

test('invalid pages are refused with a reason and change nothing', () => {
  const n = CHUNKS_PER_PAGE + 10;
  const m = new DirtyMap(1, n);
  m.setDirty(3, 1);
  const bad = new Uint8Array(PAGE_BYTES);
  bad[4000] = 1; // far beyond chunk 10 of the short last page
  assert.match(m.decodePage(1, bad, 'overwrite') ?? '', /beyond the last chunk/);
  const bad2 = new Uint8Array(PAGE_BYTES);
  bad2[1] = 0x04; // chunk 10 of the last page: one past the end
  assert.match(m.decodePage(1, bad2, 'merge') ?? '', /beyond the last chunk/);
  assert.match(m.decodePage(2, new Uint8Array(PAGE_BYTES), 'merge') ?? '', /outside/);
  assert.match(m.decodePage(0, new Uint8Array(10), 'merge') ?? '', /expected 4096/);
  assert.equal(m.dirtyCount, 1);
  assert.throws(() => m.setDirty(n - 1, 2), RangeError);
  assert.throws(() => m.isDirty(-1), RangeError);
});

test('a 64 TiB map with 128 KiB chunks: full and empty cost no bitmap memory', () => {
  const chunks = (64 * 2 ** 40) / (128 * 1024);
  assert.equal(chunks, 536_870_912);
  const m = new DirtyMap(1, chunks);
  m.setAll();
  assert.equal(m.dirtyCount, chunks);
  assert.equal(m.summary().materialised_pages, 0);
  // Syncing a few chunks materialises only their pages.
  m.clear(0, 10);
  m.clear(chunks - 1, 1);
  assert.equal(m.summary().materialised_pages, 2);
  assert.equal(m.nextDirty(0), 10);
  assert.equal(m.dirtyCount, chunks - 11);
  m.clearAll();
  m.setDirty(chunks - 2, 2);
  assert.equal(m.nextDirty(0), chunks - 2);
  assert.equal(m.summary().materialised_pages, 1);
});

test('sync entries: created on demand, taken once', () => {
  const m = new DirtyMap<string>(1, 100);
  assert.equal(m.peekEntry(5), undefined);
  const e = m.entry(5);
  assert.equal(e.sync_cnt, -1);
  e.sync_cnt = 0;
  e.waiters.push('req-1');
  assert.equal(m.entry(5), e);
  assert.equal(m.summary().sync_entries, 1);
  assert.deepEqual(m.takeEntry(5)?.waiters, ['req-1']);
  assert.equal(m.takeEntry(5), undefined);
  assert.equal(m.entryCount, 0);
});

test('the timestamp moves only when the map changes', () => {
  const m = new DirtyMap(1, 100);
  m.setDirty(1, 1, 10);
  assert.equal(m.ts, 10);
  m.setDirty(1, 1, 20);
  assert.equal(m.ts, 10, 'no change, no new timestamp');
  m.clear(1, 1, 30);
  assert.equal(m.ts, 30);
});

test('takeBitsFrom: the map version moves on both maps, and unsynced chunks now clean leave the filter', () => {
  const a = new DirtyMap(2, 3 * CHUNKS_PER_PAGE);
  a.markUnsynced(0, a.no_of_chunks);
  const from = new DirtyMap(2, a.no_of_chunks);
  from.setDirty(10, 5);
  from.setDirty(CHUNKS_PER_PAGE + 3, 1);
  const [va, vf] = [a.version, from.version];
  a.takeBitsFrom(from);
  assert.ok(a.version > va && from.version > vf, 'both dirty sets changed: the map pictures must see it');
  assert.deepEqual(a.unsyncedRuns(), [[10, 5], [CHUNKS_PER_PAGE + 3, 1]]);
  assert.equal(from.dirtyCount, 0);
});
