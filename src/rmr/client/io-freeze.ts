// The IO freeze of a compute client pool: counted freezes, each waiting until the IOs in
// flight have drained; IOs that arrive meanwhile are held (bounded) and resubmitted in
// arrival order by the last unfreeze. A map spread or a leg change freezes IO so that no
// write is in the middle of it. Part of ClientPoolCore.

export class IoFreeze {
  /** IOs submitted and not yet completed. */
  private inflight = 0;
  private freezes = 0;
  /** IOs held while frozen, each resubmitted in order by the last unfreeze. */
  private held: (() => void)[] = [];
  private drain_waiters: (() => void)[] = [];
  /** Held IOs at most: bounded, beyond it hold() refuses. */
  private readonly max_held: number;

  constructor(max_held: number) {
    this.max_held = max_held;
  }

  get isFrozen(): boolean {
    return this.freezes > 0;
  }

  get inFlight(): number {
    return this.inflight;
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Holds new IOs and calls `drained` once every IO in flight has completed. Counted. */
  freeze(drained: () => void): void {
    this.freezes++;
    if (this.inflight === 0) drained();
    else this.drain_waiters.push(drained);
  }

  /** False when not frozen (the caller's invariant broke); the last unfreeze resubmits the held IOs, in order. */
  unfreeze(): boolean {
    if (this.freezes <= 0) return false;
    if (--this.freezes > 0) return true;
    const q = this.held;
    this.held = [];
    for (const resume of q) resume();
    return true;
  }

  /** An IO arrived while frozen: `resume` resubmits it at the unfreeze. False when too many are held. */
  hold(resume: () => void): boolean {
    if (this.held.length >= this.max_held) return false;
    this.held.push(resume);
    return true;
  }

  started(): void {
    this.inflight++;
  }

  /** An IO completed: the last one of a drain lets the freezes waiting for it go on. */
  done(): void {
    this.inflight--;
    if (this.inflight === 0 && this.drain_waiters.length > 0) {
      const ws = this.drain_waiters;
      this.drain_waiters = [];
      for (const w of ws) w();
    }
  }
}
