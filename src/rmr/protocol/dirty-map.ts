// Dirty map of one member (the reference's rmr_dirty_id_map): which chunks that member does
// not yet hold correctly. One per member per pool, on every storage node and on the client.
//
// Memory. The reference keeps one byte per chunk in fully allocated page trees (512 MiB per
// map at 64 TiB / 128 KiB chunks). Here a chunk is one bit, and the bitmap is cut into pages
// of PAGE_BYTES; a page is either absent (all clean), the shared FULL marker (all dirty) or a
// materialised bitmap. Memory is then a few bytes per page of the device (16,384 pages at
// 64 TiB / 128 KiB) plus 4 KiB per page that is partly dirty; a member marked fully dirty
// costs nothing more. Pages are also the unit of transfer and persistence.
//
// Sync entries (the reference's rmr_map_entry in rmr_id_map): present only for chunks being
// synced or waited on; `sync_cnt` -1 means nobody owns the sync, the party that moves it to 0
// owns it, each in-flight sub-request holds +1; `waiters` are blocked requests.

import { crc32c } from '../../util/crc32c.js';

export const PAGE_BYTES = 4096;
export const CHUNKS_PER_PAGE = PAGE_BYTES * 8;
/** CRC32C of a page of zeroes and of a whole page of ones (clean and fully dirty pages). */
const CLEAN_PAGE_CRC = crc32c(new Uint8Array(PAGE_BYTES));
const FULL_PAGE_CRC = crc32c(new Uint8Array(PAGE_BYTES).fill(0xff));

/**
 * The chunks a byte range touches, as [first, count]: IOs may span chunks (ARCHITECTURE.md
 * §2.2), and dirty tracking, locking and sync work on the whole range. A zero-length range
 * counts as its first byte's chunk.
 */
export function chunkRange(offset: number, length: number, chunk_size: number): [number, number] {
  const first = Math.floor(offset / chunk_size);
  const last = Math.floor((offset + Math.max(length, 1) - 1) / chunk_size);
  return [first, last - first + 1];
}

/** All 4 KiB of a page dirty: a marker, never written to. */
const FULL: Uint8Array = new Uint8Array(0);
type Page = Uint8Array | null;

export interface SyncEntry<W> {
  sync_cnt: number;
  waiters: W[];
}

export interface MapSummary {
  member_id: number;
  chunks: number;
  dirty: number;
  clean: number;
  pages: number;
  /** Pages holding a partial bitmap in memory. */
  materialised_pages: number;
  /** Sync entries alive (chunks being synced or waited on). */
  sync_entries: number;
  ts: number;
}

export type PageMode = 'overwrite' | 'merge';

export class DirtyMap<W = unknown> {
  readonly member_id: number;
  readonly no_of_chunks: number;
  readonly page_count: number;
  private readonly pages: Page[];
  /** Dirty chunks per page (FULL pages count their real chunk number). */
  private readonly page_dirty: Int32Array;
  private dirty = 0;
  private readonly entries = new Map<number, SyncEntry<W>>();
  /**
   * The reference's UNSYNCED filter (its map_unsynced file): the dirty chunks whose data the
   * member does not hold at all (its store was replaced, its maps were lost), as opposed to
   * writes it missed. Always a subset of the dirty chunks: a chunk that becomes clean leaves
   * it. Created on first use; in memory only (the discard flags that cause it persist).
   */
  private filter: DirtyMap | null = null;
  /** Time of the last change (the client's clean guard compares it, reference §8.5). */
  ts = 0;
  /**
   * Counts changes of the dirty set (not of sync entries): a reader that saw version v and
   * sees v again knows the map is unchanged (the dashboard's map pictures). `ts` cannot
   * tell, since callers may change the map without passing a new time.
   */
  version = 0;

  /** `member_id` 0: a set of chunks that is not a member's map (the client's uncertain set). */
  constructor(member_id: number, no_of_chunks: number) {
    if (!Number.isInteger(member_id) || member_id < 0 || member_id > 255) throw new RangeError(`member_id ${member_id} outside 0..255`);
    if (!Number.isSafeInteger(no_of_chunks) || no_of_chunks < 1 || no_of_chunks > 2 ** 40) {
      throw new RangeError(`no_of_chunks ${no_of_chunks} out of range`);
    }
    this.member_id = member_id;
    this.no_of_chunks = no_of_chunks;
    this.page_count = Math.ceil(no_of_chunks / CHUNKS_PER_PAGE);
    this.pages = new Array<Page>(this.page_count).fill(null);
    this.page_dirty = new Int32Array(this.page_count);
  }

  /** Chunks covered by page `p` (the last page may be short). */
  private pageChunks(p: number): number {
    return p === this.page_count - 1 ? this.no_of_chunks - p * CHUNKS_PER_PAGE : CHUNKS_PER_PAGE;
  }

  private checkRange(first: number, count: number): void {
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0 || first + count > this.no_of_chunks) {
      throw new RangeError(`chunk range [${first}, +${count}) outside map of ${this.no_of_chunks} chunks`);
    }
  }

  get dirtyCount(): number {
    return this.dirty;
  }

  isEmpty(): boolean {
    return this.dirty === 0;
  }

  isFull(): boolean {
    return this.dirty === this.no_of_chunks;
  }

  isDirty(chunk: number): boolean {
    this.checkRange(chunk, 1);
    const p = Math.floor(chunk / CHUNKS_PER_PAGE);
    const page = this.pages[p] as Page;
    if (page === null) return false;
    if (page === FULL) return true;
    const bit = chunk - p * CHUNKS_PER_PAGE;
    return ((page[bit >>> 3] as number) & (1 << (bit & 7))) !== 0;
  }

  /** True if any chunk of [first, first+count) is dirty. */
  anyDirty(first: number, count: number): boolean {
    this.checkRange(first, count);
    if (count === 0) return false;
    const d = this.nextDirty(first);
    return d >= 0 && d < first + count;
  }

  /** Marks [first, first+count) dirty; returns how many chunks were newly dirtied. */
  setDirty(first: number, count: number, now = this.ts): number {
    return this.apply(first, count, true, now);
  }

  /** Marks [first, first+count) clean; returns how many chunks were newly cleaned. */
  clear(first: number, count: number, now = this.ts): number {
    const n = this.apply(first, count, false, now);
    if (this.filter !== null) this.filter.clear(first, count);
    return n;
  }

  /** Marks [first, first+count) dirty and unsynced (see `filter`); returns how many chunks were newly dirtied. */
  markUnsynced(first: number, count: number, now = this.ts): number {
    const n = this.apply(first, count, true, now);
    (this.filter ??= new DirtyMap(0, this.no_of_chunks)).setDirty(first, count);
    return n;
  }

  /** The unsynced chunks (dirty because the member holds no data there), as [first, count] runs. */
  unsyncedRuns(): [number, number][] {
    return this.filter === null ? [] : this.filter.runs();
  }

  get unsyncedCount(): number {
    return this.filter?.dirtyCount ?? 0;
  }

  /** The filter loses the chunks of [first, end) that are clean now. */
  private pruneFilter(first: number, end: number): void {
    const f = this.filter;
    if (f === null) return;
    for (let c = this.nextClean(first); c < end; ) {
      const d = this.nextDirty(c);
      const stop = d < 0 || d > end ? end : d;
      f.clear(c, stop - c);
      if (stop >= end) break;
      c = this.nextClean(stop);
    }
    if (f.isEmpty()) this.filter = null;
  }

  setAll(now = this.ts): void {
    for (let p = 0; p < this.page_count; p++) {
      this.pages[p] = FULL;
      this.page_dirty[p] = this.pageChunks(p);
    }
    this.dirty = this.no_of_chunks;
    this.ts = now;
    this.version++;
  }

  clearAll(now = this.ts): void {
    this.filter = null;
    this.pages.fill(null);
    this.page_dirty.fill(0);
    this.dirty = 0;
    this.ts = now;
    this.version++;
  }

  /**
   * Takes over the dirty bits of `from` (a map of the same size, which is left empty); this
   * map's sync entries stay. A map update received aside replaces a member's map this way.
   */
  takeBitsFrom(from: DirtyMap<W>, now = this.ts): void {
    if (from.no_of_chunks !== this.no_of_chunks) throw new RangeError(`map of ${from.no_of_chunks} chunks into one of ${this.no_of_chunks}`);
    for (let p = 0; p < this.page_count; p++) {
      this.pages[p] = from.pages[p] as Page;
      this.page_dirty[p] = from.page_dirty[p] as number;
    }
    this.dirty = from.dirty;
    this.ts = now;
    this.version++;
    from.pages.fill(null);
    from.page_dirty.fill(0);
    from.dirty = 0;
    from.version++;
    this.pruneFilter(0, this.no_of_chunks);
  }

  private apply(first: number, count: number, set: boolean, now: number): number {
    this.checkRange(first, count);
    let changed = 0;
    let c = first;
    const end = first + count;
    while (c < end) {
      const p = Math.floor(c / CHUNKS_PER_PAGE);
      const base = p * CHUNKS_PER_PAGE;
      const pc = this.pageChunks(p);
      const stop = Math.min(end, base + pc);
      const before = this.page_dirty[p] as number;
      const page = this.pages[p] as Page;
      if (c === base && stop === base + pc) {
        // The whole page: no bitmap needed either way.
        this.pages[p] = set ? FULL : null;
        this.page_dirty[p] = set ? pc : 0;
      } else if (set ? page !== FULL : page !== null) {
        const bits = page === null || page === FULL ? this.materialise(p, page === FULL) : page;
        let d = before;
        for (let k = c - base; k < stop - base; k++) {
          const m = 1 << (k & 7);
          const byte = bits[k >>> 3] as number;
          if (set && (byte & m) === 0) {
            bits[k >>> 3] = byte | m;
            d++;
          } else if (!set && (byte & m) !== 0) {
            bits[k >>> 3] = byte & ~m;
            d--;
          }
        }
        this.page_dirty[p] = d;
        // Collapse to the compact forms when a page becomes uniform.
        if (d === 0) this.pages[p] = null;
        else if (d === pc) this.pages[p] = FULL;
      }
      changed += Math.abs((this.page_dirty[p] as number) - before);
      c = stop;
    }
    this.dirty += set ? changed : -changed;
    if (changed > 0) {
      this.ts = now;
      this.version++;
    }
    return changed;
  }

  private materialise(p: number, full: boolean): Uint8Array {
    const bits = new Uint8Array(PAGE_BYTES);
    if (full) {
      const pc = this.pageChunks(p);
      bits.fill(0xff, 0, pc >>> 3);
      for (let k = pc & ~7; k < pc; k++) bits[k >>> 3] = (bits[k >>> 3] as number) | (1 << (k & 7));
    }
    this.pages[p] = bits;
    return bits;
  }

  /** The first dirty chunk at or after `from`, or -1. Skips clean pages without scanning them. */
  nextDirty(from: number): number {
    if (from < 0) from = 0;
    for (let p = Math.floor(from / CHUNKS_PER_PAGE); p < this.page_count; p++) {
      if (this.page_dirty[p] === 0) continue;
      const base = p * CHUNKS_PER_PAGE;
      const start = Math.max(from, base) - base;
      const pc = this.pageChunks(p);
      if (start >= pc) continue;
      const page = this.pages[p] as Page;
      if (page === FULL) return base + start;
      const bits = page as Uint8Array;
      for (let k = start; k < pc; k++) {
        if ((k & 7) === 0 && bits[k >>> 3] === 0) {
          k += 7;
          continue;
        }
        if (((bits[k >>> 3] as number) & (1 << (k & 7))) !== 0) return base + k;
      }
    }
    return -1;
  }

  /** The first clean chunk at or after `from`, or no_of_chunks. Skips full pages without scanning them. */
  nextClean(from: number): number {
    if (from < 0) from = 0;
    for (let p = Math.floor(from / CHUNKS_PER_PAGE); p < this.page_count; p++) {
      const base = p * CHUNKS_PER_PAGE;
      const pc = this.pageChunks(p);
      const start = Math.max(from, base) - base;
      if (start >= pc || this.page_dirty[p] === pc) continue;
      const page = this.pages[p] as Page;
      if (page === null) return base + start;
      const bits = page;
      for (let k = start; k < pc; k++) {
        if ((k & 7) === 0 && bits[k >>> 3] === 0xff && k + 8 <= pc) {
          k += 7;
          continue;
        }
        if (((bits[k >>> 3] as number) & (1 << (k & 7))) === 0) return base + k;
      }
    }
    return this.no_of_chunks;
  }

  /** The dirty chunks as [first, count] runs, in order (a fully dirty 64 TiB map is one run). */
  runs(): [number, number][] {
    const out: [number, number][] = [];
    for (let c = this.nextDirty(0); c >= 0; ) {
      const e = this.nextClean(c);
      out.push([c, e - c]);
      c = e < this.no_of_chunks ? this.nextDirty(e) : -1;
    }
    return out;
  }

  summary(): MapSummary {
    let materialised = 0;
    for (const pg of this.pages) if (pg !== null && pg !== FULL) materialised++;
    return {
      member_id: this.member_id,
      chunks: this.no_of_chunks,
      dirty: this.dirty,
      clean: this.no_of_chunks - this.dirty,
      pages: this.page_count,
      materialised_pages: materialised,
      sync_entries: this.entries.size,
      ts: this.ts,
    };
  }

  // ------------------------------------------------------------ pages (transfer, persistence)

  /** 0: every chunk of page `p` clean, 1: every chunk dirty, 2: mixed. */
  pageState(p: number): 0 | 1 | 2 {
    const d = this.page_dirty[p];
    if (d === undefined) throw new RangeError(`page ${p} outside 0..${this.page_count - 1}`);
    return d === 0 ? 0 : d === this.pageChunks(p) ? 1 : 2;
  }

  /** Dirty chunks in page `p` (kept per page: no scan). */
  pageDirty(p: number): number {
    const d = this.page_dirty[p];
    if (d === undefined) throw new RangeError(`page ${p} outside 0..${this.page_count - 1}`);
    return d;
  }

  /** Page `p` as PAGE_BYTES of bitmap (bit k of byte j = chunk p*CHUNKS_PER_PAGE + 8j + k). */
  encodePage(p: number, out: Uint8Array = new Uint8Array(PAGE_BYTES)): Uint8Array {
    if (!Number.isInteger(p) || p < 0 || p >= this.page_count) throw new RangeError(`page ${p} outside 0..${this.page_count - 1}`);
    if (out.length !== PAGE_BYTES) throw new RangeError('page buffer must be PAGE_BYTES');
    const page = this.pages[p] as Page;
    if (page === null) out.fill(0);
    else if (page === FULL) {
      out.fill(0);
      const pc = this.pageChunks(p);
      out.fill(0xff, 0, pc >>> 3);
      for (let k = pc & ~7; k < pc; k++) out[k >>> 3] = (out[k >>> 3] as number) | (1 << (k & 7));
    } else out.set(page);
    return out;
  }

  /**
   * CRC32C of page `p` as encodePage writes it (MAP_TEST compares pages by it; persisted
   * bitmaps are checked with it). Clean and whole full pages cost no hashing.
   */
  pageCrc(p: number): number {
    const st = this.pageState(p);
    if (st === 0) return CLEAN_PAGE_CRC;
    if (st === 1 && this.pageChunks(p) === CHUNKS_PER_PAGE) return FULL_PAGE_CRC;
    return crc32c(this.encodePage(p));
  }

  /**
   * Loads page `p` from a received or stored bitmap: 'overwrite' replaces the page,
   * 'merge' adds its dirty chunks. Bits beyond the map's last chunk must be zero.
   * Returns an error reason instead of changing anything when the page is invalid.
   */
  decodePage(p: number, src: Uint8Array, mode: PageMode, now = this.ts): string | null {
    if (!Number.isInteger(p) || p < 0 || p >= this.page_count) return `page ${p} outside 0..${this.page_count - 1}`;
    if (src.length !== PAGE_BYTES) return `page of ${src.length} bytes, expected ${PAGE_BYTES}`;
    const pc = this.pageChunks(p);
    const tail = `bit set beyond the last chunk in page ${p}`;
    for (let k = pc; k < Math.min(CHUNKS_PER_PAGE, (pc + 7) & ~7); k++) {
      if (((src[k >>> 3] as number) & (1 << (k & 7))) !== 0) return tail;
    }
    for (let j = (pc + 7) >>> 3; j < PAGE_BYTES; j++) if (src[j] !== 0) return tail;
    let d = 0;
    const bits = new Uint8Array(PAGE_BYTES);
    const cur = this.pages[p] as Page;
    const cur_bits = mode === 'merge' && cur !== null ? this.encodePage(p) : null;
    for (let j = 0; j < PAGE_BYTES; j++) {
      const b = (src[j] as number) | (cur_bits === null ? 0 : (cur_bits[j] as number));
      bits[j] = b;
      d += POPCOUNT[b] as number;
    }
    const before = this.page_dirty[p] as number;
    this.pages[p] = d === 0 ? null : d === pc ? FULL : bits;
    this.page_dirty[p] = d;
    this.dirty += d - before;
    if (d !== before) this.ts = now;
    // A page rewritten with the same count may still have moved bits.
    this.version++;
    if (mode === 'overwrite') this.pruneFilter(p * CHUNKS_PER_PAGE, p * CHUNKS_PER_PAGE + pc);
    return null;
  }

  // ------------------------------------------------------------ sync entries

  /** The sync entry of a chunk, created (sync_cnt -1, no waiters) if absent. */
  entry(chunk: number): SyncEntry<W> {
    this.checkRange(chunk, 1);
    let e = this.entries.get(chunk);
    if (e === undefined) {
      e = { sync_cnt: -1, waiters: [] };
      this.entries.set(chunk, e);
    }
    return e;
  }

  peekEntry(chunk: number): SyncEntry<W> | undefined {
    return this.entries.get(chunk);
  }

  /** Removes and returns a chunk's sync entry (its waiters are the caller's to resume). */
  takeEntry(chunk: number): SyncEntry<W> | undefined {
    const e = this.entries.get(chunk);
    if (e !== undefined) this.entries.delete(chunk);
    return e;
  }

  get entryCount(): number {
    return this.entries.size;
  }
}

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (POPCOUNT[i >>> 1] as number) + (i & 1);
