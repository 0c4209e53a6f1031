// The compute client pool's state, and its only owner: the legs, the members and the client's
// dirty maps of them, the map version, the pool's identity, the pool's lock, the IO freeze,
// the range locks of overlapping writes and the write sequence (the last three are small
// mechanisms of their own, held privately: io-freeze.ts, range-locks.ts, write-sequence.ts).
// The IO path (client-io.ts), recovery, lifecycle and verify read the state through the views
// here and change it only through the named operations here, so each rule about it has one
// place: leg states change only through the gatekeeper (leg-state.ts), which also owns the
// map-version bump of a failing leg; every queue is bounded here.
//
// One operator action or recovery at a time holds the pool's lock (the reference's
// clt_pool_lock); IO is frozen only while a map spread or a leg change needs it.

import { Errno } from '../../util/errno.js';
import { DirtyMap } from '../protocol/dirty-map.js';
import { NO_OWNER, type LegCommand, type OwnerPair } from '../protocol/leg-commands.js';
import { MAX_MEMBERS, type IoMsgValue } from '../protocol/msg.js';
import { emptySrvMd, legacyOwner, type PoolMd } from '../protocol/pool-md.js';
import { IoFreeze } from './io-freeze.js';
import { Leg, type LegChannel } from './leg.js';
import { LegGatekeeper, type LegPoolCounters, type LegState, type LegStateEvent } from './leg-state.js';
import { RangeLocks } from './range-locks.js';
import { UnflushedChunks } from './unflushed.js';
import { WriteSequence } from './write-sequence.js';

/** IOs held while the pool is frozen, or behind an overlapping write: bounded, beyond it EBUSY. */
const MAX_FROZEN_QUEUE = 4096;
/** Operator actions waiting for the pool's lock: bounded, beyond it EBUSY. */
const MAX_LOCK_WAITERS = 64;
/** POOL_INFO messages kept for a FAILED leg at most (beyond it the oldest are dropped with a note). */
const MAX_PENDING_INFO = 64;
/** An IO message's empty list of members that missed it (read-only: shared by every IO). */
const NO_IDS = Buffer.alloc(MAX_MEMBERS);
/** Chunks listed as written since the last good flush at most (beyond: every chunk counts, see unflushed.ts). */
const MAX_UNFLUSHED_CHUNKS = 1 << 16;

/**
 * An IO failed because the pool could not give the guarantee it asks for, although legs
 * answered: `not_durable`, a FLUSH after which some written chunk would have no durable clean
 * copy; `min_replicas`, an IO that completed on fewer legs than the pool's quorum.
 */
export interface ClientIoFailure {
  kind: 'io_failure';
  pool: string;
  op: 'write' | 'discard' | 'write_zeroes' | 'flush';
  cause: 'not_durable' | 'min_replicas';
  status: number;
  reason: string;
  at: number;
}

export interface ClientPoolOptions {
  pool_name: string;
  group_id: number;
  chunk_size: number;
  mapped_size: number;
  /** Largest IO (the transport's negotiated max IO size). */
  max_io_size: number;
  /** Refuse writes while fewer legs are NORMAL (0: never). */
  min_replicas?: number;
  sync?: boolean;
  /** A client map is wiped after a clean MAP_CHECK only if unchanged for this long (§8.5). */
  map_clean_delay_ms?: number;
  /** Called with the reason whenever a leg state change is refused (the simulator counts them). */
  on_refused?: (reason: string) => void;
  /** Told of every IO failed for durability or quorum (the daemon makes an event and a log line of it). */
  on_io_failure?: (ev: ClientIoFailure) => void;
}

export interface ClientPoolStats {
  reads: number;
  writes: number;
  read_retries: number;
  map_adds: number;
  failed_ios: number;
}

/** Internal counters for status views and diagnostics. */
export interface ClientPoolStatus {
  frozen: boolean;
  in_flight: number;
  recovering: boolean;
  range_locks: number;
  waiting_on_overlap: number;
  frozen_queue: number;
  settled_below: number;
  uncertain_chunks: number;
  /** Chunks written since the last successful flush (-1: more than are listed, every chunk counts). */
  unflushed_chunks: number;
  /** IOs failed for durability or quorum (ClientIoFailure), and the last one. */
  io_failures: { not_durable: number; min_replicas: number; last: ClientIoFailure | null };
  legs: { member_id: number; state: LegState; maintenance: boolean; pending_info: number; dirty_chunks: number; maps_lost: boolean }[];
  /** Why no recovery case can bring the pool back without the operator (null: none blocks it). */
  recovery_blocked: string | null;
}

/** What an upper layer needs to size itself (reference rmr_clt_query). */
export interface ClientPoolQuery {
  chunk_size: number;
  mapped_size: number;
  max_io_size: number;
  legs: number;
  normal_legs: number;
  map_ver: number;
  frozen: boolean;
}

export class ClientPoolCore {
  readonly pool: string;
  readonly group_id: number;
  readonly chunk_size: number;
  readonly mapped_size: number;
  readonly no_of_chunks: number;
  readonly max_io_size: number;
  readonly sync: boolean;
  /**
   * The owner pair this pool joins and rejoins its members with (docs/ownership.md). NO_OWNER
   * until ownership is built on the client (a legacy pool): members then bind it as today.
   */
  owner: OwnerPair = NO_OWNER;
  /** Operator-settable. */
  min_replicas: number;
  readonly map_clean_delay_ms: number;
  readonly now: () => number;
  /** The daemon reads these and resets read_retries. */
  readonly stats: ClientPoolStats = { reads: 0, writes: 0, read_retries: 0, map_adds: 0, failed_ios: 0 };
  /** The gatekeeper's record: the count of NORMAL legs and the map version are written by it, and by bumpMapVersion/adoptMapVersion. */
  private readonly counters: LegPoolCounters;
  private readonly gk: LegGatekeeper;
  private readonly legs_by_id = new Map<number, Leg>();
  /** Members the pool is supposed to have (pool_md.srv_md): attached or not. */
  private readonly _members = new Set<number>();
  /** The client's dirty map per member it knows (including detached members). */
  private readonly _maps = new Map<number, DirtyMap>();
  /**
   * Chunks a write failed on every leg it reached (or could not be recorded anywhere): it
   * may have landed on some members and not others, and no member's map says so. Handed to
   * the map source (INTENT_TO_MAP) before the next spread, which picks one source per chunk.
   */
  private readonly uncertain: DirtyMap;
  /** The pool's identity and queue depth as learned from the members' pool_md. */
  private _pool_uuid: Buffer = Buffer.alloc(16);
  private _queue_depth = 0;
  private readonly io_freeze = new IoFreeze(MAX_FROZEN_QUEUE);
  private locked = false;
  private lock_waiters: (() => void)[] = [];
  /** Opened by an upper layer (the reference's IN_USE). */
  private in_use = false;
  private all_blank = true;
  private readonly seq = new WriteSequence();
  /** Overlapping writes (and verify batches) run in arrival order. */
  private readonly ranges = new RangeLocks(MAX_FROZEN_QUEUE);
  private readonly on_refused: ((reason: string) => void) | null;
  private readonly on_io_failure: ((ev: ClientIoFailure) => void) | null;
  /** Chunks written since the last successful flush (FLUSH durability, ARCHITECTURE §2.14). */
  private readonly unflushed = new UnflushedChunks(MAX_UNFLUSHED_CHUNKS);
  private readonly io_failures: ClientPoolStatus['io_failures'] = { not_durable: 0, min_replicas: 0, last: null };
  /**
   * FLUSHes in flight, by number: per member, the chunks its map had cleared since the flush
   * was sent ('all': too many to list, or the whole map). A copy made clean after a node's
   * flush began (a chunk synced under a later write, a MAP_CHECK wipe) may be newer than what
   * that flush made durable, so it does not vouch for the flush.
   */
  private readonly flights = new Map<number, Map<number, Set<number> | 'all'>>();

  constructor(o: ClientPoolOptions, now: () => number, emit: (ev: LegStateEvent) => void) {
    if (!Number.isSafeInteger(o.mapped_size) || o.mapped_size <= 0) throw new RangeError(`mapped_size ${o.mapped_size}`);
    this.pool = o.pool_name;
    this.group_id = o.group_id;
    this.chunk_size = o.chunk_size;
    this.mapped_size = o.mapped_size;
    this.no_of_chunks = Math.ceil(o.mapped_size / o.chunk_size);
    this.max_io_size = o.max_io_size;
    this.min_replicas = o.min_replicas ?? 0;
    this.sync = o.sync ?? false;
    this.map_clean_delay_ms = o.map_clean_delay_ms ?? 5000;
    this.on_refused = o.on_refused ?? null;
    this.on_io_failure = o.on_io_failure ?? null;
    this.now = now;
    this.uncertain = new DirtyMap(0, this.no_of_chunks);
    this.counters = { pool: this.pool, normal_count: 0, map_ver: 1, legs: () => this.legs_by_id.values() };
    this.gk = new LegGatekeeper(this.counters, emit);
  }

  // ------------------------------------------------------------------ views

  get map_ver(): number {
    return this.counters.map_ver;
  }

  get pool_uuid(): Buffer {
    return this._pool_uuid;
  }

  get queue_depth(): number {
    return this._queue_depth;
  }

  get members(): ReadonlySet<number> {
    return this._members;
  }

  /** The DirtyMaps' bits are changed through their own API (setDirty, setAll, clearAll). */
  get maps(): ReadonlyMap<number, DirtyMap> {
    return this._maps;
  }

  legs(): Iterable<Leg> {
    return this.legs_by_id.values();
  }

  leg(member_id: number): Leg | undefined {
    return this.legs_by_id.get(member_id);
  }

  get legCount(): number {
    return this.legs_by_id.size;
  }

  normalLegs(): Leg[] {
    const out: Leg[] = [];
    for (const l of this.legs_by_id.values()) if (l.state === 'NORMAL') out.push(l);
    return out;
  }

  get isLocked(): boolean {
    return this.locked;
  }

  get isFrozen(): boolean {
    return this.io_freeze.isFrozen;
  }

  get inUse(): boolean {
    return this.in_use;
  }

  get hasUncertain(): boolean {
    return !this.uncertain.isEmpty();
  }

  uncertainRuns(): [number, number][] {
    return this.uncertain.runs();
  }

  /** The lowest write sequence not settled (WriteSequence.settledBelow). */
  settledBelow(): number {
    return this.seq.settledBelow();
  }

  status(): ClientPoolStatus {
    return {
      frozen: this.io_freeze.isFrozen,
      in_flight: this.io_freeze.inFlight,
      recovering: this.locked,
      range_locks: this.ranges.activeCount,
      waiting_on_overlap: this.ranges.waitingCount,
      frozen_queue: this.io_freeze.heldCount,
      settled_below: this.settledBelow(),
      uncertain_chunks: this.uncertain.dirtyCount,
      unflushed_chunks: this.unflushed.overflowed ? -1 : this.unflushed.size,
      io_failures: { ...this.io_failures },
      legs: [...this.legs_by_id.values()].map((l) => ({ member_id: l.member_id, state: l.state, maintenance: l.maintenance, pending_info: l.pending_info.length, dirty_chunks: this._maps.get(l.member_id)?.dirtyCount ?? 0, maps_lost: l.maps_lost })),
      recovery_blocked: this.recovery_blocked,
    };
  }

  query(): ClientPoolQuery {
    return {
      chunk_size: this.chunk_size,
      mapped_size: this.mapped_size,
      max_io_size: this.max_io_size,
      legs: this.legs_by_id.size,
      normal_legs: this.normalLegs().length,
      map_ver: this.map_ver,
      frozen: this.io_freeze.isFrozen,
    };
  }

  /** The client's pool_md (SEND_MD_BUF each recovery tick, §8.7): header and its members. */
  poolMd(): PoolMd {
    const srv_md = [emptySrvMd(), emptySrvMd(), emptySrvMd(), emptySrvMd()];
    [...this._members].sort((a, b) => a - b).slice(0, MAX_MEMBERS).forEach((id, i) => Object.assign(srv_md[i] as object, { member_id: id, mapped_size: this.mapped_size }));
    return {
      header: { pool_name: this.pool, pool_uuid: Buffer.from(this._pool_uuid), group_id: this.group_id, chunk_size: this.chunk_size, mapped_size: this.mapped_size, queue_depth: this._queue_depth, map_ver: this.map_ver },
      srv_md,
      // The owner section is the node's own (adoptClientMd never takes it): a placeholder.
      owner: legacyOwner(srv_md),
    };
  }

  /** An IO message for `leg` (also the recovery tick's settled beacon). */
  ioMsg(leg: Leg, offset: number, length: number, flags: number, missing: readonly number[], seq: number): IoMsgValue {
    // Messages are encoded at once and never kept: the common empty list shares one buffer.
    let ids = NO_IDS;
    if (missing.length > 0) {
      ids = Buffer.alloc(MAX_MEMBERS);
      missing.forEach((id, i) => (ids[i] = id));
    }
    return {
      offset,
      length,
      flags,
      map_ver: this.map_ver,
      prio: 0,
      member_id: leg.member_id,
      failed_cnt: missing.length,
      failed_ids: ids,
      sync: this.sync ? 1 : 0,
      seq,
      settled: this.sync ? 0 : this.settledBelow(),
    };
  }

  // ------------------------------------------------------------------ legs

  /** Attaches a leg (after its join succeeded); it starts CREATED. */
  addLeg(name: string, member_id: number, channel: LegChannel): Leg {
    if (this.legs_by_id.has(member_id)) throw new RangeError(`member ${member_id} already has a leg in pool ${this.pool}`);
    if (this._members.size >= MAX_MEMBERS && !this._members.has(member_id)) throw new RangeError(`pool ${this.pool} already has ${MAX_MEMBERS} members`);
    const leg = new Leg(name, member_id, this.sync, channel, 'CREATED');
    this.legs_by_id.set(member_id, leg);
    this._members.add(member_id);
    this.mapOf(member_id);
    return leg;
  }

  /** Detaches a leg; with `forget` the member also leaves the pool (del_sess mode=delete). */
  removeLeg(member_id: number, forget: boolean): void {
    const leg = this.legs_by_id.get(member_id);
    if (leg !== undefined) this.setLegState(leg, 'REMOVING', forget ? 'delete' : 'disassemble');
    this.legs_by_id.delete(member_id);
    if (forget) {
      this.mapWiped(member_id);
      this._members.delete(member_id);
      this._maps.delete(member_id);
    }
  }

  /** The one way leg states change (the gatekeeper of leg-state.ts). */
  setLegState(leg: Leg, to: LegState, reason: string): string | null {
    const from = leg.state;
    const err = this.gk.change(leg, to, reason);
    if (err === null && to === 'FAILED' && from !== 'FAILED') leg.failures++;
    if (err !== null) this.on_refused?.(err);
    return err;
  }

  /**
   * The last step of readying a leg's node to serve was answered (MAP_DONE(enable),
   * ENABLE_POOL, or the maps loaded after them): the leg goes NORMAL only if it is still in
   * `from` and did not fail since `failures` was read, before the node was readied. A leg
   * that failed meanwhile is not the leg the step readied, even if the answer arrived (the
   * transport replays requests after a reconnect): from FAILED the move is illegal, and a
   * leg that rejoined since is RECONNECTING with its node out of service again. Then the
   * node is told to leave IO service (MAP_DISABLE, best effort; a rejoin does it too) and
   * false is returned: recovery runs again once the leg is back. Found by the simulator
   * (seeds 63000709 and 58183127: FAILED -> NORMAL after the reconciliation, after a spread).
   */
  promoteLeg(leg: Leg, from: 'CREATED' | 'RECONNECTING', failures: number, reason: string): boolean {
    if (this.unchangedSince(leg, from, failures)) return this.setLegState(leg, 'NORMAL', reason) === null;
    if (leg.state !== 'REMOVING' && leg.channel.isConnected()) leg.channel.command({ kind: 'map_disable' }, () => undefined);
    return false;
  }

  /** The leg is in `from` and has not failed since `failures` was read (Leg.failures). */
  unchangedSince(leg: Leg, from: LegState, failures: number): boolean {
    return leg.state === from && leg.failures === failures;
  }

  /**
   * A leg failed an IO or a command while its link may be up: besides FAILED here, tell the
   * node to leave IO service (MAP_DISABLE, best effort) so peers do not read from it what it
   * missed.
   */
  failLeg(leg: Leg, reason: string): void {
    const was = leg.state;
    if (was === 'REMOVING') return;
    this.setLegState(leg, 'FAILED', reason);
    if (was !== 'FAILED' && leg.channel.isConnected()) leg.channel.command({ kind: 'map_disable' }, () => undefined);
  }

  /** Maintenance mode of a leg (the gatekeeper refuses NORMAL while it is on). */
  setMaintenance(leg: Leg, on: boolean): void {
    leg.maintenance = on;
  }

  /**
   * The leg's authority was the maps on a disk that went (its store was replaced): never
   * again the last authoritative leg (Case 2).
   */
  revokeAuthority(leg: Leg): void {
    leg.was_last_authoritative = false;
  }

  /** Queues a POOL_INFO for a leg that cannot take it now (replayed before its next map). */
  queuePoolInfo(leg: Leg, cmd: LegCommand): void {
    leg.pending_info.push(cmd);
    if (leg.pending_info.length > MAX_PENDING_INFO) leg.pending_info.shift();
  }

  /**
   * `cmd`, the oldest queued POOL_INFO when it was sent, reached the leg's node: it leaves the
   * queue. When it was the deletion of a member,
   * a del_sess delete that found every other leg FAILED, and so left that member's leg
   * REMOVING, is complete now: the leg goes. Without this only an operator's re-run finished
   * it. Found by the simulator (seed 61002823: the client's host stopped reading, every leg
   * failed during the removal's drain, and leg 2 stayed REMOVING). The node must have left
   * (LEAVE_POOL answered); otherwise the re-run still has that to do.
   */
  poolInfoDelivered(leg: Leg, cmd: LegCommand): void {
    leg.pending_info.shift();
    if (cmd.kind !== 'pool_info' || cmd.op !== 'remove' || cmd.mode !== 'delete') return;
    const removed = this.legs_by_id.get(cmd.member_id);
    if (removed === undefined || removed.state !== 'REMOVING' || !removed.left || this._members.has(cmd.member_id)) return;
    this.removeLeg(cmd.member_id, false);
  }

  // ------------------------------------------------------------------ members and maps

  /** The client's map of `member_id`, created clean if it has none. */
  mapOf(member_id: number): DirtyMap {
    let m = this._maps.get(member_id);
    if (m === undefined) {
      m = new DirtyMap(member_id, this.no_of_chunks);
      this._maps.set(member_id, m);
    }
    return m;
  }

  /**
   * A member listed in a node's pool_md but not attached yet: writes piggyback it until it is
   * back. 'full' when the pool has MAX_MEMBERS members already.
   */
  learnMember(member_id: number): 'known' | 'added' | 'full' {
    if (this._members.has(member_id)) return 'known';
    if (this._members.size >= MAX_MEMBERS) return 'full';
    this._members.add(member_id);
    this.mapOf(member_id);
    return 'added';
  }

  /** The member left the pool for good (del_sess delete): its map goes too. */
  forgetMember(member_id: number): void {
    this.mapWiped(member_id);
    this._members.delete(member_id);
    this._maps.delete(member_id);
  }

  /** The last leg was disassembled: the maps are rebuilt from pool_md at the next assemble. */
  forgetAllMaps(): void {
    for (const id of this._maps.keys()) this.mapWiped(id);
    this._maps.clear();
  }

  // ------------------------------------------------------------------ identity and map version

  /** A member's pool_md: the pool's UUID while the client has none, and the queue depth (only up). */
  adoptIdentity(header: { pool_uuid: Buffer; queue_depth: number }): void {
    if (this._pool_uuid.every((x) => x === 0)) this._pool_uuid = Buffer.from(header.pool_uuid);
    this.raiseQueueDepth(header.queue_depth);
  }

  raiseQueueDepth(queue_depth: number): void {
    if (queue_depth > this._queue_depth) this._queue_depth = queue_depth;
  }

  /** A leg went into maintenance: writes it misses from now on carry a newer version. */
  bumpMapVersion(): void {
    this.counters.map_ver++;
  }

  /** The client-crash reconciliation adopts the members' newest version (never lowers it). */
  adoptMapVersion(map_ver: number): void {
    this.counters.map_ver = Math.max(this.counters.map_ver, map_ver);
  }

  // ------------------------------------------------------------------ the pool's lock

  /**
   * `fn` runs once no other recovery or operator action holds the pool's lock. False when
   * too many wait (the caller answers EBUSY).
   */
  lock(fn: () => void): boolean {
    if (!this.locked) {
      this.locked = true;
      fn();
      return true;
    }
    if (this.lock_waiters.length >= MAX_LOCK_WAITERS) return false;
    this.lock_waiters.push(fn);
    return true;
  }

  /** Takes the lock only if free (the recovery tick does not queue behind itself). */
  /** Why the recovery cannot go on by itself (set and cleared by ClientRecovery.decide); status shows it. */
  recovery_blocked: string | null = null;

  tryLock(): boolean {
    if (this.locked) return false;
    this.locked = true;
    return true;
  }

  unlock(): void {
    if (!this.locked) throw new Error(`invariant: unlock of pool ${this.pool} that is not locked`);
    const next = this.lock_waiters.shift();
    if (next !== undefined) next();
    else this.locked = false;
  }

  // ------------------------------------------------------------------ IO freeze and the upper layer

  /** Holds new IOs and calls `drained` once every IO in flight has completed. Counted. */
  freeze(drained: () => void): void {
    this.io_freeze.freeze(drained);
  }

  /** The last unfreeze resubmits the held IOs, in order. */
  unfreeze(): void {
    if (!this.io_freeze.unfreeze()) throw new Error(`invariant: unfreeze of pool ${this.pool} that is not frozen`);
  }

  /** An IO arrived while frozen: `resume` resubmits it at the unfreeze. False when too many are held. */
  holdIo(resume: () => void): boolean {
    return this.io_freeze.hold(resume);
  }

  ioStarted(): void {
    this.io_freeze.started();
  }

  ioDone(): void {
    this.io_freeze.done();
  }

  /**
   * An upper layer takes the pool (one user at a time). Unlike the reference, also while a
   * recovery runs: IO waits for the spread's freeze or fails with ENODEV while no leg is
   * NORMAL, so a device mapped right after the assemble does not race the reconciliation.
   */
  open(): number {
    if (this.in_use) return Errno.EBUSY;
    this.in_use = true;
    // From now on the members may be written: a later create-mode join starts dirty.
    this.all_blank = false;
    return 0;
  }

  /**
   * Every member joined so far in create mode said its store was blank, and the pool was never
   * opened: a next blank member needs no initial sync (JOIN_DIRTY_UNLESS_BLANK). In memory only:
   * a client restarted during the creation joins the rest dirty, as before.
   */
  get allBlank(): boolean {
    return this.all_blank;
  }

  /** A create-mode join answered: a member that is not blank ends the blank run for good. */
  noteJoinedBlank(blank: boolean): void {
    if (!blank) this.all_blank = false;
  }

  /** The upper layer lets go once its IO has drained. */
  close(cb: () => void): void {
    if (!this.in_use) return cb();
    this.freeze(() => {
      this.in_use = false;
      this.unfreeze();
      cb();
    });
  }

  // ------------------------------------------------------------------ range locks

  /**
   * Starts `go` once no earlier overlapping write is in flight (online verify locks the
   * chunks it compares the same way); false when too many wait.
   */
  lockRange(start: number, end: number, go: () => void): boolean {
    return this.ranges.lock(start, end, go);
  }

  unlockRange(start: number, end: number): void {
    this.ranges.unlock(start, end);
  }

  // ------------------------------------------------------------------ write sequence

  /** A modifying IO starts: its sequence number (0 in a sync pool, which has none), unsettled until endWrite. */
  beginWrite(): number {
    return this.sync ? 0 : this.seq.begin();
  }

  endWrite(seq: number): void {
    this.seq.end(seq);
  }

  /**
   * A write failed on every leg it reached, or could not be recorded: its chunks are uncertain.
   * They are dirty for every member in the client's maps too: their reconciliation
   * (INTENT_TO_MAP) makes them dirty on the nodes for all but one member, chosen there, and
   * the client's maps must not claim a member clean that its node holds dirty (a FLUSH counts
   * a member's copy as clean by them). MAP_CHECK cleans the chosen member's map later.
   */
  markUncertain(first: number, count: number, seq: number): void {
    const now = this.now();
    this.uncertain.setDirty(first, count, now);
    for (const id of this._members) this.mapOf(id).setDirty(first, count, now);
    this.seq.uncertain(seq);
  }

  // ------------------------------------------------------------------ durability (flush, min_replicas)

  /**
   * A leg answered a modifying IO over [first, first+count) and has not failed since it was
   * sent: its node served it only with those chunks clean (it resyncs a dirty chunk first),
   * so its copy of them is complete now; the client's map of it says so too. Whatever it
   * misses later is recorded after this (a failure of the leg, a MAP_ADD, a piggyback).
   */
  copyLanded(leg: Leg, first: number, count: number): void {
    if (this.sync || leg.state !== 'NORMAL') return;
    const m = this._maps.get(leg.member_id);
    if (m === undefined || m.isEmpty()) return;
    if (this.flights.size > 0) for (let c = first; c < first + count; c++) if (m.isDirty(c)) this.clearedInFlight(leg.member_id, c);
    m.clear(first, count);
  }

  /** The client's map of `member_id` was wiped (MAP_CHECK): it vouches for no FLUSH in flight. */
  mapWiped(member_id: number): void {
    for (const f of this.flights.values()) f.set(member_id, 'all');
  }

  private clearedInFlight(member_id: number, chunk: number): void {
    for (const f of this.flights.values()) {
      const set = f.get(member_id) ?? new Set<number>();
      if (set === 'all') continue;
      set.add(chunk);
      f.set(member_id, set.size > MAX_UNFLUSHED_CHUNKS ? 'all' : set);
    }
  }

  /** A modifying IO over [first, first+count) was acknowledged: the next FLUSH must cover it. */
  writeAcked(first: number, count: number): void {
    if (!this.sync) this.unflushed.written(first, count);
  }

  /** A FLUSH is sent: its number, for flushDone or flushAbandoned. */
  flushIssued(): number {
    const n = this.unflushed.flushIssued();
    this.flights.set(n, new Map());
    return n;
  }

  /** FLUSH number `n` failed on its own (no leg flushed, too few): nothing becomes durable by it. */
  flushAbandoned(n: number): void {
    this.flights.delete(n);
  }

  /**
   * FLUSH number `n` succeeded on the legs `flushed` (and they did not fail since it was
   * sent). It is durable only if every chunk written since the last good flush has a clean
   * copy on one of them, clean since before its flush began: by the client's maps, which
   * over-approximate what each node holds dirty (every miss is recorded in them before the
   * write is acknowledged; a node's own knowledge is marked in them before it gets maps;
   * uncertain chunks are marked for all), and by what they cleared while the flush was in
   * flight. A node's flush alone proves nothing for a chunk its copy lacks (issue 19: a
   * member back from an absence flushed while its copy of a written chunk was still stale,
   * and the one member holding it failed its flush). Returns null when durable (the chunks
   * leave the set), else why not.
   */
  flushDone(n: number, flushed: readonly Leg[]): string | null {
    const cleared = this.flights.get(n) ?? new Map<number, Set<number> | 'all'>();
    this.flights.delete(n);
    const vouching = (l: Leg): boolean => cleared.get(l.member_id) !== 'all';
    if (!this.unflushed.isEmpty && !flushed.some((l) => vouching(l) && cleared.get(l.member_id) === undefined && this.mapOf(l.member_id).isEmpty())) {
      const legs = flushed.filter(vouching);
      let chunk = legs.length === 0 ? 0 : -1;
      if (legs.length > 0 && this.unflushed.overflowed) {
        // Every chunk counts: the first chunk dirty in every map, each map skipping ahead. A
        // map with chunks cleared during the flush does not take part (stricter, still correct).
        const maps = legs.filter((l) => cleared.get(l.member_id) === undefined).map((l) => this.mapOf(l.member_id));
        let c = 0;
        for (let i = 0, agree = 0; maps.length > 0 && c >= 0 && agree < maps.length; i = (i + 1) % maps.length) {
          const d = (maps[i] as DirtyMap).nextDirty(c);
          if (d === c) agree++;
          else {
            c = d;
            agree = 1;
          }
        }
        chunk = maps.length === 0 ? 0 : c;
      } else if (legs.length > 0) {
        const covers = (l: Leg, c: number): boolean => {
          const cl = cleared.get(l.member_id);
          return !this.mapOf(l.member_id).isDirty(c) && (cl === undefined || (cl !== 'all' && !cl.has(c)));
        };
        for (const c of this.unflushed.chunks()) {
          if (!legs.some((l) => covers(l, c))) {
            chunk = c;
            break;
          }
        }
      }
      if (chunk >= 0) return `chunk ${chunk} was written since the last flush and no member that flushed (${flushed.map((l) => l.member_id).join(',')}) holds a clean copy of it`;
    }
    this.unflushed.flushed(n);
    return null;
  }

  /** An IO failed for durability or quorum: counted, kept as the last one, and told (on_io_failure). */
  ioFailed(op: ClientIoFailure['op'], cause: ClientIoFailure['cause'], status: number, reason: string): void {
    const ev: ClientIoFailure = { kind: 'io_failure', pool: this.pool, op, cause, status, reason, at: this.now() };
    this.stats.failed_ios++;
    this.io_failures[cause]++;
    this.io_failures.last = ev;
    this.on_io_failure?.(ev);
  }

  /** The uncertain set was reconciled: its writes are settled. */
  uncertainReconciled(): void {
    this.uncertain.clearAll(this.now());
    this.seq.reconciled();
  }
}
