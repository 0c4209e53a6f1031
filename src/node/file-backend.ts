// The real store backend: a regular file or a raw block device through positional IO on
// a FileHandle's descriptor. Small reads and non-FUA writes run synchronously while the page
// cache answers them, else in the libuv thread pool (sync-io-gate.ts decides). FLUSH =
// fdatasync; FUA = write, then fdatasync. Write-zeroes
// (and therefore discard) writes zeroes: Node offers no fallocate(PUNCH_HOLE / ZERO_RANGE)
// or BLKZEROOUT, and every member must read zeroes afterwards whatever its file system does.
//
// A block device is opened with O_EXCL (Linux: exclusive against mounts and other
// exclusive openers); its size and queue limits come from /sys/dev/block/<maj>:<min>/.
// A regular file has no such lock: it gets a lock file beside it (store-lock.ts), so two
// daemons, or two stores of one daemon, never have it open at once.

import { constants, fdatasync, read, readSync, write, writeSync } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { Errno } from '../util/errno.js';
import type { IoCallback, ReadCallback } from '../rmr/server/io-store.js';
import { checkParams, defaultParams, type DeviceParams } from '../brmr/params.js';
import { EXISTING_PROBE_BYTES, type BackendOpener, type OpenOptions, type StoreBackend } from '../brmr/server/backend.js';
import { SyncIoGate, type SyncIoGateOptions } from '../brmr/server/sync-io-gate.js';
import { lockStore, type StoreLock } from './store-lock.js';

const ZEROES = Buffer.alloc(1 << 20);
/** Larger IOs always go to the thread pool (their copy is worth a worker's core). */
const SYNC_IO_MAX_BYTES = 64 * 1024;
/**
 * Small reads are views of a shared slab: Buffer.allocUnsafe pools only below 4 KiB, so every
 * 4 KiB read was its own ArrayBuffer (allocation, sweeping). The memory is never reused: a
 * view keeps its slab alive until the reply is gone.
 */
const READ_SLAB_BYTES = 256 * 1024;
const READ_SLAB_MAX = 16 * 1024;

export interface NodeFileBackendOptions {
  /** Small IO on the event loop while the page cache answers (default true); false: always the thread pool. */
  sync_io?: boolean;
  sync_io_gate?: Partial<SyncIoGateOptions>;
}

export function errnoOf(e: unknown): number {
  const code = (e as { code?: string } | null)?.code;
  switch (code) {
    case 'ENOSPC':
      return Errno.ENOSPC;
    case 'EACCES':
    case 'EPERM':
      return Errno.EACCES;
    case 'ENOENT':
      return Errno.ENOENT;
    case 'EBUSY':
      return Errno.EBUSY;
    case 'EEXIST':
      return Errno.EEXIST;
    case 'ELOOP':
      return Errno.ELOOP;
    case 'EROFS':
      return Errno.EROFS;
    default:
      return Errno.EIO;
  }
}

async function sysfsNumber(dir: string, name: string): Promise<number | null> {
  for (const d of [`${dir}/queue`, `${dir}/../queue`, dir]) {
    try {
      const v = Number((await readFile(`${d}/${name}`, 'utf8')).trim());
      if (Number.isSafeInteger(v)) return v;
    } catch {
      // not there: try the parent (a partition's queue is its disk's)
    }
  }
  return null;
}

/** Size and limits of a block device from sysfs (dev_t split as Linux does). */
async function blockDeviceInfo(rdev: number): Promise<{ size_bytes: number; params: DeviceParams }> {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00);
  const dir = `/sys/dev/block/${major}:${minor}`;
  const sectors = await sysfsNumber(dir, 'size');
  if (sectors === null) throw Object.assign(new Error(`cannot read the size of block device ${major}:${minor}`), { code: 'EIO' });
  const p = defaultParams();
  const lbs = await sysfsNumber(dir, 'logical_block_size');
  const pbs = await sysfsNumber(dir, 'physical_block_size');
  const max_kb = await sysfsNumber(dir, 'max_sectors_kb');
  const gran = await sysfsNumber(dir, 'discard_granularity');
  const wc = await readFile(`${dir}/queue/write_cache`, 'utf8').catch(() => readFile(`${dir}/../queue/write_cache`, 'utf8').catch(() => 'write back'));
  if (lbs !== null) p.logical_block_size = lbs;
  if (pbs !== null) p.physical_block_size = Math.max(pbs, p.logical_block_size);
  if (max_kb !== null && max_kb > 0) p.max_io_bytes = Math.min(p.max_io_bytes, max_kb * 1024);
  if (gran !== null && gran > 0) p.discard_granularity = Math.max(gran, p.logical_block_size);
  else p.discard_granularity = Math.max(p.discard_granularity, p.logical_block_size);
  if (!wc.includes('back')) p.cache_policy &= ~2;
  const bad = checkParams(p);
  return { size_bytes: sectors * 512, params: bad === null ? p : defaultParams() };
}

export class NodeFileBackend implements StoreBackend {
  readonly kind: 'file' | 'block';
  readonly path: string;
  readonly size_bytes: number;
  readonly params: DeviceParams;
  private readonly fh: FileHandle;
  /** A regular file's lock (store-lock.ts), released at close. */
  private readonly lock: StoreLock | null;
  private closed = false;
  private read_slab = Buffer.allocUnsafe(0);
  private read_slab_used = 0;
  /** Null: every data IO goes to the thread pool. Reads and writes are judged apart. */
  readonly read_gate: SyncIoGate | null;
  readonly zeroed: boolean;
  readonly write_gate: SyncIoGate | null;

  private constructor(kind: 'file' | 'block', path: string, fh: FileHandle, size_bytes: number, params: DeviceParams, o: NodeFileBackendOptions, lock: StoreLock | null = null, zeroed = false) {
    this.kind = kind;
    this.zeroed = zeroed;
    this.path = path;
    this.fh = fh;
    this.lock = lock;
    this.size_bytes = size_bytes;
    this.params = params;
    const now = (): number => performance.now();
    this.read_gate = o.sync_io === false ? null : new SyncIoGate(now, o.sync_io_gate);
    // Writes to one file take its inode lock in the kernel, in the thread pool or not: a
    // slow one holds up the other writers either way. Only a long stall, or many, counts.
    this.write_gate = o.sync_io === false ? null : new SyncIoGate(now, { slow_call_us: 20_000, slow_mean_us: 200, ...o.sync_io_gate });
  }

  static async open(path: string, opts: OpenOptions, o: NodeFileBackendOptions = {}): Promise<NodeFileBackend> {
    let fh: FileHandle;
    // O_NOFOLLOW: a symlink at the path fails with ELOOP instead of being followed.
    const nofollow = opts.nofollow === true ? constants.O_NOFOLLOW : 0;
    let existed = true;
    try {
      fh = await open(path, constants.O_RDWR | nofollow);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ELOOP' && nofollow !== 0) throw Object.assign(new Error(`${path} is a symlink (refused: set roles.storage.store_symlinks to allow them)`), { code: 'EACCES' });
      if (!opts.create || code !== 'ENOENT') throw e;
      // O_EXCL: created now, by us; a file that appeared meanwhile is opened (and checked) instead.
      try {
        fh = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | nofollow, 0o600);
        existed = false;
      } catch (e2) {
        if ((e2 as { code?: string }).code !== 'EEXIST') throw e2;
        fh = await open(path, constants.O_RDWR | nofollow);
      }
    }
    let lock: StoreLock | null = null;
    try {
      const st = await fh.stat();
      if (st.isBlockDevice()) {
        await fh.close();
        fh = await open(path, constants.O_RDWR | constants.O_EXCL | nofollow);
        const info = await blockDeviceInfo(st.rdev);
        await checkExisting(fh, path, Math.min(info.size_bytes, EXISTING_PROBE_BYTES), opts);
        return new NodeFileBackend('block', path, fh, info.size_bytes, info.params, o);
      }
      if (!st.isFile()) throw Object.assign(new Error(`${path} is neither a regular file nor a block device`), { code: 'EINVAL' });
      // Before anything reads or changes it: another holder may be writing it.
      lock = await lockStore(path, nofollow !== 0);
      if (existed) await checkExisting(fh, path, Math.min(st.size, EXISTING_PROBE_BYTES), opts);
      let size = st.size;
      // Made by this open, or grown from empty: a sparse file of zeroes (StoreBackend.zeroed).
      const zeroed = opts.create && (!existed || st.size === 0);
      if (opts.create && size < opts.size_bytes) {
        await fh.truncate(opts.size_bytes);
        size = opts.size_bytes;
      }
      return new NodeFileBackend('file', path, fh, size, defaultParams(), o, lock, zeroed);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await lock?.release();
      throw e;
    }
  }

  private bad(pos: number, length: number): number {
    if (this.closed) return Errno.ENXIO;
    return !Number.isSafeInteger(pos) || !Number.isSafeInteger(length) || pos < 0 || length < 0 || pos + length > this.size_bytes ? Errno.EINVAL : 0;
  }

  /**
   * Data IO goes through the callback API on the FileHandle's descriptor, not the promise
   * API: the same positional pread/pwrite in the thread pool, at about half the CPU per IO
   * (no promise, async frame and microtask per call; measured 18 vs 11 us per 4 KiB read).
   */
  private writeAll(data: Buffer, pos: number, cb: IoCallback): void {
    if (data.length === 0) return void queueMicrotask(() => cb(0));
    const fd = this.fh.fd;
    let off = 0;
    const step = (e: NodeJS.ErrnoException | null, n: number): void => {
      if (e !== null) return cb(errnoOf(e));
      if (n <= 0) return cb(Errno.EIO); // short write
      off += n;
      if (off < data.length) return void write(fd, data, off, data.length - off, pos + off, step);
      cb(0);
    };
    write(fd, data, 0, data.length, pos, step);
  }

  /**
   * A small IO done on the event loop, timed for the gate; completes from a microtask (never
   * from inside the starting call). False when the gate wants the thread pool.
   */
  private trySync(gate: SyncIoGate | null, length: number, io: () => number, cb: IoCallback): boolean {
    if (gate === null || length > SYNC_IO_MAX_BYTES || !gate.allowed()) return false;
    const t0 = performance.now();
    let status = 0;
    try {
      status = io();
    } catch (e) {
      status = errnoOf(e);
    }
    gate.took((performance.now() - t0) * 1000);
    queueMicrotask(() => cb(status));
    return true;
  }

  private readBuffer(length: number): Buffer {
    if (length > READ_SLAB_MAX) return Buffer.allocUnsafe(length);
    if (this.read_slab.length - this.read_slab_used < length) {
      this.read_slab = Buffer.allocUnsafeSlow(READ_SLAB_BYTES);
      this.read_slab_used = 0;
    }
    const at = this.read_slab_used;
    // 8-byte aligned views, as the allocator's own.
    this.read_slab_used = at + ((length + 7) & ~7);
    return this.read_slab.subarray(at, at + length);
  }

  read(pos: number, length: number, cb: ReadCallback): void {
    const err = this.bad(pos, length);
    if (err !== 0) return void queueMicrotask(() => cb(err, null));
    const buf = this.readBuffer(length);
    if (length === 0) return void queueMicrotask(() => cb(0, buf));
    const fd = this.fh.fd;
    const sync = (): number => {
      let got = 0;
      while (got < length) {
        const n = readSync(fd, buf, got, length - got, pos + got);
        if (n === 0) {
          buf.fill(0, got); // past the end of a short file
          break;
        }
        got += n;
      }
      return 0;
    };
    if (this.trySync(this.read_gate, length, sync, (s) => cb(s, s === 0 ? buf : null))) return;
    let got = 0;
    const step = (e: NodeJS.ErrnoException | null, n: number): void => {
      if (e !== null) return cb(errnoOf(e), null);
      got += n;
      // Past the end of a short file reads as zeroes.
      if (n === 0) buf.fill(0, got);
      else if (got < length) return void read(fd, buf, got, length - got, pos + got, step);
      cb(0, buf);
    };
    read(fd, buf, 0, length, pos, step);
  }

  write(pos: number, data: Buffer, fua: boolean, cb: IoCallback): void {
    const err = this.bad(pos, data.length);
    if (err !== 0) return void queueMicrotask(() => cb(err));
    if (fua) return this.writeAll(data, pos, (s) => (s !== 0 ? cb(s) : this.datasync(cb)));
    const fd = this.fh.fd;
    const sync = (): number => {
      for (let off = 0; off < data.length; ) {
        const n = writeSync(fd, data, off, data.length - off, pos + off);
        if (n <= 0) return Errno.EIO; // short write
        off += n;
      }
      return 0;
    };
    if (data.length > 0 && this.trySync(this.write_gate, data.length, sync, cb)) return;
    this.writeAll(data, pos, cb);
  }

  writeZeroes(pos: number, length: number, cb: IoCallback): void {
    const err = this.bad(pos, length);
    if (err !== 0) return void queueMicrotask(() => cb(err));
    const next = (done: number): void => {
      if (done >= length) return cb(0);
      const n = Math.min(ZEROES.length, length - done);
      this.writeAll(ZEROES.subarray(0, n), pos + done, (s) => (s !== 0 ? cb(s) : next(done + n)));
    };
    if (length === 0) return void queueMicrotask(() => cb(0));
    next(0);
  }

  flush(cb: IoCallback): void {
    const err = this.bad(0, 0);
    if (err !== 0) return void queueMicrotask(() => cb(err));
    this.datasync(cb);
  }

  private datasync(cb: IoCallback): void {
    fdatasync(this.fh.fd, (e) => cb(e === null ? 0 : errnoOf(e)));
  }

  close(cb: () => void): void {
    if (this.closed) return void queueMicrotask(cb);
    this.closed = true;
    const release = (): void => {
      if (this.lock === null) return cb();
      this.lock.release().then(cb, cb);
    };
    this.fh.close().then(release, release);
  }
}

/** OpenOptions.existing on the first `n` bytes of an opened file or device (before it is changed). */
async function checkExisting(fh: FileHandle, path: string, n: number, opts: OpenOptions): Promise<void> {
  if (opts.existing === undefined || n <= 0) return;
  const first = Buffer.alloc(n);
  const { bytesRead } = await fh.read(first, 0, n, 0);
  const why = opts.existing(first.subarray(0, bytesRead));
  if (why !== null) throw Object.assign(new Error(why), { code: 'EEXIST' });
}

/** A BackendOpener for files and block devices with these options. */
export function makeNodeFileOpener(o: NodeFileBackendOptions = {}): BackendOpener {
  return (path, opts, cb) => {
    NodeFileBackend.open(path, opts, o).then(
      (b) => cb(0, b, null),
      (e: unknown) => cb(errnoOf(e), null, `${path}: ${e instanceof Error ? e.message : String(e)}`),
    );
  };
}

/** The BackendOpener the daemon uses (default options). */
export const nodeFileOpener: BackendOpener = makeNodeFileOpener();
