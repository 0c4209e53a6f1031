// Simulated time for the deterministic simulator: no real waiting; timers fire in
// (deadline, arming order), and time jumps to the next deadline.

import type { Clock, TimerId } from '../util/ports.js';

interface Timer {
  id: TimerId;
  at: number;
  seq: number;
  fn: () => void;
}

export class SimClock implements Clock {
  private t = 0;
  private seq = 0;
  private next_id = 1;
  private readonly heap: Timer[] = [];
  private readonly live = new Set<TimerId>();
  /** Timers fired so far (for traces and budgets). */
  fired = 0;

  now(): number {
    return this.t;
  }

  setTimer(delay_ms: number, fn: () => void): TimerId {
    const id = this.next_id++;
    const d = Number.isFinite(delay_ms) && delay_ms > 0 ? delay_ms : 0;
    this.push({ id, at: this.t + d, seq: this.seq++, fn });
    this.live.add(id);
    return id;
  }

  cancel(id: TimerId): void {
    this.live.delete(id);
  }

  /** Armed, uncancelled timers. */
  get pending(): number {
    return this.live.size;
  }

  /** Fires the next timer; returns false when none is armed. */
  step(): boolean {
    for (;;) {
      const top = this.pop();
      if (top === undefined) return false;
      if (!this.live.delete(top.id)) continue; // cancelled
      if (top.at > this.t) this.t = top.at;
      this.fired++;
      top.fn();
      return true;
    }
  }

  /** Fires every timer due at or before `until_ms`, then sets the time to it. */
  runUntil(until_ms: number, max_events = 10_000_000): void {
    let n = 0;
    while (this.heap.length > 0) {
      const top = this.heap[0] as Timer;
      if (!this.live.has(top.id)) {
        this.pop();
        continue;
      }
      if (top.at > until_ms) break;
      if (++n > max_events) throw new Error(`more than ${max_events} events before t=${until_ms}`);
      this.step();
    }
    if (until_ms > this.t) this.t = until_ms;
  }

  /** Runs until `cond` holds; throws if simulated time passes `deadline_ms` first. */
  runUntilTrue(what: string, cond: () => boolean, deadline_ms: number, max_events = 10_000_000): void {
    let n = 0;
    while (!cond()) {
      const top = this.peekLive();
      if (top === undefined || top.at > deadline_ms) {
        throw new Error(`simulated time ${Math.round(deadline_ms)} ms reached waiting for ${what}`);
      }
      if (++n > max_events) throw new Error(`more than ${max_events} events waiting for ${what}`);
      this.step();
    }
  }

  private peekLive(): Timer | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0] as Timer;
      if (this.live.has(top.id)) return top;
      this.pop();
    }
    return undefined;
  }

  // Binary min-heap on (at, seq).
  private less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(x: Timer): void {
    const h = this.heap;
    h.push(x);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i] as Timer, h[p] as Timer)) break;
      [h[i], h[p]] = [h[p] as Timer, h[i] as Timer];
      i = p;
    }
  }

  private pop(): Timer | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0] as Timer;
    const last = h.pop() as Timer;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l] as Timer, h[m] as Timer)) m = l;
        if (r < h.length && this.less(h[r] as Timer, h[m] as Timer)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as Timer, h[i] as Timer];
        i = m;
      }
    }
    return top;
  }
}
