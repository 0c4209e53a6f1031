// The storage node's pool state (the reference's rmr_srv_pool, §4.3), and its only owner: the
// registered store with its intent record and metadata stores, the pool's size, the state
// machine, the dirty maps of every member and the map update under way, the map version, the
// crash chunks, the discard flags, the client sessions and the sync pool. The modules of the
// pool (server-io.ts, map-spread.ts, pool-metadata.ts, verify-hashes.ts, membership.ts) read
// it through the views here and change it through the operations here; map bits change
// through the DirtyMaps' own API.

import { OWNER_LIVE_MS } from './owner.js';
import type { IntentLog } from './intent-log.js';
import type { MapStore } from './map-store.js';
import type { PoolMdStore } from './pool-md-store.js';
import { DirtyMap } from '../protocol/dirty-map.js';
import type { PeerMapCommand, PeerQuery } from '../protocol/leg-commands.js';
import { MAX_MEMBERS, type IoMsgValue } from '../protocol/msg.js';
import type { MapUpdateState } from '../protocol/pool-md.js';
import { checkChunkSize } from '../protocol/pool-md.js';
import { ServerPoolStateMachine, type ServerPoolStateEvent } from './server-pool-state.js';
import type { BlockStore, MetaStore, ReadCallback } from './io-store.js';

/** What the server pool needs from its peers (provided by the node's sync client pool). */
export interface SyncSource {
  /** Max bytes per peer read. */
  readonly max_io_size: number;
  /** Reads a range from some NORMAL peer (retrying on others); -EIO when none could serve it. */
  readPeer(offset: number, length: number, cb: ReadCallback): void;
  /**
   * Tells the peers that `member_id` is now clean for the chunk range (best effort);
   * `map_ver`: its map version when the sync began (a peer that knows a newer one ignores it).
   */
  mapClear(first_chunk: number, chunk_count: number, member_id: number, map_ver: number): void;
  /** MAP_CHECK to one peer: cb(0, true) when it is NORMAL with an empty own map. */
  peerMapCheck(member_id: number, cb: (status: number, empty: boolean) => void): void;
  /** Sends a map-transfer command to one peer (MAP_SEND streams maps peer to peer). */
  peerCommand(receiver_member_id: number, cmd: PeerMapCommand, cb: (status: number) => void): void;
  /** A question to one peer, answered with bytes: its pool_md (MD_SEND, §8.7), chunk hashes (verify). */
  peerQuery(member_id: number, q: PeerQuery, cb: (status: number, data: Buffer | null) => void): void;
}

export interface RegisteredStore {
  block: BlockStore;
  meta: MetaStore;
  /** Byte offset in `meta` where RMR's metadata region starts. */
  meta_base: number;
  /** BRMR's io_allowed (OPEN && MAPPED); true for plain stores. */
  ioAllowed(): boolean;
  /** The upper layer's commands (the reference's submit_cmd, BRMR's GET_PARAMS/MAP/UNMAP). */
  submitCmd?(bytes: Buffer, rsp_len: number, cb: (status: number, rsp: Buffer | null) => void): void;
  /**
   * The pool UUID the store's own header carries (BRMR's; all zero until the first map
   * assigns one), read each time: RMR's pool_md takes it, and a store, a peer or a client of
   * another UUID is refused (issue 19, item 6). Absent for plain stores.
   */
  poolUuid?(): Buffer;
  /**
   * The data area has read as zeroes since the store was made and nothing was written to it
   * (BRMR's header bit, cleared durably before the first write). A create-mode join of such a
   * store beside members as blank needs no initial sync. Absent: not known blank.
   */
  blank?(): boolean;
}

export type ServerPoolEvent =
  | ServerPoolStateEvent
  | { kind: 'store_error'; pool: string; op: string; status: number }
  | { kind: 'chunk_synced'; pool: string; chunk: number; ok: boolean; status: number }
  /** add_store found no valid map image: the node resyncs everything and knows nothing of its peers' misses. */
  | { kind: 'maps_lost'; pool: string; member_id: number; reason: string };

/** An IO waiting for a dirty chunk of its range to be synced. */
export interface ParkedIo {
  io: IoMsgValue;
  data: Buffer;
  reply: (status: number, data: Buffer | null) => void;
}

export interface ServerPoolOptions {
  pool_name: string;
  group_id: number;
  member_id: number;
  chunk_size: number;
  /** Intent record geometry (extent = 2^shift bytes). */
  intent_extent_shift?: number;
  intent_max_extents?: number;
  /** Called with the reason whenever a state change is refused (the simulator counts them). */
  on_refused?: (reason: string) => void;
  /** Monotonic milliseconds, for the owner's liveness (docs/ownership.md §4.1); without it only an open owner session counts. */
  now?: () => number;
  /** How long an owner counts as live after its last contact, and after this member restarted. */
  owner_live_ms?: number;
}

export interface ServerPoolStats {
  /** Bytes and IOs of compute-client IO served (the sync rate controller compares against them). */
  app_bytes: number;
  app_ios: number;
  reads: number;
  writes: number;
  refused: number;
  parked: number;
  chunk_syncs: number;
  chunk_sync_failures: number;
  store_errors: number;
}

export class ServerPoolCore {
  readonly name: string;
  readonly group_id: number;
  readonly member_id: number;
  readonly chunk_size: number;
  readonly sm: ServerPoolStateMachine;
  readonly opts: Required<ServerPoolOptions>;
  readonly stats: ServerPoolStats = { app_bytes: 0, app_ios: 0, reads: 0, writes: 0, refused: 0, parked: 0, chunk_syncs: 0, chunk_sync_failures: 0, store_errors: 0 };
  readonly emit: (ev: ServerPoolEvent) => void;
  /** The node's sync pool (add_clt / remove_clt): the peers. */
  sync_source: SyncSource | null = null;
  private _store: RegisteredStore | null = null;
  private _intent: IntentLog | null = null;
  private _md_store: PoolMdStore | null = null;
  private _map_store: MapStore | null = null;
  private _mapped_size = 0;
  private _no_of_chunks = 0;
  private _marked_create = false;
  private _maintenance = false;
  private _map_ver = 1;
  /** Chunks of the intent record found after an unclean stop, not yet decided (see PoolMetadata.loadMetadata). */
  private _crash_chunks: DirtyMap<ParkedIo> | null = null;
  private _map_update_state: MapUpdateState = 'DISABLED';
  /** The maps of a map update under way, received aside (see MapSpread.mapReady); null when none is. */
  private _staged: Map<number, DirtyMap<ParkedIo>> | null = null;
  /** Map updates completed here (MAP_BUF_DONE replaced the maps); see ServerIo.syncChunk. */
  private _map_updates = 0;
  /** Count of map changes that must reach the disk before dependent answers (PoolMetadata.persistMaps). */
  private _map_changes = 0;
  /**
   * Members whose store was replaced and whose discard is not confirmed everywhere yet (the
   * reference's discard_entries): their map here is fully dirty, also after a spread.
   */
  private readonly _discarded = new Set<number>();
  private _maps_lost: string | null = null;
  /** One dirty map per member this node knows of (the reference's maps[] and stg_members). */
  private readonly _maps = new Map<number, DirtyMap<ParkedIo>>();
  /** Non-sync (compute client) sessions joined. */
  private _client_sessions = 0;
  /** See writesInStore. */
  private _writes_in_store = 0;

  constructor(opts: ServerPoolOptions, emit: (ev: ServerPoolEvent) => void) {
    const bad = checkChunkSize(opts.chunk_size);
    if (bad !== null) throw new RangeError(bad);
    if (!Number.isInteger(opts.member_id) || opts.member_id < 1 || opts.member_id > 255) throw new RangeError(`member_id ${opts.member_id} outside 1..255`);
    // Without a clock only an open owner session counts as live (owner_live_ms 0).
    this.opts = { intent_extent_shift: 22, intent_max_extents: 256, on_refused: () => undefined, now: () => 0, owner_live_ms: opts.now === undefined ? 0 : OWNER_LIVE_MS, ...opts };
    this.name = opts.pool_name;
    this.group_id = opts.group_id;
    this.member_id = opts.member_id;
    this.chunk_size = opts.chunk_size;
    this.emit = emit;
    this.sm = new ServerPoolStateMachine(opts.pool_name, emit);
    this.sm.on_refused = this.opts.on_refused;
  }

  // ------------------------------------------------------------------ views

  get state(): string {
    return this.sm.state;
  }

  get store(): RegisteredStore | null {
    return this._store;
  }

  get hasStore(): boolean {
    return this._store !== null;
  }

  get intent(): IntentLog | null {
    return this._intent;
  }

  get md_store(): PoolMdStore | null {
    return this._md_store;
  }

  get map_store(): MapStore | null {
    return this._map_store;
  }

  get mapped_size(): number {
    return this._mapped_size;
  }

  get no_of_chunks(): number {
    return this._no_of_chunks;
  }

  get marked_create(): boolean {
    return this._marked_create;
  }

  get maintenance(): boolean {
    return this._maintenance;
  }

  get map_ver(): number {
    return this._map_ver;
  }

  get crash_chunks(): DirtyMap<ParkedIo> | null {
    return this._crash_chunks;
  }

  get map_update_state(): MapUpdateState {
    return this._map_update_state;
  }

  get staged(): ReadonlyMap<number, DirtyMap<ParkedIo>> | null {
    return this._staged;
  }

  get map_updates(): number {
    return this._map_updates;
  }

  get map_changes(): number {
    return this._map_changes;
  }

  get discarded(): ReadonlySet<number> {
    return this._discarded;
  }

  /**
   * Why this node's stored maps could not be used at add_store (null: they were, or a map
   * update from a source has replaced them since). Status views show it.
   */
  get maps_lost(): string | null {
    return this._maps_lost;
  }

  setMapsLost(why: string | null): void {
    this._maps_lost = why;
  }

  get maps(): ReadonlyMap<number, DirtyMap<ParkedIo>> {
    return this._maps;
  }

  get client_sessions(): number {
    return this._client_sessions;
  }

  ownMap(): DirtyMap<ParkedIo> | undefined {
    return this._maps.get(this.member_id);
  }

  /** Whether maps for `ids` fit beside the ones held (at most MAX_MEMBERS members). */
  roomFor(ids: number[]): boolean {
    const fresh = new Set(ids.filter((id) => !this._maps.has(id)));
    return this._maps.size + fresh.size <= MAX_MEMBERS;
  }

  // ------------------------------------------------------------------ the store

  /** The pool's size, fixed by the store's registration (PoolMetadata.register). */
  setGeometry(mapped_size: number, marked_create: boolean): void {
    this._mapped_size = mapped_size;
    this._no_of_chunks = Math.ceil(mapped_size / this.chunk_size);
    this._marked_create = marked_create;
  }

  /**
   * Client writes (and discards, write-zeroes) and chunk-sync writes handed to the attached
   * store and not answered by it yet. A node comes back into IO service (MAP_READY, a direct
   * enable) only with none: a write stalled in the store past the client's timeout, from
   * before the node left service, could otherwise land after its resync over newer data
   * (issue 19, item 4). A store that is detached takes its writes with it.
   */
  get writesInStore(): number {
    return this._writes_in_store;
  }

  /** A write goes to the store: call the function returned when the store answers it. */
  storeWriteBegins(): () => void {
    const store = this._store;
    this._writes_in_store++;
    return () => {
      if (this._store === store) this._writes_in_store--;
      if (this._writes_in_store === 0) this.writesDrained();
    };
  }

  private drain_waiters: (() => void)[] = [];

  /**
   * `cb` once no write is in the store (at once if none is): a PREPARE answers only after the
   * writes admitted under the old owner completed (docs/ownership.md M2 step 5).
   */
  whenWritesDrained(cb: () => void): void {
    if (this._writes_in_store === 0) return cb();
    this.drain_waiters.push(cb);
  }

  private writesDrained(): void {
    const w = this.drain_waiters;
    this.drain_waiters = [];
    for (const cb of w) cb();
  }

  attachStore(store: RegisteredStore, intent: IntentLog, md_store: PoolMdStore, map_store: MapStore): void {
    this._writes_in_store = 0;
    this._store = store;
    this._intent = intent;
    this._md_store = md_store;
    this._map_store = map_store;
  }

  /** The store left the pool (unregister): everything learned with it goes. */
  detachStore(): void {
    this._writes_in_store = 0;
    this.writesDrained();
    this._store = null;
    this._intent = null;
    this._md_store = null;
    this._map_store = null;
    this._maps.clear();
    this._discarded.clear();
    this._maps_lost = null;
    this._mapped_size = 0;
    this._no_of_chunks = 0;
    this._marked_create = false;
    this._client_sessions = 0;
    this.voidMapUpdate();
  }

  /** The create-mode join came: from now on only assemble joins. */
  createJoined(): void {
    this._marked_create = false;
  }

  // ------------------------------------------------------------------ maps

  /** The map of `member_id`, created clean (or fully dirty) if this node did not know it. */
  mapOf(member_id: number, full = false): DirtyMap<ParkedIo> {
    let m = this._maps.get(member_id);
    if (m === undefined) {
      if (this._maps.size >= MAX_MEMBERS) throw new RangeError(`pool ${this.name} already has ${MAX_MEMBERS} members`);
      m = new DirtyMap<ParkedIo>(member_id, this._no_of_chunks);
      if (full) m.setAll();
      this._maps.set(member_id, m);
    }
    return m;
  }

  /**
   * `member_id` holds no data (a new member, a replaced store, lost maps): every chunk dirty
   * for it, and unsynced (the reference's UNSYNCED filter, the map_unsynced file).
   */
  markNoData(member_id: number): void {
    const m = this.mapOf(member_id);
    m.markUnsynced(0, m.no_of_chunks);
  }

  /** POOL_INFO delete: the member and its discard flag are forgotten. */
  forgetMember(member_id: number): void {
    this._maps.delete(member_id);
    this._discarded.delete(member_id);
  }

  /** LEAVE_POOL with delete: this node keeps only its own map. */
  forgetOtherMembers(): void {
    for (const id of [...this._maps.keys()]) if (id !== this.member_id) this._maps.delete(id);
  }

  /** A map change that must be durable before dependent answers (PoolMetadata.persistMaps). */
  noteMapChange(): void {
    this._map_changes++;
  }

  /** The version only rises (a node never goes back to an older one). */
  raiseMapVersion(map_ver: number): void {
    if (map_ver > this._map_ver) this._map_ver = map_ver;
  }

  markDiscarded(member_id: number): void {
    this._discarded.add(member_id);
  }

  clearDiscarded(member_id: number): void {
    this._discarded.delete(member_id);
  }

  setCrashChunks(m: DirtyMap<ParkedIo> | null): void {
    this._crash_chunks = m;
  }

  // ------------------------------------------------------------------ the map update (§8.2)

  /** MAP_READY: maps are received aside from now on. */
  startMapUpdate(): void {
    this._staged = new Map();
    this._map_update_state = 'READY';
  }

  /** A received map of `member_id` (the caller checked that it fits). */
  stageMap(member_id: number): DirtyMap<ParkedIo> {
    const map = new DirtyMap<ParkedIo>(member_id, this._no_of_chunks);
    (this._staged as Map<number, DirtyMap<ParkedIo>>).set(member_id, map);
    return map;
  }

  /**
   * MAP_BUF_DONE: the received maps replace every map held (the sync entries of the chunks
   * stay); a member the source does not know keeps an empty map.
   */
  replaceMaps(): void {
    // Maps from a source: this node knows again what its peers lack.
    this._maps_lost = null;
    const staged = this._staged as Map<number, DirtyMap<ParkedIo>>;
    for (const m of this._maps.values()) {
      const got = staged.get(m.member_id);
      if (got !== undefined) m.takeBitsFrom(got);
      else m.clearAll();
    }
    for (const [id, m] of staged) if (!this._maps.has(id)) this._maps.set(id, m);
    this._staged = null;
    this._map_updates++;
    this._map_changes++;
  }

  setMapUpdate(state: MapUpdateState): void {
    this._map_update_state = state;
  }

  /** A map update ends without replacing the maps (failed, closed, or voided by a join). */
  voidMapUpdate(): void {
    this._map_update_state = 'DISABLED';
    this._staged = null;
  }

  // ------------------------------------------------------------------ service

  setMaintenance(on: boolean): void {
    this._maintenance = on;
  }

  clientJoined(): void {
    this._client_sessions++;
  }

  clientLeft(): void {
    if (this._client_sessions > 0) this._client_sessions--;
  }

  /**
   * Whatever a former client left unsettled in the intent record has been dealt with: it
   * serves again after a recovery, or INTENT_TO_MAP with the record is durable.
   */
  reconcileIntent(): void {
    this._intent?.reconciled();
  }
}
