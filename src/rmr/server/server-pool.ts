// The storage node's side of a pool (the reference's rmr_srv_pool, §4.3, §6.5-§6.7, §7.2,
// §8, §9): the face that the dispatcher (server-node.ts, execute-command.ts), BRMR's store
// manager, the daemon, the simulator and the tests use. It holds no state and no logic of its
// own; it wires the parts together over one state object and passes each call on:
//
//   server-core.ts     the pool's state (store, maps, map update, map version, state
//                      machine, sessions, sync pool) behind named operations
//   server-io.ts       IO admission, "lock, sync, resume" for dirty chunks, completion
//                      bookkeeping, flushes, chunk sync from a peer
//   map-spread.ts      map spread (MAP_READY .. MAP_DONE, MAP_SEND), MAP_ADD / MAP_CLEAR /
//                      MAP_MARK, INTENT_TO_MAP, OWN_DIRTY, discards, the peer-map check
//   pool-metadata.ts   store registration, load / persist of pool_md, maps and the intent
//                      record (§3.10), the metadata exchange with the peers (§8.7)
//   verify-hashes.ts   the hashes of online verify
//   membership.ts      joins, enable and maintenance, leave, POOL_INFO, the sync pool
//
// It is sans-IO: the store, the metadata store and the peers (through the sync pool) are
// ports; answers go back through the `reply` callbacks the dispatcher hands in.

import { Errno } from '../../util/errno.js';
import type { DirtyMap } from '../protocol/dirty-map.js';
import { LIVENESS, MAX_MEMBERS, MAX_VOTERS, OwnerInfo, type Liveness } from '../protocol/msg.js';
import { SERVER_POOL_STATES, type ServerPoolState } from '../protocol/pool-md.js';
import type { OwnerPair } from '../protocol/leg-commands.js';
import { joinDecision, liveness, prepareDecision, type OwnerState } from './owner.js';
import type { PeerMapCommand, PeerQuery } from '../protocol/leg-commands.js';
import type { IoMsgValue, MapAddValue, MapClearValue } from '../protocol/msg.js';
import type { MapUpdateState, PoolMd } from '../protocol/pool-md.js';
import { MapSpread } from './map-spread.js';
import { Membership } from './membership.js';
import { PoolMetadata, type RecoveryReport } from './pool-metadata.js';
import { ServerPoolCore, type ParkedIo, type RegisteredStore, type ServerPoolEvent, type ServerPoolOptions, type ServerPoolStats, type SyncSource } from './server-core.js';
import { ServerIo } from './server-io.js';
import type { ServerPoolStateMachine } from './server-pool-state.js';
import { VerifyHashes } from './verify-hashes.js';

// The peer command vocabulary is the protocol's; re-exported for the pool's users.
export type { PeerMapCommand, PeerQuery };
export type { RegisteredStore, ServerPoolEvent, ServerPoolOptions, ServerPoolStats, SyncSource } from './server-core.js';
export { MD_INTENT_OFFSET, MD_MAPS_OFFSET, MD_POOL_OFFSET, rmrMetaBytes, type RecoveryReport } from './pool-metadata.js';

export class ServerPool {
  private readonly core: ServerPoolCore;
  private readonly metadata: PoolMetadata;
  private readonly io: ServerIo;
  private readonly spread: MapSpread;
  private readonly verify: VerifyHashes;
  private readonly membership: Membership;

  constructor(opts: ServerPoolOptions, emit: (ev: ServerPoolEvent) => void) {
    this.core = new ServerPoolCore(opts, emit);
    // The intent record asks for a flush when it is full of unflushed extents (synchronously, as before the split).
    this.metadata = new PoolMetadata(this.core, () => this.io.flushForIntent());
    this.io = new ServerIo(this.core, this.metadata);
    this.spread = new MapSpread(this.core, this.metadata);
    this.verify = new VerifyHashes(this.core);
    this.membership = new Membership(this.core, this.spread, this.metadata);
  }

  // ------------------------------------------------------------------ what the pool is

  get name(): string {
    return this.core.name;
  }

  get group_id(): number {
    return this.core.group_id;
  }

  get member_id(): number {
    return this.core.member_id;
  }

  get chunk_size(): number {
    return this.core.chunk_size;
  }

  get sm(): ServerPoolStateMachine {
    return this.core.sm;
  }

  get state(): string {
    return this.core.state;
  }

  /** The pool metadata as last loaded or built (written by persistMetadata). */
  get pool_md(): PoolMd | null {
    return this.metadata.pool_md;
  }

  get queue_depth(): number {
    return this.metadata.queue_depth;
  }

  get mapped_size(): number {
    return this.core.mapped_size;
  }

  get no_of_chunks(): number {
    return this.core.no_of_chunks;
  }

  get marked_create(): boolean {
    return this.core.marked_create;
  }

  get maintenance(): boolean {
    return this.core.maintenance;
  }

  /** The version only rises; the setter exists for tests that stage a newer one. */
  get map_ver(): number {
    return this.core.map_ver;
  }

  set map_ver(v: number) {
    this.core.raiseMapVersion(v);
  }

  get map_update_state(): MapUpdateState {
    return this.core.map_update_state;
  }

  /**
   * Members whose store was replaced and whose discard is not confirmed everywhere yet (the
   * reference's discard_entries): their map here is fully dirty, also after a spread.
   */
  get discarded(): ReadonlySet<number> {
    return this.core.discarded;
  }

  /** Why add_store could not use this node's stored maps, until a map update replaced them; else null. */
  get maps_lost(): string | null {
    return this.core.maps_lost;
  }

  /** One dirty map per member this node knows of (the reference's maps[] and stg_members). */
  get maps(): ReadonlyMap<number, DirtyMap<ParkedIo>> {
    return this.core.maps;
  }

  /** The node's sync pool (add_clt / remove_clt); tests attach theirs directly. */
  get sync_source(): SyncSource | null {
    return this.core.sync_source;
  }

  set sync_source(source: SyncSource | null) {
    this.core.sync_source = source;
  }

  get stats(): ServerPoolStats {
    return this.core.stats;
  }

  get hasStore(): boolean {
    return this.core.hasStore;
  }

  ownMap(): DirtyMap<ParkedIo> | undefined {
    return this.core.ownMap();
  }

  // ------------------------------------------------------------------ registration and metadata (pool-metadata.ts)

  /**
   * Registers the backing store (brmr-server's create_store / add_store). `create` marks the
   * pool for a create-mode join; otherwise only assemble joins are accepted.
   */
  register(store: RegisteredStore, mode: 'create' | 'add' | 'replace', mapped_size: number): string | null {
    return this.metadata.register(store, mode, mapped_size);
  }

  /**
   * remove_store / delete_store (reference rmr_srv_unregister): the store leaves the pool,
   * which goes EMPTY and forgets its maps (they stay on the store for a later add_store; the
   * caller persists them first when it wants them kept). Refused while chunk syncs are in
   * flight: their waiters must be answered by this store.
   */
  unregister(reason: string): string | null {
    return this.metadata.unregister(reason);
  }

  /** The GET_PARAMS check of add_clt: the answering peers hold this pool (PoolMetadata.checkPeers). */
  checkPeers(cb: (mismatch: string | null, answered: number) => void): void {
    this.metadata.checkPeers(cb);
  }

  /** Why delete_store must not wipe the store (a live member of its pool), or null (Membership.deleteRefusal). */
  deleteRefusal(): string | null {
    return this.membership.deleteRefusal();
  }

  /**
   * add_store: restores what the store remembers (reference `rmr_srv_refresh_md`, §3.10):
   * pool_md, the dirty maps and the intent record; the result is persisted before the intent
   * record is cleared, so a second crash loses nothing.
   */
  loadMetadata(cb: (status: number, report: RecoveryReport | null, reason: string | null) => void): void {
    // The restart grace of a loaded owner runs from here (docs/ownership.md §2.3).
    this.owner_started_at = this.core.opts.now();
    this.metadata.loadMetadata(cb);
  }

  // ------------------------------------------------------------------ ownership (owner.ts, docs/ownership.md)

  /** See OwnerState.gen. */
  private owner_gen = 0;
  private owner_last_contact = -Infinity;
  private owner_started_at = -Infinity;
  /** Sessions bound to the current owner (server-node.ts), and whether each is up. */
  private readonly owner_sessions = new Map<object, () => boolean>();

  /** The owner this member has accepted (NO_OWNER's epoch 0 on a legacy pool). */
  get owner(): OwnerPair {
    const o = this.metadata.owner;
    return { epoch: o.epoch, id: o.id };
  }

  get owner_name(): string {
    return this.metadata.owner.name;
  }

  /** Generation of the current owner: a session binding made under another one is stale (M1). */
  get ownerGen(): number {
    return this.owner_gen;
  }

  private ownerState(): OwnerState {
    const o = this.metadata.owner;
    return { owner: this.owner, name: o.name, released: o.released, gen: this.owner_gen, last_contact: this.owner_last_contact, started_at: this.owner_started_at };
  }

  /** The owner's liveness as this member sees it (§4.1). */
  ownerLiveness(): Liveness {
    const up = [...this.owner_sessions.values()].some((f) => f());
    return liveness(this.ownerState(), this.core.opts.now(), up, this.core.opts.owner_live_ms);
  }

  /** A session was bound to the current owner (server-node.ts); `up` says whether it has a path. */
  ownerSessionBound(session: object, up: () => boolean): void {
    this.owner_sessions.set(session, up);
    this.ownerContact();
  }

  /** A session bound to the current owner lost its last path or closed: its last contact is now. */
  ownerSessionGone(session: object, closed: boolean): void {
    if (closed) this.owner_sessions.delete(session);
    this.ownerContact();
  }

  /** A request on a session bound to the current owner. */
  ownerContact(): void {
    this.owner_last_contact = this.core.opts.now();
  }

  /** 0 when a join or rejoin with `pair` may bind; ESTALE (older) or EAGAIN (newer: PREPARE first) otherwise. */
  ownerJoinStatus(pair: OwnerPair): number {
    const d = joinDecision(this.ownerState(), pair);
    return d === 'ok' ? 0 : d === 'stale' ? Errno.ESTALE : Errno.EAGAIN;
  }

  /** OWNER_INFO as this member answers it. */
  ownerInfo(): Buffer {
    const o = this.metadata.owner;
    const live = this.ownerLiveness();
    const since = this.core.opts.now() - this.owner_last_contact;
    const svc = Buffer.alloc(MAX_MEMBERS);
    o.svc.forEach((id, i) => (svc[i] = id));
    const voters = [...this.core.maps.keys()].sort((a, b) => a - b).slice(0, MAX_VOTERS);
    const voter_ids = Buffer.alloc(MAX_VOTERS);
    voters.forEach((id, i) => (voter_ids[i] = id));
    return OwnerInfo.encode({
      epoch: o.epoch,
      owner_id: o.id,
      owner_name: o.name,
      liveness: LIVENESS.indexOf(live),
      last_contact_ms: Number.isFinite(since) && since >= 0 ? Math.min(Math.floor(since), 0xfffffffe) : 0xffffffff,
      role: 0,
      srv_state: Math.max(0, SERVER_POOL_STATES.indexOf(this.core.state as ServerPoolState)),
      maps_epoch: o.maps_epoch,
      map_ver: this.core.map_ver,
      maps_lost: this.core.maps_lost !== null ? 1 : 0,
      replaced: this.core.discarded.has(this.core.member_id) ? 1 : 0,
      svc_epoch: o.svc_epoch,
      svc_ver: o.svc_ver,
      svc_cnt: o.svc.length,
      svc_ids: svc,
      quorum: 0,
      on_no_quorum: 0,
      voters_cnt: voters.length,
      voter_ids,
      voter_roles: Buffer.alloc(MAX_VOTERS),
    });
  }

  /**
   * OWNER PREPARE (M2): a newer owner is promised in memory at once (every binding of the old
   * one is stale from this instant), the node leaves IO service, the old owner's writes in the
   * store drain, and the record is durable before the answer, which carries OWNER_INFO.
   */
  prepare(req: { owner: OwnerPair; name: string; takeover: boolean }, cb: (status: number, reason: string | null, info: Buffer) => void): void {
    const core = this.core;
    if (core.store === null) return cb(Errno.ENXIO, `pool ${core.name} has no store`, this.ownerInfo());
    const d = prepareDecision(this.ownerState(), req.owner, req.takeover, this.ownerLiveness());
    const o = this.metadata.owner;
    if (d === 'stale') return cb(Errno.ESTALE, `owned by ${o.name} (epoch ${o.epoch}): a newer owner than epoch ${req.owner.epoch}`, this.ownerInfo());
    if (d === 'busy') return cb(Errno.EBUSY, `owned by ${o.name} (epoch ${o.epoch}), ${this.ownerLiveness()}: take it over to fence it`, this.ownerInfo());
    if (d === 'accept') {
      // 1. The promise: every binding of the old owner is stale from here on (M1).
      this.metadata.owner = { ...o, epoch: req.owner.epoch, id: Buffer.from(req.owner.id), name: req.name, released: false };
      this.owner_gen++;
      this.owner_sessions.clear();
      this.owner_last_contact = -Infinity;
      this.owner_started_at = -Infinity;
      // 2. Out of IO service; a map update under way is void.
      if (core.state === 'NORMAL' || core.state === 'CREATED') core.sm.change('NO_IO', `owner changed to ${req.name} epoch ${req.owner.epoch}`);
      core.voidMapUpdate();
      // 3. What the predecessor left unsettled in the intent record stays pinned until a
      // reconciliation deals with it (as at a new client's join).
      core.intent?.newClient();
      core.noteMapChange();
    }
    // 5. The old owner's writes admitted before the promise have completed; 6. durable.
    core.whenWritesDrained(() =>
      this.metadata.persistMetadata((s) => cb(s, s === 0 ? null : `owner record not persisted (${s})`, this.ownerInfo())),
    );
  }

  /** OWNER RELEASE (M4), from the current owner: the next owner needs no takeover; the pair stays. */
  release(cb: (status: number, reason: string | null) => void): void {
    if (this.metadata.owner.epoch === 0) return cb(Errno.EINVAL, 'the pool has no owner');
    this.metadata.owner = { ...this.metadata.owner, released: true };
    this.metadata.persistMetadata((s) => cb(s, s === 0 ? null : `owner record not persisted (${s})`));
  }

  /** The pool metadata as this node knows it (built from its state when never loaded). */
  currentPoolMd(): PoolMd {
    return this.metadata.currentPoolMd();
  }

  /** SEND_MD_BUF from the compute client: it owns the header part of pool_md (§3.6). */
  adoptClientMd(md: PoolMd): string | null {
    return this.metadata.adoptClientMd(md);
  }

  /** Writes pool_md and the dirty maps (serialised; callers arriving during a write share the next one). */
  /**
   * Flushes the store (and the maps with it) before the node serves IO again. A write this
   * node acknowledged before it left IO service may still sit in its cache, while a FLUSH the
   * client sent meanwhile made it durable on the other members only; this node then comes back
   * clean for it. Were it to lose power later as the last member in service, its crash would
   * drop a durable write and make it the source of the older data (ServerMembership.enable).
   * Found while analysing simulator seed 40002141.
   */
  flushBeforeService(cb: (status: number) => void): void {
    if (!this.hasStore) return cb(0);
    this.io.flushStore(cb);
  }

  persistMetadata(cb: (status: number) => void): void {
    this.metadata.persistMetadata(cb);
  }

  /** Every map change that records a write others missed is durable when cb(0) runs. */
  syncMaps(cb: (status: number) => void): void {
    this.metadata.syncMaps(cb);
  }

  /** The intent record's extents (the reference's last_io view), or null without a store. */
  intentRecord(): { extent_bytes: number; extents: number[] } | null {
    return this.metadata.intentRecord();
  }

  /** The extents in the intent record now (what a crash would leave). */
  intentRecorded(): number[] {
    return this.metadata.intentRecorded();
  }

  /** INTENT_TO_MAP with the record is durable: the former client's extents may go. */
  intentReconciled(): void {
    this.core.reconcileIntent();
  }

  /** Metadata exchange (§8.7, MD_SEND between peers): each peer's own srv_md slot, merged. */
  exchangeMetadata(): void {
    this.metadata.exchangeMetadata();
  }

  // ------------------------------------------------------------------ sessions and members (membership.ts)

  /** JOIN_POOL from a compute client (non-sync) or a peer's sync pool (§4.3). */
  join(j: { sync: boolean; create: boolean; dirty: boolean; blank_ok?: boolean; rejoin?: boolean; extend?: boolean; chunk_size: number; members: { id: number; dirty: boolean }[] }): string | null {
    return this.membership.join(j);
  }

  /** The store reads as zeroes and was never written (a create-mode join beside blank members needs no initial sync). */
  get store_blank(): boolean {
    return this.membership.storeBlank();
  }

  /** ENABLE_POOL from the compute client (§5.4). */
  enable(on: boolean, trust = false): string | null {
    return this.membership.enable(on, trust);
  }

  /** ENABLE_POOL(2): maintenance off; the node stays out of IO service until it has a map. */
  maintenanceOff(): string | null {
    return this.membership.maintenanceOff();
  }

  /** LEAVE_POOL of the compute client. */
  leave(member_id: number, del: boolean): string | null {
    return this.membership.leave(member_id, del);
  }

  /** POOL_INFO: a member was added to or removed from the pool (§5.4). */
  poolInfo(member_id: number, op: 'add' | 'remove', mode: 'create' | 'assemble' | 'delete' | 'disassemble', dirty: boolean): string | null {
    return this.membership.poolInfo(member_id, op, mode, dirty);
  }

  /** add_clt: attaches the node's sync pool (the peers), the reference's `add_clt` file. */
  addClt(source: SyncSource): string | null {
    return this.membership.addClt(source);
  }

  /** remove_clt: detaches it; chunk syncs then fail until one is attached again. */
  removeClt(): void {
    this.membership.removeClt();
  }

  /** STORE_CHECK: may the store serve IO? */
  storeCheck(): boolean {
    return this.membership.storeCheck();
  }

  /** USER: passed to the store; RMR adds nothing (§5.6). */
  userCommand(bytes: Buffer, rsp_len: number, cb: (status: number, rsp: Buffer | null) => void): void {
    this.membership.userCommand(bytes, rsp_len, cb);
  }

  // ------------------------------------------------------------------ maps (map-spread.ts)

  /** Peer-map cleaning (§8.6), run every few seconds. */
  checkPeerMaps(): void {
    this.spread.checkPeerMaps();
  }

  /** MAP_CHECK: is this node NORMAL with a clean own map? */
  mapCheck(): boolean {
    return this.spread.mapCheck();
  }

  /** MAP_READY: this node is about to receive every map (received aside until complete). */
  mapReady(from_sync: boolean): string | null {
    return this.spread.mapReady(from_sync);
  }

  /** SEND_MAP_BUF: pages of one member's map from the map source. */
  receiveMapBuf(member_id: number, first_page: number, page_count: number, pages: Buffer, from_sync: boolean): string | null {
    return this.spread.receiveMapBuf(member_id, first_page, page_count, pages, from_sync);
  }

  /** MAP_BUF_DONE: the source sent everything; adopt its version (never an older one). */
  mapBufDone(map_ver: number): string | null {
    return this.spread.mapBufDone(map_ver);
  }

  /** MAP_DONE: the client closes the update; with `enable` the node serves IO again. */
  mapDone(enable: boolean): string | null {
    return this.spread.mapDone(enable);
  }

  /** MAP_DISABLE: the spread failed; out of IO service until the next one. */
  mapDisable(from_sync: boolean): void {
    this.spread.mapDisable(from_sync);
  }

  /** MAP_SEND: stream every map this node holds to the receiver through the sync pool. */
  mapSend(receiver_member_id: number, client_map_ver: number, cb: (status: number) => void): void {
    this.spread.mapSend(receiver_member_id, client_map_ver, cb);
  }

  /** MAP_ADD: chunks became dirty for the listed members (§5.5). */
  mapAdd(m: MapAddValue): number {
    return this.spread.mapAdd(m);
  }

  /** INTENT_TO_MAP (§8.4, generalised): one source per chunk that may differ between members. */
  intentToMap(ranges: readonly (readonly [number, number])[], with_intent: boolean): number | string {
    return this.spread.intentToMap(ranges, with_intent);
  }

  /** OWN_DIRTY: what this node knows it lacks, as ranges from `from`, and where to go on (0: done). */
  ownDirtyRuns(from: number, max: number): [[number, number][], number] {
    return this.spread.ownDirtyRuns(from, max);
  }

  /** SEND_DISCARD (§9.8): `member_id`'s store was replaced; fully dirty here until DISCARD_CLEAR_FLAG. */
  sendDiscard(member_id: number): string | null {
    return this.spread.sendDiscard(member_id);
  }

  /** DISCARD_CLEAR_FLAG: every member holds `member_id` fully dirty; the flag goes. */
  discardClear(member_id: number): string | null {
    return this.spread.discardClear(member_id);
  }

  /** MAP_MARK: the ranges become dirty for `member_id` (`conditional`: where another member is clean). */
  mapMark(member_id: number, ranges: readonly (readonly [number, number])[], conditional: boolean): number | string {
    return this.spread.mapMark(member_id, ranges, conditional);
  }

  /** MAP_TEST: the sender's page checksums of one member's map against this node's pages. */
  mapTest(member_id: number, first_page: number, crcs: Buffer): { differing: number; answer: Buffer } | string {
    return this.spread.mapTest(member_id, first_page, crcs);
  }

  /** MAP_SET_VER: the pool's map version becomes `map_ver` here (never lower). */
  mapSetVer(map_ver: number): string | null {
    return this.spread.mapSetVer(map_ver);
  }

  /** MAP_CLEAR: a peer synced the range (ignored when this node knows a newer map version). */
  mapClear(m: MapClearValue): number {
    return this.spread.mapClear(m);
  }

  // ------------------------------------------------------------------ online verify (verify-hashes.ts)

  /** CHUNK_HASH: the SHA-256 of each chunk this node holds clean. */
  chunkHashes(first: number, count: number, cb: (status: number, data: Buffer | null) => void): void {
    this.verify.chunkHashes(first, count, cb);
  }

  /** VERIFY: this node (the source) compares its chunks with each listed peer's. */
  verifyChunks(first: number, count: number, members: readonly number[], cb: (status: number, data: Buffer | null, reason: string | null) => void): void {
    this.verify.verifyChunks(first, count, members, cb);
  }

  // ------------------------------------------------------------------ IO (server-io.ts)

  /**
   * An IO message (§6.5-§6.7). `from_sync`: sent by a peer's sync pool (reads only).
   * `data`: the write payload (empty otherwise). `reply` gets the status and read data.
   */
  handleIo(io: IoMsgValue, data: Buffer, from_sync: boolean, answer: (status: number, data: Buffer | null) => void): void {
    this.io.handleIo(io, data, from_sync, answer);
  }

  /** Pulls a whole chunk from a peer, then releases the IOs waiting for it (§7.2). */
  syncChunk(chunk: number, done?: (status: number) => void): void {
    this.io.syncChunk(chunk, done);
  }

  /** The background sync may run: NORMAL, with a store and peers to read from. */
  canSync(): boolean {
    return this.io.canSync();
  }

  appBytes(): number {
    return this.io.appBytes();
  }

  appIos(): number {
    return this.io.appIos();
  }
}
