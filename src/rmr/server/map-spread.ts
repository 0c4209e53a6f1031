// A storage node pool's dirty maps in motion (reference §5.5, §8.2-§8.6, §9.8): the map
// spread (MAP_READY .. MAP_DONE, MAP_SEND), the map messages (MAP_ADD, MAP_CLEAR, MAP_MARK),
// INTENT_TO_MAP and OWN_DIRTY, the discard coordination of a replaced store, and the
// peer-map check.

import { Errno } from '../../util/errno.js';
import { type DirtyMap, PAGE_BYTES } from '../protocol/dirty-map.js';
import { mapTestAnswer, type PeerMapCommand } from '../protocol/leg-commands.js';
import { MAX_MEMBERS, type MapAddValue, type MapClearValue } from '../protocol/msg.js';
import type { PoolMetadata } from './pool-metadata.js';
import type { ParkedIo, ServerPoolCore } from './server-core.js';

export class MapSpread {
  private readonly core: ServerPoolCore;
  /** A completed map update lets the recovered intent extents go (once the maps are durable). */
  private readonly metadata: PoolMetadata;

  constructor(core: ServerPoolCore, metadata: PoolMetadata) {
    this.core = core;
    this.metadata = metadata;
  }

  /**
   * Peer-map cleaning (§8.6), run every few seconds: a peer that reports its own map empty
   * gets this node's copy of its map wiped, unless the copy changed since the question (a
   * MAP_ADD or piggyback raced with it). Collects what lost MAP_CLEARs left behind.
   */
  checkPeerMaps(): void {
    const core = this.core;
    const src = core.sync_source;
    if (src === null || core.sm.state !== 'NORMAL') return;
    for (const m of core.maps.values()) {
      if (m.member_id === core.member_id || m.isEmpty()) continue;
      const ts_asked = m.ts;
      const dirty_asked = m.dirtyCount;
      src.peerMapCheck(m.member_id, (status, empty) => {
        if (status === 0 && empty && m.ts === ts_asked && m.dirtyCount === dirty_asked) m.clearAll(m.ts);
      });
    }
  }

  /** MAP_CHECK: is this node NORMAL with a clean own map? */
  mapCheck(): boolean {
    return this.core.sm.state === 'NORMAL' && (this.core.ownMap()?.isEmpty() ?? false);
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
    const core = this.core;
    if (from_sync) return 'MAP_READY from a sync pool';
    if (core.sm.state !== 'NO_IO' && core.sm.state !== 'CREATED') return `MAP_READY in state ${core.sm.state}`;
    if (core.map_update_state !== 'DISABLED') return `map update already ${core.map_update_state}`;
    // The drain of issue 19, item 4 (ServerPoolCore.writesInStore): the client retries.
    if (core.writesInStore > 0) return `${core.writesInStore} write(s) from before the node left service still in its store`;
    core.startMapUpdate();
    return null;
  }

  /** SEND_MAP_BUF: pages of one member's map from the map source. */
  receiveMapBuf(member_id: number, first_page: number, page_count: number, pages: Buffer, from_sync: boolean): string | null {
    const core = this.core;
    if (core.map_update_state !== 'READY') return `map buffer while map update is ${core.map_update_state}`;
    const fail = (why: string): string => {
      if (!from_sync && core.sm.state !== 'EMPTY' && core.sm.state !== 'REGISTERED') core.sm.change('NO_IO', why);
      return why;
    };
    const staged = core.staged;
    if (staged === null) return `map buffer without a map update`;
    if (pages.length !== page_count * PAGE_BYTES) return fail(`map buffer of ${pages.length} bytes for ${page_count} pages`);
    let map = staged.get(member_id);
    if (map === undefined) {
      // The maps kept and the ones received together fit (those the source lacks stay, empty).
      const fresh = [...staged.keys()].filter((id) => !core.maps.has(id)).length;
      if (!core.maps.has(member_id) && core.maps.size + fresh >= MAX_MEMBERS) return fail(`no room for member ${member_id}'s map`);
      map = core.stageMap(member_id);
    }
    for (let i = 0; i < page_count; i++) {
      const err = map.decodePage(first_page + i, pages.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES), 'overwrite');
      if (err !== null) return fail(`map page of member ${member_id}: ${err}`);
    }
    return null;
  }

  /** MAP_BUF_DONE: the source sent everything; adopt its version (never an older one). */
  mapBufDone(map_ver: number): string | null {
    const core = this.core;
    if (core.map_update_state !== 'READY') return `MAP_BUF_DONE while map update is ${core.map_update_state}`;
    if (map_ver < core.map_ver) return `map version ${map_ver} older than ours (${core.map_ver})`;
    if (core.staged === null) return 'MAP_BUF_DONE without a map update';
    core.raiseMapVersion(map_ver);
    // What this node knows it lacks (a crash's intent chunks, misses it was told of) stays
    // true until it syncs those chunks, whatever the source says (the client marked it on
    // the source before the spread); where every other member is stale too, this node keeps
    // the newest data. Found by the simulator: a node restarted after a power loss dropped
    // its intent chunks at the first spread and kept stale data.
    const own = core.ownMap();
    const lacks = own === undefined ? [] : own.runs();
    core.replaceMaps();
    if (lacks.length > 0) this.mapMark(core.member_id, lacks, true);
    // A replaced member stays fully dirty until its discard is confirmed everywhere (§9.8).
    for (const id of core.discarded) core.markNoData(id);
    // The client marked them on the source (MAP_MARK, conditional) before the spread, so
    // the received maps say it already; the same rule here covers a source that lacked them.
    this.decideCrashChunks();
    core.setMapUpdate('DONE');
    return null;
  }

  /**
   * The chunks a crash of this node left undecided (its intent record at the restart: writes
   * that may have reached a peer and not this disk) become dirty for it, unless every other
   * member is stale there too (then it keeps the newest data it has). Done once, before this
   * node's maps choose a source (INTENT_TO_MAP), are sent (MAP_SEND) or are replaced
   * (MAP_BUF_DONE): a map that says "clean" is read everywhere as "holds the data". Only a
   * direct enable of the last authoritative member (ServerMembership.enable) makes the node
   * the source of them instead. Found by the simulator (seed 40002141: the base of a
   * client-crash reconciliation, restarted after a power loss, became the single source of a
   * chunk where it had lost a write a FLUSH had made durable on its peer).
   */
  decideCrashChunks(): void {
    const core = this.core;
    const crash = core.crash_chunks;
    if (crash === null) return;
    this.mapMark(core.member_id, crash.runs(), true);
    core.noteMapChange();
    core.setCrashChunks(null);
    this.metadata.releaseRecoveredIntent();
  }

  /**
   * MAP_DONE: the client closes the update; with `enable` the node serves IO again. Unlike
   * the reference (§12.4), a node whose update did not reach DONE is not promoted.
   */
  mapDone(enable: boolean): string | null {
    const core = this.core;
    const reached = core.map_update_state === 'DONE';
    core.voidMapUpdate();
    if (!reached) return 'map update did not complete';
    if (!enable) return null;
    // The client spreads only to a leg it took out of maintenance.
    core.setMaintenance(false);
    const err = core.sm.change('NORMAL', 'map update done');
    // It serves again after a recovery: what a former client left unsettled in the intent
    // record has been dealt with (Case 1 follows a rejoin of the same, live client).
    if (err === null) core.reconcileIntent();
    return err;
  }

  /** MAP_DISABLE: the spread failed; out of IO service until the next one. */
  mapDisable(from_sync: boolean): void {
    const core = this.core;
    core.voidMapUpdate();
    if (!from_sync && (core.sm.state === 'NORMAL' || core.sm.state === 'CREATED')) core.sm.change('NO_IO', 'map update disabled');
  }

  /**
   * MAP_SEND: stream every map this node holds to the receiver through the sync pool, then
   * MAP_BUF_DONE with this node's version (raised to the client's first). `cb` gets 0 once
   * the receiver has all of it.
   */
  mapSend(receiver_member_id: number, client_map_ver: number, cb: (status: number) => void): void {
    const core = this.core;
    const src = core.sync_source;
    if (src === null) return cb(Errno.ENOTCONN);
    // NO_IO too: in the client-crash reconciliation (Cases 3/4) no member is NORMAL yet.
    // ENODEV says this node is no map source (the client then fails its leg).
    if ((core.sm.state !== 'NORMAL' && core.sm.state !== 'NO_IO') || core.store === null) return cb(Errno.ENODEV);
    if (core.map_update_state !== 'DISABLED') return cb(Errno.EBUSY);
    // The client owns the version: a source enabled as last authoritative may have missed
    // bumps a receiver saw; without this the receiver refuses the complete map as older.
    // Found by the simulator (seed 45).
    core.raiseMapVersion(client_map_ver);
    this.decideCrashChunks();
    const per_msg = Math.max(1, Math.floor(src.max_io_size / PAGE_BYTES));
    const maps = [...core.maps.values()];
    // One batch at a time, encoded when it is sent: a 64 TiB pool's maps are 64 MiB each,
    // not something to hold in memory twice. MAP_BUF_DONE goes after every page.
    const next = (mi: number, page: number): void => {
      const m = maps[mi];
      if (m === undefined) {
        return src.peerCommand(receiver_member_id, { kind: 'map_buf_done', map_ver: core.map_ver }, cb);
      }
      if (page >= m.page_count) return next(mi + 1, 0);
      const n = Math.min(per_msg, m.page_count - page);
      const pages = Buffer.alloc(n * PAGE_BYTES);
      for (let i = 0; i < n; i++) m.encodePage(page + i, pages.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES));
      const job: PeerMapCommand = { kind: 'send_map_buf', member_id: m.member_id, first_page: page, page_count: n, map_ver: core.map_ver, pages };
      src.peerCommand(receiver_member_id, job, (status) => (status !== 0 ? cb(status) : next(mi, page + n)));
    };
    next(0, 0);
  }

  // ------------------------------------------------------------------ map messages

  /** MAP_ADD: chunks became dirty for the listed members (§5.5). */
  mapAdd(m: MapAddValue): number {
    const core = this.core;
    // Only a node in IO service records misses (the client acknowledges the write on it): a
    // node out of service gets all its maps at its next spread, and one whose store was just
    // replaced holds none of the data. Found by the simulator (seed 2026: a MAP_ADD to a node
    // whose disk had been replaced acknowledged writes that only its old disk held).
    if (core.sm.state !== 'NORMAL') return Errno.EIO;
    if (m.first_chunk + m.chunk_count > core.no_of_chunks) return Errno.EINVAL;
    const ids = [...m.failed_ids.subarray(0, m.failed_cnt)];
    if (!core.roomFor(ids)) return Errno.ENOSPC; // nothing applied
    for (const id of ids) core.mapOf(id).setDirty(m.first_chunk, m.chunk_count);
    core.raiseMapVersion(m.map_ver);
    core.noteMapChange();
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
  intentToMap(ranges: readonly (readonly [number, number])[], with_intent: boolean): number | string {
    const core = this.core;
    for (const [first, count] of ranges) if (first + count > core.no_of_chunks || count < 0) return `chunk range ${first}+${count} beyond ${core.no_of_chunks}`;
    // Ranges, not a set of chunks: a range may cover the whole device (2^30 chunks at 64 TiB).
    const all: (readonly [number, number])[] = [...ranges];
    // Before the intent record is read: the record kept at a restart is the crash's, decided
    // as its own chunks here; a live record of this node's last writes is what stays.
    this.decideCrashChunks();
    const intent = core.intent;
    if (with_intent && intent !== null) {
      const ext_bytes = 2 ** intent.extent_shift;
      for (const e of intent.recorded()) {
        const start = e * ext_bytes;
        if (start >= core.mapped_size) continue;
        const first = Math.floor(start / core.chunk_size);
        all.push([first, Math.ceil(Math.min(start + ext_bytes, core.mapped_size) / core.chunk_size) - first]);
      }
    }
    const sourced = this.sourceChunks(all);
    if (sourced > 0) core.noteMapChange();
    return sourced;
  }

  /**
   * Gives each chunk of `ranges` one source and makes it dirty for every other member: this
   * node where its own map is clean, else the lowest member clean for it here; a chunk dirty
   * for every member is left alone. Returns the number of chunks given a source.
   */
  sourceChunks(ranges: readonly (readonly [number, number])[]): number {
    const core = this.core;
    const own = core.mapOf(core.member_id);
    const ids = [...core.maps.keys()].sort((a, b) => a - b);
    const others = ids.filter((id) => id !== core.member_id).map((id) => core.maps.get(id) as DirtyMap<ParkedIo>);
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
        const source = ids.find((id) => !(core.maps.get(id) as DirtyMap<ParkedIo>).isDirty(pos));
        if (source !== undefined) {
          for (const id of ids) if (id !== source) (core.maps.get(id) as DirtyMap<ParkedIo>).setDirty(pos, 1);
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
    const core = this.core;
    const own = core.ownMap();
    const crash = core.crash_chunks;
    const out: [number, number][] = [];
    if (own === undefined) return [out, 0];
    const nextOf = (m: DirtyMap<ParkedIo> | null, c: number): number => {
      if (m === null) return -1;
      return m.nextDirty(c);
    };
    let c = Math.max(0, from);
    while (c < core.no_of_chunks && out.length < max) {
      const a = own.nextDirty(c);
      const b = nextOf(crash, c);
      const start = a < 0 ? b : b < 0 ? a : Math.min(a, b);
      if (start < 0) return [out, 0];
      // The run ends where both are clean.
      let end = start;
      for (;;) {
        const e1 = own.isDirty(end) ? own.nextClean(end) : end;
        const e2 = crash !== null && e1 < core.no_of_chunks && crash.isDirty(e1) ? crash.nextClean(e1) : e1;
        if (e2 === end || e2 >= core.no_of_chunks) {
          end = Math.min(e2, core.no_of_chunks);
          break;
        }
        end = e2;
      }
      if (end === start) end = start + 1;
      out.push([start, end - start]);
      c = end;
    }
    return [out, c >= core.no_of_chunks ? 0 : c];
  }

  /**
   * SEND_DISCARD (§9.8): `member_id`'s store was replaced; it holds nothing. Its map here is
   * fully dirty and stays so (even across spreads) until DISCARD_CLEAR_FLAG.
   */
  sendDiscard(member_id: number): string | null {
    const core = this.core;
    if (!core.roomFor([member_id])) return `no room for member ${member_id}'s map`;
    core.markNoData(member_id);
    core.markDiscarded(member_id);
    core.noteMapChange();
    return null;
  }

  /** DISCARD_CLEAR_FLAG: every member holds `member_id` fully dirty; the flag goes. */
  discardClear(member_id: number): string | null {
    this.core.clearDiscarded(member_id);
    return null;
  }

  /**
   * MAP_MARK: the ranges become dirty for `member_id`. `conditional`: only the chunks some
   * other member is clean for here (a restarted node's crash chunks: it may lack writes
   * there, but where every other member is stale it holds the newest data and stays their
   * source). Returns the number of chunks newly dirty.
   */
  mapMark(member_id: number, ranges: readonly (readonly [number, number])[], conditional: boolean): number | string {
    const core = this.core;
    for (const [first, count] of ranges) if (first + count > core.no_of_chunks || count < 0) return `chunk range ${first}+${count} beyond ${core.no_of_chunks}`;
    if (!core.roomFor([member_id])) return `no room for member ${member_id}'s map`;
    const target = core.mapOf(member_id);
    const others = [...core.maps.values()].filter((m) => m.member_id !== member_id);
    let marked = 0;
    for (const [first, count] of ranges) {
      if (!conditional) {
        marked += target.setDirty(first, count);
        continue;
      }
      for (let c = first; c < first + count; c++) if (others.some((m) => !m.isDirty(c))) marked += target.setDirty(c, 1);
    }
    if (marked > 0) core.noteMapChange();
    return marked;
  }

  /**
   * MAP_TEST (reference §5.4, test only): the sender's CRC32C of each page of `member_id`'s
   * map from `first_page`, compared with this node's pages. The reference pushes the pages
   * themselves and only logs a mismatch; the checksums cost 4 bytes a page on the wire (a
   * 15 TiB map of 128 KiB chunks has 3,840 pages, 15 MiB of bitmap) and the answer says
   * which pages differ, and which maps this node holds. Returns the pages not the same.
   */
  mapTest(member_id: number, first_page: number, crcs: Buffer): { differing: number; answer: Buffer } | string {
    return mapTestAnswer(this.core.maps, member_id, first_page, crcs);
  }

  /**
   * MAP_SET_VER (reference §3.7; its client sender is compiled out): the compute client sets
   * the pool's map version on its NORMAL members. Versions only rise here: a lower one is
   * refused, since a node whose version went back could lose the base choice of Cases 3/4 to
   * a staler member (or a staler one win it).
   */
  mapSetVer(map_ver: number): string | null {
    const core = this.core;
    if (!Number.isSafeInteger(map_ver) || map_ver < 1) return `map version ${map_ver}`;
    if (map_ver < core.map_ver) return `map version ${map_ver} is older than this node's ${core.map_ver}: versions never go back`;
    core.raiseMapVersion(map_ver);
    return null;
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
    const core = this.core;
    const map = core.maps.get(m.member_id);
    if (map === undefined || m.first_chunk + m.chunk_count > core.no_of_chunks) return Errno.EINVAL;
    if (m.member_id === core.member_id) return Errno.EINVAL; // only peers report their own chunks
    if (m.map_ver < core.map_ver) return 0;
    map.clear(m.first_chunk, m.chunk_count);
    return 0;
  }
}
