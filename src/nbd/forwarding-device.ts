// A BlockDevice in front of another that passes everything through: the base of filters in
// the spirit of nbdkit's (metering in the daemon, fault injection in tests). A filter
// overrides the operations it changes and calls `inner` for the rest.

import type { BlockDevice, BlockSizes, Extent, WriteFlags, ZeroFlags } from '../util/block-device.js';

export class ForwardingDevice implements BlockDevice {
  readonly size_bytes: number;
  readonly block_sizes: BlockSizes;
  readonly writable: boolean;
  readonly can_trim: boolean;
  readonly can_zero: boolean;
  readonly can_fast_zero: boolean;
  readonly multi_conn: boolean;

  constructor(protected readonly inner: BlockDevice) {
    this.size_bytes = inner.size_bytes;
    this.block_sizes = inner.block_sizes;
    this.writable = inner.writable;
    this.can_trim = inner.can_trim;
    this.can_zero = inner.can_zero;
    this.can_fast_zero = inner.can_fast_zero;
    this.multi_conn = inner.multi_conn;
  }

  read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    this.inner.read(offset, length, cb);
  }
  write(offset: number, data: Buffer, flags: WriteFlags, cb: (status: number) => void): void {
    this.inner.write(offset, data, flags, cb);
  }
  trim(offset: number, length: number, flags: WriteFlags, cb: (status: number) => void): void {
    this.inner.trim(offset, length, flags, cb);
  }
  writeZeroes(offset: number, length: number, flags: ZeroFlags, cb: (status: number) => void): void {
    this.inner.writeZeroes(offset, length, flags, cb);
  }
  flush(cb: (status: number) => void): void {
    this.inner.flush(cb);
  }
  metaContexts(): readonly string[] {
    return this.inner.metaContexts();
  }
  blockStatus(context: string, offset: number, length: number, cb: (status: number, extents: Extent[] | null) => void): void {
    this.inner.blockStatus(context, offset, length, cb);
  }
}
