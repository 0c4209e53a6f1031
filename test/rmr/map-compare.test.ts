// compareMaps against a Set model: the chunks it reports differing are exactly the
// symmetric difference of the two dirty sets; formatDifferences says "same" only then.
// MAP_TEST (page checksums) through its wire form finds exactly the pages that differ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CHUNKS_PER_PAGE, DirtyMap } from '../../src/rmr/protocol/dirty-map.js';
import { compareMaps, formatDifferences, readNodeMaps, testMapPages, type MapTestResult } from '../../src/rmr/client/map-compare.js';
import {
  MAP_TEST_HEADER,
  MAP_TEST_SAME,
  READ_MAP_HEADER,
  answerBytes,
  decodeMapTestAnswer,
  legCommandFromWire,
  legCommandToWire,
  mapTestAnswer,
  type LegCommand,
  type LegCommandCallback,
} from '../../src/rmr/protocol/leg-commands.js';
import { MAX_TEST_PAGES, decodeMessage, encodeCmd } from '../../src/rmr/protocol/msg.js';
import { Errno } from '../../src/util/errno.js';

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

/** A node answering MAP_TEST from `theirs`, with each command and answer through their wire form. */
function mapTestNode(theirs: Map<number, DirtyMap>, asked: { member_id: number; first_page: number; pages: number }[]) {
  return (cmd: LegCommand, cb: LegCommandCallback): void => {
    const w = legCommandToWire(cmd, 4096);
    const d = decodeMessage(encodeCmd(1, { cmd_type: w.cmd_type, sync: 0, pool_name: 'p' }, w.payload, w.tail ?? null));
    assert.ok(d.ok && d.msg.type === 'CMD');
    const c = legCommandFromWire(d.msg.env.cmd_type, d.msg.payload, d.msg.tail, 0);
    assert.ok(c !== null && c.kind === 'map_test');
    asked.push({ member_id: c.member_id, first_page: c.first_page, pages: c.crcs.length / 4 });
    const r = mapTestAnswer(theirs, c.member_id, c.first_page, c.crcs);
    if (typeof r === 'string') return cb(-22, 0, r);
    assert.ok(r.answer.length <= answerBytes(cmd), 'the answer fits the buffer the client posts');
    cb(0, r.differing, null, r.answer);
  };
}

test('MAP_TEST finds exactly the differing pages of maps past one message (65+ pages), and maps only the node holds', () => {
  // 2^21 + 5 chunks: 65 pages, two MAP_TEST messages per map. Mostly clean and full pages,
  // which cost no bitmap memory.
  const chunks = MAX_TEST_PAGES * CHUNKS_PER_PAGE + 5;
  const mk = (id: number): DirtyMap => {
    const m = new DirtyMap(id, chunks);
    m.setDirty(3 * CHUNKS_PER_PAGE, 2 * CHUNKS_PER_PAGE); // two full pages
    m.setDirty(chunks - 2, 2); // the short last page
    return m;
  };
  const ours = new Map([[1, mk(1)], [2, mk(2)]]);
  const theirs = new Map([[1, mk(1)], [2, mk(2)]]);
  let asked: { member_id: number; first_page: number; pages: number }[] = [];
  let got: MapTestResult | null = null;
  testMapPages(mapTestNode(theirs, asked), ours, (s, r) => {
    assert.equal(s, 0);
    got = r;
  });
  assert.deepEqual(got, { pages: [], extra_maps: [] });
  assert.deepEqual(asked, [
    { member_id: 1, first_page: 0, pages: MAX_TEST_PAGES },
    { member_id: 1, first_page: MAX_TEST_PAGES, pages: 1 },
    { member_id: 2, first_page: 0, pages: MAX_TEST_PAGES },
    { member_id: 2, first_page: MAX_TEST_PAGES, pages: 1 },
  ]);
  // One chunk in a full page, one in the last page, one bit moved inside a partial page (same
  // count, other bits): each is a page that differs. And a map the node holds that we lack.
  (theirs.get(1) as DirtyMap).clear(4 * CHUNKS_PER_PAGE + 7, 1);
  (theirs.get(2) as DirtyMap).setDirty(chunks - 3, 1);
  (ours.get(2) as DirtyMap).setDirty(9, 1);
  (theirs.get(2) as DirtyMap).setDirty(10, 1);
  const m3 = new DirtyMap(3, chunks);
  theirs.set(3, m3);
  asked = [];
  testMapPages(mapTestNode(theirs, asked), ours, (s, r) => {
    assert.equal(s, 0);
    got = r;
  });
  assert.deepEqual(got, {
    pages: [
      { member_id: 1, page: 4 },
      { member_id: 2, page: 0 },
      { member_id: 2, page: MAX_TEST_PAGES },
    ],
    extra_maps: [3],
  });
  // A map we hold that the node lacks: every page of it differs.
  theirs.delete(2);
  testMapPages(mapTestNode(theirs, []), ours, (s, r) => {
    assert.equal(s, 0);
    got = r;
  });
  assert.equal((got as MapTestResult | null)?.pages.filter((p) => p.member_id === 2).length, MAX_TEST_PAGES + 1);
});

test('MAP_TEST: a node refuses pages outside its map; a malformed answer is EBADMSG', () => {
  const m = new DirtyMap(1, 100);
  const maps = new Map([[1, m]]);
  assert.match(mapTestAnswer(maps, 1, 1, Buffer.alloc(4)) as string, /outside the map's 1/);
  assert.match(mapTestAnswer(maps, 1, 0, Buffer.alloc(8)) as string, /outside/);
  assert.match(mapTestAnswer(maps, 1, 0, Buffer.alloc(6)) as string, /checksums/);
  assert.match(mapTestAnswer(maps, 1, 0, Buffer.alloc(4 * (MAX_TEST_PAGES + 1))) as string, /checksums/);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(m.pageCrc(0));
  const good = mapTestAnswer(maps, 1, 0, crc) as { differing: number; answer: Buffer };
  assert.equal(good.differing, 0);
  assert.deepEqual(decodeMapTestAnswer(good.answer, 1), { member_ids: [1], flags: [MAP_TEST_SAME] });
  // A zero checksum is not the clean page's.
  assert.equal((mapTestAnswer(maps, 1, 0, Buffer.alloc(4)) as { differing: number }).differing, 1);
  const spoiled: [string, Buffer][] = [
    ['short', good.answer.subarray(0, MAP_TEST_HEADER)],
    ['long', Buffer.concat([good.answer, Buffer.alloc(1)])],
    ['five maps', Buffer.from(good.answer).fill(5, 0, 1)],
    ['member 0 listed', Buffer.from([2, 1, 0, 0, 0, 0, 0, 0, 0])],
    ['a member listed twice', Buffer.from([2, 1, 1, 0, 0, 0, 0, 0, 0])],
    ['an unknown flag', Buffer.from([1, 1, 0, 0, 0, 0, 0, 0, 3])],
  ];
  for (const [what, b] of spoiled) {
    assert.equal(decodeMapTestAnswer(b, 1), null, what);
    let st = 0;
    testMapPages((_c, cb) => cb(0, 0, null, b), maps, (s) => (st = s));
    assert.equal(st, Errno.EBADMSG, what);
  }
  assert.equal(decodeMapTestAnswer(null, 1), null);
});
