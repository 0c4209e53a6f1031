// Real Clock and Random ports for the daemon (the simulator injects deterministic ones).
// Only files named node-*.ts may touch Node's timers and entropy directly.

import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { Clock, Random, TimerId } from './ports.js';

export interface NodeClockOptions {
  /** Let the process exit while timers are armed (tools, tests); a daemon keeps them ref'd. */
  unref?: boolean;
}

/**
 * Clock over setTimeout. Node fires timers armed in the same turn with the same delay in
 * arming order, which is what the Clock contract needs in practice; timers of different
 * delays that happen to share a deadline are ordered by Node's timer lists instead.
 */
export class NodeClock implements Clock {
  private readonly unref: boolean;
  private readonly timers = new Map<TimerId, NodeJS.Timeout>();
  private nextId: TimerId = 1;

  constructor(opts: NodeClockOptions = {}) {
    this.unref = opts.unref ?? false;
  }

  now(): number {
    return performance.now();
  }

  setTimer(delay_ms: number, fn: () => void): TimerId {
    const id = this.nextId++;
    const handle = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, Math.max(0, delay_ms));
    if (this.unref) handle.unref();
    this.timers.set(id, handle);
    return id;
  }

  cancel(id: TimerId): void {
    const handle = this.timers.get(id);
    if (handle === undefined) return;
    clearTimeout(handle);
    this.timers.delete(id);
  }

  /** Armed, not yet fired or cancelled: lets tests prove nothing leaks. */
  get pendingTimers(): number {
    return this.timers.size;
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
