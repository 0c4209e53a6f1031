// A store on a regular file or a raw block device, through fs.promises.FileHandle positional
// IO: the BlockStore (replicated data) and MetaStore (RMR metadata) ports of a storage node.
// One file holds both: data in [data_offset, data_offset + size_bytes), metadata in
// [meta_offset, meta_offset + meta_size_bytes).
//
// FLUSH = fdatasync. FUA = write, then fdatasync. Discard and write-zeroes write zeroes, so
// every member reads zeroes afterwards whatever its file system does (punching holes needs
// fallocate, which Node does not offer).

import { open, type FileHandle } from 'node:fs/promises';
import { Errno } from '../../util/errno.js';
import type { BlockStore, IoCallback, MetaStore, ReadCallback } from '../../rmr/store.js';

const ZERO_CHUNK = Buffer.alloc(1 << 20);

function errnoOf(e: unknown): number {
  const code = (e as { code?: string }).code;
  switch (code) {
    case 'ENOSPC':
      return Errno.ENOSPC;
    case 'EACCES':
    case 'EPERM':
      return Errno.EACCES;
    case 'ENOENT':
      return Errno.ENOENT;
    default:
      return Errno.EIO;
  }
}

export interface FileStoreLayout {
  data_offset: number;
  size_bytes: number;
  meta_offset: number;
  meta_size_bytes: number;
}

export class FileStore implements BlockStore, MetaStore {
  readonly size_bytes: number;
  readonly meta_size_bytes: number;
  private readonly fh: FileHandle;
  private readonly layout: FileStoreLayout;
  private closed = false;
  /** Set by the first IO error: the store stays unusable until removed and added again. */
  failed_status = 0;

  private constructor(fh: FileHandle, layout: FileStoreLayout) {
    this.fh = fh;
    this.layout = layout;
    this.size_bytes = layout.size_bytes;
    this.meta_size_bytes = layout.meta_size_bytes;
  }

  /**
   * Opens `path` (a file, created and sized when `create`; or a block device). The file must
   * be large enough for the layout.
   */
  static async open(path: string, layout: FileStoreLayout, create: boolean): Promise<FileStore> {
    for (const [k, v] of Object.entries(layout)) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${k} must be a non-negative integer`);
    }
    const end = Math.max(layout.data_offset + layout.size_bytes, layout.meta_offset + layout.meta_size_bytes);
    const fh = await open(path, create ? 'a+' : 'r+');
    try {
      // 'a+' would append on every write; reopen read-write once the file exists.
      if (create) {
        await fh.close();
        const rw = await open(path, 'r+');
        const st = await rw.stat();
        if (st.isFile() && st.size < end) await rw.truncate(end);
        return new FileStore(rw, layout);
      }
      const st = await fh.stat();
      if (st.isFile() && st.size < end) throw new RangeError(`${path} holds ${st.size} bytes, the layout needs ${end}`);
      return new FileStore(fh, layout);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  private bad(offset: number, length: number, limit: number): boolean {
    return !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > limit;
  }

  private done(p: Promise<unknown>, cb: IoCallback): void {
    p.then(
      () => cb(0),
      (e: unknown) => {
        const s = errnoOf(e);
        if (this.failed_status === 0) this.failed_status = s;
        cb(s);
      },
    );
  }

  private readAt(pos: number, length: number, cb: ReadCallback): void {
    const buf = Buffer.allocUnsafe(length);
    this.fh.read(buf, 0, length, pos).then(
      ({ bytesRead }) => {
        // Past the end of a sparse or short file reads as zeroes.
        if (bytesRead < length) buf.fill(0, bytesRead);
        cb(0, buf);
      },
      (e: unknown) => {
        const s = errnoOf(e);
        if (this.failed_status === 0) this.failed_status = s;
        cb(s, null);
      },
    );
  }

  private async writeAll(data: Buffer, pos: number): Promise<void> {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await this.fh.write(data, off, data.length - off, pos + off);
      if (bytesWritten <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
      off += bytesWritten;
    }
  }

  read(offset: number, length: number, cb: ReadCallback): void {
    if (this.closed || this.bad(offset, length, this.size_bytes)) return void queueMicrotask(() => cb(this.closed ? Errno.ENXIO : Errno.EINVAL, null));
    this.readAt(this.layout.data_offset + offset, length, cb);
  }

  write(offset: number, data: Buffer, fua: boolean, cb: IoCallback): void {
    if (this.closed || this.bad(offset, data.length, this.size_bytes)) return void queueMicrotask(() => cb(this.closed ? Errno.ENXIO : Errno.EINVAL));
    const pos = this.layout.data_offset + offset;
    this.done(fua ? this.writeAll(data, pos).then(() => this.fh.datasync()) : this.writeAll(data, pos), cb);
  }

  discard(offset: number, length: number, cb: IoCallback): void {
    this.writeZeroes(offset, length, cb);
  }

  writeZeroes(offset: number, length: number, cb: IoCallback): void {
    if (this.closed || this.bad(offset, length, this.size_bytes)) return void queueMicrotask(() => cb(this.closed ? Errno.ENXIO : Errno.EINVAL));
    const run = async (): Promise<void> => {
      for (let done = 0; done < length; done += ZERO_CHUNK.length) {
        const n = Math.min(ZERO_CHUNK.length, length - done);
        await this.writeAll(ZERO_CHUNK.subarray(0, n), this.layout.data_offset + offset + done);
      }
    };
    this.done(run(), cb);
  }

  flush(cb: IoCallback): void {
    if (this.closed) return void queueMicrotask(() => cb(Errno.ENXIO));
    this.done(this.fh.datasync(), cb);
  }

  readMeta(offset: number, length: number, cb: ReadCallback): void {
    if (this.closed || this.bad(offset, length, this.meta_size_bytes)) return void queueMicrotask(() => cb(this.closed ? Errno.ENXIO : Errno.EINVAL, null));
    this.readAt(this.layout.meta_offset + offset, length, cb);
  }

  writeMeta(offset: number, data: Buffer, cb: IoCallback): void {
    if (this.closed || this.bad(offset, data.length, this.meta_size_bytes)) return void queueMicrotask(() => cb(this.closed ? Errno.ENXIO : Errno.EINVAL));
    this.done(this.writeAll(data, this.layout.meta_offset + offset).then(() => this.fh.datasync()), cb);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
