// The one interface the NBD server knows (ARCHITECTURE.md §4): a block device with
// asynchronous, callback-completed operations. The BRMR client's device implements it over
// an RMR client pool; tests implement it over memory.
//
// Rules every implementation keeps:
// - Completions are never called synchronously from inside the call that started the
//   operation, and each callback is called exactly once.
// - Status is 0 or a negative errno (util/errno.ts); the NBD server maps it to an NBD error.
// - Offsets and lengths given to the device are already checked against size_bytes and
//   max_io_bytes by the caller; the device may still refuse with -EINVAL.

export interface BlockSizes {
  /** Smallest IO the device accepts without read-modify-write (512 or 4096). */
  minimum: number;
  /** The IO size the device prefers (typically the chunk size). */
  preferred: number;
  /** Largest single IO (bytes). */
  maximum: number;
}

export interface WriteFlags {
  /** Durable on every replica that acknowledged when the callback reports 0. */
  fua: boolean;
}

export interface ZeroFlags extends WriteFlags {
  /** The range must stay allocated (NBD_CMD_FLAG_NO_HOLE). */
  no_hole: boolean;
  /** Fail with -EOPNOTSUPP instead of writing zeroes slowly (NBD_CMD_FLAG_FAST_ZERO). */
  fast_zero: boolean;
}

/** One extent of a block-status answer: `length` bytes with NBD status `flags`. */
export interface Extent {
  length: number;
  flags: number;
}

export interface BlockDevice {
  readonly size_bytes: number;
  readonly block_sizes: BlockSizes;
  /** False makes the export read-only (NBD_FLAG_READ_ONLY). */
  readonly writable: boolean;
  /** Whether trim and write-zeroes are supported (NBD_FLAG_SEND_TRIM / _WRITE_ZEROES). */
  readonly can_trim: boolean;
  readonly can_zero: boolean;
  /** A fast zero exists (NBD_FLAG_SEND_FAST_ZERO). */
  readonly can_fast_zero: boolean;
  /**
   * A flush on any connection makes every write completed on any connection durable
   * (NBD_FLAG_CAN_MULTI_CONN).
   */
  readonly multi_conn: boolean;

  read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void;
  write(offset: number, data: Buffer, flags: WriteFlags, cb: (status: number) => void): void;
  trim(offset: number, length: number, flags: WriteFlags, cb: (status: number) => void): void;
  writeZeroes(offset: number, length: number, flags: ZeroFlags, cb: (status: number) => void): void;
  flush(cb: (status: number) => void): void;

  /**
   * Meta contexts the device can answer besides `base:allocation` (for example
   * `rmr:dirty:2`). The NBD server answers `base:allocation` itself when the device does not
   * list it (everything allocated and data).
   */
  metaContexts(): readonly string[];
  /**
   * Extents covering at least the first byte of [offset, offset+length) for one meta context
   * the device listed. The extents are consecutive from `offset`; their total may be shorter
   * than `length` but never zero on success.
   */
  blockStatus(context: string, offset: number, length: number, cb: (status: number, extents: Extent[] | null) => void): void;
}
