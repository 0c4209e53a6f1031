// Real Clock and Random ports for the daemon (the simulator injects deterministic ones).
// The Node adapters live in src/node/, outside the sans-IO core: only they (and the daemon
// and the CLI) touch Node's timers and entropy directly.

import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { Clock, Random, TimerId } from '../util/ports.js';

/** setTimeout turns longer delays (and NaN) into 1 ms; clamp instead. */
const TIMEOUT_MAX_MS = 2 ** 31 - 1;

export interface NodeClockOptions {
  /** Let the process exit while timers are armed (tools, tests); a daemon keeps them ref'd. */
  unref?: boolean;
}

interface Entry {
  readonly id: TimerId;
  readonly deadline: number;
  readonly fn: () => void;
  /** Position in the heap, kept current so cancel() removes in O(log n). */
  index: number;
}

/**
 * Clock over one Node timeout armed for the earliest deadline of a heap ordered by
 * (deadline, arming order). A timeout per timer would not do: Node counts delays from a
 * whole-millisecond loop time, so a timer fires up to 1 ms before now() reaches its deadline
 * (a callback checking `now() >= deadline` would find it not yet due), and Node orders timers
 * of different delays by its per-delay lists, not by arming order.
 */
export class NodeClock implements Clock {
  private readonly unref: boolean;
  private readonly heap: Entry[] = [];
  /** Armed timers only: entries leave when they fire or are cancelled. */
  private readonly timers = new Map<TimerId, Entry>();
  private nextId: TimerId = 1;
  private handle: NodeJS.Timeout | null = null;
  /** The deadline `handle` was armed for. */
  private armedFor = Infinity;

  constructor(opts: NodeClockOptions = {}) {
    this.unref = opts.unref ?? false;
  }

  now(): number {
    return performance.now();
  }

  setTimer(delay_ms: number, fn: () => void): TimerId {
    const id = this.nextId++;
    const delay = delay_ms >= 0 ? Math.min(delay_ms, TIMEOUT_MAX_MS) : 0;
    const e: Entry = { id, deadline: this.now() + delay, fn, index: this.heap.length };
    this.heap.push(e);
    this.up(e.index);
    this.timers.set(id, e);
    this.arm();
    return id;
  }

  cancel(id: TimerId): void {
    const e = this.timers.get(id);
    if (e === undefined) return;
    this.timers.delete(id);
    this.removeAt(e.index);
    // A Node timeout left armed for an earlier deadline just finds nothing due and re-arms.
    if (this.heap.length === 0) this.disarm();
  }

  /** Armed, not yet fired or cancelled: lets tests prove nothing leaks. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  private readonly fire = (): void => {
    this.handle = null;
    this.armedFor = Infinity;
    const now = this.now();
    // Timers armed by the callbacks below wait for the next round, even with delay 0.
    const firstNew = this.nextId;
    try {
      for (;;) {
        const head = this.heap[0];
        if (head === undefined || head.deadline > now || head.id >= firstNew) break;
        this.removeAt(0);
        this.timers.delete(head.id);
        head.fn();
      }
    } finally {
      // Even if a callback threw, the rest stay scheduled.
      this.arm();
    }
  };

  private arm(): void {
    const head = this.heap[0];
    if (head === undefined) return;
    if (this.handle !== null && this.armedFor <= head.deadline) return;
    this.disarm();
    // Whole milliseconds, rounded up: Node would otherwise fire before the deadline.
    const wait = Math.min(Math.max(0, Math.ceil(head.deadline - this.now())), TIMEOUT_MAX_MS);
    this.handle = setTimeout(this.fire, wait);
    if (this.unref) this.handle.unref();
    this.armedFor = head.deadline;
  }

  private disarm(): void {
    if (this.handle !== null) clearTimeout(this.handle);
    this.handle = null;
    this.armedFor = Infinity;
  }

  // ---- binary heap on (deadline, id) ----

  private less(a: Entry, b: Entry): boolean {
    return a.deadline < b.deadline || (a.deadline === b.deadline && a.id < b.id);
  }

  private at(i: number): Entry {
    const e = this.heap[i];
    if (e === undefined) throw new Error(`NodeClock heap index ${i} out of range`);
    return e;
  }

  private place(e: Entry, i: number): void {
    this.heap[i] = e;
    e.index = i;
  }

  private up(i: number): void {
    const e = this.at(i);
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = this.at(p);
      if (!this.less(e, parent)) break;
      this.place(parent, i);
      i = p;
    }
    this.place(e, i);
  }

  private down(i: number): void {
    const e = this.at(i);
    const n = this.heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let c = l;
      if (r < n && this.less(this.at(r), this.at(l))) c = r;
      const child = this.at(c);
      if (!this.less(child, e)) break;
      this.place(child, i);
      i = c;
    }
    this.place(e, i);
  }

  private removeAt(i: number): void {
    const last = this.heap.pop();
    if (last === undefined || i === this.heap.length) return;
    this.place(last, i);
    this.down(i);
    this.up(last.index);
  }
}

export class NodeRandom implements Random {
  float(): number {
    // 53 random bits, the full precision of a double in [0, 1).
    const b = randomBytes(8);
    const hi = b.readUInt32BE(0) >>> 5; // 27 bits
    const lo = b.readUInt32BE(4) >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  bytes(n: number): Buffer {
    return randomBytes(n);
  }
}
