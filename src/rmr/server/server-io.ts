// A storage node pool's IO (reference §6.5-§6.7, §7.2): admission, "lock, sync, resume" for
// dirty chunks over the whole chunk range of an IO, completion bookkeeping (piggybacked failed
// members, map version, intent record), flushes, and chunk sync from a peer. Also what the
// background sync asks of the pool (its SyncTarget).

import { Errno } from '../../util/errno.js';
import { type DirtyMap, chunkRange } from '../protocol/dirty-map.js';
import { IO_F_FUA, IO_OP_MASK, IoOp, MAX_MEMBERS, type IoMsgValue } from '../protocol/msg.js';
import type { IntentLog } from './intent-log.js';
import type { PoolMetadata } from './pool-metadata.js';
import type { ParkedIo, RegisteredStore, ServerPoolCore } from './server-core.js';

export class ServerIo {
  private readonly core: ServerPoolCore;
  /** Makes the map changes of FUA writes and flushes durable before their answers. */
  private readonly metadata: PoolMetadata;

  constructor(core: ServerPoolCore, metadata: PoolMetadata) {
    this.core = core;
    this.metadata = metadata;
  }

  /** The background sync may run: NORMAL, with a store and peers to read from. */
  canSync(): boolean {
    const core = this.core;
    return core.sm.state === 'NORMAL' && core.store !== null && core.sync_source !== null;
  }

  appBytes(): number {
    return this.core.stats.app_bytes;
  }

  appIos(): number {
    return this.core.stats.app_ios;
  }

  /**
   * An IO message (§6.5-§6.7). `from_sync`: sent by a peer's sync pool (reads only).
   * `data`: the write payload (empty otherwise). `reply` gets the status and read data.
   */
  handleIo(io: IoMsgValue, data: Buffer, from_sync: boolean, answer: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    // A node that fails a client IO leaves IO service: the client marks the leg FAILED and
    // records the write as missed elsewhere, so this node must not go on serving (stale)
    // reads to its peers. Found by the simulator (seed 15: a chunk sync failed under a
    // discard, the node stayed NORMAL, and a returning peer synced stale data from it).
    // Only an IO of the current service period counts: one admitted before the node left
    // service and came back (parked behind a chunk sync that was then voided) says nothing
    // about the maps the node got since.
    const epoch = core.sm.service_epoch;
    const reply = from_sync
      ? answer
      : (status: number, d: Buffer | null): void => {
          if (status !== 0 && core.sm.state === 'NORMAL' && core.sm.service_epoch === epoch) core.sm.change('NO_IO', `failed a client IO (${status})`);
          answer(status, d);
        };
    const op = io.flags & IO_OP_MASK;
    const store = core.store;
    // The client's settled mark lets intent extents go (every IO carries it). A zero-length
    // read is its beacon when no other IO flows: it moves no data, so it needs no admission.
    if (!from_sync) core.intent?.settle(io.settled);
    if (!from_sync && op === IoOp.READ && io.length === 0 && data.length === 0) return answer(0, Buffer.alloc(0));
    // Admission (§6.5): a refused client IO takes the pool out of IO service.
    let refusal: string | null = null;
    if (store === null) refusal = 'no store';
    else if (core.sm.state !== 'NORMAL') refusal = `state ${core.sm.state}`;
    else if (from_sync && op !== IoOp.READ) refusal = 'peers may only read';
    else if (!from_sync && !store.ioAllowed()) refusal = 'store does not allow IO';
    if (refusal !== null || store === null) {
      core.stats.refused++;
      if (!from_sync && core.sm.state === 'NORMAL') core.sm.change('NO_IO', `IO refused: ${refusal ?? ''}`);
      return reply(Errno.EIO, null);
    }
    if (io.offset + io.length > core.mapped_size) return reply(Errno.EINVAL, null);
    if (op === IoOp.WRITE && data.length !== io.length) return reply(Errno.EINVAL, null);
    if (op !== IoOp.WRITE && data.length !== 0) return reply(Errno.EINVAL, null);
    if (op === IoOp.FLUSH) return this.flush(reply);
    if (op !== IoOp.READ && op !== IoOp.WRITE && op !== IoOp.DISCARD && op !== IoOp.WRITE_ZEROES) return reply(Errno.EOPNOTSUPP, null);
    if (io.length === 0) return reply(0, op === IoOp.READ ? Buffer.alloc(0) : null);
    if (!from_sync) {
      core.stats.app_bytes += io.length;
      core.stats.app_ios++;
    }
    this.submitChecked({ io, data, reply }, from_sync);
  }

  /** Step §6.6: serve the IO if its chunk range is clean for this node, else sync first. */
  private submitChecked(p: ParkedIo, from_sync: boolean): void {
    const core = this.core;
    const own = core.ownMap() as DirtyMap<ParkedIo>;
    const [first, count] = chunkRange(p.io.offset, p.io.length, core.chunk_size);
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
    core.stats.parked++;
    const e = own.entry(dirty);
    e.waiters.push(p);
    if (e.sync_cnt === -1) this.syncChunk(dirty);
  }

  private submit(p: ParkedIo): void {
    const core = this.core;
    const store = core.store as RegisteredStore;
    const { io, data, reply } = p;
    const op = io.flags & IO_OP_MASK;
    if (op === IoOp.READ) {
      core.stats.reads++;
      return store.block.read(io.offset, io.length, (status, d) => {
        if (status !== 0) this.storeError('read', status);
        reply(status, status === 0 ? d : null);
      });
    }
    core.stats.writes++;
    const fua = (io.flags & IO_F_FUA) !== 0;
    const intent = core.intent as IntentLog;
    const epoch = core.sm.service_epoch;
    const go = (st: number): void => {
      if (st !== 0) {
        // No intent record, no crash consistency: refuse the write.
        this.storeError('intent record', st);
        return reply(st, null);
      }
      // A write admitted in an earlier service period (it waited for the intent record while
      // the node left service, and maybe came back) is not applied: the client has counted
      // it as missed here, and a resync may have written newer data since (issue 19, item 4).
      if (core.sm.state !== 'NORMAL' || core.sm.service_epoch !== epoch) {
        intent.end(io.offset, io.length, false);
        return reply(Errno.ECANCELED, null);
      }
      const answered = core.storeWriteBegins();
      const done = (status: number): void => {
        answered();
        intent.end(io.offset, io.length, fua && status === 0);
        if (status !== 0) {
          this.storeError(op === IoOp.WRITE ? 'write' : op === IoOp.DISCARD ? 'discard' : 'write-zeroes', status);
          return reply(status, null);
        }
        // Completion bookkeeping (§6.7): the piggybacked members missed this range.
        if (io.failed_cnt > 0) {
          const [first, count] = chunkRange(io.offset, io.length, core.chunk_size);
          for (let i = 0; i < io.failed_cnt; i++) {
            const id = io.failed_ids[i] as number;
            if (id === core.member_id || (!core.maps.has(id) && core.maps.size >= MAX_MEMBERS)) continue;
            if (core.mapOf(id).setDirty(first, count) > 0) core.noteMapChange();
          }
          core.raiseMapVersion(io.map_ver);
        }
        // A FUA write is durable with what it recorded about the members that missed it.
        if (fua) return this.metadata.syncMaps((s) => reply(s, null));
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
  flushForIntent(): void {
    this.flushStore(() => undefined);
  }

  /**
   * One store flush, for clients and for the intent record. A failed flush leaves the
   * durability of earlier writes unknown: the store leaves service and the intent record
   * refuses further writes (its waiters get the error instead of waiting for a flush that
   * will not come).
   */
  flushStore(cb: (status: number) => void): void {
    const store = this.core.store;
    const intent = this.core.intent;
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
      this.metadata.syncMaps((s2) => {
        if (s2 === 0) intent.flushDone(covered);
        cb(s2);
      });
    });
  }

  /** A backend error: the node leaves IO service (§6.7), visibly. */
  private storeError(op: string, status: number): void {
    const core = this.core;
    core.stats.store_errors++;
    core.emit({ kind: 'store_error', pool: core.name, op, status });
    if (core.sm.state === 'NORMAL' || core.sm.state === 'CREATED' || core.sm.state === 'REGISTERED') core.sm.change('NO_IO', `store ${op} failed (${status})`);
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
    const core = this.core;
    const own = core.ownMap() as DirtyMap<ParkedIo>;
    const e = own.entry(chunk);
    if (e.sync_cnt !== -1) {
      done?.(Errno.EBUSY);
      return;
    }
    const src = core.sync_source;
    const store = core.store;
    const epoch = core.sm.service_epoch;
    // What the pulled data can vouch for: the maps as they are now. A map update received
    // meanwhile may say this node missed a write to the chunk after the peer's read (the
    // sync is older than that record): the chunk stays dirty and is synced again. The
    // peers get the version of now with the MAP_CLEAR (see MapSpread.mapClear).
    const map_ver = core.map_ver;
    const updates = core.map_updates;
    const finish = (result: number): void => {
      const status = result === 0 && (core.sm.state !== 'NORMAL' || core.sm.service_epoch !== epoch) ? Errno.ECANCELED : result;
      core.stats.chunk_syncs++;
      if (status !== 0) core.stats.chunk_sync_failures++;
      core.emit({ kind: 'chunk_synced', pool: core.name, chunk, ok: status === 0, status });
      const entry = own.takeEntry(chunk);
      if (status === 0 && core.map_updates === updates) {
        own.clear(chunk, 1);
        src?.mapClear(chunk, 1, core.member_id, map_ver);
      }
      for (const w of entry?.waiters ?? []) {
        if (status === 0) this.submitChecked(w, false);
        else w.reply(Errno.EIO, null);
      }
      done?.(status);
    };
    if (src === null || store === null || core.sm.state !== 'NORMAL') {
      e.sync_cnt = -1;
      return finish(src === null || store === null ? Errno.ENOTCONN : Errno.ECANCELED);
    }
    const start = chunk * core.chunk_size;
    const len = Math.min(core.chunk_size, core.mapped_size - start);
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
        // Pulled before the node left service: not written (it may predate newer data here by
        // the time the node is back), and the chunk stays dirty (finish).
        if (core.sm.state !== 'NORMAL' || core.sm.service_epoch !== epoch) return pieceDone(Errno.ECANCELED);
        // FUA: the chunk may be marked clean only once its data is durable here.
        const answered = core.storeWriteBegins();
        store.block.write(off, d, true, (st) => {
          answered();
          pieceDone(st);
        });
      });
    }
  }
}
