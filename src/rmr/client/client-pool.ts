// The compute client's side of a pool (the reference's rmr_clt_pool, §4.1, §6.1-§6.4): its
// legs, the client's own dirty maps, and the IO path. Writes, discards and write-zeroes go
// to every NORMAL leg in one hop, carrying the members that cannot take them (piggyback);
// a leg that fails a write is recorded dirty on the legs that took it (MAP_ADD) before the
// write is acknowledged. Reads go to one NORMAL leg, round robin, retried on untried legs.
//
// Guarantees: a write is acknowledged only if it is on at least one leg and every member
// that missed it is recorded dirty on a surviving leg and in client memory; an IO with no
// NORMAL leg fails at once (ENODEV); with `min_replicas`, writes are refused (EROFS) while
// fewer legs are NORMAL.
//
// Recovery (try_enable, map spread, the client-crash reconciliation) is client-recovery.ts;
// the lifecycle operations (add_sess, extend, del_sess, maintenance) are client-lifecycle.ts;
// online verify is client-verify.ts. They work on this pool through its `@internal` members.
// One operator action or recovery at a time holds the pool's lock (the reference's
// clt_pool_lock); IO is frozen only while a map spread or a leg change needs it.

import { Errno } from '../../util/errno.js';
import { DirtyMap, chunkRange } from '../protocol/dirty-map.js';
import { LegGatekeeper, type LegPoolCounters, type LegState, type LegStateEvent, type LegStateHolder } from './leg-state.js';
import { IO_F_FUA, IO_F_SYNC, IoOp, MAX_MEMBERS, type IoMsgValue, type MapAddValue } from '../protocol/msg.js';
import type { LegCommand, LegCommandCallback } from '../protocol/leg-commands.js';
import { readMapPages } from './map-compare.js';
import { emptySrvMd, type PoolMd } from '../protocol/pool-md.js';
import { ClientRecovery } from './client-recovery.js';
import { ClientLifecycle, type DelSessOptions } from './client-lifecycle.js';
import { ClientVerify, type VerifyOptions, type VerifyProgress, type VerifyReport } from './client-verify.js';

/** One leg's way to its storage node (over the client session shared by the pools). */
export interface LegChannel {
  sendIo(msg: IoMsgValue, data: Buffer | null, cb: (status: number, data: Buffer | null) => void): void;
  sendMapAdd(msg: MapAddValue, cb: (status: number) => void): void;
  command(cmd: LegCommand, cb: LegCommandCallback): void;
  /** Whether the link to the node is up (a FAILED leg with a live link may only need a store check). */
  isConnected(): boolean;
}

interface QueuedIo {
  op: ClientOp;
  offset: number;
  length: number;
  data: Buffer | null;
  flags: { fua?: boolean; sync?: boolean };
  cb: (status: number, data: Buffer | null) => void;
}

/** IOs held while the pool is frozen, or behind an overlapping write: bounded, beyond it EBUSY. */
const MAX_FROZEN_QUEUE = 4096;
/** Operator actions waiting for the pool's lock: bounded, beyond it EBUSY. */
const MAX_LOCK_WAITERS = 64;
/** POOL_INFO messages kept for a FAILED leg at most (beyond it the oldest are dropped with a note). */
const MAX_PENDING_INFO = 64;
/** An IO message's empty list of members that missed it (read-only: shared by every IO). */
const NO_IDS = Buffer.alloc(MAX_MEMBERS);
const NO_MEMBERS: readonly number[] = [];

export class Leg implements LegStateHolder {
  readonly member_id: number;
  readonly sync: boolean;
  state: LegState;
  maintenance = false;
  was_last_authoritative = false;
  /**
   * Times the leg entered FAILED. A write's answer from a leg counts only if the leg did not
   * fail between sending and the write's completion: a failure may be its node's crash,
   * which loses what it had not flushed.
   */
  failures = 0;
  /** POOL_INFO the node missed while FAILED, replayed in order before it gets maps again (§12.1). */
  pending_info: LegCommand[] = [];
  /** The node's store was replaced (its pool_md says so): peers mark it fully dirty first (§9.8). */
  replaced = false;
  /** LEAVE_POOL was answered (a re-run of del_sess skips it). */
  left = false;
  readonly channel: LegChannel;
  readonly name: string;
  constructor(name: string, member_id: number, sync: boolean, channel: LegChannel, state: LegState) {
    this.name = name;
    this.member_id = member_id;
    this.sync = sync;
    this.channel = channel;
    this.state = state;
  }
}

export type ClientOp = 'read' | 'write' | 'discard' | 'write_zeroes' | 'flush';
const OP_CODE: Record<ClientOp, number> = { read: IoOp.READ, write: IoOp.WRITE, discard: IoOp.DISCARD, write_zeroes: IoOp.WRITE_ZEROES, flush: IoOp.FLUSH };

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
}

export interface ClientPoolStats {
  reads: number;
  writes: number;
  read_retries: number;
  map_adds: number;
  failed_ios: number;
}

/** The answer of a lifecycle operation: 0 or -errno, with a reason when it failed. */
export type OpCallback = (status: number, reason: string | null) => void;

export class ClientPool implements LegPoolCounters {
  readonly pool: string;
  readonly group_id: number;
  readonly chunk_size: number;
  readonly mapped_size: number;
  readonly no_of_chunks: number;
  readonly max_io_size: number;
  readonly sync: boolean;
  min_replicas: number;
  readonly map_clean_delay_ms: number;
  normal_count = 0;
  map_ver = 1;
  /** @internal */
  readonly legs_by_id = new Map<number, Leg>();
  /** Members the pool is supposed to have (pool_md.srv_md): attached or not. */
  readonly members = new Set<number>();
  /** The client's dirty map per member it knows (including detached members). */
  readonly maps = new Map<number, DirtyMap>();
  /**
   * Chunks a write failed on every leg it reached (or could not be recorded anywhere): it
   * may have landed on some members and not others, and no member's map says so. Handed to
   * the map source (INTENT_TO_MAP) before the next spread, which picks one source per chunk.
   */
  readonly uncertain: DirtyMap;
  /** The pool's identity and queue depth as learned from the members' pool_md. */
  pool_uuid: Buffer = Buffer.alloc(16);
  queue_depth = 0;
  private readonly gk: LegGatekeeper;
  private rr = 0;
  /** @internal */
  readonly now: () => number;
  /** IOs submitted and not yet completed. */
  private inflight = 0;
  private freezes = 0;
  private frozen_queue: QueuedIo[] = [];
  private drain_waiters: (() => void)[] = [];
  private locked = false;
  private lock_waiters: (() => void)[] = [];
  /** Opened by an upper layer (the reference's IN_USE). */
  private in_use = false;
  readonly stats: ClientPoolStats = { reads: 0, writes: 0, read_retries: 0, map_adds: 0, failed_ios: 0 };
  // Write sequence (intent-log.ts): every modifying IO gets the next number; `settledBelow()`
  // is the lowest one not settled yet (in flight, or in the uncertain set until reconciled).
  private next_seq = 1;
  private readonly unsettled = new Set<number>();
  private settled_low = 1;
  /** @internal Lowest sequence of a write whose chunks are in the uncertain set. */
  uncertain_seq = Infinity;
  private readonly on_refused: ((reason: string) => void) | null;
  /** @internal */
  readonly recovery: ClientRecovery;
  /** @internal */
  readonly lifecycle: ClientLifecycle;
  private readonly verifier: ClientVerify;

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
    this.now = now;
    this.uncertain = new DirtyMap(0, this.no_of_chunks);
    this.gk = new LegGatekeeper(this, emit);
    this.recovery = new ClientRecovery(this);
    this.lifecycle = new ClientLifecycle(this);
    this.verifier = new ClientVerify(this);
  }

  legs(): Iterable<Leg> {
    return this.legs_by_id.values();
  }

  leg(member_id: number): Leg | undefined {
    return this.legs_by_id.get(member_id);
  }

  /** Attaches a leg (after its join succeeded); it starts CREATED. */
  addLeg(name: string, member_id: number, channel: LegChannel): Leg {
    if (this.legs_by_id.has(member_id)) throw new RangeError(`member ${member_id} already has a leg in pool ${this.pool}`);
    if (this.members.size >= MAX_MEMBERS && !this.members.has(member_id)) throw new RangeError(`pool ${this.pool} already has ${MAX_MEMBERS} members`);
    const leg = new Leg(name, member_id, this.sync, channel, 'CREATED');
    this.legs_by_id.set(member_id, leg);
    this.members.add(member_id);
    this.mapOf(member_id);
    return leg;
  }

  /** Detaches a leg; with `forget` the member also leaves the pool (del_sess mode=delete). */
  removeLeg(member_id: number, forget: boolean): void {
    const leg = this.legs_by_id.get(member_id);
    if (leg !== undefined) this.setLegState(leg, 'REMOVING', forget ? 'delete' : 'disassemble');
    this.legs_by_id.delete(member_id);
    if (forget) {
      this.members.delete(member_id);
      this.maps.delete(member_id);
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
   * @internal The last step of readying a leg's node to serve was answered (MAP_DONE(enable),
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

  /** @internal The leg is in `from` and has not failed since `failures` was read (Leg.failures). */
  unchangedSince(leg: Leg, from: LegState, failures: number): boolean {
    return leg.state === from && leg.failures === failures;
  }

  /** @internal */
  mapOf(member_id: number): DirtyMap {
    let m = this.maps.get(member_id);
    if (m === undefined) {
      m = new DirtyMap(member_id, this.no_of_chunks);
      this.maps.set(member_id, m);
    }
    return m;
  }

  /** @internal */
  normalLegs(): Leg[] {
    const out: Leg[] = [];
    for (const l of this.legs_by_id.values()) if (l.state === 'NORMAL') out.push(l);
    return out;
  }

  /**
   * Submits an IO. `data` is the write payload (write only). `cb` gets 0 or -errno, and the
   * data for reads. Never hangs: every path ends in exactly one call of `cb`.
   */
  submit(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: { fua?: boolean; sync?: boolean }, cb: (status: number, data: Buffer | null) => void): void {
    if (!this.in_use) return cb(Errno.ENXIO, null);
    if (this.freezes > 0) {
      if (this.frozen_queue.length >= MAX_FROZEN_QUEUE) return cb(Errno.EBUSY, null);
      this.frozen_queue.push({ op, offset, length, data, flags, cb });
      return;
    }
    this.inflight++;
    this.start(op, offset, length, data, flags, (status, d) => {
      this.inflight--;
      if (this.inflight === 0 && this.drain_waiters.length > 0) {
        const ws = this.drain_waiters;
        this.drain_waiters = [];
        for (const w of ws) w();
      }
      cb(status, d);
    });
  }

  private start(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: { fua?: boolean; sync?: boolean }, cb: (status: number, data: Buffer | null) => void): void {
    if (op === 'flush') {
      if (offset !== 0 || length !== 0) return cb(Errno.EINVAL, null);
    } else {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > this.mapped_size) return cb(Errno.EINVAL, null);
      if (length > this.max_io_size) return cb(Errno.EINVAL, null);
      if (op === 'write' ? data === null || data.length !== length : data !== null) return cb(Errno.EINVAL, null);
    }
    const f = OP_CODE[op] | (flags.fua === true ? IO_F_FUA : 0) | (flags.sync === true ? IO_F_SYNC : 0);
    if (op === 'read') return this.read(offset, length, f, null, 0, cb);
    this.replicate(op, offset, length, data, f, cb);
  }

  // ------------------------------------------------------------------ the operator's actions

  /**
   * add_sess: joins the storage node behind `channel` and attaches the leg. `create`: a new
   * pool member at bring-up (dirty when other legs exist already, so it syncs from them,
   * §7.4); `assemble`: an existing member comes back (after a client restart or a
   * disassemble) and goes through recovery. Sync pools join without a mode.
   */
  addSess(name: string, channel: LegChannel, mode: 'create' | 'assemble' | null, queue_depth: number, cb: (status: number, leg: Leg | null, reason: string | null) => void): void {
    this.lifecycle.addSess(name, channel, mode, queue_depth, cb);
  }

  /**
   * extend (§9.7): a brand-new member joins a live pool. Its node must have a store made with
   * create_store and sync legs to and from the other nodes. It starts fully dirty on every
   * member, receives the maps from a NORMAL leg (IO frozen only for that), serves IO at once
   * (dirty chunks are synced on demand) and syncs everything in the background.
   */
  extend(name: string, channel: LegChannel, queue_depth: number, cb: (status: number, leg: Leg | null, reason: string | null) => void): void {
    this.lifecycle.extend(name, channel, queue_depth, cb);
  }

  /** The user's enable of a created leg (ENABLE_POOL(1), then NORMAL). */
  enableLeg(leg: Leg, cb: OpCallback): void {
    this.lifecycle.enableLeg(leg, cb);
  }

  /**
   * del_sess (§9.6): `delete` removes the member from the pool for good (every remaining node
   * drops its map and its pool_md slot); `disassemble` detaches it and keeps its map so
   * dirtiness keeps accumulating. Idempotent: re-running after a failure finishes the job.
   * A delete is refused while the member holds the only clean copy of some chunk, unless
   * `opts.force`.
   */
  delSess(member_id: number, mode: 'delete' | 'disassemble', cb: OpCallback, opts: DelSessOptions = {}): void {
    this.lifecycle.delSess(member_id, mode, cb, opts);
  }

  /**
   * Maintenance mode of one leg (§9.5): `on` takes it out of IO service (dirtiness for it
   * accumulates on the others), `off` brings it back through recovery. Idempotent.
   */
  maintenance(member_id: number, on: boolean, cb: OpCallback): void {
    this.lifecycle.maintenance(member_id, on, cb);
  }

  /** Online verify (ARCHITECTURE §2.9): compares the NORMAL members chunk by chunk while IO runs. */
  verifyStart(opts: VerifyOptions, cb: OpCallback): void {
    this.verifier.start(opts, cb);
  }

  verifyStop(): void {
    this.verifier.stop();
  }

  verifyProgress(): VerifyProgress {
    return this.verifier.progress();
  }

  /** The last (or running) verify's differing chunks, or null if none ran. */
  verifyReport(): VerifyReport | null {
    return this.verifier.report();
  }

  /**
   * Loads every map a node holds into the client's maps (READ_MAP_BUF, §5.4), replacing
   * them: how the client learns the dirtiness after a reconciliation without a NORMAL leg.
   */
  loadMapsFrom(leg: Leg, cb: (status: number) => void): void {
    const mapFor = (member: number): DirtyMap | null => (!this.members.has(member) && this.members.size >= MAX_MEMBERS ? null : this.mapOf(member));
    readMapPages((cmd, done) => leg.channel.command(cmd, done), mapFor, () => this.now(), cb);
  }

  /**
   * The upper layer's command channel (reference §5.6): `bytes` to every leg that is not
   * REMOVING or FAILED; one answer per leg, FAILED legs counted as failures.
   */
  commandAll(bytes: Buffer, rsp_len: number, cb: (answers: { member_id: number; status: number; data: Buffer | null }[]) => void): void {
    const legs = [...this.legs_by_id.values()].filter((l) => l.state !== 'REMOVING');
    const out: { member_id: number; status: number; data: Buffer | null }[] = [];
    let pending = legs.length;
    if (pending === 0) return cb(out);
    for (const leg of legs) {
      if (leg.state === 'FAILED') {
        out.push({ member_id: leg.member_id, status: Errno.ENOTCONN, data: null });
        if (--pending === 0) cb(out);
        continue;
      }
      leg.channel.command({ kind: 'user', bytes, rsp_len }, (status, _v, _r, data) => {
        out.push({ member_id: leg.member_id, status, data: data ?? null });
        if (--pending === 0) cb(out);
      });
    }
  }

  /**
   * Reads a range from one NORMAL member (diagnostics and the simulator's stability check):
   * the node syncs a dirty chunk first, as for any read. A failure does not fail the leg.
   */
  readFrom(member_id: number, offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    const leg = this.legs_by_id.get(member_id);
    if (leg === undefined || leg.state !== 'NORMAL') return cb(Errno.ENODEV, null);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > this.mapped_size || length > this.max_io_size) return cb(Errno.EINVAL, null);
    leg.channel.sendIo(this.ioMsg(leg, offset, length, IoOp.READ, [], 0), null, (status, d) => cb(status === 0 && d !== null && d.length === length ? 0 : status !== 0 ? status : Errno.EIO, status === 0 ? d : null));
  }

  /**
   * An upper layer takes the pool (one user at a time). Unlike the reference, also while a
   * recovery runs: IO waits for the spread's freeze or fails with ENODEV while no leg is
   * NORMAL, so a device mapped right after the assemble does not race the reconciliation.
   */
  open(): number {
    if (this.in_use) return Errno.EBUSY;
    this.in_use = true;
    return 0;
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

  get inUse(): boolean {
    return this.in_use;
  }

  /** Internal counters for status views and diagnostics. */
  status(): {
    frozen: boolean;
    in_flight: number;
    recovering: boolean;
    range_locks: number;
    waiting_on_overlap: number;
    frozen_queue: number;
    settled_below: number;
    uncertain_chunks: number;
    legs: { member_id: number; state: LegState; maintenance: boolean; pending_info: number; dirty_chunks: number }[];
  } {
    return {
      frozen: this.freezes > 0,
      in_flight: this.inflight,
      recovering: this.locked,
      range_locks: this.write_ranges.length,
      waiting_on_overlap: this.write_waiters.length,
      frozen_queue: this.frozen_queue.length,
      settled_below: this.settledBelow(),
      uncertain_chunks: this.uncertain.dirtyCount,
      legs: [...this.legs_by_id.values()].map((l) => ({ member_id: l.member_id, state: l.state, maintenance: l.maintenance, pending_info: l.pending_info.length, dirty_chunks: this.maps.get(l.member_id)?.dirtyCount ?? 0 })),
    };
  }

  /** What an upper layer needs to size itself (reference rmr_clt_query). */
  query(): { chunk_size: number; mapped_size: number; max_io_size: number; legs: number; normal_legs: number; map_ver: number; frozen: boolean } {
    return {
      chunk_size: this.chunk_size,
      mapped_size: this.mapped_size,
      max_io_size: this.max_io_size,
      legs: this.legs_by_id.size,
      normal_legs: this.normalLegs().length,
      map_ver: this.map_ver,
      frozen: this.freezes > 0,
    };
  }

  /** The client's pool_md (SEND_MD_BUF each recovery tick, §8.7): header and its members. */
  poolMd(): PoolMd {
    const srv_md = [emptySrvMd(), emptySrvMd(), emptySrvMd(), emptySrvMd()];
    [...this.members].sort((a, b) => a - b).slice(0, MAX_MEMBERS).forEach((id, i) => Object.assign(srv_md[i] as object, { member_id: id, mapped_size: this.mapped_size }));
    return {
      header: { pool_name: this.pool, pool_uuid: Buffer.from(this.pool_uuid), group_id: this.group_id, chunk_size: this.chunk_size, mapped_size: this.mapped_size, queue_depth: this.queue_depth, map_ver: this.map_ver },
      srv_md,
    };
  }

  // ------------------------------------------------------------------ recovery (client-recovery.ts)

  /**
   * A leg's link came back: REJOIN (the node goes NO_IO until it gets a map), the leg becomes
   * RECONNECTING, then recovery runs. `cb` reports the rejoin.
   */
  rejoinLeg(leg: Leg, cb: (status: number) => void): void {
    this.recovery.rejoinLeg(leg, cb);
  }

  /**
   * try_enable (§8.3): brings RECONNECTING legs back to NORMAL. Case 1: a NORMAL leg spreads
   * its maps to them (IO frozen for the spread). Case 2: no NORMAL leg, but the last
   * authoritative one is back: it is enabled directly, then Case 1 from it. Cases 3/4: every
   * member of the pool is attached and RECONNECTING (after a compute-client crash or a
   * disassemble): the reconciliation of the members' intent records (any number of members).
   * `cb` gets 0 when done, EBUSY while another recovery or operator action runs, EAGAIN
   * while legs must come back first.
   */
  tryEnable(cb: (status: number) => void): void {
    this.recovery.tryEnable(cb);
  }

  /**
   * The recovery tick (every few seconds): another try_enable for RECONNECTING legs, store
   * checks for FAILED legs with a live link, the client's map cleaning with the timestamp
   * guard (§8.5), the pool_md push (SEND_MD_BUF, §8.7) and the settled-sequence beacon.
   */
  recoveryTick(): void {
    this.recovery.tick();
  }

  // ------------------------------------------------------------------ lock and freeze (internal)

  /**
   * @internal The pool's lock: `fn` runs once no other recovery or operator action holds it.
   * False when too many wait (the caller answers EBUSY).
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

  /** @internal Takes the lock only if free (the recovery tick does not queue behind itself). */
  tryLock(): boolean {
    if (this.locked) return false;
    this.locked = true;
    return true;
  }

  /** @internal */
  unlock(): void {
    if (!this.locked) throw new Error(`invariant: unlock of pool ${this.pool} that is not locked`);
    const next = this.lock_waiters.shift();
    if (next !== undefined) next();
    else this.locked = false;
  }

  get isLocked(): boolean {
    return this.locked;
  }

  /** @internal Holds new IOs and calls `drained` once every IO in flight has completed. Counted. */
  freeze(drained: () => void): void {
    this.freezes++;
    if (this.inflight === 0) drained();
    else this.drain_waiters.push(drained);
  }

  /** @internal */
  unfreeze(): void {
    if (this.freezes <= 0) throw new Error(`invariant: unfreeze of pool ${this.pool} that is not frozen`);
    if (--this.freezes > 0) return;
    const q = this.frozen_queue;
    this.frozen_queue = [];
    for (const x of q) this.submit(x.op, x.offset, x.length, x.data, x.flags, x.cb);
  }

  get isFrozen(): boolean {
    return this.freezes > 0;
  }

  /**
   * @internal A leg failed an IO or a command while its link may be up: besides FAILED here,
   * tell the node to leave IO service (MAP_DISABLE, best effort) so peers do not read from it
   * what it missed.
   */
  failLeg(leg: Leg, reason: string): void {
    const was = leg.state;
    if (was === 'REMOVING') return;
    this.setLegState(leg, 'FAILED', reason);
    if (was !== 'FAILED' && leg.channel.isConnected()) leg.channel.command({ kind: 'map_disable' }, () => undefined);
  }

  /**
   * @internal The lowest write sequence not settled: every write below it was answered by
   * every leg and its misses are recorded on the nodes (MAP_ADD, piggyback) or reconciled.
   */
  settledBelow(): number {
    while (this.settled_low < this.next_seq && !this.unsettled.has(this.settled_low)) this.settled_low++;
    return Math.min(this.settled_low, this.uncertain_seq);
  }

  /** @internal The uncertain set was reconciled: its writes are settled. */
  uncertainReconciled(): void {
    this.uncertain.clearAll(this.now());
    this.uncertain_seq = Infinity;
  }

  private markUncertain(first: number, count: number, seq: number): void {
    this.uncertain.setDirty(first, count, this.now());
    if (seq < this.uncertain_seq) this.uncertain_seq = seq;
  }

  /** @internal Queues a POOL_INFO for a leg that cannot take it now (replayed before its next map). */
  queuePoolInfo(leg: Leg, cmd: LegCommand): void {
    leg.pending_info.push(cmd);
    if (leg.pending_info.length > MAX_PENDING_INFO) leg.pending_info.shift();
  }

  // ------------------------------------------------------------------ reads (§6.3)

  /** `tried`: the members this read already failed on (null on the first attempt). */
  private read(offset: number, length: number, flags: number, tried: Set<number> | null, first_err: number, cb: (status: number, data: Buffer | null) => void): void {
    // Round robin over the NORMAL legs not tried yet, in leg order (no arrays: every read
    // passes here).
    let n = 0;
    for (const l of this.legs_by_id.values()) if (l.state === 'NORMAL' && (tried === null || !tried.has(l.member_id))) n++;
    if (n === 0) {
      this.stats.failed_ios++;
      return cb(tried === null ? Errno.ENODEV : first_err, null);
    }
    let pick = this.rr++ % n;
    let leg: Leg | null = null;
    for (const l of this.legs_by_id.values()) {
      if (l.state !== 'NORMAL' || (tried !== null && tried.has(l.member_id))) continue;
      if (pick-- === 0) {
        leg = l;
        break;
      }
    }
    const chosen = leg as Leg;
    if (tried === null) this.stats.reads++;
    else this.stats.read_retries++;
    chosen.channel.sendIo(this.ioMsg(chosen, offset, length, flags, NO_MEMBERS, 0), null, (status, d) => {
      if (status === 0 && d !== null && d.length === length) return cb(0, d);
      const err = status !== 0 ? status : Errno.EIO;
      if (!this.sync) this.failLeg(chosen, `read failed (${err})`);
      const again = tried ?? new Set<number>();
      again.add(chosen.member_id);
      this.read(offset, length, flags, again, first_err === 0 ? err : first_err, cb);
    });
  }

  // ------------------------------------------------------------------ writes (§6.2, §6.4)

  // Overlapping writes are ordered: legs see concurrent overlapping writes in different
  // orders (different latencies), so without this the members could end up with different
  // data for the same block. Found by the simulator (seed 10: a write and a write-zeroes
  // overlapping, applied in opposite orders on two members).
  private readonly write_ranges: { start: number; end: number }[] = [];
  private readonly write_waiters: { start: number; end: number; go: () => void }[] = [];

  private overlapsActive(start: number, end: number): boolean {
    return this.write_ranges.some((r) => r.start < end && start < r.end);
  }

  /**
   * @internal Starts `go` once no earlier overlapping write is in flight (online verify locks
   * the chunks it compares the same way); false when too many wait.
   */
  lockRange(start: number, end: number, go: () => void): boolean {
    if (this.overlapsActive(start, end) || this.write_waiters.some((w) => w.start < end && start < w.end)) {
      if (this.write_waiters.length >= MAX_FROZEN_QUEUE) return false;
      this.write_waiters.push({ start, end, go });
      return true;
    }
    this.write_ranges.push({ start, end });
    go();
    return true;
  }

  /** @internal */
  unlockRange(start: number, end: number): void {
    const i = this.write_ranges.findIndex((r) => r.start === start && r.end === end);
    if (i >= 0) this.write_ranges.splice(i, 1);
    // Start waiters in order; one still blocked also blocks later ones that overlap it.
    const blocked: { start: number; end: number }[] = [];
    for (let k = 0; k < this.write_waiters.length; ) {
      const w = this.write_waiters[k] as { start: number; end: number; go: () => void };
      if (this.overlapsActive(w.start, w.end) || blocked.some((b) => b.start < w.end && w.start < b.end)) {
        blocked.push(w);
        k++;
        continue;
      }
      this.write_waiters.splice(k, 1);
      this.write_ranges.push({ start: w.start, end: w.end });
      w.go();
    }
  }

  private replicate(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: number, cb: (status: number, data: Buffer | null) => void): void {
    if (op === 'flush') return this.replicateLocked(op, offset, length, data, flags, 0, cb);
    const end = offset + length;
    const queued = this.lockRange(offset, end, () => {
      const seq = this.sync ? 0 : this.next_seq++;
      if (seq > 0) this.unsettled.add(seq);
      this.replicateLocked(op, offset, length, data, flags, seq, (s, d) => {
        this.unsettled.delete(seq);
        this.unlockRange(offset, end);
        cb(s, d);
      });
    });
    if (!queued) cb(Errno.EBUSY, null);
  }

  private replicateLocked(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: number, seq: number, cb: (status: number, data: Buffer | null) => void): void {
    const targets = this.normalLegs();
    if (targets.length === 0) {
      this.stats.failed_ios++;
      return cb(Errno.ENODEV, null);
    }
    if (op !== 'flush' && targets.length < this.min_replicas) {
      this.stats.failed_ios++;
      return cb(Errno.EROFS, null);
    }
    this.stats.writes++;
    const has_range = op !== 'flush';
    const [first, count] = has_range ? chunkRange(offset, length, this.chunk_size) : [0, 0];
    // Piggyback: members that cannot take this write, recorded by every leg that does.
    const missing: number[] = [];
    if (has_range && !this.sync) {
      const now = this.now();
      for (const id of this.members) {
        const leg = this.legs_by_id.get(id);
        if (leg === undefined || leg.state === 'FAILED' || leg.state === 'RECONNECTING') {
          missing.push(id);
          this.mapOf(id).setDirty(first, count, now);
        }
      }
    }
    let pending = targets.length;
    const answered_ok: Leg[] = [];
    const failed: Leg[] = [];
    const sent_at = targets.map((l) => l.failures);
    let first_err = 0;
    for (const leg of targets) {
      leg.channel.sendIo(this.ioMsg(leg, offset, length, flags, missing, seq), data, (status) => {
        if (status === 0) answered_ok.push(leg);
        else {
          if (first_err === 0) first_err = status;
          failed.push(leg);
          if (!this.sync) this.failLeg(leg, `${op} failed (${status})`);
        }
        if (--pending > 0) return;
        // A leg that failed after it took the write (its node may have crashed and lost it)
        // is one that missed it. Found by the simulator (seed 4009 with crashes: a write
        // waited for a partitioned leg while the node that took it crashed, lost it, and came
        // back as the last authoritative member; the write was then acknowledged).
        const ok = answered_ok.filter((l) => l.failures === sent_at[targets.indexOf(l)]);
        for (const l of answered_ok) if (!ok.includes(l)) failed.push(l);
        if (first_err === 0 && ok.length < answered_ok.length) first_err = Errno.EIO;
        if (ok.length === 0) {
          this.stats.failed_ios++;
          if (has_range && !this.sync) this.markUncertain(first, count, seq);
          return cb(first_err, null);
        }
        if (failed.length === 0 || !has_range) return cb(0, null);
        this.mapAddPhase(ok, failed, first, count, seq, cb);
      });
    }
  }

  /** Some legs missed a write: record it on the legs that took it before acknowledging. */
  private mapAddPhase(ok: Leg[], failed: Leg[], first: number, count: number, seq: number, cb: (status: number, data: Buffer | null) => void): void {
    this.stats.map_adds++;
    const now = this.now();
    for (const l of failed) this.mapOf(l.member_id).setDirty(first, count, now);
    const ids = Buffer.alloc(MAX_MEMBERS);
    failed.forEach((l, i) => (ids[i] = l.member_id));
    const msg: MapAddValue = { first_chunk: first, chunk_count: count, map_ver: this.map_ver, failed_cnt: failed.length, failed_ids: ids };
    // Only NORMAL legs count: a RECONNECTING leg's maps are replaced at its next spread, so a
    // record there would be lost. Found by the simulator (seed 5132: the only MAP_ADD went to
    // a RECONNECTING leg, the write was acknowledged, and the next spread erased the record).
    const targets = ok.filter((l) => l.state === 'NORMAL');
    if (targets.length === 0) {
      this.stats.failed_ios++;
      if (!this.sync) this.markUncertain(first, count, seq);
      return cb(Errno.EIO, null);
    }
    let pending = targets.length;
    let recorded = 0;
    let last_err: number = Errno.EIO;
    for (const leg of targets) {
      leg.channel.sendMapAdd(msg, (status) => {
        if (status === 0) recorded++;
        else {
          last_err = status;
          if (!this.sync) this.failLeg(leg, `map_add failed (${status})`);
        }
        if (--pending > 0) return;
        if (recorded > 0) return cb(0, null);
        this.stats.failed_ios++;
        if (!this.sync) this.markUncertain(first, count, seq);
        cb(last_err, null);
      });
    }
  }

  /** @internal An IO message for `leg` (also the recovery tick's settled beacon). */
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
}
