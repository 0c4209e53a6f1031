// A memory disk for tests and the simulator, usable as BlockStore and MetaStore. Writes go
// to a volatile cache until a flush (or FUA) makes them durable; `powerLoss` throws the cache
// away, or tears it (keeps a random subset of atomic units (512 bytes by default) of each unflushed write), as a
// real disk may at a crash. Latency and errors are injected per operation; flushes can fail
// (the cache stays volatile), and writes can be held (a stalled device) until released.

import type { Clock } from '../util/ports.js';
import { Errno } from '../util/errno.js';
import type { BlockStore, IoCallback, MetaStore, ReadCallback } from '../rmr/server/io-store.js';
import type { SeededRandom } from '../util/seeded-random.js';

const SECTOR = 512;
let ZEROES = Buffer.alloc(64 * 1024);

export interface MemDiskFaults {
  /** Latency of every operation in ms. */
  latency_ms: number;
  /** Probability that a read / write fails with EIO. */
  read_error_rate: number;
  write_error_rate: number;
  /** Byte ranges whose reads or writes fail with EIO. */
  bad_ranges: { offset: number; length: number }[];
  /** Atomic write unit at a torn power loss (512, or 4096 for a 4Kn device). */
  tear_unit: number;
  /** Flushes fail with EIO; what they should have made durable stays volatile (an fsync error). */
  flush_error: boolean;
  /** Writes (and discards, write-zeroes) issued while set are held, neither applied nor answered, until releaseHeld(). */
  stall_writes: boolean;
  /**
   * A flush makes durable only the writes completed before it was issued (all that fsync
   * promises); unset, it also takes those completed while it runs.
   */
  flush_issued_only: boolean;
}

export class MemDisk implements BlockStore, MetaStore {
  readonly size_bytes: number;
  /** Durable content. */
  private readonly durable: Buffer;
  /** What reads see: durable content plus the volatile cache. */
  private readonly current: Buffer;
  /** Unflushed writes, in order. */
  private cache: { offset: number; data: Buffer }[] = [];
  private readonly clock: Clock;
  private readonly random: SeededRandom | null;
  faults: MemDiskFaults = { latency_ms: 0, read_error_rate: 0, write_error_rate: 0, bad_ranges: [], tear_unit: SECTOR, flush_error: false, stall_writes: false, flush_issued_only: false };
  readonly stats = { reads: 0, writes: 0, flushes: 0, errors: 0, held: 0 };
  /** Writes held by `stall_writes`, in order, each with the crash epoch it was issued in. */
  private held: { epoch: number; run: () => void }[] = [];

  constructor(size_bytes: number, clock: Clock, random: SeededRandom | null = null) {
    if (!Number.isSafeInteger(size_bytes) || size_bytes <= 0 || size_bytes > 1 << 30) throw new RangeError(`memory disk size ${size_bytes}`);
    this.size_bytes = size_bytes;
    this.durable = Buffer.alloc(size_bytes);
    this.current = Buffer.alloc(size_bytes);
    this.clock = clock;
    this.random = random;
  }

  /** Bumped by crash(): operations started before it never complete. */
  private epoch = 0;

  private later(fn: () => void): void {
    const e = this.epoch;
    this.clock.setTimer(this.faults.latency_ms, () => {
      if (e === this.epoch) fn();
    });
  }

  /**
   * The host crashed: operations in flight are lost (never applied, never answered). A
   * process crash keeps what the OS had accepted (completed writes); a power loss drops or
   * tears what was not flushed.
   */
  crash(mode: 'process' | 'drop' | 'tear'): void {
    this.epoch++;
    this.held = [];
    if (mode === 'process') {
      this.current.copy(this.durable);
      this.cache = [];
    } else this.powerLoss(mode);
  }

  private check(offset: number, length: number): number {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size_bytes) return Errno.EINVAL;
    return 0;
  }

  private failed(offset: number, length: number, rate: number): boolean {
    if (rate > 0 && this.random !== null && this.random.float() < rate) return true;
    return this.faults.bad_ranges.some((r) => offset < r.offset + r.length && r.offset < offset + length);
  }

  read(offset: number, length: number, cb: ReadCallback): void {
    this.stats.reads++;
    const bad = this.check(offset, length);
    const err = bad !== 0 ? bad : this.failed(offset, length, this.faults.read_error_rate) ? Errno.EIO : 0;
    // The data is taken at completion time, as a real disk would.
    this.later(() => {
      if (err !== 0) {
        this.stats.errors++;
        return cb(err, null);
      }
      cb(0, Buffer.from(this.current.subarray(offset, offset + length)));
    });
  }

  get meta_size_bytes(): number {
    return this.size_bytes;
  }

  readMeta(offset: number, length: number, cb: ReadCallback): void {
    this.read(offset, length, cb);
  }

  writeMeta(offset: number, data: Buffer, cb: IoCallback): void {
    this.write(offset, data, true, cb);
  }

  write(offset: number, data: Buffer, fua: boolean, cb: IoCallback): void {
    this.writeOwned(offset, Buffer.from(data), fua, cb);
  }

  /** A write of a buffer nobody else changes (the caller's data is copied by write()). */
  private writeOwned(offset: number, copy: Buffer, fua: boolean, cb: IoCallback): void {
    this.stats.writes++;
    const bad = this.check(offset, copy.length);
    const err = bad !== 0 ? bad : this.failed(offset, copy.length, this.faults.write_error_rate) ? Errno.EIO : 0;
    const run = (): void => {
      if (err !== 0) {
        this.stats.errors++;
        return cb(err);
      }
      copy.copy(this.current, offset);
      if (fua) {
        copy.copy(this.durable, offset);
        this.uncache(offset, copy.length);
      } else this.cache.push({ offset, data: copy });
      cb(0);
    };
    if (this.faults.stall_writes) {
      this.stats.held++;
      this.held.push({ epoch: this.epoch, run });
      return;
    }
    this.later(run);
  }

  /** Writes held by a stall. */
  get heldWrites(): number {
    return this.held.length;
  }

  /** The stall ends for the writes it held: each is applied and answered (after the latency), in order. */
  releaseHeld(): void {
    const held = this.held;
    this.held = [];
    for (const h of held) if (h.epoch === this.epoch) this.later(h.run);
  }

  /**
   * A durable write supersedes the unflushed writes it overlaps: a later flush or a torn
   * power loss must not bring their older bytes back over it.
   */
  private uncache(offset: number, length: number): void {
    const end = offset + length;
    const out: { offset: number; data: Buffer }[] = [];
    for (const w of this.cache) {
      const w_end = w.offset + w.data.length;
      if (w_end <= offset || w.offset >= end) {
        out.push(w);
        continue;
      }
      if (w.offset < offset) out.push({ offset: w.offset, data: w.data.subarray(0, offset - w.offset) });
      if (w_end > end) out.push({ offset: end, data: w.data.subarray(end - w.offset) });
    }
    this.cache = out;
  }

  discard(offset: number, length: number, cb: IoCallback): void {
    this.writeZeroes(offset, length, cb);
  }

  writeZeroes(offset: number, length: number, cb: IoCallback): void {
    const bad = this.check(offset, length);
    if (bad !== 0) return this.later(() => cb(bad));
    // One shared zero buffer: nothing ever writes into it.
    if (ZEROES.length < length) ZEROES = Buffer.alloc(Math.max(length, 2 * ZEROES.length));
    this.writeOwned(offset, ZEROES.subarray(0, length), false, cb);
  }

  flush(cb: IoCallback): void {
    this.stats.flushes++;
    const fail = this.faults.flush_error;
    // A cached write trimmed by a later durable write is a new entry: not covered (stays volatile).
    const covered = this.faults.flush_issued_only ? new Set(this.cache) : null;
    this.later(() => {
      if (fail) {
        this.stats.errors++;
        return cb(Errno.EIO);
      }
      for (const w of this.cache) if (covered === null || covered.has(w)) w.data.copy(this.durable, w.offset);
      this.cache = covered === null ? [] : this.cache.filter((w) => !covered.has(w));
      cb(0);
    });
  }

  /** Bytes written but not yet durable. */
  get unflushedWrites(): number {
    return this.cache.length;
  }

  /**
   * Simulated power loss: unflushed writes are dropped ('drop') or torn ('tear': each
   * atomic unit (faults.tear_unit) of each write survives with probability 1/2). Reads then see only what
   * was durable.
   */
  powerLoss(mode: 'drop' | 'tear'): void {
    if (mode === 'tear') {
      const rnd = this.random;
      if (rnd === null) throw new Error('tearing needs a SeededRandom');
      for (const w of this.cache) {
        const unit = this.faults.tear_unit;
        for (let s = 0; s < w.data.length; s += unit) {
          if (rnd.float() < 0.5) w.data.copy(this.durable, w.offset + s, s, Math.min(s + unit, w.data.length));
        }
      }
    }
    this.cache = [];
    this.durable.copy(this.current);
  }

  /** Direct view of what reads see (tests compare replicas with it). */
  contents(offset = 0, length = this.size_bytes): Buffer {
    return Buffer.from(this.current.subarray(offset, offset + length));
  }
}
