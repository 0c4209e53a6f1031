// A storage node pool's sessions and members (reference §4.3, §5.4, §9.5-§9.6): joins by the
// reference's acceptance matrix, ENABLE_POOL and maintenance, LEAVE_POOL, POOL_INFO, the sync
// pool (add_clt / remove_clt), STORE_CHECK and the upper layer's USER commands.

import { Errno } from '../../util/errno.js';
import { MAX_MEMBERS } from '../protocol/msg.js';
import type { MapSpread } from './map-spread.js';
import type { PoolMetadata } from './pool-metadata.js';
import type { ServerPoolCore, SyncSource } from './server-core.js';

export class Membership {
  private readonly core: ServerPoolCore;
  /** Enabled directly, this node is the source of its crash chunks (MapSpread.sourceChunks). */
  private readonly spread: MapSpread;
  private readonly metadata: PoolMetadata;

  constructor(core: ServerPoolCore, spread: MapSpread, metadata: PoolMetadata) {
    this.core = core;
    this.spread = spread;
    this.metadata = metadata;
  }

  /**
   * A JOIN_POOL from a compute client (non-sync) or a peer's sync pool, by the reference's
   * acceptance matrix (§4.3). `members` lists the client's other legs (and for create,
   * whether its map for each is dirty).
   */
  join(j: { sync: boolean; create: boolean; dirty: boolean; blank_ok?: boolean; rejoin?: boolean; extend?: boolean; chunk_size: number; members: { id: number; dirty: boolean }[] }): string | null {
    const core = this.core;
    if (j.chunk_size !== core.chunk_size) return `chunk_size ${j.chunk_size} differs from the pool's ${core.chunk_size}`;
    if (core.sm.state === 'EMPTY' || core.store === null) return `pool ${core.name} has no store`;
    if (j.sync) return null;
    if (j.create) {
      if (!core.marked_create) return `pool ${core.name} was added, not created: only assemble joins are accepted`;
      if (j.members.some((m) => m.id === 0) || !core.roomFor(j.members.map((m) => m.id))) return `a pool has 1 to ${MAX_MEMBERS} members with ids 1..255`;
      // Extend (§9.7): a new member on a live pool waits for its maps out of IO service
      // (the reference reuses CREATED and lets MAP_READY in there).
      const err = core.sm.change(j.extend === true ? 'NO_IO' : 'CREATED', j.extend === true ? 'extend join' : 'create-mode join');
      if (err !== null) return err;
      // Beside members whose stores were all blank, a blank store holds what they hold (all
      // zeroes): no initial sync (a 15 TiB pair would otherwise copy zeroes for days).
      const same_as_others = j.blank_ok === true && j.extend !== true && this.storeBlank();
      if ((j.dirty && !same_as_others) || j.extend === true) core.markNoData(core.member_id);
      for (const m of j.members) if (m.id !== core.member_id) core.mapOf(m.id, m.dirty);
      core.createJoined();
    } else {
      if (core.marked_create) return `pool ${core.name} was created and awaits its create-mode join`;
      const err = core.sm.change('NO_IO', j.rejoin === true ? 'rejoin' : 'assemble join');
      if (err !== null) return err;
      // A map update under way is void: a MAP_DONE that arrives after the client came back
      // (replayed by the transport) must not enable the node.
      core.voidMapUpdate();
      // A rejoin is the same client coming back: it must get a map before serving IO.
      if (j.rejoin === true && core.client_sessions > 0) return null;
    }
    // A new compute client (not a rejoin): what its predecessor left unsettled in the intent
    // record stays until the client-crash reconciliation.
    if (j.rejoin !== true) core.intent?.newClient();
    core.clientJoined();
    return null;
  }

  /** The store reads as zeroes and was never written (RegisteredStore.blank). */
  storeBlank(): boolean {
    return this.core.store?.blank?.() === true;
  }

  /**
   * ENABLE_POOL from the compute client (§5.4). With `trust` (beyond the reference, issue 19
   * item 3) the operator names this node's data the newest the pool has although its maps
   * were lost: it becomes clean for itself and every other member dirty everywhere, so the
   * others resync every chunk from it.
   */
  enable(on: boolean, trust = false): string | null {
    const core = this.core;
    if (trust) {
      if (!on) return 'trust goes with enable';
      if (core.maps_lost === null) return 'this node\'s maps are intact: nothing to trust (its maps decide the sources)';
      if (core.sm.state !== 'NO_IO' || core.maintenance) return `trust needs the node out of IO service and out of maintenance (it is ${core.sm.state}${core.maintenance ? ', in maintenance' : ''})`;
    }
    if (on) {
      if (core.maintenance) {
        core.setMaintenance(false);
        return null; // leaving maintenance does not enable; a map update will
      }
      // Lost maps name no source and know nothing of what the others lack (issue 19 item 3):
      // served as they are, every chunk would wait for a peer no map names, and the members
      // that missed writes would come back clean from this node's spread.
      if (core.maps_lost !== null && !trust && core.sm.state !== 'NORMAL') return `this node's maps were lost (${core.maps_lost}): it is no map source; a map update from a member with maps brings it back, or the operator trusts its data (trust_data)`;
      // As MAP_READY (ServerPoolCore.writesInStore): no late write after the enable.
      if (core.sm.state !== 'NORMAL' && core.writesInStore > 0) return `${core.writesInStore} write(s) from before the node left service still in its store`;
      if (trust) {
        for (const id of core.maps.keys()) if (id !== core.member_id) core.mapOf(id).setAll();
        core.ownMap()?.clear(0, core.no_of_chunks);
        core.setMapsLost(null);
        core.noteMapChange();
      }
      const err = core.sm.change('NORMAL', 'enable');
      // It serves again after a recovery: whatever a former client left unsettled in the
      // intent record has been dealt with (Cases 3/4 run INTENT_TO_MAP with the record before
      // enabling). Without this, a leg disassembled and assembled again by a live client
      // would pin its extents for good.
      if (err === null) core.reconcileIntent();
      // Enabled directly (the last authoritative member): this node is the source of its
      // intent chunks, which every other member resyncs from it. Its crash may have lost
      // writes there that the others kept. None was durable: a FLUSH that succeeded while
      // this node served reached its disk, and a node that comes back to IO service flushes
      // what it took before it left (ServerPool.flushBeforeService), so
      // without this the members stay different. Found by the simulator (seeds 4009, 4057,
      // 4127 with crashes: the last authoritative node lost unflushed writes at a power loss
      // and was enabled directly; a peer kept the newer data and was never marked dirty).
      const crash = core.crash_chunks;
      if (err === null && crash !== null) {
        if (this.spread.sourceChunks(crash.runs()) > 0) core.noteMapChange();
        core.setCrashChunks(null);
        this.metadata.releaseRecoveredIntent();
      }
      return err;
    }
    const err = core.sm.change('NO_IO', 'maintenance on');
    if (err === null) core.setMaintenance(true);
    return err;
  }

  /** ENABLE_POOL(2): maintenance off; the node stays out of IO service until it has a map. */
  maintenanceOff(): string | null {
    this.core.setMaintenance(false);
    return null;
  }

  /** LEAVE_POOL of the compute client. */
  leave(member_id: number, del: boolean): string | null {
    const core = this.core;
    if (member_id !== core.member_id) return `member ${member_id} is not this node (${core.member_id})`;
    core.clientLeft();
    if (core.sm.state !== 'EMPTY' && core.sm.state !== 'REGISTERED') {
      const e = core.sm.change('NO_IO', 'leave');
      if (e !== null) return e;
    }
    if (del) core.forgetOtherMembers();
    if (core.client_sessions === 0) return core.sm.change(core.store !== null ? 'REGISTERED' : 'EMPTY', 'last client left');
    return null;
  }

  /** POOL_INFO: a member was added to or removed from the pool (§5.4). */
  poolInfo(member_id: number, op: 'add' | 'remove', mode: 'create' | 'assemble' | 'delete' | 'disassemble', dirty: boolean): string | null {
    const core = this.core;
    if (op === 'add') {
      if (mode === 'create') {
        if (!core.roomFor([member_id])) return `pool ${core.name} already has ${MAX_MEMBERS} members`;
        // A new member starts fully dirty here even if a piggyback created its map first.
        if (dirty) core.markNoData(member_id);
        else core.mapOf(member_id);
        core.noteMapChange();
      } else if (!core.maps.has(member_id)) {
        // assemble: the member exists; a node that does not know it yet (its store was
        // replaced, its metadata is new) learns of it; its maps come with the next spread.
        if (!core.roomFor([member_id])) return `pool ${core.name} already has ${MAX_MEMBERS} members`;
        core.mapOf(member_id);
        core.noteMapChange();
      }
      return null;
    }
    if (mode === 'delete') {
      if (member_id === core.member_id) return 'cannot delete this node through POOL_INFO';
      core.forgetMember(member_id);
      core.noteMapChange();
    }
    // disassemble: keep the map so dirtiness keeps accumulating.
    return null;
  }

  /** add_clt: attaches the node's sync pool (the peers), the reference's `add_clt` file. */
  addClt(source: SyncSource): string | null {
    const core = this.core;
    if (core.sync_source !== null) return 'a sync pool is attached already';
    core.sync_source = source;
    return null;
  }

  /** remove_clt: detaches it; chunk syncs then fail until one is attached again. */
  removeClt(): void {
    this.core.sync_source = null;
  }

  /**
   * Why delete_store must not wipe this store, or null: it is a live member of its pool (a
   * compute client is joined, or the node still counts other members beside it: they count
   * on its copy and list it in their pool_md). The client's del_sess mode=delete (LEAVE_POOL
   * with delete) takes it out of the pool first; `force` overrides (issue 19, item 6).
   */
  deleteRefusal(): string | null {
    const core = this.core;
    if (core.store === null) return null;
    if (core.client_sessions > 0) return `member ${core.member_id} of pool ${core.name} has a compute client joined (${core.state.toLowerCase()}): del_sess mode=delete on the client first, or force`;
    const others = [...core.maps.keys()].filter((id) => id !== core.member_id);
    if (others.length > 0) {
      return `member ${core.member_id} is still a member of pool ${core.name} beside member(s) ${others.join(', ')}, which count on its copy: del_sess mode=delete on the compute client takes it out of the pool first, or force`;
    }
    return null;
  }

  /** STORE_CHECK: may the store serve IO? */
  storeCheck(): boolean {
    const store = this.core.store;
    return store !== null && store.ioAllowed();
  }

  /** USER: passed to the store; RMR adds nothing (§5.6). */
  userCommand(bytes: Buffer, rsp_len: number, cb: (status: number, rsp: Buffer | null) => void): void {
    const store = this.core.store;
    if (store === null || store.submitCmd === undefined) return cb(Errno.EOPNOTSUPP, null);
    store.submitCmd(bytes, rsp_len, (status, rsp) => cb(status, rsp !== null && rsp.length > rsp_len ? null : rsp));
  }
}
