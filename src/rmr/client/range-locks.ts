// Ranges of a device locked in arrival order: the compute client's overlapping writes, and
// online verify's batches. Legs see concurrent overlapping writes in different orders
// (different latencies), so without this the members could end up with different data for
// the same block. Found by the simulator (seed 10: a write and a write-zeroes overlapping,
// applied in opposite orders on two members). Part of ClientPoolCore.

export class RangeLocks {
  private readonly active: { start: number; end: number }[] = [];
  private readonly waiters: { start: number; end: number; go: () => void }[] = [];
  /** Waiters at most: bounded, beyond it lock() refuses. */
  private readonly max_waiters: number;

  constructor(max_waiters: number) {
    this.max_waiters = max_waiters;
  }

  get activeCount(): number {
    return this.active.length;
  }

  get waitingCount(): number {
    return this.waiters.length;
  }

  private overlapsActive(start: number, end: number): boolean {
    return this.active.some((r) => r.start < end && start < r.end);
  }

  /** Starts `go` once no earlier overlapping range is locked or waiting; false when too many wait. */
  lock(start: number, end: number, go: () => void): boolean {
    if (this.overlapsActive(start, end) || this.waiters.some((w) => w.start < end && start < w.end)) {
      if (this.waiters.length >= this.max_waiters) return false;
      this.waiters.push({ start, end, go });
      return true;
    }
    this.active.push({ start, end });
    go();
    return true;
  }

  unlock(start: number, end: number): void {
    const i = this.active.findIndex((r) => r.start === start && r.end === end);
    if (i >= 0) this.active.splice(i, 1);
    // Start waiters in order; one still blocked also blocks later ones that overlap it.
    const blocked: { start: number; end: number }[] = [];
    for (let k = 0; k < this.waiters.length; ) {
      const w = this.waiters[k] as { start: number; end: number; go: () => void };
      if (this.overlapsActive(w.start, w.end) || blocked.some((b) => b.start < w.end && w.start < b.end)) {
        blocked.push(w);
        k++;
        continue;
      }
      this.waiters.splice(k, 1);
      this.active.push({ start: w.start, end: w.end });
      w.go();
    }
  }
}
