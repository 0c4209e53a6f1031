// The background sync of a storage node (the reference's sync thread, §7.3), improved as
// ARCHITECTURE.md §2.8 asks: it starts by itself when the node is NORMAL and its own map is
// dirty, can be stopped and started by hand, stops on the first error with the reason
// visible (and tries again by itself after a growing backoff: a peer that was briefly away
// must not need an operator), runs at a rate set against application traffic (a share, with
// minimum and maximum), and reports progress with an ETA.
//
// States:  STOPPED --start/auto--> RUNNING --pass done, map clean--> STOPPED
//          RUNNING --stop / error / pool not NORMAL--> WAIT (in-flight syncs drain) --> STOPPED
//
// Rate: every tick the controller grants bytes for the next tick. While the application
// moves A bytes/s in N IOs/s, sync gets share/(1-share) of both, whichever allows less:
// x A bytes/s (sync is `share` of the bandwidth) and x N chunk syncs/s (`share` of the IOs;
// one chunk sync is one IO of each kind), so the application keeps its share whether bytes
// (a slow link) or IOs (CPU, disk) are what runs out. Taking the larger of the two let a
// 16 KiB application keep 27-41 % of a 40 mbit link's bytes instead of 70 %
// (test/faults/bandwidth.full.test.ts), and a 4 KiB one about 55 % of its IOs. Never less
// than min_bytes_per_s nor more than max_bytes_per_s; an idle application leaves sync at
// its maximum. A and N are averaged over `rate_window_ms`,
// and the application counts as idle only after a whole window without traffic: judged per
// tick, a busy application whose IO sat for one tick behind the sync's own traffic on a slow
// link looked idle, the sync took its maximum, and the application's share of the link fell
// from 70 % to about 50 % (test/faults/bandwidth.full.test.ts).

import { Errno } from '../../util/errno.js';
import type { Clock, TimerId } from '../../util/ports.js';
import type { DirtyMap } from '../protocol/dirty-map.js';

export type SyncState = 'STOPPED' | 'RUNNING' | 'WAIT';

/** What the background sync needs from its server pool. */
export interface SyncTarget {
  readonly chunk_size: number;
  ownMap(): DirtyMap<unknown> | undefined;
  /** True while the pool may sync (NORMAL, store present, a sync source attached). */
  canSync(): boolean;
  syncChunk(chunk: number, done: (status: number) => void): void;
  /** Application bytes served so far (monotonic). */
  appBytes(): number;
  /** Application IOs served so far (monotonic); without it, only bytes count. */
  appIos?(): number;
}

export interface SyncOptions {
  /** Chunk syncs in flight at most (the reference's sync_queue_depth). */
  max_inflight: number;
  /** Share of the total IO given to sync while the application is busy, in (0, 1). */
  share: number;
  min_bytes_per_s: number;
  max_bytes_per_s: number;
  tick_ms: number;
  /** Start by itself when the pool is NORMAL and its own map is dirty. */
  auto_start: boolean;
  /** After a failed chunk sync, try again after this long (doubling up to 64x). */
  retry_ms: number;
  /** The application's rate is averaged over this long; this long without traffic is idle. */
  rate_window_ms: number;
}

export const DEFAULT_SYNC_OPTIONS: SyncOptions = {
  max_inflight: 32,
  share: 0.3,
  min_bytes_per_s: 10 << 20,
  max_bytes_per_s: 4 * 2 ** 30,
  tick_ms: 50,
  auto_start: true,
  retry_ms: 1000,
  rate_window_ms: 1000,
};

export interface SyncProgress {
  state: SyncState;
  dirty_chunks: number;
  total_chunks: number;
  synced_bytes: number;
  bytes_per_s: number;
  eta_s: number | null;
  last_error: string | null;
  stop_reason: string | null;
  rate_limit_bytes_per_s: number;
}

export class BackgroundSync {
  private readonly target: SyncTarget;
  private readonly clock: Clock;
  readonly opts: SyncOptions;
  private _state: SyncState = 'STOPPED';
  private cursor = 0;
  private inflight = 0;
  private timer: TimerId | null = null;
  private budget = 0;
  private last_tick = 0;
  /** Application bytes and IOs at the ticks of the last rate window (oldest first, at or before its start). */
  private app_samples: { t: number; bytes: number; ios: number }[] = [];
  private rate_limit = 0;
  /** Smoothed sync throughput. */
  private rate_ewma = 0;
  private synced_in_tick = 0;
  synced_bytes = 0;
  last_error: string | null = null;
  stop_reason: string | null = null;
  /** A manual stop holds until a manual start (auto-start does not override the operator). */
  private held_by_operator = false;
  /** Consecutive failed passes, and when the next automatic try may start. */
  private failures = 0;
  private retry_at = 0;
  private readonly on_state: (from: SyncState, to: SyncState, reason: string) => void;

  constructor(target: SyncTarget, clock: Clock, opts: Partial<SyncOptions>, on_state: (from: SyncState, to: SyncState, reason: string) => void) {
    this.target = target;
    this.clock = clock;
    this.opts = { ...DEFAULT_SYNC_OPTIONS, ...opts };
    const o = this.opts;
    if (!(o.share > 0 && o.share < 1)) throw new RangeError('share must be in (0, 1)');
    if (o.min_bytes_per_s <= 0 || o.max_bytes_per_s < o.min_bytes_per_s) throw new RangeError('need 0 < min_bytes_per_s <= max_bytes_per_s');
    if (!Number.isInteger(o.max_inflight) || o.max_inflight < 1 || o.max_inflight > 512) throw new RangeError('max_inflight must be 1..512');
    if (!(o.rate_window_ms >= o.tick_ms)) throw new RangeError('rate_window_ms must be at least tick_ms');
    this.on_state = on_state;
    this.rate_limit = o.max_bytes_per_s;
    this.arm();
  }

  get state(): SyncState {
    return this._state;
  }

  private setState(to: SyncState, reason: string): void {
    const from = this._state;
    if (from === to) return;
    this._state = to;
    this.on_state(from, to, reason);
  }

  /** Operator start (clears a previous error and a manual stop). */
  start(): string | null {
    if (!this.target.canSync()) return 'the pool cannot sync now (not NORMAL, no store or no peers)';
    this.held_by_operator = false;
    this.last_error = null;
    this.begin('started by operator');
    return null;
  }

  /** Operator stop: in-flight chunk syncs finish, nothing new starts. */
  stop(): void {
    this.held_by_operator = true;
    this.end('stopped by operator');
  }

  /**
   * The operator's rate settings (any subset): the share of the total IO given to sync while
   * the application is busy, and the floor and ceiling in bytes/s. Applied from the next tick.
   */
  setRate(r: { share?: number; min_bytes_per_s?: number; max_bytes_per_s?: number }): string | null {
    const share = r.share ?? this.opts.share;
    const min = r.min_bytes_per_s ?? this.opts.min_bytes_per_s;
    const max = r.max_bytes_per_s ?? this.opts.max_bytes_per_s;
    if (!(share > 0 && share < 1)) return 'share must be in (0, 1)';
    if (!(min > 0) || !(max >= min) || !Number.isFinite(max)) return 'need 0 < min_bytes_per_s <= max_bytes_per_s';
    this.opts.share = share;
    this.opts.min_bytes_per_s = min;
    this.opts.max_bytes_per_s = max;
    return null;
  }

  /** Stops the timer for good (pool going away). */
  close(): void {
    this.end('pool closed');
    if (this.timer !== null) this.clock.cancel(this.timer);
    this.timer = null;
  }

  private begin(reason: string): void {
    if (this._state === 'RUNNING') return;
    this.cursor = 0;
    this.stop_reason = null;
    this.setState('RUNNING', reason);
    this.pump();
  }

  private end(reason: string): void {
    if (this._state !== 'RUNNING') return;
    this.stop_reason = reason;
    this.setState(this.inflight > 0 ? 'WAIT' : 'STOPPED', reason);
  }

  private arm(): void {
    this.last_tick = this.clock.now();
    this.app_samples.push({ t: this.last_tick, bytes: this.target.appBytes(), ios: this.target.appIos?.() ?? 0 });
    this.timer = this.clock.setTimer(this.opts.tick_ms, this.tick);
  }

  private readonly tick = (): void => {
    const now = this.clock.now();
    const dt = Math.max(1e-3, (now - this.last_tick) / 1000);
    const app = this.target.appBytes();
    const ios = this.target.appIos?.() ?? 0;
    const samples = this.app_samples;
    while (samples.length > 1 && now - (samples[1] as { t: number }).t >= this.opts.rate_window_ms) samples.shift();
    const since = samples[0] ?? { t: now, bytes: app, ios };
    const window_s = Math.max(1e-3, (now - since.t) / 1000);
    const app_rate = (app - since.bytes) / window_s;
    const app_iops = (ios - since.ios) / window_s;
    this.rate_ewma += (this.synced_in_tick / dt - this.rate_ewma) / 4;
    this.synced_in_tick = 0;
    const o = this.opts;
    const f = o.share / (1 - o.share);
    // A target that does not count IOs (appIos absent) is judged by its bytes alone.
    const allowed = app_iops > 0 ? Math.min(f * app_rate, f * app_iops * this.target.chunk_size) : f * app_rate;
    this.rate_limit = app_rate > 0 ? Math.min(o.max_bytes_per_s, Math.max(o.min_bytes_per_s, allowed)) : o.max_bytes_per_s;
    // Unused budget does not pile up beyond one tick's worth.
    this.budget = Math.min(this.budget, 0) + (this.rate_limit * o.tick_ms) / 1000;
    if (this._state === 'RUNNING' && !this.target.canSync()) this.end('pool left NORMAL');
    else if (this._state === 'STOPPED' && o.auto_start && !this.held_by_operator && this.target.canSync() && !(this.target.ownMap()?.isEmpty() ?? true)) {
      // After an error the reason stays visible and the next try waits for its backoff.
      if (this.last_error === null) this.begin('own map dirty');
      else if (now >= this.retry_at) this.begin(`retry after: ${this.last_error}`);
    }
    this.pump();
    this.arm();
  };

  private pump(): void {
    const map = this.target.ownMap();
    if (this._state !== 'RUNNING' || map === undefined) return;
    const cs = this.target.chunk_size;
    while (this.inflight < this.opts.max_inflight && this.budget > 0) {
      const c = map.nextDirty(this.cursor);
      if (c < 0) {
        if (this.inflight === 0) {
          // One pass done: new dirt (or chunks busy with IO syncs) may remain.
          if (map.isEmpty()) {
            this.failures = 0;
            this.last_error = null;
            this.end('all chunks in sync');
          } else this.cursor = 0;
        }
        return;
      }
      this.cursor = c + 1;
      if ((map.peekEntry(c)?.sync_cnt ?? -1) !== -1) continue; // an IO is syncing it already
      this.inflight++;
      this.budget -= cs;
      this.target.syncChunk(c, (status) => this.chunkDone(status));
    }
  }

  private chunkDone(status: number): void {
    this.inflight--;
    if (status === 0) {
      this.synced_bytes += this.target.chunk_size;
      this.synced_in_tick += this.target.chunk_size;
    } else if (status === Errno.ECANCELED) {
      // The pool left NORMAL during the copy (ServerIo.syncChunk): not the peers' fault, so
      // no backoff; the run ends while the pool is out of service.
      if (!this.target.canSync()) this.end('pool left NORMAL');
    } else if (status !== -16 /* EBUSY: raced with an IO-triggered sync */) {
      this.last_error = `chunk sync failed with status ${status}`;
      this.failures++;
      // At most 8 retry intervals apart: a member that stays dirty for minutes after its
      // peer came back is an outage of redundancy (simulator seed 7008 waited 64 s).
      this.retry_at = this.clock.now() + this.opts.retry_ms * 2 ** Math.min(this.failures - 1, 3);
      this.end(this.last_error);
    }
    if (this._state === 'WAIT' && this.inflight === 0) this.setState('STOPPED', this.stop_reason ?? 'drained');
    else this.pump();
  }

  progress(): SyncProgress {
    const map = this.target.ownMap();
    const dirty = map?.dirtyCount ?? 0;
    const rate = this.rate_ewma;
    return {
      state: this._state,
      dirty_chunks: dirty,
      total_chunks: map?.no_of_chunks ?? 0,
      synced_bytes: this.synced_bytes,
      bytes_per_s: Math.round(rate),
      // Only a running sync has an ETA; its rate decays towards 0 while stopped (a leftover
      // 1e-150 bytes/s gave an ETA of 1e148 s at the next start).
      eta_s: this._state === 'RUNNING' && rate >= 1 ? Math.round((dirty * this.target.chunk_size) / rate) : null,
      last_error: this.last_error,
      stop_reason: this.stop_reason,
      rate_limit_bytes_per_s: Math.round(this.rate_limit),
    };
  }
}
