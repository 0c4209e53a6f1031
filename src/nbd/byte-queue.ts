// Received bytes not yet parsed. The NBD parser asks for exact byte counts (a header, an
// option's data, a write payload); a request that lies inside one received chunk is handed on
// as a view, and only a request spanning chunks is copied (once, after its length was checked).
// A large payload can instead be collected in one buffer as it arrives (reserve()): the stream
// then reads straight into it (target()), and its bytes are not copied in user space at all.

import { sameMemory } from '../util/bytes.js';

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Index of the first unconsumed chunk and the offset inside it. */
  private first = 0;
  private offset = 0;
  private bytes = 0;
  /** The front `big.length` bytes, collected in one buffer (reserve()); big_fill have come. */
  private big: Buffer | null = null;
  private big_fill = 0;

  get length(): number {
    return this.bytes;
  }

  /** True while a reserve()d payload is being collected. */
  get reserved(): boolean {
    return this.big !== null;
  }

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.bytes += b.length;
    const big = this.big;
    if (big !== null && this.big_fill < big.length) {
      const k = Math.min(big.length - this.big_fill, b.length);
      // A stream that read into target() hands over bytes already in place.
      if (!sameMemory(b, big, this.big_fill)) b.copy(big, this.big_fill, 0, k);
      this.big_fill += k;
      if (k === b.length) return;
      b = b.subarray(k);
    }
    this.chunks.push(b);
  }

  /**
   * The next `n` bytes (more than are queued) will be taken as one: collect them in one
   * buffer from now on. The caller bounds `n` (it is allocated now, before the bytes come).
   */
  reserve(n: number): void {
    if (this.big !== null) throw new Error('ByteQueue.reserve while a reservation is open');
    if (n <= this.bytes) throw new Error(`ByteQueue.reserve(${n}) with ${this.bytes} queued`);
    const big = Buffer.allocUnsafe(n);
    let at = 0;
    while (this.bytes > 0) {
      const c = this.chunks[this.first] as Buffer;
      const k = c.length - this.offset;
      c.copy(big, at, this.offset);
      at += k;
      this.advance(k);
    }
    this.big = big;
    this.big_fill = at;
    this.bytes = at;
  }

  /** The unfilled rest of the reserved payload, where the next received bytes belong (else null). */
  target(): Buffer | null {
    const big = this.big;
    return big === null || this.big_fill === big.length ? null : big.subarray(this.big_fill);
  }

  /** Removes and returns exactly `n` bytes; the caller checked `length >= n`. */
  take(n: number): Buffer {
    if (n > this.bytes) throw new Error(`ByteQueue.take(${n}) with ${this.bytes} queued`);
    const big = this.big;
    if (big !== null) {
      if (n !== big.length) throw new Error(`ByteQueue.take(${n}) of a ${big.length}-byte reservation`);
      this.big = null;
      this.big_fill = 0;
      this.bytes -= n;
      return big;
    }
    const head = this.chunks[this.first];
    if (head !== undefined && head.length - this.offset >= n) {
      const v = head.subarray(this.offset, this.offset + n);
      this.advance(n);
      return v;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[this.first] as Buffer;
      const k = Math.min(n - at, c.length - this.offset);
      c.copy(out, at, this.offset, this.offset + k);
      at += k;
      this.advance(k);
    }
    return out;
  }

  /** Drops up to `n` bytes without copying them; returns how many were dropped. */
  drop(n: number): number {
    if (this.big !== null) throw new Error('ByteQueue.drop while a reservation is open');
    let left = Math.min(n, this.bytes);
    const dropped = left;
    while (left > 0) {
      const c = this.chunks[this.first] as Buffer;
      const k = Math.min(left, c.length - this.offset);
      this.advance(k);
      left -= k;
    }
    return dropped;
  }

  clear(): void {
    this.big = null;
    this.big_fill = 0;
    this.chunks = [];
    this.first = 0;
    this.offset = 0;
    this.bytes = 0;
  }

  private advance(k: number): void {
    this.bytes -= k;
    this.offset += k;
    const c = this.chunks[this.first] as Buffer;
    if (this.offset < c.length) return;
    this.offset = 0;
    this.first++;
    // Compact now and then so the array does not grow with the connection's lifetime.
    if (this.first === this.chunks.length) {
      this.chunks = [];
      this.first = 0;
    } else if (this.first >= 64) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
  }
}
