// A storage node pool's metadata (reference §3.6, §3.10, §8.7): registration of the backing
// store, loading what the store remembers (pool_md, the dirty maps, the intent record) and
// persisting it, the client's pool_md header, and the metadata exchange with the peers.

import { Errno } from '../../util/errno.js';
import { PAGE_BYTES, DirtyMap } from '../protocol/dirty-map.js';
import { decodePoolMd, emptySrvMd, legacyOwner, uuidConflict, uuidUnset, type OwnerSection, type PoolMd, type SrvMd } from '../protocol/pool-md.js';
import { compareOwners } from '../protocol/leg-commands.js';
import { IntentLog } from './intent-log.js';
import { MapStore, mapStoreBytes } from './map-store.js';
import { MD_PAGE } from './md-slots.js';
import { PoolMdStore } from './pool-md-store.js';
import type { ParkedIo, RegisteredStore, ServerPoolCore } from './server-core.js';

/**
 * RMR's metadata region of a store (offsets from `meta_base`):
 *   0        pool_md, two slots
 *   8 KiB    intent record, two slots
 *   16 KiB   dirty maps: directory (two slots) and two image banks
 */
export const MD_POOL_OFFSET = 0;
export const MD_INTENT_OFFSET = 2 * MD_PAGE;
export const MD_MAPS_OFFSET = 4 * MD_PAGE;

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

export class PoolMetadata {
  private readonly core: ServerPoolCore;
  /** The intent record asks for a store flush when it is full of unflushed extents (ServerIo). */
  private readonly requestFlush: () => void;
  private md_writing = false;
  private md_waiters: ((status: number) => void)[] = [];
  /** How many of the core's map changes reached the disk. */
  private map_changes_durable = 0;
  /** The pool metadata as last loaded or built (written by persistMetadata). */
  private _pool_md: PoolMd | null = null;
  /**
   * The owner section (docs/ownership.md §2.1): the member's own, never a client's. Kept in
   * memory across a store's removal and replacement: an owner pair never goes back.
   */
  owner: OwnerSection = legacyOwner([]);
  private _queue_depth = 0;
  /**
   * The pool UUID this server pool has served (from its store, its pool_md or its client),
   * kept when the store leaves: a store of another pool added in its place is refused.
   */
  private known_uuid: Buffer = Buffer.alloc(16);

  constructor(core: ServerPoolCore, requestFlush: () => void) {
    this.core = core;
    this.requestFlush = requestFlush;
  }

  get pool_md(): PoolMd | null {
    return this._pool_md;
  }

  get queue_depth(): number {
    return this._queue_depth;
  }

  /** The pool's UUID as this node knows it (all zero while none is assigned). */
  poolUuid(): Buffer {
    const md = this._pool_md?.header.pool_uuid;
    if (md !== undefined && !uuidUnset(md)) return md;
    const hdr = this.core.store?.poolUuid?.();
    if (hdr !== undefined && !uuidUnset(hdr)) return hdr;
    return this.known_uuid;
  }

  private learnUuid(u: Buffer): void {
    if (uuidUnset(this.known_uuid) && !uuidUnset(u)) this.known_uuid = Buffer.from(u);
  }

  // ------------------------------------------------------------------ registration

  /**
   * Registers the backing store (brmr-server's create_store / add_store). `create` marks the
   * pool for a create-mode join; otherwise only assemble joins are accepted.
   */
  register(store: RegisteredStore, mode: 'create' | 'add' | 'replace', mapped_size: number): string | null {
    const core = this.core;
    if (core.store !== null) return `pool ${core.name} already has a store`;
    if (!Number.isSafeInteger(mapped_size) || mapped_size <= 0 || mapped_size % 512 !== 0) return `mapped_size ${mapped_size} must be a positive multiple of 512`;
    if (mapped_size > store.block.size_bytes) return `mapped_size ${mapped_size} exceeds the store (${store.block.size_bytes} bytes)`;
    if (core.mapped_size !== 0 && core.mapped_size !== mapped_size) return `mapped_size ${mapped_size} differs from the pool's ${core.mapped_size}`;
    const clash = uuidConflict(this.known_uuid, `the pool server pool ${core.name} served`, store.poolUuid?.() ?? Buffer.alloc(16), "the store's header");
    if (clash !== null) return clash;
    const err = core.sm.state === 'NORMAL' || core.sm.state === 'NO_IO' ? null : core.sm.change('REGISTERED', `store registered (${mode})`);
    if (err !== null) return err;
    // The size stays set even when the metadata area turns out too small below.
    core.setGeometry(mapped_size, mode === 'create');
    if (store.meta.meta_size_bytes < store.meta_base + rmrMetaBytes(core.no_of_chunks)) {
      return `the store's metadata area is too small (${rmrMetaBytes(core.no_of_chunks)} bytes needed)`;
    }
    const intent = new IntentLog(store.meta, store.meta_base + MD_INTENT_OFFSET, {
      extent_shift: core.opts.intent_extent_shift,
      max_active: core.opts.intent_max_extents,
      requestFlush: () => this.requestFlush(),
    });
    core.attachStore(
      store,
      intent,
      new PoolMdStore(store.meta, store.meta_base + MD_POOL_OFFSET),
      new MapStore(store.meta, store.meta_base + MD_MAPS_OFFSET, Math.ceil(core.no_of_chunks / (PAGE_BYTES * 8))),
    );
    core.mapOf(core.member_id);
    if (mode === 'replace') {
      // An empty store takes this member's place (§9.8): every chunk comes from the peers, and
      // until they all hold this member fully dirty (SEND_DISCARD) the flag stays (persisted).
      core.markNoData(core.member_id);
      core.markDiscarded(core.member_id);
      core.noteMapChange();
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
    const core = this.core;
    if (core.store === null) return `pool ${core.name} has no store`;
    const own = core.ownMap();
    if (own !== undefined && own.entryCount > 0) return `${own.entryCount} chunk syncs in flight`;
    if (core.sm.state === 'NORMAL' || core.sm.state === 'CREATED') core.sm.change('NO_IO', reason);
    const err = core.sm.change('EMPTY', reason);
    if (err !== null) return err;
    this._pool_md = null;
    core.detachStore();
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
    const core = this.core;
    const ms = core.md_store;
    const maps = core.map_store;
    const intent = core.intent;
    if (ms === null || maps === null || intent === null) return cb(Errno.ENXIO, null, 'no store registered');
    ms.load((s1, md, md_notes) => {
      if (s1 === Errno.EBADMSG) return cb(s1, null, `pool metadata damaged in both copies (${md_notes.join('; ')}): delete_store and add the disk with mode=replace to resync it from its peers`);
      if (s1 !== 0) return cb(s1, null, 'pool metadata unreadable');
      if (md === null) {
        // No pool metadata: no pool knows this store as a member holding data (a create-mode
        // join persists pool_md before it answers), or it replaced a member's disk and the
        // replacement never reached it. Nothing on it is known good either way, so it is
        // taken as a replacement (§9.8): fully dirty for itself, the discard flag persisted
        // until every peer holds it fully dirty, never the authoritative member. Found by the
        // simulator (schedule 3, seed 10000085: a node crashed right after its disk was
        // replaced, came back from the empty disk with clean maps and kept zeroes where the
        // others held a durable write).
        core.ownMap()?.setAll();
        core.markDiscarded(core.member_id);
        core.noteMapChange();
        const report: RecoveryReport = { found: false, intent_chunks: 0, maps_lost: null, map_ver: core.map_ver, ...(md_notes.length > 0 ? { md_notes: [...md_notes] } : {}) };
        return this.persistMetadata((s) => cb(s, s === 0 ? report : null, s === 0 ? null : 'could not persist the metadata of a store taken as a replacement'));
      }
      if (md.header.pool_name !== core.name) return cb(Errno.EINVAL, null, `store belongs to pool ${md.header.pool_name}`);
      if (md.header.chunk_size !== core.chunk_size) return cb(Errno.EINVAL, null, `store has chunk_size ${md.header.chunk_size}`);
      const mine = md.srv_md.find((x) => x.member_id === core.member_id);
      if (mine === undefined) return cb(Errno.EINVAL, null, `store has no slot for member ${core.member_id}`);
      if (mine.mapped_size !== core.mapped_size) return cb(Errno.EINVAL, null, `store was ${mine.mapped_size} bytes, not ${core.mapped_size}`);
      // Identity (issue 19, item 6): the store's header, its pool_md and what this server pool
      // served before must name one pool. A name is not an identity: two clusters may both
      // have a pool "p", and a disk of one added to the other would be resynced over, or
      // serve, the other's data.
      const header_uuid = core.store?.poolUuid?.() ?? Buffer.alloc(16);
      const clash =
        uuidConflict(md.header.pool_uuid, "the store's pool metadata", header_uuid, "the store's header") ??
        uuidConflict(this.known_uuid, `the pool server pool ${core.name} served`, uuidUnset(md.header.pool_uuid) ? header_uuid : md.header.pool_uuid, 'the store added');
      if (clash !== null) return cb(Errno.EINVAL, null, clash);
      if (uuidUnset(md.header.pool_uuid) && !uuidUnset(header_uuid)) md.header.pool_uuid = Buffer.from(header_uuid);
      this.learnUuid(md.header.pool_uuid);
      this._pool_md = md;
      if (compareOwners({ epoch: md.owner.epoch, id: md.owner.id }, { epoch: this.owner.epoch, id: this.owner.id }) >= 0) this.owner = md.owner;
      this._queue_depth = md.header.queue_depth;
      for (const slot of md.srv_md) if (slot.member_id !== 0 && slot.discard_entries) core.markDiscarded(slot.member_id);
      core.raiseMapVersion(Math.max(mine.map_ver, md.header.map_ver));
      maps.load(core.no_of_chunks, (s2, loaded, map_ver, why, lost_before) => {
        let maps_lost: string | null = null;
        if (s2 === 0 && loaded !== null && !core.roomFor(loaded.map((m) => m.member_id))) {
          maps_lost = `stored maps of ${loaded.length} members do not fit beside this node's`;
        } else if (s2 !== 0 || (loaded === null && md !== null)) {
          maps_lost = why ?? 'no maps stored';
        } else if (loaded !== null) {
          for (const m of loaded) {
            const into = core.mapOf(m.member_id);
            for (let p = 0; p < m.page_count; p++) into.decodePage(p, m.encodePage(p), 'overwrite');
          }
          core.raiseMapVersion(map_ver);
          // Stored as "everything dirty" after a loss, and no map update replaced them since:
          // still no knowledge (a restart must not turn the loss into clean maps).
          if (lost_before) maps_lost = 'lost at an earlier start; no map update has replaced them since';
        }
        if (maps_lost !== null) {
          // Never read lost maps as clean (issue 19 item 3): this node lacks every chunk, and
          // what its peers lack is unknown, so every member the pool_md lists is dirty
          // everywhere here. Its maps name no source: the client never takes it as the map
          // source or the recovery base (MAP_GET_VER says so) until a map update replaces them
          // or the operator trusts its data (ENABLE_POOL with trust).
          core.markNoData(core.member_id);
          for (const slot of md.srv_md) if (slot.member_id !== 0 && slot.member_id !== core.member_id && core.roomFor([slot.member_id])) core.mapOf(slot.member_id).setAll();
          core.noteMapChange();
        }
        if (maps_lost !== null) {
          // Issue 19 item 3: said loudly (the store manager logs it at error level), and shown
          // in the status views until a map update replaces the maps.
          core.setMapsLost(maps_lost);
          core.emit({ kind: 'maps_lost', pool: core.name, member_id: core.member_id, reason: maps_lost });
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
          const crash = new DirtyMap<ParkedIo>(core.member_id, core.no_of_chunks);
          const ext_bytes = 2 ** intent.extent_shift;
          for (const e of extents) {
            const start = e * ext_bytes;
            if (start >= core.mapped_size) continue;
            const end = Math.min(start + ext_bytes, core.mapped_size);
            const first = Math.floor(start / core.chunk_size);
            crash.setDirty(first, Math.ceil(end / core.chunk_size) - first);
          }
          const marked = crash.dirtyCount;
          core.setCrashChunks(marked > 0 ? crash : null);
          const notes = [...md_notes, ...intent_notes];
          const report: RecoveryReport = { found: true, intent_chunks: marked, maps_lost, map_ver: core.map_ver, ...(notes.length > 0 ? { md_notes: notes } : {}) };
          this.persistMetadata((s4) => cb(s4, s4 === 0 ? report : null, s4 === 0 ? null : 'could not persist the recovered maps'));
        });
      });
    });
  }

  /** The pool metadata as this node knows it (built from its state when never loaded). */
  currentPoolMd(): PoolMd {
    const core = this.core;
    const md = this._pool_md;
    if (md !== null) {
      if (uuidUnset(md.header.pool_uuid)) md.header.pool_uuid = Buffer.from(this.poolUuid());
      md.owner = this.owner;
      return md;
    }
    return {
      header: { pool_name: core.name, pool_uuid: Buffer.from(this.poolUuid()), group_id: core.group_id, chunk_size: core.chunk_size, mapped_size: core.mapped_size, queue_depth: this._queue_depth, map_ver: core.map_ver },
      srv_md: [emptySrvMd(), emptySrvMd(), emptySrvMd(), emptySrvMd()],
      owner: this.owner,
    };
  }

  /** SEND_MD_BUF from the compute client: it owns the header part of pool_md (§3.6). */
  adoptClientMd(md: PoolMd): string | null {
    const core = this.core;
    if (md.header.pool_name !== core.name || md.header.chunk_size !== core.chunk_size) return 'pool metadata of another pool';
    if (md.header.mapped_size !== core.mapped_size) return `client pool size ${md.header.mapped_size} differs from ${core.mapped_size}`;
    // A client of another pool of this name is refused, never adopted (issue 19, item 6): it
    // overwrote the node's UUID, and the node then took that pool's maps and writes.
    const clash = uuidConflict(md.header.pool_uuid, 'the compute client', this.poolUuid(), `member ${core.member_id}`);
    if (clash !== null) return clash;
    const cur = this.currentPoolMd();
    // A client that has not learned the pool's UUID yet sends zeroes: the node keeps its own.
    const uuid = uuidUnset(md.header.pool_uuid) ? this.poolUuid() : md.header.pool_uuid;
    this.learnUuid(uuid);
    cur.header = { ...md.header, pool_uuid: uuid, map_ver: Math.max(md.header.map_ver, cur.header.map_ver) };
    this._pool_md = cur;
    this._queue_depth = md.header.queue_depth;
    return null;
  }

  // ------------------------------------------------------------------ persisting

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
    const changes = this.core.map_changes;
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
    if (this.core.map_changes === this.map_changes_durable) return cb(0);
    this.persistMetadata(cb);
  }

  private writeMetadata(cb: (status: number) => void): void {
    const core = this.core;
    const ms = core.md_store;
    const maps = core.map_store;
    if (ms === null || maps === null) return cb(Errno.ENXIO);
    const md = this.currentPoolMd();
    // Every member this node knows of has a slot, and only those (a deleted member's goes,
    // §9.6); its own slot carries its state.
    for (let i = 0; i < md.srv_md.length; i++) {
      const slot = md.srv_md[i] as SrvMd;
      if (slot.member_id !== 0 && !core.maps.has(slot.member_id)) md.srv_md[i] = emptySrvMd();
    }
    for (const id of core.maps.keys()) {
      if (md.srv_md.some((x) => x.member_id === id)) continue;
      const free = md.srv_md.find((x) => x.member_id === 0);
      if (free !== undefined) Object.assign(free, { member_id: id, mapped_size: core.mapped_size });
    }
    for (const slot of md.srv_md) if (slot.member_id !== 0) slot.discard_entries = core.discarded.has(slot.member_id);
    const mine = md.srv_md.find((x) => x.member_id === core.member_id);
    if (mine !== undefined) {
      Object.assign(mine, { srv_state: core.sm.state, store_state: core.store !== null, map_update_state: core.map_update_state, map_ver: core.map_ver, mapped_size: core.mapped_size });
    }
    md.header.map_ver = Math.max(md.header.map_ver, core.map_ver);
    // The first map gives the store's header a UUID: pool_md takes it.
    if (uuidUnset(md.header.pool_uuid)) md.header.pool_uuid = Buffer.from(this.poolUuid());
    this.learnUuid(md.header.pool_uuid);
    this._pool_md = md;
    ms.store(md, (s1) => {
      if (s1 !== 0) return cb(s1);
      maps.store(core.maps.values(), core.map_ver, cb, core.maps_lost !== null);
    });
  }

  /** The recovered intent extents are dealt with: once the maps are durable, the record forgets them. */
  releaseRecoveredIntent(): void {
    const intent = this.core.intent;
    if (intent === null) return;
    this.syncMaps((s) => {
      if (s === 0) intent.reset(() => undefined);
    });
  }

  // ------------------------------------------------------------------ the intent record

  /** The intent record's extents (the reference's last_io view), or null without a store. */
  intentRecord(): { extent_bytes: number; extents: number[] } | null {
    const intent = this.core.intent;
    if (intent === null) return null;
    return { extent_bytes: 2 ** this.core.opts.intent_extent_shift, extents: intent.recorded() };
  }

  /** The extents in the intent record now (what a crash would leave). */
  intentRecorded(): number[] {
    return this.core.intent?.recorded() ?? [];
  }

  // ------------------------------------------------------------------ peers

  /**
   * The reference's GET_PARAMS check when the sync pool is attached (add_clt, §7.1, §10.2):
   * every peer that answers must hold this pool: same name, chunk size, size and UUID. A
   * peer of another pool, or of another size, would otherwise feed chunk syncs with data of
   * other offsets or another pool. Peers that do not answer are not judged (they may be
   * down: the check runs again at the next add_clt). cb(mismatches or null, peers answered).
   */
  checkPeers(cb: (mismatch: string | null, answered: number) => void): void {
    const core = this.core;
    const src = core.sync_source;
    const peers = [...core.maps.keys()].filter((id) => id !== core.member_id);
    if (src === null || peers.length === 0) return cb(null, 0);
    let left = peers.length;
    let answered = 0;
    const bad: string[] = [];
    for (const id of peers) {
      src.peerQuery(id, { kind: 'md_read' }, (status, data) => {
        if (status === 0 && data !== null) {
          answered++;
          const why = this.peerMismatch(id, data);
          if (why !== null) bad.push(why);
        }
        if (--left === 0) cb(bad.length > 0 ? bad.join('; ') : null, answered);
      });
    }
  }

  /** Why a peer's pool_md is not of this pool, or null. */
  private peerMismatch(id: number, data: Buffer): string | null {
    const core = this.core;
    const theirs = decodePoolMd(data);
    if (typeof theirs === 'string') return `peer ${id}: pool metadata unreadable (${theirs})`;
    const h = theirs.header;
    if (h.pool_name !== core.name) return `peer ${id} holds pool ${h.pool_name}, not ${core.name}`;
    if (h.chunk_size !== core.chunk_size) return `peer ${id} has chunk size ${h.chunk_size}, this node ${core.chunk_size}`;
    const size = theirs.srv_md.find((x) => x.member_id === id)?.mapped_size ?? h.mapped_size;
    if (size !== 0 && core.mapped_size !== 0 && size !== core.mapped_size) return `peer ${id} holds ${size} bytes, this node ${core.mapped_size}`;
    return uuidConflict(h.pool_uuid, `peer ${id}`, this.poolUuid(), `member ${core.member_id}`);
  }

  /**
   * Metadata exchange (§8.7, the reference's MD_SEND between peers): each peer's own srv_md
   * slot, merged into this node's pool_md (persisted with the next metadata write).
   */
  exchangeMetadata(): void {
    const core = this.core;
    const src = core.sync_source;
    if (src === null || core.store === null) return;
    for (const id of core.maps.keys()) {
      if (id === core.member_id) continue;
      src.peerQuery(id, { kind: 'md_read' }, (status, data) => {
        if (status !== 0 || data === null || core.store === null) return;
        const theirs = decodePoolMd(data);
        if (typeof theirs === 'string' || theirs.header.pool_name !== core.name) return;
        // A peer of another pool of this name: its slot is not this pool's member.
        if (uuidConflict(theirs.header.pool_uuid, `peer ${id}`, this.poolUuid(), `member ${core.member_id}`) !== null) return;
        const slot = theirs.srv_md.find((x) => x.member_id === id);
        const md = this._pool_md;
        if (slot === undefined || md === null || slot.mapped_size !== core.mapped_size) return;
        const i = md.srv_md.findIndex((x) => x.member_id === id);
        if (i < 0) return;
        // The peer's state, not its view of discards (that one is this node's own knowledge).
        md.srv_md[i] = { ...slot, discard_entries: core.discarded.has(id) };
      });
    }
  }
}
