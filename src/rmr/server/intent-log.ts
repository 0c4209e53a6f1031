// The intent record of a storage node (ARCHITECTURE.md §7), replacing the reference's lazily
// flushed last_io (§3.8, §12.4): an activity log of extents that may hold writes not yet
// known to be durable everywhere. An extent is recorded durably *before* the first write
// into it proceeds; writes into extents already recorded cost no metadata IO; an extent
// leaves the record lazily, once a flush has made its writes durable and it has no write in
// flight. After a crash of this node or of the compute client, every extent in the record is
// treated as possibly different between members (its chunks become dirty).
//
// A flush on this node is not enough for a client crash: the write may still be on its way to
// another member, and if the client dies then, only this record can say the chunk may differ.
// So every write carries the client's sequence number and an extent also waits until the
// client reports every write of it settled (IO messages carry the client's "settled below"
// sequence: each write below it was answered by every leg and its misses recorded). When a
// new compute client joins, the extents its predecessor had not settled stay until the
// client-crash reconciliation (INTENT_TO_MAP with the record) has dealt with them.
//
// Record payload: u32 extent_shift | u32 count | u64 extent[count]   (in MetaSlots pages)

import { Errno } from '../../util/errno.js';
import { MD_MAX_PAYLOAD, MetaSlots, slotVerdict } from './md-slots.js';
import type { IoCallback, MetaStore } from './io-store.js';

export const INTENT_MAGIC = 0x4952_4d52; // "RMRI"
export const INTENT_VERSION = 1;
/** Extents one record page can hold. */
export const INTENT_MAX_EXTENTS = Math.floor((MD_MAX_PAYLOAD - 8) / 8);

interface Extent {
  inflight: number;
  /** A write completed without FUA and no flush has covered it yet. */
  unflushed: boolean;
  /** Bumped by every write start: a flush covers an extent only if no write began since. */
  gen: number;
  /** Highest client sequence written into it (Infinity: a former client's, until reconciled). */
  max_seq: number;
}

interface Waiter {
  extents: number[];
  cb: IoCallback;
  seq: number;
}

export interface IntentLogStats {
  record_writes: number;
  begins: number;
  fast_begins: number;
  waits_for_space: number;
}

export class IntentLog {
  readonly extent_shift: number;
  readonly max_active: number;
  private readonly slots: MetaSlots;
  private readonly extents = new Map<number, Extent>();
  /** Extents in the durable record (what a crash now would report). */
  private durable = new Set<number>();
  /** Extents in the record write under way. */
  private writing: Set<number> | null = null;
  private waiters: Waiter[] = [];
  /** Extents found at load(), not yet released by reset(). */
  private recovered = new Set<number>();
  /** Callers of reset() waiting for the rewrite. */
  private rewrites: IoCallback[] = [];
  private failed_status = 0;
  /** Every client write with a lower sequence is settled at the client. */
  private settled_below = 0;
  /** Asks the owner to flush the data store (then call flushStarted / flushDone). */
  private readonly requestFlush: () => void;
  private flush_requested = false;
  readonly stats: IntentLogStats = { record_writes: 0, begins: 0, fast_begins: 0, waits_for_space: 0 };

  constructor(meta: MetaStore, base: number, opts: { extent_shift: number; max_active: number; requestFlush: () => void }) {
    if (!Number.isInteger(opts.extent_shift) || opts.extent_shift < 12 || opts.extent_shift > 40) throw new RangeError(`extent_shift ${opts.extent_shift}`);
    if (!Number.isInteger(opts.max_active) || opts.max_active < 1 || opts.max_active > INTENT_MAX_EXTENTS) {
      throw new RangeError(`max_active must be 1..${INTENT_MAX_EXTENTS}`);
    }
    this.extent_shift = opts.extent_shift;
    this.max_active = opts.max_active;
    this.slots = new MetaSlots(meta, base, INTENT_MAGIC, INTENT_VERSION);
    this.requestFlush = opts.requestFlush;
  }

  /** Byte range -> extent numbers. */
  extentsOf(offset: number, length: number): number[] {
    const size = 2 ** this.extent_shift;
    const first = Math.floor(offset / size);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / size);
    const out: number[] = [];
    for (let e = first; e <= last; e++) out.push(e);
    return out;
  }

  /**
   * Reads the record left by the previous run: the extents that may hold writes not known to
   * be durable on every member. The caller turns them into dirty chunks, then calls reset().
   */
  load(cb: (status: number, extents: number[] | null, notes: readonly string[]) => void): void {
    this.slots.load((status, rec) => {
      const notes = this.slots.load_notes.map((n) => `intent ${n}`);
      if (status !== 0) return cb(status, null, notes);
      // Both copies damaged: the extents that may lack writes are unknown. Refuse rather
      // than report none (which would leave this member silently different from its peers).
      if (slotVerdict(this.slots, rec) === 'damaged') return cb(Errno.EBADMSG, null, notes);
      if (rec === null) return cb(0, [], notes);
      const p = rec.payload;
      if (p.length < 8) return cb(Errno.EBADMSG, null, ['intent record payload too short']);
      const shift = p.readUInt32LE(0);
      const count = p.readUInt32LE(4);
      if (count > INTENT_MAX_EXTENTS || p.length !== 8 + 8 * count) return cb(Errno.EBADMSG, null, ['intent record length mismatch']);
      // Only shifts this code writes (the constructor's range): a larger one would expand
      // each recorded extent into 2^(shift - extent_shift) extents of ours, without bound.
      if (shift < 12 || shift > 40) return cb(Errno.EBADMSG, null, [`intent record extent_shift ${shift} outside 12..40`]);
      const out: number[] = [];
      for (let i = 0; i < count; i++) {
        const lo = p.readUInt32LE(8 + 8 * i);
        const hi = p.readUInt32LE(12 + 8 * i);
        if (hi > 0x1f_ffff) return cb(Errno.EBADMSG, null, ['intent extent out of range']);
        const e = lo + hi * 0x1_0000_0000;
        // Report in byte-offset-independent units of this log's extent size.
        if (shift === this.extent_shift) out.push(e);
        else {
          const bytes = e * 2 ** shift;
          for (const x of this.extentsOf(bytes, 2 ** shift)) out.push(x);
        }
      }
      this.durable = new Set(out);
      // Kept in every rewrite until the owner has dealt with them (reset()).
      this.recovered = new Set(out);
      cb(0, [...this.recovered].sort((a, b) => a - b), notes);
    });
  }

  /** Forgets the recovered extents (after the caller has marked them dirty and flushed). */
  reset(cb: IoCallback): void {
    this.recovered.clear();
    this.rewrites.push(cb);
    this.pump();
  }

  /**
   * A write (or discard / write-zeroes) is about to touch [offset, offset+length).
   * Returns true if it may proceed at once (its extents are already recorded); otherwise
   * `cb` is called once they are (status 0) or the record could not be written (-errno).
   * Every begin that returned true or completed with status 0 must be matched by one end().
   */
  begin(offset: number, length: number, cb: IoCallback, seq = 0): boolean {
    this.stats.begins++;
    const list = this.extentsOf(offset, length);
    // Recorded now *and* kept by a record write under way (which may be evicting it).
    const w = this.writing;
    if (this.failed_status === 0 && list.every((e) => this.durable.has(e) && (w === null || w.has(e)))) {
      this.stats.fast_begins++;
      this.admit(list, seq);
      return true;
    }
    // Not counted as in flight until admitted: a waiting write must not pin the extents
    // whose eviction would make room for it.
    this.waiters.push({ extents: list, cb, seq });
    this.pump();
    return false;
  }

  private entry(e: number): Extent {
    let x = this.extents.get(e);
    if (x === undefined) {
      x = { inflight: 0, unflushed: false, gen: 0, max_seq: 0 };
      this.extents.set(e, x);
    }
    return x;
  }

  private admit(list: number[], seq: number): void {
    for (const e of list) {
      const x = this.entry(e);
      x.inflight++;
      x.gen++;
      if (seq > x.max_seq) x.max_seq = seq;
    }
  }

  /** The client reports every write below `below` settled (from its IO messages). */
  settle(below: number): void {
    if (below <= this.settled_below) return;
    this.settled_below = below;
    if (this.waiters.length > 0) this.pump();
  }

  /**
   * A new compute client joined (not a rejoin): the extents the former one wrote stay until
   * reconciled, and the new client's sequence numbers start over.
   */
  newClient(): void {
    for (const x of this.extents.values()) if (!this.settled(x)) x.max_seq = Infinity;
    this.settled_below = 0;
  }

  /** The client-crash reconciliation dealt with the former client's extents. */
  reconciled(): void {
    for (const x of this.extents.values()) if (x.max_seq === Infinity) x.max_seq = 0;
    if (this.waiters.length > 0) this.pump();
  }

  /** The write begun for this range finished (successfully or not). */
  end(offset: number, length: number, fua_ok: boolean): void {
    for (const e of this.extentsOf(offset, length)) {
      const x = this.extents.get(e);
      if (x === undefined || x.inflight <= 0) throw new Error(`invariant: intent end() without begin() for extent ${e}`);
      x.inflight--;
      if (!fua_ok) x.unflushed = true;
    }
    if (this.waiters.length > 0) this.pump();
  }

  /** A flush of the data store is being issued: remember what it will cover. */
  flushStarted(): Map<number, number> {
    this.flush_requested = false;
    const covered = new Map<number, number>();
    for (const [e, x] of this.extents) if (x.inflight === 0) covered.set(e, x.gen);
    return covered;
  }

  /** The flush issued with `covered` completed successfully. */
  flushDone(covered: Map<number, number>): void {
    for (const [e, gen] of covered) {
      const x = this.extents.get(e);
      if (x !== undefined && x.gen === gen && x.inflight === 0) x.unflushed = false;
    }
    this.pump();
  }

  /** The store failed (a flush or the record itself): every waiting and later write is refused. */
  fail(status: number): void {
    if (this.failed_status === 0) this.failed_status = status;
    this.pump();
  }

  /** Extents currently recorded (what a crash now would report). */
  recorded(): number[] {
    return [...this.durable].sort((a, b) => a - b);
  }

  private evictable(e: number): boolean {
    if (this.recovered.has(e)) return false;
    const x = this.extents.get(e);
    return x === undefined || (x.inflight === 0 && !x.unflushed && this.settled(x));
  }

  /** Every write into it is settled at the client (sequence 0: a write without one, settled). */
  private settled(x: Extent): boolean {
    return x.max_seq < Math.max(1, this.settled_below);
  }

  /**
   * The one place that writes the record: when waiters need extents that are not recorded
   * yet, or reset() asked for a rewrite. One record write at a time.
   */
  private pump(): void {
    if (this.writing !== null) return;
    if (this.failed_status !== 0) {
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) w.cb(this.failed_status);
      const rs = this.rewrites;
      this.rewrites = [];
      for (const r of rs) r(this.failed_status);
      return;
    }
    // Wake waiters whose extents are all recorded.
    const ready = this.waiters.filter((w) => w.extents.every((e) => this.durable.has(e)));
    if (ready.length > 0) {
      this.waiters = this.waiters.filter((w) => !ready.includes(w));
      for (const w of ready) this.admit(w.extents, w.seq);
      for (const w of ready) w.cb(0);
    }
    if (this.waiters.length === 0 && this.rewrites.length === 0) return;
    // The next record: what must stay, plus what waiters need, within capacity.
    const keep = new Set<number>();
    for (const e of this.durable) if (!this.evictable(e)) keep.add(e);
    let admitted = 0;
    for (const w of this.waiters) {
      const need = w.extents.filter((e) => !keep.has(e));
      if (keep.size + need.length > this.max_active) break;
      for (const e of need) keep.add(e);
      admitted++;
    }
    if (admitted === 0 && this.rewrites.length === 0) {
      // Full of extents with unflushed or in-flight writes: a flush frees them.
      this.stats.waits_for_space++;
      const first = this.waiters[0] as Waiter;
      if (first.extents.length > this.max_active) {
        this.waiters.shift();
        first.cb(Errno.E2BIG);
        return this.pump();
      }
      // Only when a flush frees something: extents held by in-flight writes are freed by
      // end(), unsettled ones by settle(), recovered ones by reset(), and each pumps again.
      // Asking regardless would flush the store back to back until the client's settled
      // mark arrives (every flushDone pumps here again).
      if (!this.flush_requested && [...keep].some((e) => this.extents.get(e)?.unflushed === true)) {
        this.flush_requested = true;
        this.requestFlush();
      }
      return;
    }
    this.writing = keep;
    const rewrites = this.rewrites;
    this.rewrites = [];
    this.persist((status) => {
      // A node that cannot record intents cannot guarantee crash consistency: it refuses
      // writes from now on (the owner takes it out of IO service).
      if (status !== 0) this.failed_status = status;
      for (const r of rewrites) r(status);
      this.pump();
    });
  }

  private persist(cb: IoCallback): void {
    const list = [...(this.writing as Set<number>)].sort((a, b) => a - b);
    const payload = Buffer.alloc(8 + 8 * list.length);
    payload.writeUInt32LE(this.extent_shift, 0);
    payload.writeUInt32LE(list.length, 4);
    list.forEach((e, i) => {
      payload.writeUInt32LE(e % 0x1_0000_0000, 8 + 8 * i);
      payload.writeUInt32LE(Math.floor(e / 0x1_0000_0000), 12 + 8 * i);
    });
    this.stats.record_writes++;
    this.slots.store(payload, (status) => {
      // The new record replaces the old one once durable. Until then a crash may leave the old
      // one, which covers everything allowed so far: extents dropped from the new record had no
      // unflushed write left, and new ones are allowed only after this write succeeds.
      if (status === 0) {
        this.durable = new Set(list);
        // Extents out of the record with nothing in flight need no state (memory stays
        // bounded by the record, not by the device).
        for (const [e, x] of this.extents) if (!this.durable.has(e) && x.inflight === 0 && !x.unflushed) this.extents.delete(e);
      }
      this.writing = null;
      cb(status);
    });
  }
}
