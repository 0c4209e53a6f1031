// Received bytes not yet parsed. The NBD parser asks for exact byte counts (a header, an
// option's data, a write payload); a request that lies inside one received chunk is handed on
// as a view, and only a request spanning chunks is copied (once, after its length was checked).

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Index of the first unconsumed chunk and the offset inside it. */
  private first = 0;
  private offset = 0;
  private bytes = 0;

  get length(): number {
    return this.bytes;
  }

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.bytes += b.length;
  }

  /** Removes and returns exactly `n` bytes; the caller checked `length >= n`. */
  take(n: number): Buffer {
    if (n > this.bytes) throw new Error(`ByteQueue.take(${n}) with ${this.bytes} queued`);
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
