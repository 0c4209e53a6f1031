// The storage node's side of a pool (the reference's rmr_srv_pool, §4.3, §6.5-§6.7, §7.2):
// registration of the backing store, joins, IO admission, "lock, sync, resume" for dirty
// chunks over the whole chunk range of an IO, completion bookkeeping (piggybacked failed
// members, map version, intent record), MAP_ADD / MAP_CLEAR, and chunk sync from a peer.
//
// Also the node's part in recovery and lifecycle: map spread (MAP_READY .. MAP_DONE, MAP_SEND),
// INTENT_TO_MAP, OWN_DIRTY / MAP_MARK, discard coordination of a replaced store, the hashes
// of online verify, the metadata exchange with its peers, and load / persist of pool_md and
// maps (§8, §9, §3.10).
//
// It is sans-IO: the store, the metadata store and the peers (through the sync pool) are
// ports; answers go back through the `reply` callbacks the dispatcher hands in.

import { createHash } from 'node:crypto';
import { Errno } from '../../util/errno.js';
import { DirtyMap, PAGE_BYTES, chunkRange } from '../protocol/dirty-map.js';
import { decodePoolMd, emptySrvMd, type MapUpdateState, type PoolMd, type SrvMd } from '../protocol/pool-md.js';
import { PoolMdStore } from './pool-md-store.js';
import { IntentLog } from './intent-log.js';
import { MapStore, mapStoreBytes } from './map-store.js';
import { MD_PAGE } from './md-slots.js';
import { IO_F_FUA, IO_OP_MASK, IoOp, MAX_MEMBERS, type IoMsgValue, type MapAddValue, type MapClearValue } from '../protocol/msg.js';
import type { PeerMapCommand, PeerQuery } from '../protocol/leg-commands.js';
import { checkChunkSize } from '../protocol/pool-md.js';
import { ServerPoolStateMachine, type ServerPoolStateEvent } from './server-pool-state.js';
import type { BlockStore, MetaStore, ReadCallback } from './io-store.js';

// The peer command vocabulary is the protocol's; re-exported for the pool's users.
export type { PeerMapCommand, PeerQuery };

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

/**
 * RMR's metadata region of a store (offsets from `meta_base`):
 *   0        pool_md, two slots
 *   8 KiB    intent record, two slots
 *   16 KiB   dirty maps: directory (two slots) and two image banks
 */
export const MD_POOL_OFFSET = 0;
export const MD_INTENT_OFFSET = 2 * MD_PAGE;
export const MD_MAPS_OFFSET = 4 * MD_PAGE;
/** A chunk hash answer: state u8 (0 hashed, 1 dirty here) | sha256 [32] (leg-commands CHUNK_HASH_BYTES). */
const CHUNK_HASH_ANSWER = 33;

/** Metadata bytes a pool of `no_of_chunks` chunks needs on its store. */
export function rmrMetaBytes(no_of_chunks: number): number {
  return MD_MAPS_OFFSET + mapStoreBytes(Math.ceil(no_of_chunks / (PAGE_BYTES * 8)));
}

export interface RecoveryReport {
  /** The pool metadata was found (an existing member). */
  found: boolean;
  /** Chunks marked dirty for this node from its own intent record (unclean stop). */
  intent_chunks: number;
  /** Why the maps could not be restored (all chunks were then marked dirty), or null. */
  maps_lost: string | null;
  map_ver: number;
  /** Damaged metadata copies that were ignored (the other copy was used), for the operator; absent when none. */
  md_notes?: string[];
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
}

export type ServerPoolEvent =
  | ServerPoolStateEvent
  | { kind: 'store_error'; pool: string; op: string; status: number }
  | { kind: 'chunk_synced'; pool: string; chunk: number; ok: boolean; status: number };

/** An IO waiting for a dirty chunk of its range to be synced. */
interface ParkedIo {
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

export class ServerPool {
  readonly name: string;
  readonly group_id: number;
  readonly member_id: number;
  readonly chunk_size: number;
  private readonly chunk_shift: number;
  readonly sm: ServerPoolStateMachine;
  private store: RegisteredStore | null = null;
  private intent: IntentLog | null = null;
  /** Chunks of the intent record found after an unclean stop, not yet decided (see loadMetadata). */
  private crash_chunks: DirtyMap<ParkedIo> | null = null;
  /** The maps of a map update under way, received aside (see mapReady); null when none is. */
  private staged: Map<number, DirtyMap<ParkedIo>> | null = null;
  private md_writing = false;
  private md_waiters: ((status: number) => void)[] = [];
  /** Count of map changes that must reach the disk before dependent answers; and how many did. */
  private map_changes = 0;
  private map_changes_durable = 0;
  private md_store: PoolMdStore | null = null;
  private map_store: MapStore | null = null;
  /** The pool metadata as last loaded or built (written by persistMetadata). */
  pool_md: PoolMd | null = null;
  queue_depth = 0;
  mapped_size = 0;
  no_of_chunks = 0;
  marked_create = false;
  marked_delete = false;
  maintenance = false;
  map_ver = 1;
  map_update_state: MapUpdateState = 'DISABLED';
  /** Map updates completed here (MAP_BUF_DONE replaced the maps); see syncChunk. */
  private map_updates = 0;
  /**
   * Members whose store was replaced and whose discard is not confirmed everywhere yet (the
   * reference's discard_entries): their map here is fully dirty, also after a spread.
   */
  readonly discarded = new Set<number>();
  /** One dirty map per member this node knows of (the reference's maps[] and stg_members). */
  readonly maps = new Map<number, DirtyMap<ParkedIo>>();
  /** Non-sync (compute client) sessions joined. */
  client_sessions = 0;
  sync_source: SyncSource | null = null;
  private readonly emit: (ev: ServerPoolEvent) => void;
  private readonly opts: Required<ServerPoolOptions>;
  readonly stats: ServerPoolStats = { app_bytes: 0, app_ios: 0, reads: 0, writes: 0, refused: 0, parked: 0, chunk_syncs: 0, chunk_sync_failures: 0, store_errors: 0 };

  constructor(opts: ServerPoolOptions, emit: (ev: ServerPoolEvent) => void) {
    const bad = checkChunkSize(opts.chunk_size);
    if (bad !== null) throw new RangeError(bad);
    if (!Number.isInteger(opts.member_id) || opts.member_id < 1 || opts.member_id > 255) throw new RangeError(`member_id ${opts.member_id} outside 1..255`);
    this.opts = { intent_extent_shift: 22, intent_max_extents: 256, on_refused: () => undefined, ...opts };
    this.name = opts.pool_name;
    this.group_id = opts.group_id;
    this.member_id = opts.member_id;
    this.chunk_size = opts.chunk_size;
    this.chunk_shift = Math.log2(opts.chunk_size);
    this.emit = emit;
    this.sm = new ServerPoolStateMachine(opts.pool_name, emit);
    this.sm.on_refused = this.opts.on_refused;
  }

  get state(): string {
    return this.sm.state;
  }

  ownMap(): DirtyMap<ParkedIo> | undefined {
    return this.maps.get(this.member_id);
  }

  /** Whether maps for `ids` fit beside the ones held (at most MAX_MEMBERS members). */
  private roomFor(ids: number[]): boolean {
    const fresh = new Set(ids.filter((id) => !this.maps.has(id)));
    return this.maps.size + fresh.size <= MAX_MEMBERS;
  }

  /** The map of `member_id`, created clean (or fully dirty) if this node did not know it. */
  private mapOf(member_id: number, full = false): DirtyMap<ParkedIo> {
    let m = this.maps.get(member_id);
    if (m === undefined) {
      if (this.maps.size >= MAX_MEMBERS) throw new RangeError(`pool ${this.name} already has ${MAX_MEMBERS} members`);
      m = new DirtyMap<ParkedIo>(member_id, this.no_of_chunks);
      if (full) m.setAll();
      this.maps.set(member_id, m);
    }
    return m;
  }

  // ------------------------------------------------------------------ registration

  /**
   * Registers the backing store (brmr-server's create_store / add_store). `create` marks the
   * pool for a create-mode join; otherwise only assemble joins are accepted.
   */
  register(store: RegisteredStore, mode: 'create' | 'add' | 'replace', mapped_size: number): string | null {
    if (this.store !== null) return `pool ${this.name} already has a store`;
    if (!Number.isSafeInteger(mapped_size) || mapped_size <= 0 || mapped_size % 512 !== 0) return `mapped_size ${mapped_size} must be a positive multiple of 512`;
    if (mapped_size > store.block.size_bytes) return `mapped_size ${mapped_size} exceeds the store (${store.block.size_bytes} bytes)`;
    if (this.mapped_size !== 0 && this.mapped_size !== mapped_size) return `mapped_size ${mapped_size} differs from the pool's ${this.mapped_size}`;
    const err = this.sm.state === 'NORMAL' || this.sm.state === 'NO_IO' ? null : this.sm.change('REGISTERED', `store registered (${mode})`);
    if (err !== null) return err;
    this.store = store;
    this.mapped_size = mapped_size;
    this.no_of_chunks = Math.ceil(mapped_size / this.chunk_size);
    this.marked_create = mode === 'create';
    if (store.meta.meta_size_bytes < store.meta_base + rmrMetaBytes(this.no_of_chunks)) {
      this.store = null;
      return `the store's metadata area is too small (${rmrMetaBytes(this.no_of_chunks)} bytes needed)`;
    }
    this.intent = new IntentLog(store.meta, store.meta_base + MD_INTENT_OFFSET, {
      extent_shift: this.opts.intent_extent_shift,
      max_active: this.opts.intent_max_extents,
      requestFlush: () => this.flushForIntent(),
    });
    this.md_store = new PoolMdStore(store.meta, store.meta_base + MD_POOL_OFFSET);
    this.map_store = new MapStore(store.meta, store.meta_base + MD_MAPS_OFFSET, Math.ceil(this.no_of_chunks / (PAGE_BYTES * 8)));
    this.mapOf(this.member_id);
    if (mode === 'replace') {
      // An empty store takes this member's place (§9.8): every chunk comes from the peers, and
      // until they all hold this member fully dirty (SEND_DISCARD) the flag stays (persisted).
      this.marked_create = false;
      this.ownMap()?.setAll();
      this.discarded.add(this.member_id);
      this.map_changes++;
    }
    return null;
  }

  /**
   * remove_store / delete_store (reference rmr_srv_unregister): the store leaves the pool,
   * which goes EMPTY and forgets its maps (they stay on the store for a later add_store; the
   * caller persists them first when it wants them kept). Refused while chunk syncs are in
   * flight: their waiters must be answered by this store.
   */
  unregister(reason: string): string | null {
    if (this.store === null) return `pool ${this.name} has no store`;
    const own = this.ownMap();
    if (own !== undefined && own.entryCount > 0) return `${own.entryCount} chunk syncs in flight`;
    if (this.sm.state === 'NORMAL' || this.sm.state === 'CREATED') this.sm.change('NO_IO', reason);
    const err = this.sm.change('EMPTY', reason);
    if (err !== null) return err;
    this.store = null;
    this.intent = null;
    this.md_store = null;
    this.map_store = null;
    this.pool_md = null;
    this.maps.clear();
    this.discarded.clear();
    this.mapped_size = 0;
    this.no_of_chunks = 0;
    this.marked_create = false;
    this.client_sessions = 0;
    this.map_update_state = 'DISABLED';
    this.dropStaged();
    return null;
  }

  /**
   * add_store: restores what the store remembers (reference `rmr_srv_refresh_md`, §3.10):
   * pool_md (same chunk size, a slot for this member with the same size; map_ver never
   * lowered), the dirty maps (lost maps make every chunk dirty for this node), and the
   * intent record, whose extents become dirty for this node (writes that may not have
   * reached its disk before an unclean stop). The result is persisted before the intent
   * record is cleared, so a second crash loses nothing.
   */
  loadMetadata(cb: (status: number, report: RecoveryReport | null, reason: string | null) => void): void {
    const ms = this.md_store;
    const maps = this.map_store;
    const intent = this.intent;
    if (ms === null || maps === null || intent === null) return cb(Errno.ENXIO, null, 'no store registered');
    ms.load((s1, md, md_notes) => {
      if (s1 === Errno.EBADMSG) return cb(s1, null, `pool metadata damaged in both copies (${md_notes.join('; ')}): delete_store and add the disk with mode=replace to resync it from its peers`);
      if (s1 !== 0) return cb(s1, null, 'pool metadata unreadable');
      if (md === null) return cb(0, { found: false, intent_chunks: 0, maps_lost: null, map_ver: this.map_ver, ...(md_notes.length > 0 ? { md_notes: [...md_notes] } : {}) }, null);
      if (md.header.pool_name !== this.name) return cb(Errno.EINVAL, null, `store belongs to pool ${md.header.pool_name}`);
      if (md.header.chunk_size !== this.chunk_size) return cb(Errno.EINVAL, null, `store has chunk_size ${md.header.chunk_size}`);
      const mine = md.srv_md.find((x) => x.member_id === this.member_id);
      if (mine === undefined) return cb(Errno.EINVAL, null, `store has no slot for member ${this.member_id}`);
      if (mine.mapped_size !== this.mapped_size) return cb(Errno.EINVAL, null, `store was ${mine.mapped_size} bytes, not ${this.mapped_size}`);
      this.pool_md = md;
      this.queue_depth = md.header.queue_depth;
      for (const slot of md.srv_md) if (slot.member_id !== 0 && slot.discard_entries) this.discarded.add(slot.member_id);
      this.map_ver = Math.max(this.map_ver, mine.map_ver, md.header.map_ver);
      maps.load(this.no_of_chunks, (s2, loaded, map_ver, why) => {
        let maps_lost: string | null = null;
        if (s2 === 0 && loaded !== null && !this.roomFor(loaded.map((m) => m.member_id))) {
          maps_lost = `stored maps of ${loaded.length} members do not fit beside this node's`;
          this.mapOf(this.member_id).setAll();
        } else if (s2 !== 0 || (loaded === null && md !== null)) {
          // Never read lost maps as clean: this node resyncs everything.
          maps_lost = why ?? 'no maps stored';
          this.mapOf(this.member_id).setAll();
        } else if (loaded !== null) {
          for (const m of loaded) {
            const into = this.mapOf(m.member_id);
            for (let p = 0; p < m.page_count; p++) into.decodePage(p, m.encodePage(p), 'overwrite');
          }
          this.map_ver = Math.max(this.map_ver, map_ver);
        }
        intent.load((s3, extents, intent_notes) => {
          if (s3 === Errno.EBADMSG) return cb(s3, null, `intent record damaged in both copies (${intent_notes.join('; ')}): delete_store and add the disk with mode=replace to resync it from its peers`);
          if (s3 !== 0 || extents === null) return cb(s3 !== 0 ? s3 : Errno.EIO, null, 'intent record unreadable');
          // The record's chunks may lack writes that never became durable here. Whether
          // this node must resync them is decided when it comes back: a map update from a
          // NORMAL peer (which holds every durable write) makes them dirty for it; enabled
          // directly as the last authoritative member, it is their source. Stored maps
          // cannot decide it: their clears are written lazily. Found by the simulator
          // (seeds 8 and 3025 with crashes). The record is kept until then.
          const crash = new DirtyMap<ParkedIo>(this.member_id, this.no_of_chunks);
          const ext_bytes = 2 ** intent.extent_shift;
          for (const e of extents) {
            const start = e * ext_bytes;
            if (start >= this.mapped_size) continue;
            const end = Math.min(start + ext_bytes, this.mapped_size);
            const first = Math.floor(start / this.chunk_size);
            crash.setDirty(first, Math.ceil(end / this.chunk_size) - first);
          }
          const marked = crash.dirtyCount;
          this.crash_chunks = marked > 0 ? crash : null;
          const notes = [...md_notes, ...intent_notes];
          const report: RecoveryReport = { found: true, intent_chunks: marked, maps_lost, map_ver: this.map_ver, ...(notes.length > 0 ? { md_notes: notes } : {}) };
          this.persistMetadata((s4) => cb(s4, s4 === 0 ? report : null, s4 === 0 ? null : 'could not persist the recovered maps'));
        });
      });
    });
  }

  /** The pool metadata as this node knows it (built from its state when never loaded). */
  currentPoolMd(): PoolMd {
    return this.pool_md ?? {
      header: { pool_name: this.name, pool_uuid: Buffer.alloc(16), group_id: this.group_id, chunk_size: this.chunk_size, mapped_size: this.mapped_size, queue_depth: this.queue_depth, map_ver: this.map_ver },
      srv_md: [emptySrvMd(), emptySrvMd(), emptySrvMd(), emptySrvMd()],
    };
  }

  /** SEND_MD_BUF from the compute client: it owns the header part of pool_md (§3.6). */
  adoptClientMd(md: PoolMd): string | null {
    if (md.header.pool_name !== this.name || md.header.chunk_size !== this.chunk_size) return 'pool metadata of another pool';
    if (md.header.mapped_size !== this.mapped_size) return `client pool size ${md.header.mapped_size} differs from ${this.mapped_size}`;
    const cur = this.currentPoolMd();
    // A client that has not learned the pool's UUID yet sends zeroes: the node keeps its own.
    const uuid = md.header.pool_uuid.every((x) => x === 0) ? cur.header.pool_uuid : md.header.pool_uuid;
    cur.header = { ...md.header, pool_uuid: uuid, map_ver: Math.max(md.header.map_ver, cur.header.map_ver) };
    this.pool_md = cur;
    this.queue_depth = md.header.queue_depth;
    return null;
  }

  /** USER: passed to the store; RMR adds nothing (§5.6). */
  userCommand(bytes: Buffer, rsp_len: number, cb: (status: number, rsp: Buffer | null) => void): void {
    const store = this.store;
    if (store === null || store.submitCmd === undefined) return cb(Errno.EOPNOTSUPP, null);
    store.submitCmd(bytes, rsp_len, (status, rsp) => cb(status, rsp !== null && rsp.length > rsp_len ? null : rsp));
  }

  /**
   * Writes pool_md (with this node's srv_md slot refreshed) and the dirty maps. Writes are
   * serialised (alternating slots and banks allow one at a time); callers arriving during a
   * write share the next one.
   */
  persistMetadata(cb: (status: number) => void): void {
    this.md_waiters.push(cb);
    if (!this.md_writing) this.nextMetadataWrite();
  }

  private nextMetadataWrite(): void {
    const waiters = this.md_waiters;
    this.md_waiters = [];
    if (waiters.length === 0) return;
    this.md_writing = true;
    const changes = this.map_changes;
    this.writeMetadata((status) => {
      this.md_writing = false;
      if (status === 0 && changes > this.map_changes_durable) this.map_changes_durable = changes;
      for (const w of waiters) w(status);
      this.nextMetadataWrite();
    });
  }

  /**
   * Every map change that records a write others missed (piggyback, MAP_ADD, INTENT_TO_MAP,
   * a received spread) is durable when cb(0) runs. Flushes, FUA writes, MAP_ADD and MAP_DONE
   * answer only after it, so an acknowledged durable write never depends on a map entry a
   * crash of this node could lose (a restarted node trusts its stored maps).
   */
  syncMaps(cb: (status: number) => void): void {
    if (this.map_changes === this.map_changes_durable) return cb(0);
    this.persistMetadata(cb);
  }

  private writeMetadata(cb: (status: number) => void): void {
    const ms = this.md_store;
    const maps = this.map_store;
    if (ms === null || maps === null) return cb(Errno.ENXIO);
    const md = this.currentPoolMd();
    // Every member this node knows of has a slot, and only those (a deleted member's goes,
    // §9.6); its own slot carries its state.
    for (let i = 0; i < md.srv_md.length; i++) {
      const slot = md.srv_md[i] as SrvMd;
      if (slot.member_id !== 0 && !this.maps.has(slot.member_id)) md.srv_md[i] = emptySrvMd();
    }
    for (const id of this.maps.keys()) {
      if (md.srv_md.some((x) => x.member_id === id)) continue;
      const free = md.srv_md.find((x) => x.member_id === 0);
      if (free !== undefined) Object.assign(free, { member_id: id, mapped_size: this.mapped_size });
    }
    for (const slot of md.srv_md) if (slot.member_id !== 0) slot.discard_entries = this.discarded.has(slot.member_id);
    const mine = md.srv_md.find((x) => x.member_id === this.member_id);
    if (mine !== undefined) {
      Object.assign(mine, { srv_state: this.sm.state, store_state: this.store !== null, map_update_state: this.map_update_state, map_ver: this.map_ver, mapped_size: this.mapped_size });
    }
    md.header.map_ver = Math.max(md.header.map_ver, this.map_ver);
    this.pool_md = md;
    ms.store(md, (s1) => {
      if (s1 !== 0) return cb(s1);
      maps.store(this.maps.values(), this.map_ver, cb);
    });
  }

  /** The intent record's extents (the reference's last_io view), or null without a store. */
  intentRecord(): { extent_bytes: number; extents: number[] } | null {
    if (this.intent === null) return null;
    return { extent_bytes: 2 ** this.opts.intent_extent_shift, extents: this.intent.recorded() };
  }

  get hasStore(): boolean {
    return this.store !== null;
  }

  // ------------------------------------------------------------------ joins

  /**
   * A JOIN_POOL from a compute client (non-sync) or a peer's sync pool, by the reference's
   * acceptance matrix (§4.3). `members` lists the client's other legs (and for create,
   * whether its map for each is dirty).
   */
  join(j: { sync: boolean; create: boolean; dirty: boolean; rejoin?: boolean; extend?: boolean; chunk_size: number; members: { id: number; dirty: boolean }[] }): string | null {
    if (j.chunk_size !== this.chunk_size) return `chunk_size ${j.chunk_size} differs from the pool's ${this.chunk_size}`;
    if (this.sm.state === 'EMPTY' || this.store === null) return `pool ${this.name} has no store`;
    if (j.sync) return null;
    if (j.create) {
      if (!this.marked_create) return `pool ${this.name} was added, not created: only assemble joins are accepted`;
      if (j.members.some((m) => m.id === 0) || !this.roomFor(j.members.map((m) => m.id))) return `a pool has 1 to ${MAX_MEMBERS} members with ids 1..255`;
      // Extend (§9.7): a new member on a live pool waits for its maps out of IO service
      // (the reference reuses CREATED and lets MAP_READY in there).
      const err = this.sm.change(j.extend === true ? 'NO_IO' : 'CREATED', j.extend === true ? 'extend join' : 'create-mode join');
      if (err !== null) return err;
      if (j.dirty || j.extend === true) this.mapOf(this.member_id).setAll();
      for (const m of j.members) if (m.id !== this.member_id) this.mapOf(m.id, m.dirty);
      this.marked_create = false;
    } else {
      if (this.marked_create) return `pool ${this.name} was created and awaits its create-mode join`;
      const err = this.sm.change('NO_IO', j.rejoin === true ? 'rejoin' : 'assemble join');
      if (err !== null) return err;
      // A map update under way is void: a MAP_DONE that arrives after the client came back
      // (replayed by the transport) must not enable the node.
      this.map_update_state = 'DISABLED';
      this.dropStaged();
      // A rejoin is the same client coming back: it must get a map before serving IO.
      if (j.rejoin === true && this.client_sessions > 0) return null;
    }
    // A new compute client (not a rejoin): what its predecessor left unsettled in the intent
    // record stays until the client-crash reconciliation.
    if (j.rejoin !== true) this.intent?.newClient();
    this.client_sessions++;
    return null;
  }

  /** ENABLE_POOL from the compute client (§5.4). */
  enable(on: boolean): string | null {
    if (on) {
      if (this.maintenance) {
        this.maintenance = false;
        return null; // leaving maintenance does not enable; a map update will
      }
      const err = this.sm.change('NORMAL', 'enable');
      if (err === null) this.servesAgain();
      // Enabled directly (the last authoritative member): this node is the source of its
      // intent chunks, which every other member resyncs from it. Its crash may have lost
      // writes there that the others kept (none durable: those reached this node's disk), so
      // without this the members stay different. Found by the simulator (seeds 4009, 4057,
      // 4127 with crashes: the last authoritative node lost unflushed writes at a power loss
      // and was enabled directly; a peer kept the newer data and was never marked dirty).
      if (err === null && this.crash_chunks !== null) {
        if (this.sourceChunks(this.crash_chunks.runs()) > 0) this.map_changes++;
        this.crash_chunks = null;
        this.releaseRecoveredIntent();
      }
      return err;
    }
    const err = this.sm.change('NO_IO', 'maintenance on');
    if (err === null) this.maintenance = true;
    return err;
  }

  /** ENABLE_POOL(2): maintenance off; the node stays out of IO service until it has a map. */
  maintenanceOff(): string | null {
    this.maintenance = false;
    return null;
  }

  /** The recovered intent extents are dealt with: once the maps are durable, the record forgets them. */
  private releaseRecoveredIntent(): void {
    const intent = this.intent;
    if (intent === null) return;
    this.syncMaps((s) => {
      if (s === 0) intent.reset(() => undefined);
    });
  }

  /** LEAVE_POOL of the compute client. */
  leave(member_id: number, del: boolean): string | null {
    if (member_id !== this.member_id) return `member ${member_id} is not this node (${this.member_id})`;
    if (this.client_sessions > 0) this.client_sessions--;
    this.marked_delete = del;
    if (this.sm.state !== 'EMPTY' && this.sm.state !== 'REGISTERED') {
      const e = this.sm.change('NO_IO', 'leave');
      if (e !== null) return e;
    }
    if (del) for (const id of [...this.maps.keys()]) if (id !== this.member_id) this.maps.delete(id);
    if (this.client_sessions === 0) return this.sm.change(this.store !== null ? 'REGISTERED' : 'EMPTY', 'last client left');
    return null;
  }

  /** POOL_INFO: a member was added to or removed from the pool (§5.4). */
  poolInfo(member_id: number, op: 'add' | 'remove', mode: 'create' | 'assemble' | 'delete' | 'disassemble', dirty: boolean): string | null {
    if (op === 'add') {
      if (mode === 'create') {
        if (!this.roomFor([member_id])) return `pool ${this.name} already has ${MAX_MEMBERS} members`;
        // A new member starts fully dirty here even if a piggyback created its map first.
        const m = this.mapOf(member_id, dirty);
        if (dirty && !m.isFull()) m.setAll();
        this.map_changes++;
      } else if (!this.maps.has(member_id)) {
        // assemble: the member exists; a node that does not know it yet (its store was
        // replaced, its metadata is new) learns of it; its maps come with the next spread.
        if (!this.roomFor([member_id])) return `pool ${this.name} already has ${MAX_MEMBERS} members`;
        this.mapOf(member_id);
        this.map_changes++;
      }
      return null;
    }
    if (mode === 'delete') {
      if (member_id === this.member_id) return 'cannot delete this node through POOL_INFO';
      this.maps.delete(member_id);
      this.discarded.delete(member_id);
      this.map_changes++;
    }
    // disassemble: keep the map so dirtiness keeps accumulating.
    return null;
  }

  /** add_clt: attaches the node's sync pool (the peers), the reference's `add_clt` file. */
  addClt(source: SyncSource): string | null {
    if (this.sync_source !== null) return 'a sync pool is attached already';
    this.sync_source = source;
    return null;
  }

  /** remove_clt: detaches it; chunk syncs then fail until one is attached again. */
  removeClt(): void {
    this.sync_source = null;
  }

  /** The background sync may run: NORMAL, with a store and peers to read from. */
  canSync(): boolean {
    return this.sm.state === 'NORMAL' && this.store !== null && this.sync_source !== null;
  }

  appBytes(): number {
    return this.stats.app_bytes;
  }

  appIos(): number {
    return this.stats.app_ios;
  }

  /**
   * Peer-map cleaning (§8.6), run every few seconds: a peer that reports its own map empty
   * gets this node's copy of its map wiped, unless the copy changed since the question (a
   * MAP_ADD or piggyback raced with it). Collects what lost MAP_CLEARs left behind.
   */
  checkPeerMaps(): void {
    const src = this.sync_source;
    if (src === null || this.sm.state !== 'NORMAL') return;
    for (const m of this.maps.values()) {
      if (m.member_id === this.member_id || m.isEmpty()) continue;
      const ts_asked = m.ts;
      const dirty_asked = m.dirtyCount;
      src.peerMapCheck(m.member_id, (status, empty) => {
        if (status === 0 && empty && m.ts === ts_asked && m.dirtyCount === dirty_asked) m.clearAll(m.ts);
      });
    }
  }

  /** MAP_CHECK: is this node NORMAL with a clean own map? */
  mapCheck(): boolean {
    return this.sm.state === 'NORMAL' && (this.ownMap()?.isEmpty() ?? false);
  }

  /** STORE_CHECK: may the store serve IO? */
  storeCheck(): boolean {
    return this.store !== null && this.store.ioAllowed();
  }

  // ------------------------------------------------------------------ map spread (§8.2)

  /**
   * MAP_READY: this node is about to receive every map. They are received aside and replace
   * its maps only once complete (MAP_BUF_DONE): an update that fails half way leaves the
   * node with its previous maps, complete as of when it left service, not with wiped ones
   * (which claim every chunk clean for every member). The reference wipes them here. Found
   * by the simulator (seed 55308163: a reconciliation's spread stopped after MAP_READY; the
   * node, wiped, was then enabled directly as the last authoritative member and its empty
   * maps spread to every other: a durable write was lost on three members).
   */
  mapReady(from_sync: boolean): string | null {
    if (from_sync) return 'MAP_READY from a sync pool';
    if (this.sm.state !== 'NO_IO' && this.sm.state !== 'CREATED') return `MAP_READY in state ${this.sm.state}`;
    if (this.map_update_state !== 'DISABLED') return `map update already ${this.map_update_state}`;
    this.staged = new Map();
    this.map_update_state = 'READY';
    return null;
  }

  /** A map update ends without replacing the maps (failed, or voided by a join). */
  private dropStaged(): void {
    this.staged = null;
  }

  /** SEND_MAP_BUF: pages of one member's map from the map source. */
  receiveMapBuf(member_id: number, first_page: number, page_count: number, pages: Buffer, from_sync: boolean): string | null {
    if (this.map_update_state !== 'READY') return `map buffer while map update is ${this.map_update_state}`;
    const fail = (why: string): string => {
      if (!from_sync && this.sm.state !== 'EMPTY' && this.sm.state !== 'REGISTERED') this.sm.change('NO_IO', why);
      return why;
    };
    const staged = this.staged;
    if (staged === null) return `map buffer without a map update`;
    if (pages.length !== page_count * PAGE_BYTES) return fail(`map buffer of ${pages.length} bytes for ${page_count} pages`);
    let map = staged.get(member_id);
    if (map === undefined) {
      // The maps kept and the ones received together fit (those the source lacks stay, empty).
      const fresh = [...staged.keys()].filter((id) => !this.maps.has(id)).length;
      if (!this.maps.has(member_id) && this.maps.size + fresh >= MAX_MEMBERS) return fail(`no room for member ${member_id}'s map`);
      map = new DirtyMap<ParkedIo>(member_id, this.no_of_chunks);
      staged.set(member_id, map);
    }
    for (let i = 0; i < page_count; i++) {
      const err = map.decodePage(first_page + i, pages.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES), 'overwrite');
      if (err !== null) return fail(`map page of member ${member_id}: ${err}`);
    }
    return null;
  }

  /** MAP_BUF_DONE: the source sent everything; adopt its version (never an older one). */
  mapBufDone(map_ver: number): string | null {
    if (this.map_update_state !== 'READY') return `MAP_BUF_DONE while map update is ${this.map_update_state}`;
    if (map_ver < this.map_ver) return `map version ${map_ver} older than ours (${this.map_ver})`;
    const staged = this.staged;
    if (staged === null) return 'MAP_BUF_DONE without a map update';
    this.map_ver = map_ver;
    // What this node knows it lacks (a crash's intent chunks, misses it was told of) stays
    // true until it syncs those chunks, whatever the source says (the client marked it on
    // the source before the spread); where every other member is stale too, this node keeps
    // the newest data. Found by the simulator: a node restarted after a power loss dropped
    // its intent chunks at the first spread and kept stale data.
    const own = this.ownMap();
    const lacks = own === undefined ? [] : own.runs();
    // The received maps replace every map held (the sync entries of the chunks stay); a
    // member the source does not know keeps an empty map.
    for (const m of this.maps.values()) {
      const got = staged.get(m.member_id);
      if (got !== undefined) m.takeBitsFrom(got);
      else m.clearAll();
    }
    for (const [id, m] of staged) if (!this.maps.has(id)) this.maps.set(id, m);
    this.staged = null;
    this.map_updates++;
    this.map_changes++;
    if (lacks.length > 0) this.mapMark(this.member_id, lacks, true);
    // A replaced member stays fully dirty until its discard is confirmed everywhere (§9.8).
    for (const id of this.discarded) this.mapOf(id).setAll();
    if (this.crash_chunks !== null) {
      // The client marked them on the source (MAP_MARK, conditional) before the spread, so
      // the received maps say it already; the same rule here covers a source that lacked them.
      this.mapMark(this.member_id, this.crash_chunks.runs(), true);
      this.map_changes++;
      this.crash_chunks = null;
      this.releaseRecoveredIntent();
    }
    this.map_update_state = 'DONE';
    return null;
  }

  /**
   * MAP_DONE: the client closes the update; with `enable` the node serves IO again. Unlike
   * the reference (§12.4), a node whose update did not reach DONE is not promoted.
   */
  mapDone(enable: boolean): string | null {
    const reached = this.map_update_state === 'DONE';
    this.map_update_state = 'DISABLED';
    this.dropStaged();
    if (!reached) return 'map update did not complete';
    if (!enable) return null;
    // The client spreads only to a leg it took out of maintenance.
    this.maintenance = false;
    const err = this.sm.change('NORMAL', 'map update done');
    if (err === null) this.servesAgain();
    return err;
  }

  /** MAP_DISABLE: the spread failed; out of IO service until the next one. */
  mapDisable(from_sync: boolean): void {
    this.map_update_state = 'DISABLED';
    this.dropStaged();
    if (!from_sync && (this.sm.state === 'NORMAL' || this.sm.state === 'CREATED')) this.sm.change('NO_IO', 'map update disabled');
  }

  /**
   * MAP_SEND: stream every map this node holds to the receiver through the sync pool, then
   * MAP_BUF_DONE with this node's version (raised to the client's first). `cb` gets 0 once
   * the receiver has all of it.
   */
  mapSend(receiver_member_id: number, client_map_ver: number, cb: (status: number) => void): void {
    const src = this.sync_source;
    if (src === null) return cb(Errno.ENOTCONN);
    // NO_IO too: in the client-crash reconciliation (Cases 3/4) no member is NORMAL yet.
    // ENODEV says this node is no map source (the client then fails its leg).
    if ((this.sm.state !== 'NORMAL' && this.sm.state !== 'NO_IO') || this.store === null) return cb(Errno.ENODEV);
    if (this.map_update_state !== 'DISABLED') return cb(Errno.EBUSY);
    // The client owns the version: a source enabled as last authoritative may have missed
    // bumps a receiver saw; without this the receiver refuses the complete map as older.
    // Found by the simulator (seed 45).
    if (client_map_ver > this.map_ver) this.map_ver = client_map_ver;
    const per_msg = Math.max(1, Math.floor(src.max_io_size / PAGE_BYTES));
    const maps = [...this.maps.values()];
    // One batch at a time, encoded when it is sent: a 64 TiB pool's maps are 64 MiB each,
    // not something to hold in memory twice. MAP_BUF_DONE goes after every page.
    const next = (mi: number, page: number): void => {
      const m = maps[mi];
      if (m === undefined) {
        return src.peerCommand(receiver_member_id, { kind: 'map_buf_done', map_ver: this.map_ver }, cb);
      }
      if (page >= m.page_count) return next(mi + 1, 0);
      const n = Math.min(per_msg, m.page_count - page);
      const pages = Buffer.alloc(n * PAGE_BYTES);
      for (let i = 0; i < n; i++) m.encodePage(page + i, pages.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES));
      const job: PeerMapCommand = { kind: 'send_map_buf', member_id: m.member_id, first_page: page, page_count: n, map_ver: this.map_ver, pages };
      src.peerCommand(receiver_member_id, job, (status) => (status !== 0 ? cb(status) : next(mi, page + n)));
    };
    next(0, 0);
  }

  // ------------------------------------------------------------------ map messages

  /** MAP_ADD: chunks became dirty for the listed members (§5.5). */
  mapAdd(m: MapAddValue): number {
    // Only a node in IO service records misses (the client acknowledges the write on it): a
    // node out of service gets all its maps at its next spread, and one whose store was just
    // replaced holds none of the data. Found by the simulator (seed 2026: a MAP_ADD to a node
    // whose disk had been replaced acknowledged writes that only its old disk held).
    if (this.sm.state !== 'NORMAL') return Errno.EIO;
    if (m.first_chunk + m.chunk_count > this.no_of_chunks) return Errno.EINVAL;
    const ids = [...m.failed_ids.subarray(0, m.failed_cnt)];
    if (!this.roomFor(ids)) return Errno.ENOSPC; // nothing applied
    for (const id of ids) this.mapOf(id).setDirty(m.first_chunk, m.chunk_count);
    if (m.map_ver > this.map_ver) this.map_ver = m.map_ver;
    this.map_changes++;
    return 0;
  }

  /**
   * INTENT_TO_MAP (the reference's LAST_IO_TO_MAP, §8.4, generalised): chunks that may
   * differ between members — the given ranges (writes the compute client saw fail
   * everywhere) and, with `with_intent`, every chunk in this node's intent record (writes a
   * crashed client may have left on some members only) — get one source each and become
   * dirty for every other member. The source is this node when its own map is clean for the
   * chunk, else the lowest member whose map here is clean for it (the reference skips such a
   * chunk, which leaves members different when a third member took the write; §12.4). A
   * chunk dirty for every member is left alone. Any number of members; applying it twice
   * changes nothing. Returns the number of chunks given a source.
   */
  /** The extents in the intent record now (what a crash would leave). */
  intentRecorded(): number[] {
    return this.intent?.recorded() ?? [];
  }

  /**
   * The node serves again after a recovery: whatever a former client left unsettled in the
   * intent record has been dealt with (Cases 3/4 run INTENT_TO_MAP with the record before
   * enabling; Case 1 follows a rejoin of the same, live client). Without this, a leg
   * disassembled and assembled again by a live client would pin its extents for good.
   */
  private servesAgain(): void {
    this.intent?.reconciled();
  }

  /** INTENT_TO_MAP with the record is durable: the former client's extents may go. */
  intentReconciled(): void {
    this.intent?.reconciled();
  }

  intentToMap(ranges: readonly (readonly [number, number])[], with_intent: boolean): number | string {
    for (const [first, count] of ranges) if (first + count > this.no_of_chunks || count < 0) return `chunk range ${first}+${count} beyond ${this.no_of_chunks}`;
    // Ranges, not a set of chunks: a range may cover the whole device (2^30 chunks at 64 TiB).
    const all: (readonly [number, number])[] = [...ranges];
    const intent = this.intent;
    if (with_intent && intent !== null) {
      const ext_bytes = 2 ** intent.extent_shift;
      for (const e of intent.recorded()) {
        const start = e * ext_bytes;
        if (start >= this.mapped_size) continue;
        const first = Math.floor(start / this.chunk_size);
        all.push([first, Math.ceil(Math.min(start + ext_bytes, this.mapped_size) / this.chunk_size) - first]);
      }
    }
    const sourced = this.sourceChunks(all);
    if (sourced > 0) this.map_changes++;
    return sourced;
  }

  /**
   * Gives each chunk of `ranges` one source and makes it dirty for every other member: this
   * node where its own map is clean, else the lowest member clean for it here; a chunk dirty
   * for every member is left alone. Returns the number of chunks given a source.
   */
  private sourceChunks(ranges: readonly (readonly [number, number])[]): number {
    const own = this.mapOf(this.member_id);
    const ids = [...this.maps.keys()].sort((a, b) => a - b);
    const others = ids.filter((id) => id !== this.member_id).map((id) => this.maps.get(id) as DirtyMap<ParkedIo>);
    let sourced = 0;
    for (const [first, count] of ranges) {
      const end = first + count;
      for (let pos = first; pos < end; ) {
        // A run this node is clean for: it is the source, every other member resyncs the run.
        const d = own.nextDirty(pos);
        const clean_end = d < 0 || d >= end ? end : d;
        if (clean_end > pos) {
          for (const m of others) m.setDirty(pos, clean_end - pos);
          sourced += clean_end - pos;
          pos = clean_end;
          continue;
        }
        // A chunk this node lacks: the lowest member clean for it is the source.
        const source = ids.find((id) => !(this.maps.get(id) as DirtyMap<ParkedIo>).isDirty(pos));
        if (source !== undefined) {
          for (const id of ids) if (id !== source) (this.maps.get(id) as DirtyMap<ParkedIo>).setDirty(pos, 1);
          sourced++;
        }
        pos++;
      }
    }
    return sourced;
  }

  /**
   * OWN_DIRTY: what this node knows it lacks: its own map and the intent chunks of its crash
   * that no map update has decided yet, as ranges from `from` (at most `max`), and where to
   * go on (0: done).
   */
  ownDirtyRuns(from: number, max: number): [[number, number][], number] {
    const own = this.ownMap();
    const crash = this.crash_chunks;
    const out: [number, number][] = [];
    if (own === undefined) return [out, 0];
    const nextOf = (m: DirtyMap<ParkedIo> | null, c: number): number => {
      if (m === null) return -1;
      return m.nextDirty(c);
    };
    let c = Math.max(0, from);
    while (c < this.no_of_chunks && out.length < max) {
      const a = own.nextDirty(c);
      const b = nextOf(crash, c);
      const start = a < 0 ? b : b < 0 ? a : Math.min(a, b);
      if (start < 0) return [out, 0];
      // The run ends where both are clean.
      let end = start;
      for (;;) {
        const e1 = own.isDirty(end) ? own.nextClean(end) : end;
        const e2 = crash !== null && e1 < this.no_of_chunks && crash.isDirty(e1) ? crash.nextClean(e1) : e1;
        if (e2 === end || e2 >= this.no_of_chunks) {
          end = Math.min(e2, this.no_of_chunks);
          break;
        }
        end = e2;
      }
      if (end === start) end = start + 1;
      out.push([start, end - start]);
      c = end;
    }
    return [out, c >= this.no_of_chunks ? 0 : c];
  }

  /**
   * SEND_DISCARD (§9.8): `member_id`'s store was replaced; it holds nothing. Its map here is
   * fully dirty and stays so (even across spreads) until DISCARD_CLEAR_FLAG.
   */
  sendDiscard(member_id: number): string | null {
    if (!this.roomFor([member_id])) return `no room for member ${member_id}'s map`;
    this.mapOf(member_id).setAll();
    this.discarded.add(member_id);
    this.map_changes++;
    return null;
  }

  /** DISCARD_CLEAR_FLAG: every member holds `member_id` fully dirty; the flag goes. */
  discardClear(member_id: number): string | null {
    this.discarded.delete(member_id);
    return null;
  }

  /**
   * CHUNK_HASH (online verify): the SHA-256 of each chunk this node holds clean; a chunk dirty
   * here is reported as such (not compared). Only a NORMAL node answers.
   */
  chunkHashes(first: number, count: number, cb: (status: number, data: Buffer | null) => void): void {
    const store = this.store;
    const own = this.ownMap();
    if (store === null || own === undefined || this.sm.state !== 'NORMAL') return cb(Errno.EIO, null);
    if (!Number.isSafeInteger(first) || first < 0 || count < 1 || first + count > this.no_of_chunks) return cb(Errno.EINVAL, null);
    const out = Buffer.alloc(count * CHUNK_HASH_ANSWER);
    let pending = count;
    let err = 0;
    for (let i = 0; i < count; i++) {
      const c = first + i;
      const at = i * CHUNK_HASH_ANSWER;
      if (own.isDirty(c)) {
        out[at] = 1;
        if (--pending === 0) cb(err, err === 0 ? out : null);
        continue;
      }
      const start = c * this.chunk_size;
      store.block.read(start, Math.min(this.chunk_size, this.mapped_size - start), (status, data) => {
        if (status !== 0 || data === null) err = status !== 0 ? status : Errno.EIO;
        // Dirtied while it was read (a failed write, a MAP_ADD): not compared.
        else if (own.isDirty(c)) out[at] = 1;
        else createHash('sha256').update(data).digest().copy(out, at + 1);
        if (--pending === 0) cb(err, err === 0 ? out : null);
      });
    }
  }

  /**
   * VERIFY: this node (the source) compares its chunks with each listed peer's through the
   * sync pool; one byte per chunk says which members differ (bit i) or were not compared
   * (bit 4+i: dirty on either side, or the peer did not answer). Nothing is marked here: the
   * compute client, which holds the chunks' range lock, marks the differences on every
   * member.
   */
  verifyChunks(first: number, count: number, members: readonly number[], cb: (status: number, data: Buffer | null, reason: string | null) => void): void {
    const src = this.sync_source;
    if (src === null) return cb(Errno.ENOTCONN, null, 'no sync pool attached');
    this.chunkHashes(first, count, (s0, mine) => {
      if (s0 !== 0 || mine === null) return cb(s0 !== 0 ? s0 : Errno.EIO, null, `source hashes failed (${s0})`);
      const out = Buffer.alloc(count);
      let pending = members.length;
      if (pending === 0) return cb(0, out, null);
      members.forEach((m, mi) => {
        src.peerQuery(m, { kind: 'chunk_hash', first_chunk: first, chunk_count: count }, (status, theirs) => {
          for (let i = 0; i < count; i++) {
            const at = i * CHUNK_HASH_ANSWER;
            const skip = status !== 0 || theirs === null || theirs.length !== count * CHUNK_HASH_ANSWER || mine[at] !== 0 || theirs[at] !== 0;
            if (skip) out[i] = (out[i] as number) | (0x10 << mi);
            else if (!mine.subarray(at + 1, at + CHUNK_HASH_ANSWER).equals(theirs.subarray(at + 1, at + CHUNK_HASH_ANSWER))) out[i] = (out[i] as number) | (1 << mi);
          }
          if (--pending === 0) cb(0, out, null);
        });
      });
    });
  }

  /**
   * Metadata exchange (§8.7, the reference's MD_SEND between peers): each peer's own srv_md
   * slot, merged into this node's pool_md (persisted with the next metadata write).
   */
  exchangeMetadata(): void {
    const src = this.sync_source;
    if (src === null || this.store === null) return;
    for (const id of this.maps.keys()) {
      if (id === this.member_id) continue;
      src.peerQuery(id, { kind: 'md_read' }, (status, data) => {
        if (status !== 0 || data === null || this.store === null) return;
        const theirs = decodePoolMd(data);
        if (typeof theirs === 'string' || theirs.header.pool_name !== this.name) return;
        const slot = theirs.srv_md.find((x) => x.member_id === id);
        const md = this.pool_md;
        if (slot === undefined || md === null || slot.mapped_size !== this.mapped_size) return;
        const i = md.srv_md.findIndex((x) => x.member_id === id);
        if (i < 0) return;
        // The peer's state, not its view of discards (that one is this node's own knowledge).
        md.srv_md[i] = { ...slot, discard_entries: this.discarded.has(id) };
      });
    }
  }

  /**
   * MAP_MARK: the ranges become dirty for `member_id`. `conditional`: only the chunks some
   * other member is clean for here (a restarted node's crash chunks: it may lack writes
   * there, but where every other member is stale it holds the newest data and stays their
   * source). Returns the number of chunks newly dirty.
   */
  mapMark(member_id: number, ranges: readonly (readonly [number, number])[], conditional: boolean): number | string {
    for (const [first, count] of ranges) if (first + count > this.no_of_chunks || count < 0) return `chunk range ${first}+${count} beyond ${this.no_of_chunks}`;
    if (!this.roomFor([member_id])) return `no room for member ${member_id}'s map`;
    const target = this.mapOf(member_id);
    const others = [...this.maps.values()].filter((m) => m.member_id !== member_id);
    let marked = 0;
    for (const [first, count] of ranges) {
      if (!conditional) {
        marked += target.setDirty(first, count);
        continue;
      }
      for (let c = first; c < first + count; c++) if (others.some((m) => !m.isDirty(c))) marked += target.setDirty(c, 1);
    }
    if (marked > 0) this.map_changes++;
    return marked;
  }

  /**
   * MAP_CLEAR: a peer synced the range; best effort (the periodic check cleans leftovers).
   * Ignored when this node knows a newer map version than the peer had when its sync began:
   * the peer's data may predate a write it missed, recorded here as dirty for it (every
   * such record comes with a version above any the peer could have seen: its leg's failure
   * bumped the client's, and a node learns a version only with the writes or maps of it).
   * The clear would erase the only record of that write. Found by the simulator (seed
   * 57684138: a chunk sync slowed by a bandwidth cap read a peer's chunk, the node's leg
   * failed, a write to the chunk was recorded as missed by it, and the sync's MAP_CLEAR
   * then erased that record on every peer).
   */
  mapClear(m: MapClearValue): number {
    const map = this.maps.get(m.member_id);
    if (map === undefined || m.first_chunk + m.chunk_count > this.no_of_chunks) return Errno.EINVAL;
    if (m.member_id === this.member_id) return Errno.EINVAL; // only peers report their own chunks
    if (m.map_ver < this.map_ver) return 0;
    map.clear(m.first_chunk, m.chunk_count);
    return 0;
  }

  // ------------------------------------------------------------------ IO

  /**
   * An IO message (§6.5-§6.7). `from_sync`: sent by a peer's sync pool (reads only).
   * `data`: the write payload (empty otherwise). `reply` gets the status and read data.
   */
  handleIo(io: IoMsgValue, data: Buffer, from_sync: boolean, answer: (status: number, data: Buffer | null) => void): void {
    // A node that fails a client IO leaves IO service: the client marks the leg FAILED and
    // records the write as missed elsewhere, so this node must not go on serving (stale)
    // reads to its peers. Found by the simulator (seed 15: a chunk sync failed under a
    // discard, the node stayed NORMAL, and a returning peer synced stale data from it).
    // Only an IO of the current service period counts: one admitted before the node left
    // service and came back (parked behind a chunk sync that was then voided) says nothing
    // about the maps the node got since.
    const epoch = this.sm.service_epoch;
    const reply = from_sync
      ? answer
      : (status: number, d: Buffer | null): void => {
          if (status !== 0 && this.sm.state === 'NORMAL' && this.sm.service_epoch === epoch) this.sm.change('NO_IO', `failed a client IO (${status})`);
          answer(status, d);
        };
    const op = io.flags & IO_OP_MASK;
    const store = this.store;
    // The client's settled mark lets intent extents go (every IO carries it). A zero-length
    // read is its beacon when no other IO flows: it moves no data, so it needs no admission.
    if (!from_sync) this.intent?.settle(io.settled);
    if (!from_sync && op === IoOp.READ && io.length === 0 && data.length === 0) return answer(0, Buffer.alloc(0));
    // Admission (§6.5): a refused client IO takes the pool out of IO service.
    let refusal: string | null = null;
    if (store === null) refusal = 'no store';
    else if (this.sm.state !== 'NORMAL') refusal = `state ${this.sm.state}`;
    else if (from_sync && op !== IoOp.READ) refusal = 'peers may only read';
    else if (!from_sync && !store.ioAllowed()) refusal = 'store does not allow IO';
    if (refusal !== null || store === null) {
      this.stats.refused++;
      if (!from_sync && this.sm.state === 'NORMAL') this.sm.change('NO_IO', `IO refused: ${refusal ?? ''}`);
      return reply(Errno.EIO, null);
    }
    if (io.offset + io.length > this.mapped_size) return reply(Errno.EINVAL, null);
    if (op === IoOp.WRITE && data.length !== io.length) return reply(Errno.EINVAL, null);
    if (op !== IoOp.WRITE && data.length !== 0) return reply(Errno.EINVAL, null);
    if (op === IoOp.FLUSH) return this.flush(reply);
    if (op !== IoOp.READ && op !== IoOp.WRITE && op !== IoOp.DISCARD && op !== IoOp.WRITE_ZEROES) return reply(Errno.EOPNOTSUPP, null);
    if (io.length === 0) return reply(0, op === IoOp.READ ? Buffer.alloc(0) : null);
    if (!from_sync) {
      this.stats.app_bytes += io.length;
      this.stats.app_ios++;
    }
    this.submitChecked({ io, data, reply }, from_sync);
  }

  /** Step §6.6: serve the IO if its chunk range is clean for this node, else sync first. */
  private submitChecked(p: ParkedIo, from_sync: boolean): void {
    const own = this.ownMap() as DirtyMap<ParkedIo>;
    const [first, count] = chunkRange(p.io.offset, p.io.length, this.chunk_size);
    let dirty = -1;
    for (let c = first; c < first + count; c++) {
      if (own.isDirty(c)) {
        dirty = c;
        break;
      }
    }
    if (dirty < 0) return this.submit(p);
    // A peer must not make us sync on its behalf (chains, deadlocks): it retries elsewhere.
    if (from_sync) return p.reply(Errno.EIO, null);
    this.stats.parked++;
    const e = own.entry(dirty);
    e.waiters.push(p);
    if (e.sync_cnt === -1) this.syncChunk(dirty);
  }

  private submit(p: ParkedIo): void {
    const store = this.store as RegisteredStore;
    const { io, data, reply } = p;
    const op = io.flags & IO_OP_MASK;
    if (op === IoOp.READ) {
      this.stats.reads++;
      return store.block.read(io.offset, io.length, (status, d) => {
        if (status !== 0) this.storeError('read', status);
        reply(status, status === 0 ? d : null);
      });
    }
    this.stats.writes++;
    const fua = (io.flags & IO_F_FUA) !== 0;
    const intent = this.intent as IntentLog;
    const go = (st: number): void => {
      if (st !== 0) {
        // No intent record, no crash consistency: refuse the write.
        this.storeError('intent record', st);
        return reply(st, null);
      }
      const done = (status: number): void => {
        intent.end(io.offset, io.length, fua && status === 0);
        if (status !== 0) {
          this.storeError(op === IoOp.WRITE ? 'write' : op === IoOp.DISCARD ? 'discard' : 'write-zeroes', status);
          return reply(status, null);
        }
        // Completion bookkeeping (§6.7): the piggybacked members missed this range.
        if (io.failed_cnt > 0) {
          const [first, count] = chunkRange(io.offset, io.length, this.chunk_size);
          for (let i = 0; i < io.failed_cnt; i++) {
            const id = io.failed_ids[i] as number;
            if (id === this.member_id || (!this.maps.has(id) && this.maps.size >= MAX_MEMBERS)) continue;
            if (this.mapOf(id).setDirty(first, count) > 0) this.map_changes++;
          }
          if (io.map_ver > this.map_ver) this.map_ver = io.map_ver;
        }
        // A FUA write is durable with what it recorded about the members that missed it.
        if (fua) return this.syncMaps((s) => reply(s, null));
        reply(0, null);
      };
      if (op === IoOp.WRITE) store.block.write(io.offset, data, fua, done);
      else if (op === IoOp.DISCARD) store.block.discard(io.offset, io.length, done);
      else store.block.writeZeroes(io.offset, io.length, done);
    };
    if (intent.begin(io.offset, io.length, go, io.seq)) go(0);
  }

  private flush(reply: (status: number, data: Buffer | null) => void): void {
    this.flushStore((status) => reply(status, null));
  }

  /** The intent record is full of unflushed extents: flush the store to free them. */
  private flushForIntent(): void {
    this.flushStore(() => undefined);
  }

  /**
   * One store flush, for clients and for the intent record. A failed flush leaves the
   * durability of earlier writes unknown: the store leaves service and the intent record
   * refuses further writes (its waiters get the error instead of waiting for a flush that
   * will not come).
   */
  private flushStore(cb: (status: number) => void): void {
    const store = this.store;
    const intent = this.intent;
    if (store === null || intent === null) return cb(Errno.ENXIO);
    const covered = intent.flushStarted();
    store.block.flush((status) => {
      if (status !== 0) {
        this.storeError('flush', status);
        intent.fail(status);
        return cb(status);
      }
      // The maps go with the data: an extent leaves the intent record only once the map
      // entries of its writes are durable too.
      this.syncMaps((s2) => {
        if (s2 === 0) intent.flushDone(covered);
        cb(s2);
      });
    });
  }

  /** A backend error: the node leaves IO service (§6.7), visibly. */
  private storeError(op: string, status: number): void {
    this.stats.store_errors++;
    this.emit({ kind: 'store_error', pool: this.name, op, status });
    if (this.sm.state === 'NORMAL' || this.sm.state === 'CREATED' || this.sm.state === 'REGISTERED') this.sm.change('NO_IO', `store ${op} failed (${status})`);
  }

  // ------------------------------------------------------------------ chunk sync (§7.2)

  /**
   * Pulls a whole chunk from a peer, then releases the IOs waiting for it.
   *
   * The copy makes the chunk clean (here and, by MAP_CLEAR, on the peers) only if this node
   * served IO from its start to its end: meanwhile every client write to the chunk waits
   * behind it here, so copy plus those writes is current. Once the node leaves IO service,
   * writes miss it and are recorded for it on its peers; a copy finishing after that may be
   * older than them (the peer read may even be a transport replay of an answer given before
   * the node left), so it is void: the chunk stays dirty, its waiters fail (they were
   * admitted before the node left service and must not run after it), and no MAP_CLEAR
   * erases the peers' records. Found by the simulator (seed 61002973: the copy finished after
   * the node went NO_IO, its MAP_CLEAR erased a peer's record of a write the node had missed,
   * and the next spread left the node serving the old bytes).
   */
  syncChunk(chunk: number, done?: (status: number) => void): void {
    const own = this.ownMap() as DirtyMap<ParkedIo>;
    const e = own.entry(chunk);
    if (e.sync_cnt !== -1) {
      done?.(Errno.EBUSY);
      return;
    }
    const src = this.sync_source;
    const store = this.store;
    const epoch = this.sm.service_epoch;
    // What the pulled data can vouch for: the maps as they are now. A map update received
    // meanwhile may say this node missed a write to the chunk after the peer's read (the
    // sync is older than that record): the chunk stays dirty and is synced again. The
    // peers get the version of now with the MAP_CLEAR (see mapClear).
    const map_ver = this.map_ver;
    const updates = this.map_updates;
    const finish = (result: number): void => {
      const status = result === 0 && (this.sm.state !== 'NORMAL' || this.sm.service_epoch !== epoch) ? Errno.ECANCELED : result;
      this.stats.chunk_syncs++;
      if (status !== 0) this.stats.chunk_sync_failures++;
      this.emit({ kind: 'chunk_synced', pool: this.name, chunk, ok: status === 0, status });
      const entry = own.takeEntry(chunk);
      if (status === 0 && this.map_updates === updates) {
        own.clear(chunk, 1);
        src?.mapClear(chunk, 1, this.member_id, map_ver);
      }
      for (const w of entry?.waiters ?? []) {
        if (status === 0) this.submitChecked(w, false);
        else w.reply(Errno.EIO, null);
      }
      done?.(status);
    };
    if (src === null || store === null || this.sm.state !== 'NORMAL') {
      e.sync_cnt = -1;
      return finish(src === null || store === null ? Errno.ENOTCONN : Errno.ECANCELED);
    }
    const start = chunk * this.chunk_size;
    const len = Math.min(this.chunk_size, this.mapped_size - start);
    const piece = Math.max(4096, Math.min(src.max_io_size, len));
    e.sync_cnt = 0;
    let err = 0;
    for (let off = start; off < start + len; off += piece) {
      const plen = Math.min(piece, start + len - off);
      e.sync_cnt++;
      src.readPeer(off, plen, (status, d) => {
        const pieceDone = (st: number): void => {
          if (st !== 0 && err === 0) err = st;
          if (--e.sync_cnt === 0) finish(err);
        };
        if (status !== 0 || d === null || d.length !== plen) return pieceDone(status !== 0 ? status : Errno.EIO);
        // FUA: the chunk may be marked clean only once its data is durable here.
        store.block.write(off, d, true, pieceDone);
      });
    }
  }
}
