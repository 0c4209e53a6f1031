// The write sequence of a compute client pool (intent-log.ts): every modifying IO gets the
// next number; settledBelow() is the lowest one not settled yet, i.e. still in flight, or in
// the pool's uncertain set until that is reconciled. Every IO carries it to the storage
// nodes, which let intent extents go below it. Part of ClientPoolCore.

export class WriteSequence {
  private next_seq = 1;
  private readonly unsettled = new Set<number>();
  private settled_low = 1;
  /** Lowest sequence of a write whose chunks are in the uncertain set. */
  private uncertain_seq = Infinity;

  /** A modifying IO starts: its number, unsettled until end(). */
  begin(): number {
    const seq = this.next_seq++;
    this.unsettled.add(seq);
    return seq;
  }

  end(seq: number): void {
    this.unsettled.delete(seq);
  }

  /**
   * The lowest write sequence not settled: every write below it was answered by every leg
   * and its misses are recorded on the nodes (MAP_ADD, piggyback) or reconciled.
   */
  settledBelow(): number {
    while (this.settled_low < this.next_seq && !this.unsettled.has(this.settled_low)) this.settled_low++;
    return Math.min(this.settled_low, this.uncertain_seq);
  }

  /** Write `seq` left chunks in the uncertain set: it stays unsettled until reconciled(). */
  uncertain(seq: number): void {
    if (seq < this.uncertain_seq) this.uncertain_seq = seq;
  }

  reconciled(): void {
    this.uncertain_seq = Infinity;
  }
}
