// test_map (reference §11.1, §11.2): reading every map a storage node holds over a leg
// (READ_MAP_BUF, §5.4) into fresh maps, and comparing two sets of maps member by member.
// The client compares its own maps against each leg's; a storage node compares its maps
// against its peers' through the sync pool.

import { Errno } from '../../util/errno.js';
import { DirtyMap, PAGE_BYTES } from '../protocol/dirty-map.js';
import { MAP_TEST_SAME, READ_MAP_HEADER, decodeMapTestAnswer, type LegCommand, type LegCommandCallback } from '../protocol/leg-commands.js';
import { MAX_MEMBERS, MAX_TEST_PAGES } from '../protocol/msg.js';

export type CommandFn = (cmd: LegCommand, cb: LegCommandCallback) => void;

/** Answers of one node at most (a node holds at most MAX_MEMBERS maps of bounded pages). */
const MAX_ROUNDS = 1 << 20;

/**
 * Walks every map the node behind `command` holds (READ_MAP_BUF, page slice by page slice),
 * decoding each page into `mapFor(member)`; null there refuses the member (EBADMSG). `now`
 * stamps the decoded pages (undefined: the map's own clock). The client's map load after
 * recovery (ClientRecovery.loadMapsFrom) and test_map both read through here.
 */
export function readMapPages(command: CommandFn, mapFor: (member: number) => DirtyMap | null, now: (() => number) | null, cb: (status: number) => void): void {
  const step = (map_idx: number, page: number, rounds: number): void => {
    if (rounds > MAX_ROUNDS) return cb(Errno.ELOOP);
    command({ kind: 'read_map_buf', map_idx, page }, (status, _v, _r, data) => {
      if (status !== 0) return cb(status);
      if (data === null || data === undefined || data.length < READ_MAP_HEADER) return cb(Errno.EBADMSG);
      const member = data[0] as number;
      if (member === 0) return cb(0);
      const first = data.readUInt32LE(4);
      const n = data.readUInt32LE(8);
      if (data.length !== READ_MAP_HEADER + n * PAGE_BYTES) return cb(Errno.EBADMSG);
      const map = mapFor(member);
      if (map === null) return cb(Errno.EBADMSG);
      for (let i = 0; i < n; i++) {
        const page_bytes = data.subarray(READ_MAP_HEADER + i * PAGE_BYTES, READ_MAP_HEADER + (i + 1) * PAGE_BYTES);
        if ((now === null ? map.decodePage(first + i, page_bytes, 'overwrite') : map.decodePage(first + i, page_bytes, 'overwrite', now())) !== null) return cb(Errno.EBADMSG);
      }
      // Past the last map slot: done. A node with four maps answers so after its last, and
      // map index MAX_MEMBERS does not encode (READ_MAP_BUF layout): the transport leg fails
      // it with EINVAL (test_map of a four-member pool failed), a bare command function
      // threw (the simulator, four members).
      const next_idx = data[1] as number;
      if (next_idx >= MAX_MEMBERS) return cb(0);
      step(next_idx, data.readUInt32LE(12), rounds + 1);
    });
  };
  step(0, 0, 0);
}

/** Every map the node behind `command` holds, into fresh maps. */
export function readNodeMaps(command: CommandFn, no_of_chunks: number, cb: (status: number, maps: Map<number, DirtyMap> | null) => void): void {
  const maps = new Map<number, DirtyMap>();
  const mapFor = (member: number): DirtyMap | null => {
    let map = maps.get(member);
    // A node holds at most MAX_MEMBERS maps: more is a bad answer, not more allocations.
    if (map === undefined && maps.size >= MAX_MEMBERS) return null;
    if (map === undefined) maps.set(member, (map = new DirtyMap(member, no_of_chunks)));
    return map;
  };
  readMapPages(command, mapFor, null, (status) => cb(status, status === 0 ? maps : null));
}

/** What MAP_TEST found: the pages (member, page index) not the same there, and the maps the node holds that we lack. */
export interface MapTestResult {
  readonly pages: { member_id: number; page: number }[];
  readonly extra_maps: number[];
}

/**
 * MAP_TEST (reference §5.4): the node behind `command` compares the checksums of every page of
 * `ours` with its own, without the pages crossing the network. The maps are the same there
 * when the result lists no page and no extra map (test_map then reads the node's maps only
 * for the detail of a difference). A malformed answer is EBADMSG.
 */
export function testMapPages(command: CommandFn, ours: ReadonlyMap<number, DirtyMap<unknown>>, cb: (status: number, r: MapTestResult | null) => void): void {
  const jobs: { m: DirtyMap<unknown>; first: number; n: number }[] = [];
  for (const m of [...ours.values()].sort((a, b) => a.member_id - b.member_id)) {
    for (let p = 0; p < m.page_count; p += MAX_TEST_PAGES) jobs.push({ m, first: p, n: Math.min(MAX_TEST_PAGES, m.page_count - p) });
  }
  const pages: { member_id: number; page: number }[] = [];
  let extra_maps: number[] = [];
  const step = (i: number): void => {
    const j = jobs[i];
    if (j === undefined) return cb(0, { pages, extra_maps });
    const crcs = Buffer.alloc(4 * j.n);
    for (let k = 0; k < j.n; k++) crcs.writeUInt32LE(j.m.pageCrc(j.first + k), 4 * k);
    command({ kind: 'map_test', member_id: j.m.member_id, first_page: j.first, crcs }, (status, _differing, _r, data) => {
      if (status !== 0) return cb(status, null);
      const a = decodeMapTestAnswer(data, j.n);
      if (a === null) return cb(Errno.EBADMSG, null);
      a.flags.forEach((f, k) => {
        if (f !== MAP_TEST_SAME) pages.push({ member_id: j.m.member_id, page: j.first + k });
      });
      // The node's maps are the same list in every answer; the first one says it.
      if (i === 0) extra_maps = a.member_ids.filter((id) => !ours.has(id));
      step(i + 1);
    });
  };
  // No maps here: MAP_TEST needs a member to name; the caller reads the node's maps instead.
  if (jobs.length === 0) return cb(0, null);
  step(0);
}

export interface MapDifference {
  readonly member_id: number;
  /** Dirty chunks on each side; null where that side has no map for the member. */
  readonly ours: number | null;
  readonly theirs: number | null;
  /** Chunks dirty on exactly one side, and the first few of them. */
  readonly differing: number;
  readonly first: readonly number[];
}

const LISTED = 16;

/** Member by member: where `ours` and `theirs` disagree (members missing on one side count). */
export function compareMaps(ours: ReadonlyMap<number, DirtyMap<unknown>>, theirs: ReadonlyMap<number, DirtyMap<unknown>>): MapDifference[] {
  const out: MapDifference[] = [];
  const ids = [...new Set([...ours.keys(), ...theirs.keys()])].sort((a, b) => a - b);
  for (const id of ids) {
    const a = ours.get(id);
    const b = theirs.get(id);
    if (a === undefined || b === undefined) {
      const m = (a ?? b) as DirtyMap<unknown>;
      out.push({ member_id: id, ours: a?.dirtyCount ?? null, theirs: b?.dirtyCount ?? null, differing: m.dirtyCount, first: [] });
      continue;
    }
    let differing = 0;
    const first: number[] = [];
    const n = Math.min(a.no_of_chunks, b.no_of_chunks);
    // Walk the dirty chunks of both sides; clean pages are skipped by nextDirty.
    let x = a.nextDirty(0);
    let y = b.nextDirty(0);
    while (x >= 0 || y >= 0) {
      const c = x < 0 ? y : y < 0 ? x : Math.min(x, y);
      if (c >= n) break;
      if (!(x === c && y === c)) {
        differing++;
        if (first.length < LISTED) first.push(c);
      }
      if (x === c) x = a.nextDirty(c + 1);
      if (y === c) y = b.nextDirty(c + 1);
    }
    if (differing > 0 || a.no_of_chunks !== b.no_of_chunks) out.push({ member_id: id, ours: a.dirtyCount, theirs: b.dirtyCount, differing, first });
  }
  return out;
}

/** One line per difference, or `same`. */
export function formatDifferences(what: string, diffs: readonly MapDifference[]): string {
  if (diffs.length === 0) return `${what}: same`;
  return diffs
    .map((d) => `${what}: member ${d.member_id}: ours ${d.ours ?? 'none'} dirty, theirs ${d.theirs ?? 'none'} dirty, ${d.differing} chunks differ${d.first.length > 0 ? ` [${d.first.join(' ')}${d.differing > d.first.length ? '...' : ''}]` : ''}`)
    .join('\n');
}
