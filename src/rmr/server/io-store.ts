// The storage ports of RMR (the reference's io_store ops, §2.5/§3.9): where a storage node's
// replicated data lives (BlockStore) and where RMR keeps its metadata (MetaStore). Real
// implementations are files or block devices (brmr/server); the simulator's memory disk
// can be slow, fail, and lose unflushed writes on a simulated power loss.
//
// Completions are callbacks with a status (0 or -errno) and are never called synchronously
// from inside the call that started the operation.

export type IoCallback = (status: number) => void;
export type ReadCallback = (status: number, data: Buffer | null) => void;

export interface BlockStore {
  /** Bytes of replicated data (device offset 0 .. size_bytes). */
  readonly size_bytes: number;
  read(offset: number, length: number, cb: ReadCallback): void;
  /** With `fua`, the data is durable when cb(0) is called; otherwise after the next flush. */
  write(offset: number, data: Buffer, fua: boolean, cb: IoCallback): void;
  /** The range reads as zeroes afterwards (members must never disagree about it). */
  discard(offset: number, length: number, cb: IoCallback): void;
  writeZeroes(offset: number, length: number, cb: IoCallback): void;
  /** Everything completed before the flush was issued is durable when cb(0) is called. */
  flush(cb: IoCallback): void;
}

export interface MetaStore {
  readonly meta_size_bytes: number;
  readMeta(offset: number, length: number, cb: ReadCallback): void;
  /** Durable when cb(0) is called (metadata writes are always FUA). */
  writeMeta(offset: number, data: Buffer, cb: IoCallback): void;
}
