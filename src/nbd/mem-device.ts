// A BlockDevice in memory, sparse in pages, for tests and demos. Completions run through an
// injected `defer` (queueMicrotask by default), never synchronously. It can report
// `base:allocation` itself (unwritten and trimmed pages are holes) and a dirty-map-like
// context that marks every page written since the last clearDirty().

import type { BlockDevice, BlockSizes, Extent, WriteFlags, ZeroFlags } from '../util/block-device.js';
import { Errno } from '../util/errno.js';
import { BASE_ALLOCATION, STATE_HOLE, STATE_ZERO } from './proto.js';

export interface MemDeviceOptions {
  size_bytes: number;
  block_sizes?: BlockSizes;
  writable?: boolean;
  can_trim?: boolean;
  can_zero?: boolean;
  can_fast_zero?: boolean;
  multi_conn?: boolean;
  /** Answer base:allocation from the page map instead of letting the server say "all data". */
  allocation?: boolean;
  /** Name of a context whose flag 1 marks pages written, trimmed or zeroed (e.g. rmr:dirty:1). */
  dirty_context?: string;
  page_bytes?: number;
  defer?: (fn: () => void) => void;
}

export class MemBlockDevice implements BlockDevice {
  readonly size_bytes: number;
  readonly block_sizes: BlockSizes;
  readonly writable: boolean;
  readonly can_trim: boolean;
  readonly can_zero: boolean;
  readonly can_fast_zero: boolean;
  readonly multi_conn: boolean;
  /** Operations started, for tests. */
  ops = 0;
  private readonly pages = new Map<number, Buffer>();
  private readonly dirty = new Set<number>();
  private readonly page: number;
  private readonly defer: (fn: () => void) => void;
  private readonly contexts: string[] = [];
  private readonly dirty_context: string | null;

  constructor(o: MemDeviceOptions) {
    this.size_bytes = o.size_bytes;
    this.block_sizes = o.block_sizes ?? { minimum: 512, preferred: 4096, maximum: 1024 * 1024 };
    this.writable = o.writable ?? true;
    this.can_trim = o.can_trim ?? true;
    this.can_zero = o.can_zero ?? true;
    this.can_fast_zero = o.can_fast_zero ?? true;
    this.multi_conn = o.multi_conn ?? true;
    this.page = o.page_bytes ?? 64 * 1024;
    this.defer = o.defer ?? queueMicrotask;
    if (o.allocation === true) this.contexts.push(BASE_ALLOCATION);
    this.dirty_context = o.dirty_context ?? null;
    if (this.dirty_context !== null) this.contexts.push(this.dirty_context);
  }

  metaContexts(): readonly string[] {
    return this.contexts;
  }

  clearDirty(): void {
    this.dirty.clear();
  }

  /** Synchronous copy of the contents (tests compare it with what clients wrote). */
  snapshot(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    this.eachPage(offset, length, (p, in_page, at, n) => {
      const b = this.pages.get(p);
      if (b !== undefined) b.copy(out, at, in_page, in_page + n);
    });
    return out;
  }

  read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    this.ops++;
    if (!this.inRange(offset, length)) return this.defer(() => cb(Errno.EINVAL, null));
    const data = this.snapshot(offset, length);
    this.defer(() => cb(0, data));
  }

  write(offset: number, data: Buffer, _flags: WriteFlags, cb: (status: number) => void): void {
    this.ops++;
    if (!this.writable) return this.defer(() => cb(Errno.EROFS));
    if (!this.inRange(offset, data.length)) return this.defer(() => cb(Errno.EINVAL));
    this.eachPage(offset, data.length, (p, in_page, at, n) => {
      let b = this.pages.get(p);
      if (b === undefined) {
        b = Buffer.alloc(this.page);
        this.pages.set(p, b);
      }
      data.copy(b, in_page, at, at + n);
      this.dirty.add(p);
    });
    this.defer(() => cb(0));
  }

  trim(offset: number, length: number, _flags: WriteFlags, cb: (status: number) => void): void {
    this.ops++;
    if (!this.writable) return this.defer(() => cb(Errno.EROFS));
    if (!this.inRange(offset, length)) return this.defer(() => cb(Errno.EINVAL));
    this.zero(offset, length, false);
    this.defer(() => cb(0));
  }

  writeZeroes(offset: number, length: number, flags: ZeroFlags, cb: (status: number) => void): void {
    this.ops++;
    if (!this.writable) return this.defer(() => cb(Errno.EROFS));
    if (!this.inRange(offset, length)) return this.defer(() => cb(Errno.EINVAL));
    this.zero(offset, length, flags.no_hole);
    this.defer(() => cb(0));
  }

  flush(cb: (status: number) => void): void {
    this.ops++;
    this.defer(() => cb(0));
  }

  blockStatus(context: string, offset: number, length: number, cb: (status: number, extents: Extent[] | null) => void): void {
    this.ops++;
    if (!this.contexts.includes(context) || !this.inRange(offset, length) || length === 0) return this.defer(() => cb(Errno.EINVAL, null));
    const allocation = context === BASE_ALLOCATION;
    const extents: Extent[] = [];
    this.eachPage(offset, length, (p, _in_page, _at, n) => {
      const flags = allocation ? (this.pages.has(p) ? 0 : STATE_HOLE | STATE_ZERO) : this.dirty.has(p) ? 1 : 0;
      const last = extents[extents.length - 1];
      if (last !== undefined && last.flags === flags) last.length += n;
      else extents.push({ length: n, flags });
    });
    this.defer(() => cb(0, extents));
  }

  private inRange(offset: number, length: number): boolean {
    return Number.isSafeInteger(offset) && offset >= 0 && length >= 0 && offset + length <= this.size_bytes;
  }

  /** Zeroes a range: whole pages are dropped (holes) unless `keep` asks them allocated. */
  private zero(offset: number, length: number, keep: boolean): void {
    this.eachPage(offset, length, (p, in_page, _at, n) => {
      this.dirty.add(p);
      const b = this.pages.get(p);
      if (n === this.page && !keep) this.pages.delete(p);
      else if (b !== undefined) b.fill(0, in_page, in_page + n);
      else if (keep) this.pages.set(p, Buffer.alloc(this.page));
    });
  }

  /** Calls fn(page, offset in page, offset in range, bytes) for each page the range touches. */
  private eachPage(offset: number, length: number, fn: (p: number, in_page: number, at: number, n: number) => void): void {
    let at = 0;
    while (at < length) {
      const abs = offset + at;
      const p = Math.floor(abs / this.page);
      const in_page = abs - p * this.page;
      const n = Math.min(this.page - in_page, length - at);
      fn(p, in_page, at, n);
      at += n;
    }
  }
}
