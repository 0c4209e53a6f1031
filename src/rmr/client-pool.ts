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
// Not yet here: joins and commands (add_sess/del_sess), link events driving rejoin and map
// spread, the recovery worker, and the USER command channel.

import { Errno } from '../util/errno.js';
import { DirtyMap, chunkRange } from './dirty-map.js';
import { LegGatekeeper, type LegPoolCounters, type LegState, type LegStateEvent, type LegStateHolder } from './leg-state.js';
import { IO_F_FUA, IO_F_SYNC, IoOp, MAX_INTENT_RANGES, MAX_MEMBERS, type IoMsgValue, type MapAddValue } from './msg.js';
import { READ_MAP_HEADER, decodeRanges, type LegCommand, type LegCommandCallback } from './leg-commands.js';

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
}

export interface ClientPoolStats {
  reads: number;
  writes: number;
  read_retries: number;
  map_adds: number;
  failed_ios: number;
}

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
  private readonly legs_by_id = new Map<number, Leg>();
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
  private readonly gk: LegGatekeeper;
  private rr = 0;
  private readonly now: () => number;
  /** IOs submitted and not yet completed. */
  private inflight = 0;
  private frozen = false;
  private frozen_queue: QueuedIo[] = [];
  private drain_waiters: (() => void)[] = [];
  /** A recovery (try_enable) is running: one at a time. */
  private recovering = false;
  /** Opened by an upper layer (the reference's IN_USE). */
  private in_use = false;
  readonly stats: ClientPoolStats = { reads: 0, writes: 0, read_retries: 0, map_adds: 0, failed_ios: 0 };

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
    this.now = now;
    this.uncertain = new DirtyMap(0, this.no_of_chunks);
    this.gk = new LegGatekeeper(this, emit);
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
    if (leg !== undefined) this.gk.change(leg, 'REMOVING', forget ? 'delete' : 'disassemble');
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
    return err;
  }

  private mapOf(member_id: number): DirtyMap {
    let m = this.maps.get(member_id);
    if (m === undefined) {
      m = new DirtyMap(member_id, this.no_of_chunks);
      this.maps.set(member_id, m);
    }
    return m;
  }

  private normalLegs(): Leg[] {
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
    if (this.frozen) {
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
    if (op === 'read') return this.read(offset, length, f, new Set(), 0, cb);
    this.replicate(op, offset, length, data, f, cb);
  }

  // ------------------------------------------------------------------ legs (add_sess / del_sess)

  /**
   * add_sess: joins the storage node behind `channel` and attaches the leg. `create`: a new
   * pool member (dirty when other legs exist already, so it syncs from them, §7.4; the peers
   * learn of it by POOL_INFO); `assemble`: an existing member comes back and goes through
   * recovery. Sync pools join without a mode and go NORMAL at once.
   */
  addSess(name: string, channel: LegChannel, mode: 'create' | 'assemble' | null, queue_depth: number, cb: (status: number, leg: Leg | null, reason: string | null) => void): void {
    if (this.sync !== (mode === null)) return cb(Errno.EINVAL, null, this.sync ? 'sync pools take no mode' : 'a mode (create or assemble) is required');
    const others = [...this.legs_by_id.values()].filter((l) => l.state !== 'REMOVING');
    if (others.length >= MAX_MEMBERS) return cb(Errno.ENOSPC, null, `pool ${this.pool} already has ${MAX_MEMBERS} legs`);
    const create = mode === 'create';
    const dirty = create && others.length > 0;
    const members = others.map((l) => ({ id: l.member_id, dirty: !(this.maps.get(l.member_id)?.isEmpty() ?? true) }));
    channel.command({ kind: 'join', create, dirty, queue_depth, members }, (status, member_id, reason) => {
      if (status !== 0) return cb(status, null, reason);
      if (this.legs_by_id.has(member_id)) return cb(Errno.EEXIST, null, `member ${member_id} already has a leg`);
      const leg = this.addLeg(name, member_id, channel);
      if (dirty) this.mapOf(member_id).setAll(this.now());
      if (this.sync) {
        this.setLegState(leg, 'NORMAL', 'sync leg joined');
        return cb(0, leg, null);
      }
      // The other members learn of it (and, for a new member, that it starts dirty).
      for (const o of others) {
        if (o.state !== 'FAILED') o.channel.command({ kind: 'pool_info', member_id, op: 'add', mode: create ? 'create' : 'assemble', dirty }, () => undefined);
      }
      if (!create) {
        this.setLegState(leg, 'RECONNECTING', 'assembled');
        this.tryEnable(() => undefined);
      }
      cb(0, leg, null);
    });
  }

  /**
   * Loads every map a node holds into the client's maps (READ_MAP_BUF, §5.4), replacing
   * them: how the client learns the dirtiness after a reconciliation without a NORMAL leg.
   */
  loadMapsFrom(leg: Leg, cb: (status: number) => void): void {
    const step = (map_idx: number, page: number, rounds: number): void => {
      if (rounds > 1_000_000) return cb(Errno.ELOOP);
      leg.channel.command({ kind: 'read_map_buf', map_idx, page }, (status, _v, _r, data) => {
        if (status !== 0) return cb(status);
        if (data === null || data === undefined || data.length < READ_MAP_HEADER) return cb(Errno.EBADMSG);
        const member = data[0] as number;
        if (member === 0) return cb(0);
        const first = data.readUInt32LE(4);
        const n = data.readUInt32LE(8);
        if (data.length !== READ_MAP_HEADER + n * 4096) return cb(Errno.EBADMSG);
        const map = this.mapOf(member);
        for (let i = 0; i < n; i++) {
          if (map.decodePage(first + i, data.subarray(READ_MAP_HEADER + i * 4096, READ_MAP_HEADER + (i + 1) * 4096), 'overwrite', this.now()) !== null) return cb(Errno.EBADMSG);
        }
        const next_idx = data[1] as number;
        const next_page = data.readUInt32LE(12);
        step(next_idx, next_page, rounds + 1);
      });
    };
    step(0, 0, 0);
  }

  /** The user's enable of a created leg (ENABLE_POOL(1), then NORMAL). */
  enableLeg(leg: Leg, cb: (status: number, reason: string | null) => void): void {
    leg.channel.command({ kind: 'enable_pool', enable: true }, (status, _v, reason) => {
      if (status !== 0) return cb(status, reason);
      const err = this.setLegState(leg, 'NORMAL', 'enabled');
      cb(err === null ? 0 : Errno.EINVAL, err);
    });
  }

  /**
   * del_sess: `delete` removes the member from the pool for good (every remaining node drops
   * its map); `disassemble` detaches it and keeps its map so dirtiness keeps accumulating.
   * Idempotent: re-running after a failure finishes the job. IO is frozen while the leg goes.
   */
  delSess(member_id: number, mode: 'delete' | 'disassemble', cb: (status: number) => void): void {
    const leg = this.legs_by_id.get(member_id);
    if (leg === undefined) {
      if (mode === 'delete') {
        this.members.delete(member_id);
        this.maps.delete(member_id);
      }
      return cb(0);
    }
    this.freeze(() => {
      this.setLegState(leg, 'REMOVING', `del_sess ${mode}`);
      leg.channel.command({ kind: 'leave', member_id, delete: mode === 'delete' }, () => {
        // The node may be gone already: leaving it is best effort, the others must know.
        const rest = [...this.legs_by_id.values()].filter((l) => l !== leg && l.state !== 'FAILED' && l.state !== 'REMOVING');
        let pending = rest.length;
        const finish = (): void => {
          this.legs_by_id.delete(member_id);
          if (mode === 'delete') {
            this.members.delete(member_id);
            this.maps.delete(member_id);
          }
          this.unfreeze();
          cb(0);
        };
        if (pending === 0) return finish();
        for (const o of rest) {
          o.channel.command({ kind: 'pool_info', member_id, op: 'remove', mode, dirty: false }, () => {
            if (--pending === 0) finish();
          });
        }
      });
    });
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

  /** An upper layer takes the pool (one user at a time; not while a recovery holds it). */
  open(): number {
    if (this.in_use) return Errno.EBUSY;
    if (this.recovering) return Errno.EBUSY;
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
  status(): { frozen: boolean; in_flight: number; recovering: boolean; range_locks: number; waiting_on_overlap: number; frozen_queue: number; legs: { member_id: number; state: LegState }[] } {
    return {
      frozen: this.frozen,
      in_flight: this.inflight,
      recovering: this.recovering,
      range_locks: this.write_ranges.length,
      waiting_on_overlap: this.write_waiters.length,
      frozen_queue: this.frozen_queue.length,
      legs: [...this.legs_by_id.values()].map((l) => ({ member_id: l.member_id, state: l.state })),
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
      frozen: this.frozen,
    };
  }

  // ------------------------------------------------------------------ freeze (map spread)

  /** Holds new IOs and calls `drained` once every IO in flight has completed. */
  private freeze(drained: () => void): void {
    this.frozen = true;
    if (this.inflight === 0) drained();
    else this.drain_waiters.push(drained);
  }

  private unfreeze(): void {
    this.frozen = false;
    const q = this.frozen_queue;
    this.frozen_queue = [];
    for (const x of q) this.submit(x.op, x.offset, x.length, x.data, x.flags, x.cb);
  }

  get isFrozen(): boolean {
    return this.frozen;
  }

  // ------------------------------------------------------------------ recovery (§8.2, §8.3)

  /**
   * A leg's link came back: REJOIN (the node goes NO_IO until it gets a map), the leg becomes
   * RECONNECTING, then recovery runs. `cb` reports the rejoin.
   */
  rejoinLeg(leg: Leg, cb: (status: number) => void): void {
    leg.channel.command({ kind: 'rejoin' }, (status, _v, reason) => {
      if (status !== 0) return cb(status);
      // A sync leg needs no map: it serves peer reads again at once (§7.1).
      if (this.sync) return cb(this.setLegState(leg, 'NORMAL', 'sync leg rejoined') === null ? 0 : Errno.EINVAL);
      const err = this.setLegState(leg, 'RECONNECTING', 'rejoined');
      if (err !== null) return cb(Errno.EINVAL);
      void reason;
      this.tryEnable(() => undefined);
      cb(0);
    });
  }

  /**
   * try_enable: brings RECONNECTING legs back to NORMAL. Case 1: a NORMAL leg spreads its
   * maps to them (IO frozen for the spread). Case 2: no NORMAL leg, but the last
   * authoritative one is back: it is enabled directly, then Case 1 from it. Cases 3/4 (every
   * member back after a client crash) need the intent-record reconciliation and are refused
   * here with ENOTSUP until it exists. `cb` gets 0 when legs were enabled.
   */
  tryEnable(cb: (status: number) => void): void {
    if (this.recovering) return cb(Errno.EBUSY);
    const legs = [...this.legs_by_id.values()];
    const receivers = legs.filter((l) => l.state === 'RECONNECTING' && !l.maintenance);
    const source = legs.find((l) => l.state === 'NORMAL');
    if (receivers.length === 0) {
      if (source === undefined || this.uncertain.isEmpty()) return cb(0);
      // Nothing to spread, but writes failed everywhere: give those chunks a source now.
      this.recovering = true;
      return this.freeze(() =>
        this.reconcileUncertain((status) => {
          this.unfreeze();
          this.recovering = false;
          cb(status);
        }),
      );
    }
    const auth = legs.find((l) => l.was_last_authoritative);
    if (source !== undefined && auth !== undefined) throw new Error(`invariant: authoritative leg ${auth.member_id} beside NORMAL leg ${source.member_id}`);
    this.recovering = true;
    const done = (status: number): void => {
      this.recovering = false;
      cb(status);
    };
    if (source === undefined) {
      if (auth === undefined || auth.state !== 'RECONNECTING' || auth.maintenance) {
        this.recovering = false;
        return cb(Errno.EOPNOTSUPP);
      }
      // Case 2: its map is complete; it serves again without a spread.
      return auth.channel.command({ kind: 'enable_pool', enable: true }, (status) => {
        if (status !== 0 || this.setLegState(auth, 'NORMAL', 'last authoritative leg enabled') !== null) return done(status !== 0 ? status : Errno.EINVAL);
        this.recovering = false;
        this.tryEnable(cb);
      });
    }
    const src = source;
    this.freeze(() =>
      this.reconcileUncertain((s0) => {
        if (s0 !== 0) {
          this.unfreeze();
          return done(s0);
        }
        this.spread(src, receivers, 0, (status) => {
          this.unfreeze();
          done(status);
        });
      }),
    );
  }

  /**
   * With IO frozen (so the set is stable): every NORMAL leg turns the uncertain chunks into
   * dirty entries with one source per chunk (INTENT_TO_MAP), so the spread that follows
   * carries them and the members converge on one value. Found by the simulator (seeds 1011,
   * 5088, 5092, 5140: both legs of a pair failed around a write that landed on one of them;
   * the spread from the last authoritative leg left the other different).
   */
  private reconcileUncertain(cb: (status: number) => void): void {
    if (this.uncertain.isEmpty()) return cb(0);
    const ranges: [number, number][] = [];
    for (let c = this.uncertain.nextDirty(0); c >= 0; ) {
      let e = c + 1;
      while (e < this.no_of_chunks && this.uncertain.isDirty(e)) e++;
      ranges.push([c, e - c]);
      c = e < this.no_of_chunks ? this.uncertain.nextDirty(e) : -1;
    }
    const targets = this.normalLegs();
    if (targets.length === 0) return cb(Errno.ENODEV);
    const batches: [number, number][][] = [];
    for (let i = 0; i < ranges.length; i += MAX_INTENT_RANGES) batches.push(ranges.slice(i, i + MAX_INTENT_RANGES));
    let pending = targets.length * batches.length;
    let err = 0;
    for (const leg of targets) {
      for (const batch of batches) {
        leg.channel.command({ kind: 'intent_to_map', with_intent: false, ranges: batch }, (status) => {
          if (status !== 0) {
            err = status;
            this.failLeg(leg, `intent_to_map failed (${status})`);
          }
          if (--pending > 0) return;
          if (err === 0) this.uncertain.clearAll(this.now());
          cb(err);
        });
      }
    }
  }

  /**
   * The recovery tick (every few seconds): RECONNECTING legs get another try_enable (a failed
   * map spread is retried, not left for the operator); a FAILED leg whose link is up is asked
   * STORE_CHECK and, if its store serves again, rejoins (§9.1); a NORMAL leg the client still
   * holds dirty entries for is asked MAP_CHECK, and once it reports its own map empty the
   * client's copy is wiped, unless an entry was added since the question was asked or
   * within the clean delay (§8.5; single-threaded, so check and wipe cannot interleave with
   * a write's map update, the race the reference admits).
   */
  recoveryTick(): void {
    if (this.sync) return;
    // A spread that failed leaves legs RECONNECTING: try again every tick until it works.
    if (!this.recovering && ([...this.legs_by_id.values()].some((l) => l.state === 'RECONNECTING' && !l.maintenance) || !this.uncertain.isEmpty())) this.tryEnable(() => undefined);
    for (const leg of this.legs_by_id.values()) {
      if (leg.state === 'FAILED' && leg.channel.isConnected() && !leg.maintenance) {
        leg.channel.command({ kind: 'store_check' }, (status, value) => {
          if (status !== 0 || value !== 1 || leg.state !== 'FAILED') return;
          // As after a reconnect: the node may still think itself NORMAL; REJOIN takes it
          // out of IO service so it can receive a map.
          this.rejoinLeg(leg, () => undefined);
        });
      } else if (leg.state === 'NORMAL' && !leg.maintenance) {
        const map = this.maps.get(leg.member_id);
        if (map === undefined || map.isEmpty()) continue;
        const ts_asked = map.ts;
        leg.channel.command({ kind: 'map_check' }, (status, value) => {
          if (status !== 0 || value !== 1) return;
          if (map.ts !== ts_asked || this.now() - map.ts < this.map_clean_delay_ms) return;
          map.clearAll(this.now());
        });
      }
    }
  }

  /** Map spread from `source` to each receiver in turn: MAP_READY, MAP_SEND, MAP_DONE(enable). */
  private spread(source: Leg, receivers: Leg[], i: number, cb: (status: number) => void): void {
    const r = receivers[i];
    if (r === undefined) return cb(0);
    const fail = (status: number): void => {
      // Receivers promoted earlier in this spread are NORMAL now and keep serving (the
      // reference skips NORMAL legs too); only the rest are put back out of service.
      // Found by the simulator (seed 3050: an earlier receiver was disabled behind the
      // client's back and stayed NO_IO while its leg looked NORMAL).
      for (const other of receivers.slice(i)) other.channel.command({ kind: 'map_disable' }, () => undefined);
      cb(status);
    };
    this.markCrashChunks(source, r, (s0) => {
      if (s0 !== 0) return fail(s0);
      this.spreadTo(source, r, receivers, i, fail, cb);
    });
  }

  /**
   * A receiver that restarted after a crash holds intent chunks it may lack writes for:
   * before it gets the maps, the source and every NORMAL leg mark them dirty for it where
   * another member is clean (MAP_MARK, conditional), so every NORMAL node's maps stay
   * complete. Without this only the receiver knew, and a later source choice trusted it
   * (simulator seed 14: three members each dirty for a chunk, nobody able to sync it).
   */
  private markCrashChunks(source: Leg, r: Leg, cb: (status: number) => void): void {
    r.channel.command({ kind: 'crash_read' }, (s0, _v, _r, data) => {
      if (s0 !== 0) return cb(s0);
      const ranges = decodeRanges(data ?? Buffer.alloc(0));
      if (ranges === null) return cb(Errno.EBADMSG);
      if (ranges.length === 0) return cb(0);
      const map = this.mapOf(r.member_id);
      for (const [first, count] of ranges) if (first + count <= this.no_of_chunks) map.setDirty(first, count, this.now());
      const targets = [...new Set([source, ...this.normalLegs()])].filter((l) => l !== r);
      let pending = targets.length;
      let err = 0;
      for (const leg of targets) {
        leg.channel.command({ kind: 'map_mark', member_id: r.member_id, conditional: true, ranges }, (st) => {
          if (st !== 0) err = st;
          if (--pending === 0) cb(err);
        });
      }
    });
  }

  private spreadTo(source: Leg, r: Leg, receivers: Leg[], i: number, fail: (status: number) => void, cb: (status: number) => void): void {
    r.channel.command({ kind: 'map_ready' }, (s1) => {
      if (s1 !== 0) return fail(s1);
      source.channel.command({ kind: 'map_send', receiver: r.member_id, map_ver: this.map_ver }, (s2) => {
        if (s2 !== 0) return fail(s2);
        r.channel.command({ kind: 'map_done', enable: true }, (s3) => {
          if (s3 !== 0) return fail(s3);
          // The client keeps its own map of the member: it is cleaned only through MAP_CHECK
          // with the timestamp guard (§8.5), once the member reports itself clean.
          if (this.setLegState(r, 'NORMAL', `map spread from member ${source.member_id}`) !== null) return fail(Errno.EINVAL);
          this.spread(source, receivers, i + 1, cb);
        });
      });
    });
  }

  /**
   * A leg failed an IO while its link may be up: besides FAILED here, tell the node to leave
   * IO service (MAP_DISABLE, best effort) so peers do not read from it what it missed.
   */
  private failLeg(leg: Leg, reason: string): void {
    const was = leg.state;
    this.setLegState(leg, 'FAILED', reason);
    if (was !== 'FAILED' && leg.channel.isConnected()) leg.channel.command({ kind: 'map_disable' }, () => undefined);
  }

  // ------------------------------------------------------------------ reads (§6.3)

  private read(offset: number, length: number, flags: number, tried: Set<number>, first_err: number, cb: (status: number, data: Buffer | null) => void): void {
    const candidates = this.normalLegs().filter((l) => !tried.has(l.member_id));
    if (candidates.length === 0) {
      this.stats.failed_ios++;
      return cb(tried.size === 0 ? Errno.ENODEV : first_err, null);
    }
    const leg = candidates[this.rr++ % candidates.length] as Leg;
    tried.add(leg.member_id);
    if (tried.size === 1) this.stats.reads++;
    else this.stats.read_retries++;
    leg.channel.sendIo(this.ioMsg(leg, offset, length, flags, []), null, (status, d) => {
      if (status === 0 && d !== null && d.length === length) return cb(0, d);
      const err = status !== 0 ? status : Errno.EIO;
      if (!this.sync) this.failLeg(leg, `read failed (${err})`);
      this.read(offset, length, flags, tried, first_err === 0 ? err : first_err, cb);
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

  /** Starts `go` once no earlier overlapping write is in flight; false when too many wait. */
  private lockRange(start: number, end: number, go: () => void): boolean {
    if (this.overlapsActive(start, end) || this.write_waiters.some((w) => w.start < end && start < w.end)) {
      if (this.write_waiters.length >= MAX_FROZEN_QUEUE) return false;
      this.write_waiters.push({ start, end, go });
      return true;
    }
    this.write_ranges.push({ start, end });
    go();
    return true;
  }

  private unlockRange(start: number, end: number): void {
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
    if (op === 'flush') return this.replicateLocked(op, offset, length, data, flags, cb);
    const end = offset + length;
    const queued = this.lockRange(offset, end, () =>
      this.replicateLocked(op, offset, length, data, flags, (s, d) => {
        this.unlockRange(offset, end);
        cb(s, d);
      }),
    );
    if (!queued) cb(Errno.EBUSY, null);
  }

  private replicateLocked(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: number, cb: (status: number, data: Buffer | null) => void): void {
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
      leg.channel.sendIo(this.ioMsg(leg, offset, length, flags, missing), data, (status) => {
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
          if (has_range && !this.sync) this.uncertain.setDirty(first, count, this.now());
          return cb(first_err, null);
        }
        if (failed.length === 0 || !has_range) return cb(0, null);
        this.mapAddPhase(ok, failed, first, count, cb);
      });
    }
  }

  /** Some legs missed a write: record it on the legs that took it before acknowledging. */
  private mapAddPhase(ok: Leg[], failed: Leg[], first: number, count: number, cb: (status: number, data: Buffer | null) => void): void {
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
      if (!this.sync) this.uncertain.setDirty(first, count, now);
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
        if (!this.sync) this.uncertain.setDirty(first, count, this.now());
        cb(last_err, null);
      });
    }
  }

  private ioMsg(leg: Leg, offset: number, length: number, flags: number, missing: number[]): IoMsgValue {
    const ids = Buffer.alloc(MAX_MEMBERS);
    missing.forEach((id, i) => (ids[i] = id));
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
    };
  }
}
