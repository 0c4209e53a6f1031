// compareMaps against a Set model: the chunks it reports differing are exactly the
// symmetric difference of the two dirty sets; formatDifferences says "same" only then.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DirtyMap } from '../../src/rmr/protocol/dirty-map.js';
import { compareMaps, formatDifferences, readNodeMaps } from '../../src/rmr/client/map-compare.js';
import { READ_MAP_HEADER, legCommandToWire } from '../../src/rmr/protocol/leg-commands.js';
import { encodeCmd } from '../../src/rmr/protocol/msg.js';

const CHUNKS = 70_000; // more than two bitmap pages

function mapOf(id: number, ranges: [number, number][]): { map: DirtyMap; set: Set<number> } {
  const map = new DirtyMap(id, CHUNKS);
  const set = new Set<number>();
  for (const [first, count] of ranges) {
    const n = Math.min(count, CHUNKS - first);
    map.setDirty(first, n);
    for (let c = first; c < first + n; c++) set.add(c);
  }
  return { map, set };
}

const ranges = fc.array(fc.tuple(fc.integer({ min: 0, max: CHUNKS - 1 }), fc.integer({ min: 1, max: 40_000 })), { maxLength: 6 });

test('compareMaps reports exactly the chunks dirty on one side only', () => {
  fc.assert(
    fc.property(ranges, ranges, (ra, rb) => {
      const a = mapOf(3, ra);
      const b = mapOf(3, rb);
      const diffs = compareMaps(new Map([[3, a.map]]), new Map([[3, b.map]]));
      const sym = [...a.set].filter((c) => !b.set.has(c)).concat([...b.set].filter((c) => !a.set.has(c))).sort((x, y) => x - y);
      if (sym.length === 0) {
        assert.deepEqual(diffs, []);
        assert.equal(formatDifferences('leg', diffs), 'leg: same');
      } else {
        assert.equal(diffs.length, 1);
        assert.equal(diffs[0]?.differing, sym.length);
        assert.deepEqual(diffs[0]?.first, sym.slice(0, 16));
        assert.equal(diffs[0]?.ours, a.set.size);
        assert.equal(diffs[0]?.theirs, b.set.size);
      }
    }),
    { numRuns: 200 },
  );
});

test('a member known on one side only is a difference', () => {
  const a = mapOf(1, [[5, 3]]);
  const diffs = compareMaps(new Map([[1, a.map]]), new Map());
  assert.deepEqual(diffs, [{ member_id: 1, ours: 3, theirs: null, differing: 3, first: [] }]);
  assert.match(formatDifferences('leg', diffs), /member 1: ours 3 dirty, theirs none dirty, 3 chunks differ/);
});

test('readNodeMaps stops after the last map slot of a node with four maps (no request for map index 4)', () => {
  // One empty slice per map; after the fourth the cursor names map index 4 (MAX_MEMBERS).
  const answer = (idx: number): Buffer => {
    const b = Buffer.alloc(READ_MAP_HEADER);
    b[0] = idx + 1;
    b[1] = idx + 1;
    return b;
  };
  let asked = 0;
  let got: { status: number; ids: number[] } | null = null;
  readNodeMaps(
    (cmd, cb) => {
      // Encoded as the channel does: a refused field throws here.
      const w = legCommandToWire(cmd, 4096);
      encodeCmd(1, { cmd_type: w.cmd_type, sync: 0, pool_name: 'p' }, w.payload, w.tail ?? null);
      asked++;
      cb(0, 0, null, answer((cmd as { map_idx: number }).map_idx));
    },
    64,
    (status, maps) => (got = { status, ids: [...(maps?.keys() ?? [])] }),
  );
  assert.deepEqual(got, { status: 0, ids: [1, 2, 3, 4] });
  assert.equal(asked, 4);
});
