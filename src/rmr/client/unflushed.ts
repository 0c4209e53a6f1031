// The chunks written since the last successful flush (ARCHITECTURE §2.14), part of
// ClientPoolCore. A FLUSH is acknowledged only if each of them has a clean copy on a member
// whose flush succeeded, so the core must know them. Each chunk carries the number of flushes
// issued when its write was acknowledged: flush n covers the writes acknowledged before it was
// issued (stamp < n), also when an earlier flush still in flight fails. Bounded: beyond `cap`
// chunks the set degrades to "every chunk" until a flush issued after the last such write
// succeeds (the check then needs a clean copy of every chunk, still correct, only stricter).
//
// Cost on the write path: one Map.set per chunk of an acknowledged write; per flush issued,
// nothing; per successful flush, one pass over the set (the chunks written since the last one).

export class UnflushedChunks {
  private readonly cap: number;
  /** chunk -> flushes issued when a write into it was last acknowledged. */
  private readonly stamps = new Map<number, number>();
  /** Flushes issued so far. */
  private issued = 0;
  /** While over the cap: the stamp of the last write acknowledged; -1 when not over it. */
  private overflow_stamp = -1;

  constructor(cap: number) {
    if (!Number.isInteger(cap) || cap < 1) throw new RangeError(`cap ${cap}`);
    this.cap = cap;
  }

  /** A modifying IO over [first, first+count) was acknowledged. */
  written(first: number, count: number): void {
    const stamp = this.issued;
    if (this.overflow_stamp >= 0) {
      this.overflow_stamp = stamp;
      return;
    }
    for (let c = first; c < first + count; c++) this.stamps.set(c, stamp);
    if (this.stamps.size > this.cap) this.overflow_stamp = stamp;
  }

  /** A flush is issued: its number, for flushed() once it succeeded. */
  flushIssued(): number {
    return ++this.issued;
  }

  /** Flush `n` succeeded: what was acknowledged before it was issued is durable. */
  flushed(n: number): void {
    for (const [c, stamp] of this.stamps) if (stamp < n) this.stamps.delete(c);
    if (this.overflow_stamp >= 0 && this.overflow_stamp < n) this.overflow_stamp = -1;
  }

  get isEmpty(): boolean {
    return this.stamps.size === 0 && this.overflow_stamp < 0;
  }

  /** Too many chunks to list: every chunk counts as written. */
  get overflowed(): boolean {
    return this.overflow_stamp >= 0;
  }

  /** The chunks listed (all of them written since the last good flush, and a few since the one checked). */
  chunks(): IterableIterator<number> {
    return this.stamps.keys();
  }

  get size(): number {
    return this.stamps.size;
  }
}
