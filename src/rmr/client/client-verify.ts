// Online verify (ARCHITECTURE.md §2.9, like DRBD's verify), driven by the compute client while
// IO runs. Batch by batch, the client holds the batch's range lock (writes to it wait, those
// in flight finish first, exactly as for overlapping writes), so no member is in the middle of
// a write there; it asks the source member to compare (VERIFY), and the source asks each
// other NORMAL member for the chunks' hashes through its sync pool (CHUNK_HASH): hashes cross
// the network, data does not. A chunk that differs is marked dirty for the member that
// disagrees with the source on every NORMAL member (MAP_MARK, durable) and in the client's
// map before the lock is released; the members' background sync then copies it from the
// source. Chunks dirty anywhere are skipped (they are being resynced anyway).

import { Errno } from '../../util/errno.js';
import { MAX_RANGES_PER_CMD, MAX_VERIFY_CHUNKS } from '../protocol/msg.js';
import { VERIFY_DIFFERS, VERIFY_SKIPPED } from '../protocol/leg-commands.js';
import type { Leg, OpCallback } from './leg.js';
import type { ClientPoolCore } from './pool-core.js';

export interface VerifyOptions {
  /** The member the others are compared with (default: the lowest NORMAL member). */
  source?: number;
  first_chunk?: number;
  /** Chunks to compare (default: to the end of the device). */
  chunk_count?: number;
  /** Chunks per batch (1..64; default 16). */
  batch_chunks?: number;
  /** Pacing: a timer and a rate; without it batches follow each other at once. */
  pace?: { setTimer: (ms: number, fn: () => void) => unknown; bytes_per_s: number };
}

export interface VerifyDifference {
  chunk: number;
  /** Members whose copy differed from the source's (now marked dirty for them). */
  members: number[];
}

export interface VerifyReport {
  source: number;
  first_chunk: number;
  chunk_count: number;
  compared: number;
  skipped: number;
  differing: number;
  /** The first MAX_REPORTED differences. */
  differences: VerifyDifference[];
  done: boolean;
  error: string | null;
}

export interface VerifyProgress {
  state: 'idle' | 'running' | 'stopping' | 'done' | 'failed' | 'stopped';
  chunks_done: number;
  chunks_total: number;
  differing: number;
}

/** Differences listed in a report at most (the count goes on). */
export const MAX_REPORTED = 10_000;

export class ClientVerify {
  private readonly core: ClientPoolCore;
  private state: VerifyProgress['state'] = 'idle';
  private rep: VerifyReport | null = null;
  private cursor = 0;
  private end = 0;

  constructor(core: ClientPoolCore) {
    this.core = core;
  }

  start(o: VerifyOptions, cb: OpCallback): void {
    const core = this.core;
    if (core.sync) return cb(Errno.EINVAL, 'sync pools are not verified');
    if (this.state === 'running' || this.state === 'stopping') return cb(Errno.EBUSY, 'a verify is running');
    const normal = core.normalLegs().sort((a, b) => a.member_id - b.member_id);
    const source = o.source === undefined ? normal[0] : normal.find((l) => l.member_id === o.source);
    if (source === undefined) return cb(Errno.ENODEV, o.source === undefined ? 'no NORMAL member' : `member ${o.source} is not NORMAL`);
    const first = o.first_chunk ?? 0;
    const count = o.chunk_count ?? core.no_of_chunks - first;
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 1 || first + count > core.no_of_chunks) return cb(Errno.EINVAL, `chunks ${first}+${count} outside 0..${core.no_of_chunks}`);
    const batch = o.batch_chunks ?? 16;
    if (!Number.isInteger(batch) || batch < 1 || batch > MAX_VERIFY_CHUNKS) return cb(Errno.EINVAL, `batch_chunks must be 1..${MAX_VERIFY_CHUNKS}`);
    this.rep = { source: source.member_id, first_chunk: first, chunk_count: count, compared: 0, skipped: 0, differing: 0, differences: [], done: false, error: null };
    this.cursor = first;
    this.end = first + count;
    this.state = 'running';
    cb(0, null);
    this.batch(source.member_id, batch, o.pace ?? null);
  }

  stop(): void {
    if (this.state === 'running') this.state = 'stopping';
  }

  progress(): VerifyProgress {
    const r = this.rep;
    return { state: this.state, chunks_done: r === null ? 0 : this.cursor - r.first_chunk, chunks_total: r?.chunk_count ?? 0, differing: r?.differing ?? 0 };
  }

  report(): VerifyReport | null {
    return this.rep === null ? null : { ...this.rep, differences: [...this.rep.differences] };
  }

  private finish(state: 'done' | 'failed' | 'stopped', error: string | null): void {
    this.state = state;
    const r = this.rep;
    if (r !== null) {
      r.done = state === 'done';
      r.error = error;
    }
  }

  private batch(source_id: number, batch: number, pace: VerifyOptions['pace'] | null): void {
    const core = this.core;
    const r = this.rep as VerifyReport;
    if (this.state === 'stopping') return this.finish('stopped', null);
    if (this.cursor >= this.end) return this.finish('done', null);
    const first = this.cursor;
    const count = Math.min(batch, this.end - first);
    const source = core.leg(source_id);
    if (source === undefined || source.state !== 'NORMAL') return this.finish('failed', `source member ${source_id} is no longer NORMAL`);
    const start = first * core.chunk_size;
    const stop = Math.min((first + count) * core.chunk_size, core.mapped_size);
    const queued = core.lockRange(start, stop, () => {
      const release = (next: () => void): void => {
        core.unlockRange(start, stop);
        next();
      };
      const others = core.normalLegs().filter((l) => l !== source).sort((a, b) => a.member_id - b.member_id);
      source.channel.command({ kind: 'verify', first_chunk: first, chunk_count: count, members: others.map((l) => l.member_id) }, (status, _v, reason, data) => {
        if (status !== 0 || data === null || data === undefined || data.length !== count) {
          return release(() => this.finish('failed', `VERIFY on member ${source_id} failed (${status}${reason !== null ? `: ${reason}` : ''})`));
        }
        const marks = new Map<Leg, [number, number][]>();
        for (let i = 0; i < count; i++) {
          const b = data[i] as number;
          const differs = others.filter((_, mi) => (b & (VERIFY_DIFFERS << mi)) !== 0);
          const skipped = others.some((_, mi) => (b & (VERIFY_SKIPPED << mi)) !== 0);
          if (skipped) r.skipped++;
          else r.compared++;
          if (differs.length === 0) continue;
          r.differing++;
          if (r.differences.length < MAX_REPORTED) r.differences.push({ chunk: first + i, members: differs.map((l) => l.member_id) });
          for (const l of differs) {
            const list = marks.get(l) ?? [];
            list.push([first + i, 1]);
            marks.set(l, list);
          }
        }
        this.markAll(marks, (s2) => {
          release(() => {
            this.cursor = first + count;
            if (s2 !== 0) return this.finish('failed', `marking the differences failed (${s2})`);
            const go = (): void => this.batch(source_id, batch, pace);
            if (pace === null || pace === undefined) return go();
            pace.setTimer(((stop - start) * (1 + others.length) * 1000) / Math.max(1, pace.bytes_per_s), go);
          });
        });
      });
    });
    if (!queued) this.finish('failed', 'too many writes waiting for the range lock');
  }

  /** The differing chunks become dirty for their members on every NORMAL member and here. */
  private markAll(marks: Map<Leg, [number, number][]>, cb: (status: number) => void): void {
    const core = this.core;
    const jobs: { leg: Leg; member: number; ranges: [number, number][] }[] = [];
    for (const [l, ranges] of marks) {
      const map = core.mapOf(l.member_id);
      for (const [c, n] of ranges) map.setDirty(c, n, core.now());
      // A verify batch may differ in more chunks than one MAP_MARK carries.
      for (let i = 0; i < ranges.length; i += MAX_RANGES_PER_CMD) {
        for (const target of core.normalLegs()) jobs.push({ leg: target, member: l.member_id, ranges: ranges.slice(i, i + MAX_RANGES_PER_CMD) });
      }
    }
    let pending = jobs.length;
    let err = 0;
    if (pending === 0) return cb(0);
    for (const j of jobs) {
      j.leg.channel.command({ kind: 'map_mark', member_id: j.member, conditional: false, ranges: j.ranges }, (status) => {
        if (status !== 0) {
          err = status;
          core.failLeg(j.leg, `map_mark failed (${status})`);
        }
        if (--pending === 0) cb(err);
      });
    }
  }
}
