// The event log: every state transition the daemon's roles report (pool sessions, server
// pools, map updates, sync progress, stores, devices), numbered, in a bounded ring. Readers
// ask for everything after a sequence number (`rmr events --since N`) or subscribe; when the
// ring is full the oldest event goes and a counter says how many went. Pure: the wall clock
// is injected.

import type { JsonValue } from './control-tree.js';

export interface DaemonEvent {
  /** 1, 2, 3, ... per daemon run; never reused. */
  readonly seq: number;
  /** ISO-8601 wall-clock time. */
  readonly time: string;
  readonly daemon: string;
  /** What changed: `daemon`, `role`, `pool_session`, `server_pool`, `sync`, `store`, `device`, `config`, ... */
  readonly kind: string;
  /** Which object: `ionos_pool/psrv0@stg-rmr0`, a store path, a device name. */
  readonly subject: string;
  readonly from?: string;
  readonly to?: string;
  readonly detail?: { readonly [k: string]: JsonValue };
}

export type EventInput = Omit<DaemonEvent, 'seq' | 'time' | 'daemon'>;

export interface EventsSince {
  readonly events: DaemonEvent[];
  /** Events after `since` that the ring no longer holds (the reader fell behind). */
  readonly lost: number;
  /** The `since` to ask with next time. */
  readonly next: number;
  /** `since` was beyond the newest event (a reader from an earlier daemon run): answered from the start. */
  readonly reset: boolean;
}

export interface EventLogOptions {
  readonly daemon: string;
  /** Ring size; at least 1. */
  readonly capacity: number;
  /** Wall clock in ms since the epoch (Date.now in the daemon, a fixed function in tests). */
  readonly wall_ms: () => number;
}

export type EventSubscriber = (e: DaemonEvent) => void;

export class EventLog {
  readonly daemon: string;
  readonly capacity: number;
  private readonly wall_ms: () => number;
  private readonly ring: (DaemonEvent | undefined)[];
  /** Seq of the newest event; 0 before the first. */
  private last = 0;
  private readonly subscribers = new Set<EventSubscriber>();
  /** Events pushed out of the ring by newer ones. */
  dropped_total = 0;
  /** Subscribers that threw (each throw is counted, the subscriber stays). */
  subscriber_errors_total = 0;

  constructor(opts: EventLogOptions) {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 1) throw new RangeError(`event capacity ${opts.capacity} must be an integer >= 1`);
    this.daemon = opts.daemon;
    this.capacity = opts.capacity;
    this.wall_ms = opts.wall_ms;
    this.ring = new Array<DaemonEvent | undefined>(opts.capacity).fill(undefined);
  }

  get last_seq(): number {
    return this.last;
  }

  /** Seq of the oldest event still held (last_seq + 1 when empty). */
  get first_seq(): number {
    return Math.max(1, this.last - this.capacity + 1);
  }

  emit(input: EventInput): DaemonEvent {
    const seq = this.last + 1;
    const e: DaemonEvent = { seq, time: new Date(this.wall_ms()).toISOString(), daemon: this.daemon, ...input };
    const slot = seq % this.capacity;
    if (this.ring[slot] !== undefined) this.dropped_total++;
    this.ring[slot] = e;
    this.last = seq;
    for (const s of [...this.subscribers]) {
      try {
        s(e);
      } catch {
        // One broken reader must not stop the others or the emitter (a role's state machine).
        this.subscriber_errors_total++;
      }
    }
    return e;
  }

  /** Events with seq > since, oldest first, at most `limit`. */
  since(since: number, limit = this.capacity): EventsSince {
    const reset = since > this.last;
    if (reset || !Number.isSafeInteger(since) || since < 0) since = 0;
    const from = Math.max(since + 1, this.first_seq);
    const lost = Math.max(0, from - (since + 1));
    const to = Math.min(this.last, from + Math.max(0, limit) - 1);
    const events: DaemonEvent[] = [];
    for (let s = from; s <= to; s++) {
      const e = this.ring[s % this.capacity];
      if (e === undefined || e.seq !== s) throw new Error(`event ring invariant: slot for seq ${s} holds ${e?.seq ?? 'nothing'}`);
      events.push(e);
    }
    return { events, lost, next: events.length > 0 ? to : since, reset };
  }

  subscribe(fn: EventSubscriber): () => void {
    this.subscribers.add(fn);
    return () => {
      this.subscribers.delete(fn);
    };
  }

  get subscriber_count(): number {
    return this.subscribers.size;
  }
}

/** One JSON line per event, as `rmr events` and GET /v1/events print them. */
export function eventLine(e: DaemonEvent): string {
  return `${JSON.stringify(e)}\n`;
}

/** Human form: `12 2026-...Z node1 pool_session p1/s1 created -> normal {…}`. */
export function formatEvent(e: DaemonEvent): string {
  const change = e.from !== undefined || e.to !== undefined ? ` ${e.from ?? '-'} -> ${e.to ?? '-'}` : '';
  const detail = e.detail !== undefined && Object.keys(e.detail).length > 0 ? ` ${JSON.stringify(e.detail)}` : '';
  return `${e.seq} ${e.time} ${e.daemon} ${e.kind} ${e.subject}${change}${detail}`;
}
