// The compute client's side of a pool (the reference's rmr_clt_pool, §4.1, §6.1-§6.4, §8,
// §9): the face that the BRMR device, the daemon, the simulator and the tests use. It holds
// no state and no logic of its own; it wires the parts together and passes each call on:
//
//   pool-core.ts         the pool's state (legs, members, maps, map version, identity, lock,
//                        freeze, range locks, write sequence) behind named operations
//   client-io.ts         the IO path: replicated writes with piggyback and MAP_ADD, reads
//   client-recovery.ts   rejoin, try_enable (Cases 1-4), the map spread, the recovery tick
//   client-lifecycle.ts  add_sess, extend, enable, del_sess, maintenance
//   client-verify.ts     online verify
//
// Each part depends on the core and on nothing else's internals (lifecycle calls recovery's
// operations); none of them imports this file.

import type { DirtyMap } from '../protocol/dirty-map.js';
import { ClientIo } from './client-io.js';
import { ClientLifecycle, type DelSessOptions } from './client-lifecycle.js';
import { ClientRecovery } from './client-recovery.js';
import { ClientVerify, type VerifyOptions, type VerifyProgress, type VerifyReport } from './client-verify.js';
import type { ClientOp, Leg, LegChannel, OpCallback } from './leg.js';
import type { LegState, LegStateEvent } from './leg-state.js';
import { ClientPoolCore, type ClientPoolOptions, type ClientPoolQuery, type ClientPoolStats, type ClientPoolStatus } from './pool-core.js';

export { Leg } from './leg.js';
export type { ClientOp, LegChannel, OpCallback } from './leg.js';
export type { ClientIoFailure, ClientPoolOptions, ClientPoolQuery, ClientPoolStats, ClientPoolStatus } from './pool-core.js';
export type { DelSessOptions } from './client-lifecycle.js';
export type { VerifyOptions, VerifyProgress, VerifyReport } from './client-verify.js';

export class ClientPool {
  private readonly core: ClientPoolCore;
  private readonly io: ClientIo;
  private readonly recovery: ClientRecovery;
  private readonly lifecycle: ClientLifecycle;
  private readonly verifier: ClientVerify;

  constructor(o: ClientPoolOptions, now: () => number, emit: (ev: LegStateEvent) => void) {
    this.core = new ClientPoolCore(o, now, emit);
    this.io = new ClientIo(this.core);
    this.recovery = new ClientRecovery(this.core);
    this.lifecycle = new ClientLifecycle(this.core, this.recovery);
    this.verifier = new ClientVerify(this.core);
  }

  // ------------------------------------------------------------------ what the pool is

  get pool(): string {
    return this.core.pool;
  }

  get group_id(): number {
    return this.core.group_id;
  }

  get chunk_size(): number {
    return this.core.chunk_size;
  }

  get mapped_size(): number {
    return this.core.mapped_size;
  }

  get no_of_chunks(): number {
    return this.core.no_of_chunks;
  }

  /** Largest IO (the transport's negotiated max IO size). */
  get max_io_size(): number {
    return this.core.max_io_size;
  }

  /** A storage node's sync pool (§7.1): its legs go to the node's peers. */
  get sync(): boolean {
    return this.core.sync;
  }

  /** Refuse writes while fewer legs are NORMAL (0: never); operator-settable. */
  get min_replicas(): number {
    return this.core.min_replicas;
  }

  set min_replicas(n: number) {
    this.core.min_replicas = n;
  }

  get map_clean_delay_ms(): number {
    return this.core.map_clean_delay_ms;
  }

  get map_ver(): number {
    return this.core.map_ver;
  }

  /** The pool's UUID as learned from its members' pool_md (all zero until one has it). */
  get pool_uuid(): Buffer {
    return this.core.pool_uuid;
  }

  /** Members the pool is supposed to have (pool_md.srv_md): attached or not. */
  get members(): ReadonlySet<number> {
    return this.core.members;
  }

  /** The client's dirty map per member it knows (including detached members). */
  get maps(): ReadonlyMap<number, DirtyMap> {
    return this.core.maps;
  }

  get stats(): ClientPoolStats {
    return this.core.stats;
  }

  get inUse(): boolean {
    return this.core.inUse;
  }

  get isFrozen(): boolean {
    return this.core.isFrozen;
  }

  /** An operator action or a recovery holds the pool's lock. */
  get isLocked(): boolean {
    return this.core.isLocked;
  }

  // ------------------------------------------------------------------ legs

  legs(): Iterable<Leg> {
    return this.core.legs();
  }

  leg(member_id: number): Leg | undefined {
    return this.core.leg(member_id);
  }

  /** Attaches a leg (after its join succeeded); it starts CREATED. */
  addLeg(name: string, member_id: number, channel: LegChannel): Leg {
    return this.core.addLeg(name, member_id, channel);
  }

  /** Detaches a leg; with `forget` the member also leaves the pool (del_sess mode=delete). */
  removeLeg(member_id: number, forget: boolean): void {
    this.core.removeLeg(member_id, forget);
  }

  /** The one way leg states change (the gatekeeper of leg-state.ts); the refusal reason or null. */
  setLegState(leg: Leg, to: LegState, reason: string): string | null {
    return this.core.setLegState(leg, to, reason);
  }

  // ------------------------------------------------------------------ IO (client-io.ts)

  /**
   * Submits an IO. `data` is the write payload (write only). `cb` gets 0 or -errno, and the
   * data for reads. Never hangs: every path ends in exactly one call of `cb`.
   */
  submit(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: { fua?: boolean; sync?: boolean }, cb: (status: number, data: Buffer | null) => void): void {
    this.io.submit(op, offset, length, data, flags, cb);
  }

  /**
   * The upper layer's command channel (reference §5.6): `bytes` to every leg that is not
   * REMOVING or FAILED; one answer per leg, FAILED legs counted as failures.
   */
  commandAll(bytes: Buffer, rsp_len: number, cb: (answers: { member_id: number; status: number; data: Buffer | null }[]) => void): void {
    this.io.commandAll(bytes, rsp_len, cb);
  }

  /**
   * Reads a range from one NORMAL member (diagnostics and the simulator's stability check):
   * the node syncs a dirty chunk first, as for any read. A failure does not fail the leg.
   */
  readFrom(member_id: number, offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    this.io.readFrom(member_id, offset, length, cb);
  }

  // ------------------------------------------------------------------ the operator's actions (client-lifecycle.ts)

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

  /**
   * The operator trusts the data of a member whose maps were lost (issue 19 item 3): it serves
   * again and every other member resyncs every chunk from it. Refused while a leg serves.
   */
  trustData(leg: Leg, cb: OpCallback): void {
    this.recovery.trustData(leg, cb);
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

  /** MAP_SET_VER: the pool's map version becomes at least `map_ver`, here and on every NORMAL member. */
  setMapVersion(map_ver: number, cb: OpCallback): void {
    this.lifecycle.setMapVersion(map_ver, cb);
  }

  // ------------------------------------------------------------------ online verify (client-verify.ts)

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

  // ------------------------------------------------------------------ recovery (client-recovery.ts)

  /**
   * Loads every map a node holds into the client's maps (READ_MAP_BUF, §5.4), replacing
   * them: how the client learns the dirtiness after a reconciliation without a NORMAL leg.
   */
  loadMapsFrom(leg: Leg, cb: (status: number) => void): void {
    this.recovery.loadMapsFrom(leg, cb);
  }

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

  // ------------------------------------------------------------------ the upper layer

  /**
   * An upper layer takes the pool (one user at a time). Unlike the reference, also while a
   * recovery runs: IO waits for the spread's freeze or fails with ENODEV while no leg is
   * NORMAL, so a device mapped right after the assemble does not race the reconciliation.
   */
  open(): number {
    return this.core.open();
  }

  /** The upper layer lets go once its IO has drained. */
  close(cb: () => void): void {
    this.core.close(cb);
  }

  /** Internal counters for status views and diagnostics. */
  status(): ClientPoolStatus {
    return this.core.status();
  }

  /** What an upper layer needs to size itself (reference rmr_clt_query). */
  query(): ClientPoolQuery {
    return this.core.query();
  }
}
