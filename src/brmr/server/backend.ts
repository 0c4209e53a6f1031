// What a store sits on: the whole backing file or block device, addressed by absolute byte
// position (header at 0, data at 4096, RMR metadata after the data; store.ts owns that
// layout). src/node/file-backend.ts is the real one; MemBackend below serves tests and the
// simulator. Completions are callbacks, never called synchronously from the starting call.

import { Errno } from '../../util/errno.js';
import type { IoCallback, ReadCallback } from '../../rmr/server/io-store.js';
import { defaultParams, type DeviceParams } from '../params.js';

export interface StoreBackend {
  readonly kind: 'file' | 'block' | 'memory';
  readonly path: string;
  /** Bytes of the whole file or device. */
  readonly size_bytes: number;
  /** What the device offers (block sizes, limits, cache policy). */
  readonly params: DeviceParams;
  /**
   * Every byte reads as zero because this open made the file (or grew it from empty): a
   * store created on it starts blank (header STATE_BLANK). Absent or false: unknown.
   */
  readonly zeroed?: boolean;
  read(pos: number, length: number, cb: ReadCallback): void;
  /** With `fua`, durable when cb(0) is called. */
  write(pos: number, data: Buffer, fua: boolean, cb: IoCallback): void;
  /** The range reads as zeroes afterwards (written as zeroes: Node has no fallocate). */
  writeZeroes(pos: number, length: number, cb: IoCallback): void;
  /** Everything completed before the call is durable when cb(0) is called (fdatasync). */
  flush(cb: IoCallback): void;
  close(cb: () => void): void;
}

export interface OpenOptions {
  /** A regular file is created (or grown) to `size_bytes`; a block device is used as it is. Without it the path must exist. */
  create: boolean;
  size_bytes: number;
  /** The path must not be a symlink (opened with O_NOFOLLOW). */
  nofollow?: boolean;
  /**
   * Asked, before anything is changed, about the first bytes (up to EXISTING_PROBE_BYTES) of a
   * file or device that existed and is not empty: a reason refuses the open (EEXIST).
   */
  existing?: (first: Buffer) => string | null;
}

/** How much of an existing file or device `OpenOptions.existing` is shown. */
export const EXISTING_PROBE_BYTES = 4096;

/** Opens a backend (see OpenOptions). */
export type BackendOpener = (path: string, opts: OpenOptions, cb: (status: number, backend: StoreBackend | null, reason: string | null) => void) => void;

/** A memory "disk" that outlives the handles opened on it (a store reopened after a restart). */
export class MemDevice {
  readonly bytes: Buffer;
  /** Fault injection: every IO from now on fails with EIO. */
  fail = false;
  /** Fault injection: writes overlapping [offset, offset+length) fail with EIO. */
  bad_write_ranges: { offset: number; length: number }[] = [];
  readonly stats = { reads: 0, writes: 0, flushes: 0 };
  constructor(size_bytes: number) {
    if (!Number.isSafeInteger(size_bytes) || size_bytes <= 0 || size_bytes > 1 << 30) throw new RangeError(`memory device size ${size_bytes}`);
    this.bytes = Buffer.alloc(size_bytes);
  }
}

export class MemBackend implements StoreBackend {
  readonly kind = 'memory' as const;
  readonly path: string;
  readonly size_bytes: number;
  readonly params: DeviceParams;
  private readonly dev: MemDevice;
  private closed = false;

  constructor(path: string, dev: MemDevice, params: DeviceParams = defaultParams()) {
    this.path = path;
    this.dev = dev;
    this.size_bytes = dev.bytes.length;
    this.params = params;
  }

  private check(pos: number, length: number): number {
    if (this.closed) return Errno.ENXIO;
    if (!Number.isSafeInteger(pos) || !Number.isSafeInteger(length) || pos < 0 || length < 0 || pos + length > this.size_bytes) return Errno.EINVAL;
    return this.dev.fail ? Errno.EIO : 0;
  }

  private badWrite(pos: number, length: number): boolean {
    return this.dev.bad_write_ranges.some((r) => pos < r.offset + r.length && r.offset < pos + length);
  }

  read(pos: number, length: number, cb: ReadCallback): void {
    const err = this.check(pos, length);
    this.dev.stats.reads++;
    queueMicrotask(() => (err !== 0 ? cb(err, null) : cb(0, Buffer.from(this.dev.bytes.subarray(pos, pos + length)))));
  }

  write(pos: number, data: Buffer, _fua: boolean, cb: IoCallback): void {
    let err = this.check(pos, data.length);
    if (err === 0 && this.badWrite(pos, data.length)) err = Errno.EIO;
    this.dev.stats.writes++;
    if (err === 0) data.copy(this.dev.bytes, pos);
    queueMicrotask(() => cb(err));
  }

  writeZeroes(pos: number, length: number, cb: IoCallback): void {
    let err = this.check(pos, length);
    if (err === 0 && this.badWrite(pos, length)) err = Errno.EIO;
    if (err === 0) this.dev.bytes.fill(0, pos, pos + length);
    queueMicrotask(() => cb(err));
  }

  flush(cb: IoCallback): void {
    const err = this.check(0, 0);
    this.dev.stats.flushes++;
    queueMicrotask(() => cb(err));
  }

  close(cb: () => void): void {
    this.closed = true;
    queueMicrotask(cb);
  }
}

/** A BackendOpener over named memory devices (tests): `create` makes the device if missing. */
export function memOpener(devices: Map<string, MemDevice>, params?: DeviceParams): BackendOpener {
  return (path, opts, cb) => {
    let dev = devices.get(path);
    if (dev !== undefined && opts.existing !== undefined) {
      const why = opts.existing(dev.bytes.subarray(0, EXISTING_PROBE_BYTES));
      if (why !== null) return void queueMicrotask(() => cb(Errno.EEXIST, null, `${path}: ${why}`));
    }
    if (dev === undefined && opts.create) devices.set(path, (dev = new MemDevice(opts.size_bytes)));
    const d = dev;
    queueMicrotask(() => (d === undefined ? cb(Errno.ENOENT, null, `no memory device ${path}`) : cb(0, new MemBackend(path, d, params), null)));
  };
}
