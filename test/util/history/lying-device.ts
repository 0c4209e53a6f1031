// A broken block device for proving the history checker catches servers that lie: it
// acknowledges writes it drops, answers reads from a stale copy, or loses everything not
// flushed when told to "crash". Seeded, so a failing run replays.

import type { BlockDevice, BlockSizes, Extent, WriteFlags, ZeroFlags } from '../../../src/util/block-device.js';
import { SeededRandom } from '../../../src/util/seeded-random.js';

export interface LieOptions {
  /** Acknowledge this fraction of writes without doing them. */
  drop_write_rate?: number;
  /** Answer this fraction of reads from the copy as it was before the last write to it. */
  stale_read_rate?: number;
  /** FUA and flush are acknowledged but do nothing (crash() loses everything since the last honest flush). */
  fake_durability?: boolean;
  seed?: number;
}

export class LyingDevice implements BlockDevice {
  readonly size_bytes: number;
  readonly block_sizes: BlockSizes;
  readonly writable = true;
  readonly can_trim = true;
  readonly can_zero = true;
  readonly can_fast_zero = false;
  readonly multi_conn = true;
  private readonly cur: Buffer;
  private readonly old: Buffer;
  /** What a power loss leaves: the state at the last flush that really happened. */
  private durable: Buffer;
  private readonly rnd: SeededRandom;
  readonly lies = { dropped_writes: 0, stale_reads: 0 };

  constructor(
    size_bytes: number,
    private readonly o: LieOptions,
  ) {
    this.size_bytes = size_bytes;
    this.block_sizes = { minimum: 512, preferred: 4096, maximum: 1 << 20 };
    this.cur = Buffer.alloc(size_bytes);
    this.old = Buffer.alloc(size_bytes);
    this.durable = Buffer.alloc(size_bytes);
    this.rnd = new SeededRandom(o.seed ?? 1);
  }

  /** Simulated power loss: back to the last durable state. */
  crash(): void {
    this.durable.copy(this.cur);
    this.durable.copy(this.old);
  }

  metaContexts(): readonly string[] {
    return [];
  }

  read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    const stale = (this.o.stale_read_rate ?? 0) > 0 && this.rnd.float() < (this.o.stale_read_rate ?? 0);
    if (stale) this.lies.stale_reads++;
    const src = stale ? this.old : this.cur;
    const data = Buffer.from(src.subarray(offset, offset + length));
    queueMicrotask(() => cb(0, data));
  }

  private put(offset: number, data: Buffer | null, length: number, fua: boolean): void {
    if ((this.o.drop_write_rate ?? 0) > 0 && this.rnd.float() < (this.o.drop_write_rate ?? 0)) {
      this.lies.dropped_writes++;
      return;
    }
    this.cur.copy(this.old, offset, offset, offset + length);
    if (data === null) this.cur.fill(0, offset, offset + length);
    else data.copy(this.cur, offset);
    if (fua && this.o.fake_durability !== true) this.cur.copy(this.durable, offset, offset, offset + length);
  }

  write(offset: number, data: Buffer, flags: WriteFlags, cb: (status: number) => void): void {
    this.put(offset, data, data.length, flags.fua);
    queueMicrotask(() => cb(0));
  }

  trim(offset: number, length: number, flags: WriteFlags, cb: (status: number) => void): void {
    this.put(offset, null, length, flags.fua);
    queueMicrotask(() => cb(0));
  }

  writeZeroes(offset: number, length: number, flags: ZeroFlags, cb: (status: number) => void): void {
    this.put(offset, null, length, flags.fua);
    queueMicrotask(() => cb(0));
  }

  flush(cb: (status: number) => void): void {
    if (this.o.fake_durability !== true) this.durable = Buffer.from(this.cur);
    queueMicrotask(() => cb(0));
  }

  blockStatus(_context: string, _offset: number, length: number, cb: (status: number, extents: Extent[] | null) => void): void {
    queueMicrotask(() => cb(0, [{ length, flags: 0 }]));
  }
}
