// The real store backend: a regular file or a raw block device through fs.promises
// FileHandle positional IO. FLUSH = fdatasync; FUA = write, then fdatasync. Write-zeroes
// (and therefore discard) writes zeroes: Node offers no fallocate(PUNCH_HOLE / ZERO_RANGE)
// or BLKZEROOUT, and every member must read zeroes afterwards whatever its file system does.
//
// A block device is opened with O_EXCL (Linux: exclusive against mounts and other
// exclusive openers); its size and queue limits come from /sys/dev/block/<maj>:<min>/.
// A regular file has no such lock: two daemons on one file are the operator's mistake.

import { constants, fdatasync, read, write } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { Errno } from '../../util/errno.js';
import type { IoCallback, ReadCallback } from '../../rmr/store.js';
import { checkParams, defaultParams, type DeviceParams } from '../params.js';
import type { BackendOpener, StoreBackend } from './backend.js';

const ZEROES = Buffer.alloc(1 << 20);

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
  private closed = false;

  private constructor(kind: 'file' | 'block', path: string, fh: FileHandle, size_bytes: number, params: DeviceParams) {
    this.kind = kind;
    this.path = path;
    this.fh = fh;
    this.size_bytes = size_bytes;
    this.params = params;
  }

  static async open(path: string, opts: { create: boolean; size_bytes: number }): Promise<NodeFileBackend> {
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDWR);
    } catch (e) {
      if (!opts.create || (e as { code?: string }).code !== 'ENOENT') throw e;
      fh = await open(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    }
    try {
      const st = await fh.stat();
      if (st.isBlockDevice()) {
        await fh.close();
        fh = await open(path, constants.O_RDWR | constants.O_EXCL);
        const info = await blockDeviceInfo(st.rdev);
        return new NodeFileBackend('block', path, fh, info.size_bytes, info.params);
      }
      if (!st.isFile()) throw Object.assign(new Error(`${path} is neither a regular file nor a block device`), { code: 'EINVAL' });
      let size = st.size;
      if (opts.create && size < opts.size_bytes) {
        await fh.truncate(opts.size_bytes);
        size = opts.size_bytes;
      }
      return new NodeFileBackend('file', path, fh, size, defaultParams());
    } catch (e) {
      await fh.close().catch(() => undefined);
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

  read(pos: number, length: number, cb: ReadCallback): void {
    const err = this.bad(pos, length);
    if (err !== 0) return void queueMicrotask(() => cb(err, null));
    const buf = Buffer.allocUnsafe(length);
    if (length === 0) return void queueMicrotask(() => cb(0, buf));
    const fd = this.fh.fd;
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
    if (!fua) return this.writeAll(data, pos, cb);
    this.writeAll(data, pos, (s) => (s !== 0 ? cb(s) : this.datasync(cb)));
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
    this.fh.close().then(cb, cb);
  }
}

/** The BackendOpener the daemon uses. */
export const nodeFileOpener: BackendOpener = (path, opts, cb) => {
  NodeFileBackend.open(path, opts).then(
    (b) => cb(0, b, null),
    (e: unknown) => cb(errnoOf(e), null, `${path}: ${e instanceof Error ? e.message : String(e)}`),
  );
};
