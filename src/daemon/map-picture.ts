// Map pictures: a fixed-size summary of a dirty map for the dashboard. The map's chunks are
// cut into at most PICTURE_CELLS equal ranges (cells) and each cell holds the number of
// dirty chunks in its range, so a page draws a 16 TiB device as fast as a 1 GiB one and a
// reader moves a few KiB, never the map. Each picture carries a version that changes
// whenever the map's dirty set does: a reader that holds version v asks only for the maps
// whose version is not v any more (`map_picture/versions`, then `map_picture/<member>`).
//
// Cost: one step per page of the map plus one per cell. A page lying inside one cell adds
// the page's kept dirty count without looking at its bits (16 TiB at 128 KiB chunks is 4096
// pages); only a partly dirty page that spans several cells (small maps) is read and its
// bytes counted.

import { CHUNKS_PER_PAGE, PAGE_BYTES, type DirtyMap } from '../rmr/dirty-map.js';
import { dynamicDir, file, type JsonValue, type TreeNode } from './control-tree.js';

export const PICTURE_CELLS = 1024;

export interface MapPicture {
  readonly member_id: number;
  /** `<map instance>.<change count>`: equal strings mean an unchanged map in one daemon run. */
  readonly version: string;
  readonly chunks: number;
  readonly dirty: number;
  readonly chunks_per_cell: number;
  /** Dirty chunks per cell; the last cell may cover fewer than chunks_per_cell chunks. */
  readonly cells: readonly number[];
}

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (POPCOUNT[i >>> 1] as number) + (i & 1);

/** Set bits k of `bits` with a <= k < b. */
function countBits(bits: Uint8Array, a: number, b: number): number {
  let n = 0;
  let k = a;
  for (; k < b && (k & 7) !== 0; k++) n += ((bits[k >>> 3] as number) >>> (k & 7)) & 1;
  for (; k + 8 <= b; k += 8) n += POPCOUNT[bits[k >>> 3] as number] as number;
  for (; k < b; k++) n += ((bits[k >>> 3] as number) >>> (k & 7)) & 1;
  return n;
}

/** Cells for a map of `chunks` chunks: equal ranges of chunks_per_cell, at most `max` of them. */
export function cellLayout(chunks: number, max = PICTURE_CELLS): { chunks_per_cell: number; cells: number } {
  const chunks_per_cell = Math.max(1, Math.ceil(chunks / max));
  return { chunks_per_cell, cells: Math.ceil(chunks / chunks_per_cell) };
}

/** Dirty chunks per cell of `m`, from its page structure. */
export function cellCounts(m: DirtyMap<unknown>, max = PICTURE_CELLS): { chunks_per_cell: number; cells: Float64Array } {
  const { chunks_per_cell: cpc, cells: n } = cellLayout(m.no_of_chunks, max);
  const cells = new Float64Array(n);
  let buf: Uint8Array | null = null;
  for (let p = 0; p < m.page_count; p++) {
    const d = m.pageDirty(p);
    if (d === 0) continue;
    const base = p * CHUNKS_PER_PAGE;
    const pc = Math.min(CHUNKS_PER_PAGE, m.no_of_chunks - base);
    const c0 = Math.floor(base / cpc);
    const c1 = Math.floor((base + pc - 1) / cpc);
    if (c0 === c1) {
      cells[c0] = (cells[c0] as number) + d;
      continue;
    }
    if (d !== pc) buf = m.encodePage(p, buf ?? new Uint8Array(PAGE_BYTES));
    for (let c = c0; c <= c1; c++) {
      const a = Math.max(base, c * cpc) - base;
      const b = Math.min(base + pc, (c + 1) * cpc) - base;
      cells[c] = (cells[c] as number) + (d === pc ? b - a : countBits(buf as Uint8Array, a, b));
    }
  }
  return { chunks_per_cell: cpc, cells };
}

// One id per map object: a map replaced by a new object (a pool re-created) starts its change
// count again, and the id keeps its versions from repeating those of the old one.
let next_map_id = 1;
const map_ids = new WeakMap<object, number>();
const cache = new WeakMap<object, MapPicture>();

export function mapVersion(m: DirtyMap<unknown>): string {
  let id = map_ids.get(m);
  if (id === undefined) {
    id = next_map_id++;
    map_ids.set(m, id);
  }
  return `${id}.${m.version}`;
}

/** The picture of `m` (computed once per version). */
export function mapPicture(member_id: number, m: DirtyMap<unknown>): MapPicture {
  const version = mapVersion(m);
  const hit = cache.get(m);
  if (hit !== undefined && hit.version === version && hit.member_id === member_id) return hit;
  const { chunks_per_cell, cells } = cellCounts(m);
  const pic: MapPicture = { member_id, version, chunks: m.no_of_chunks, dirty: m.dirtyCount, chunks_per_cell, cells: Array.from(cells) };
  cache.set(m, pic);
  return pic;
}

function versionsJson(maps: ReadonlyMap<number, DirtyMap<unknown>>): JsonValue {
  return {
    cells_max: PICTURE_CELLS,
    members: [...maps.entries()].sort((a, b) => a[0] - b[0]).map(([id, m]) => ({ member_id: id, version: mapVersion(m), dirty: m.dirtyCount, chunks: m.no_of_chunks })),
  };
}

function pictureJson(p: MapPicture): JsonValue {
  return { ...p, cells: [...p.cells] };
}

/**
 * The `map_picture/` directory of a pool: `versions` (every member's map version and dirty
 * count) and one file per member id with its picture. `maps` is read at each request.
 */
export function mapPictureDir(maps: () => ReadonlyMap<number, DirtyMap<unknown>>): TreeNode {
  const member = (name: string): DirtyMap<unknown> | undefined => (/^[0-9]{1,3}$/.test(name) ? maps().get(Number(name)) : undefined);
  return dynamicDir(
    () => ['versions', ...[...maps().keys()].sort((a, b) => a - b).map(String)],
    (name) => {
      if (name === 'versions') {
        return file({
          read: () => [...maps().entries()].sort((a, b) => a[0] - b[0]).map(([id, m]) => `member ${id}: version ${mapVersion(m)} ${m.dirtyCount}/${m.no_of_chunks} dirty`).join('\n'),
          json: () => versionsJson(maps()),
          help: 'each member map\'s version (changes with its dirty set) and dirty count',
        });
      }
      const m = member(name);
      if (m === undefined) return undefined;
      const id = Number(name);
      return file({
        read: () => {
          const p = mapPicture(id, m);
          return `member ${id}: version ${p.version} ${p.dirty}/${p.chunks} dirty, ${p.chunks_per_cell} chunks per cell\n${p.cells.join(' ')}`;
        },
        json: () => pictureJson(mapPicture(id, m)),
        help: `dirty chunks in each of at most ${PICTURE_CELLS} equal ranges of the map`,
      });
    },
    'fixed-size pictures of the dirty maps (for the dashboard)',
  );
}
