// One brmr-server store (the reference's brmr_srv_blk_dev, §4.4, §10.2): a backend with its
// header, offered to RMR as the pool's BlockStore (data at store byte 4096) and MetaStore
// (the region after the data), with BRMR's commands on the USER channel.
//
// States (bits, as in the reference):
//   OPEN    the backend is open and healthy. Cleared by remove/delete and by the first
//           backend IO error: the store then refuses everything until it is removed and
//           added again, and RMR takes the pool out of IO service (server pool NO_IO).
//   MAPPED  the store passed a map's cross-member parameter check (MAP) or replaced a
//           member (add_store mode=replace). Persisted in the header and, unlike the
//           reference, kept by UNMAP: it means "holds this device's data", which is what the
//           re-map rule (§10.3) needs; a graceful unmap must not turn a member into a
//           stranger. `attached` (in memory) says whether a device is mapped right now.
//   io_allowed = OPEN && MAPPED: what RMR's admission asks for compute-client IO. Data IO
//   from RMR itself (chunk sync) needs only OPEN, so an initial sync may run before the
//   first map (the reference's ordering defect, §12.4).

import { Errno, errnoName } from '../../util/errno.js';
import type { Logger } from '../../util/ports.js';
import type { BlockStore, IoCallback, MetaStore, ReadCallback } from '../../rmr/server/io-store.js';
import type { RegisteredStore } from '../../rmr/server/server-pool.js';
import { BRMR_RSP_MAX, decodeRequest, encodeAnswer, type BrmrAnswer, type BrmrCmdName } from '../msg.js';
import { sameParams } from '../params.js';
import { DATA_OFFSET, STATE_BLANK, STATE_MAPPED, encodeHeader, uuidText, type StoreHeader } from './header.js';
import type { StoreBackend } from './backend.js';

export type StoreEvent =
  | { kind: 'store_state'; pool: string; open: boolean; mapped: boolean; reason: string }
  | { kind: 'store_failed'; pool: string; op: string; status: number };

export interface StoreDeps {
  /** Wall-clock milliseconds for the header timestamp (informational only). */
  wall_ms: () => number;
  log: Logger;
  emit: (ev: StoreEvent) => void;
}

export class BrmrStore implements BlockStore, MetaStore {
  readonly backend: StoreBackend;
  header: StoreHeader;
  readonly size_bytes: number;
  readonly meta_size_bytes: number;
  private _open = true;
  /** Data IO refused, metadata still allowed: remove_store persisting the maps. */
  private closing = false;
  /** The first backend error (0: none). */
  failed_status = 0;
  /** A device is mapped on it right now (MAP .. UNMAP), in memory only. */
  attached = false;
  /**
   * MAPPED was set by a MAP in this attachment: a ROLLBACK UNMAP (the first map failed on
   * another member before any device IO) may still clear it.
   */
  private fresh_map = false;
  private inflight = 0;
  private drain_waiters: (() => void)[] = [];
  private readonly deps: StoreDeps;
  readonly stats = { reads: 0, writes: 0, zeroes: 0, flushes: 0, meta_reads: 0, meta_writes: 0, errors: 0 };

  constructor(backend: StoreBackend, header: StoreHeader, deps: StoreDeps) {
    this.backend = backend;
    this.header = header;
    this.size_bytes = header.mapped_size;
    this.meta_size_bytes = header.meta_size;
    this.deps = deps;
  }

  get pool(): string {
    return this.header.pool_name;
  }
  get open(): boolean {
    return this._open;
  }
  get mapped(): boolean {
    return (this.header.state & STATE_MAPPED) !== 0;
  }
  ioAllowed(): boolean {
    return this._open && this.mapped;
  }
  /** The reference's sysfs `state` text. */
  stateText(): string {
    return `${this._open ? 'open' : 'closed'} ${this.mapped ? 'mapped' : 'unmapped'}${this.attached ? ' attached' : ''}`;
  }

  /** What the RMR server pool is given at register. */
  registered(): RegisteredStore {
    return {
      block: this,
      meta: this,
      meta_base: 0,
      ioAllowed: () => this.ioAllowed(),
      submitCmd: (bytes, rsp_len, cb) => this.submitCmd(bytes, rsp_len, cb),
      poolUuid: () => this.header.pool_uuid,
      blank: () => (this.header.state & STATE_BLANK) !== 0,
    };
  }

  /** Waiters for the header write that clears BLANK (null: none under way). */
  private unblanking: ((status: number) => void)[] | null = null;

  /**
   * Runs `go` once the header no longer says BLANK: the first write clears it durably before
   * it touches the data, so a blank header always means zeroes (a crash in between leaves the
   * write undone and the bit set, both true).
   */
  private afterUnblank(go: (status: number) => void): void {
    if ((this.header.state & STATE_BLANK) === 0) return go(0);
    if (this.unblanking !== null) return void this.unblanking.push(go);
    this.unblanking = [go];
    this.writeHeader({ ...this.header, state: this.header.state & ~STATE_BLANK }, (status) => {
      const waiters = this.unblanking ?? [];
      this.unblanking = null;
      for (const w of waiters) w(status);
    });
  }

  // ------------------------------------------------------------------ state

  private setOpen(open: boolean, reason: string): void {
    if (this._open === open) return;
    this._open = open;
    this.deps.emit({ kind: 'store_state', pool: this.pool, open, mapped: this.mapped, reason });
  }

  /** remove/delete: data IO stops now; metadata IO continues until close. */
  beginClose(): void {
    this.closing = true;
  }

  /** A remove that RMR refused: the store serves data IO again. */
  cancelClose(): void {
    if (this._open) this.closing = false;
  }

  /** Calls `cb` once no backend IO of this store is in flight. */
  drain(cb: () => void): void {
    if (this.inflight === 0) return void queueMicrotask(cb);
    this.drain_waiters.push(cb);
  }

  close(reason: string, cb: () => void): void {
    this.closing = true;
    this.setOpen(false, reason);
    this.drain(() => this.backend.close(cb));
  }

  private failed(op: string, status: number): void {
    this.stats.errors++;
    if (this.failed_status !== 0) return;
    this.failed_status = status;
    this.deps.log.log('error', 'store IO failed: store closed, pool leaves IO service', { pool: this.pool, op, status: errnoName(status), path: this.backend.path });
    this.deps.emit({ kind: 'store_failed', pool: this.pool, op, status });
    this.setOpen(false, `${op} failed (${errnoName(status)})`);
  }

  private begin(): void {
    this.inflight++;
  }

  private end(): void {
    if (--this.inflight === 0 && this.drain_waiters.length > 0) {
      const ws = this.drain_waiters;
      this.drain_waiters = [];
      for (const w of ws) w();
    }
  }

  private ioCb(op: string, cb: IoCallback): IoCallback {
    this.begin();
    return (status) => {
      this.end();
      if (status !== 0 && status !== Errno.EINVAL) this.failed(op, status);
      cb(status);
    };
  }

  /** Why a data (or metadata) IO is refused before it starts, or 0. */
  private refuse(offset: number, length: number, limit: number, meta: boolean): number {
    if (!this._open || (this.closing && !meta)) return this.failed_status !== 0 ? Errno.EIO : Errno.ENXIO;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > limit) return Errno.EINVAL;
    return 0;
  }

  // ------------------------------------------------------------------ BlockStore

  read(offset: number, length: number, cb: ReadCallback): void {
    const err = this.refuse(offset, length, this.size_bytes, false);
    if (err !== 0) return void queueMicrotask(() => cb(err, null));
    this.stats.reads++;
    this.begin();
    this.backend.read(DATA_OFFSET + offset, length, (status, data) => {
      this.end();
      if (status !== 0) this.failed('read', status);
      cb(status, status === 0 ? data : null);
    });
  }

  write(offset: number, data: Buffer, fua: boolean, cb: IoCallback): void {
    const err = this.refuse(offset, data.length, this.size_bytes, false);
    if (err !== 0) return void queueMicrotask(() => cb(err));
    this.stats.writes++;
    this.afterUnblank((s) => (s !== 0 ? cb(s) : this.backend.write(DATA_OFFSET + offset, data, fua, this.ioCb('write', cb))));
  }

  discard(offset: number, length: number, cb: IoCallback): void {
    // Every member must read zeroes afterwards: a discard writes zeroes (backend.ts).
    this.writeZeroes(offset, length, cb);
  }

  writeZeroes(offset: number, length: number, cb: IoCallback): void {
    const err = this.refuse(offset, length, this.size_bytes, false);
    if (err !== 0) return void queueMicrotask(() => cb(err));
    this.stats.zeroes++;
    this.afterUnblank((s) => (s !== 0 ? cb(s) : this.backend.writeZeroes(DATA_OFFSET + offset, length, this.ioCb('write-zeroes', cb))));
  }

  flush(cb: IoCallback): void {
    const err = this.refuse(0, 0, 0, true);
    if (err !== 0) return void queueMicrotask(() => cb(err));
    this.stats.flushes++;
    this.backend.flush(this.ioCb('flush', cb));
  }

  // ------------------------------------------------------------------ MetaStore

  readMeta(offset: number, length: number, cb: ReadCallback): void {
    const err = this.refuse(offset, length, this.meta_size_bytes, true);
    if (err !== 0) return void queueMicrotask(() => cb(err, null));
    this.stats.meta_reads++;
    this.begin();
    this.backend.read(this.header.meta_offset + offset, length, (status, data) => {
      this.end();
      if (status !== 0) this.failed('metadata read', status);
      cb(status, status === 0 ? data : null);
    });
  }

  writeMeta(offset: number, data: Buffer, cb: IoCallback): void {
    const err = this.refuse(offset, data.length, this.meta_size_bytes, true);
    if (err !== 0) return void queueMicrotask(() => cb(err));
    this.stats.meta_writes++;
    this.backend.write(this.header.meta_offset + offset, data, true, this.ioCb('metadata write', cb));
  }

  // ------------------------------------------------------------------ header

  /** Header writes waiting for the one under way (page 0 is written by one at a time). */
  private header_queue: (() => void)[] | null = null;

  /**
   * Writes `next` as the header (durably), and adopts it once it is on disk. One at a time, so
   * the page on disk is the last one adopted; BLANK only ever goes (a write computed from a
   * header that still had it, queued behind the write that cleared it, does not bring it back).
   */
  writeHeader(next: StoreHeader, cb: (status: number) => void): void {
    if (this.header_queue !== null) return void this.header_queue.push(() => this.writeHeader(next, cb));
    if (!this._open) return void queueMicrotask(() => cb(Errno.ENXIO));
    this.header_queue = [];
    const state = (this.header.state & STATE_BLANK) === 0 ? next.state & ~STATE_BLANK : next.state;
    const h: StoreHeader = { ...next, state, timestamp_ms: Math.max(0, Math.floor(this.deps.wall_ms())) };
    const page = encodeHeader(h);
    this.backend.write(0, page, true, this.ioCb('header write', (status) => {
      if (status === 0) this.header = h;
      const queued = this.header_queue ?? [];
      this.header_queue = null;
      cb(status);
      for (const q of queued) q();
    }));
  }

  // ------------------------------------------------------------------ BRMR commands (§10.4)

  /** The USER channel's dispatcher: one request in, one answer out (errors inside it). */
  submitCmd(bytes: Buffer, rsp_len: number, cb: (status: number, rsp: Buffer | null) => void): void {
    const reply = (a: BrmrAnswer): void => {
      const rsp = encodeAnswer(a);
      queueMicrotask(() => (rsp.length > rsp_len ? cb(Errno.EMSGSIZE, null) : cb(0, rsp)));
    };
    const req = decodeRequest(bytes);
    if (typeof req === 'string') {
      this.deps.log.log('warn', 'malformed BRMR command', { pool: this.pool, reason: req });
      return queueMicrotask(() => cb(Errno.EBADMSG, null));
    }
    const refuse = (cmd: BrmrCmdName, status: number, reason: string): void => {
      this.deps.log.log('info', 'BRMR command refused', { pool: this.pool, cmd, reason });
      reply({ cmd, status, reason, info: null });
    };
    if (!this._open) return refuse(req.cmd, Errno.EIO, this.failed_status !== 0 ? `store failed (${errnoName(this.failed_status)})` : 'store is closed');
    switch (req.cmd) {
      case 'GET_PARAMS': {
        const h = this.header;
        return reply({
          cmd: 'GET_PARAMS',
          status: 0,
          reason: '',
          info: { mapped: this.mapped, member_id: h.member_id, mapped_size: h.mapped_size, device_size: this.backend.size_bytes, pool_uuid: h.pool_uuid, store_uuid: h.store_uuid, params: this.mapped ? h.params : this.backend.params },
        });
      }
      case 'UNMAP': {
        this.attached = false;
        if (!req.rollback) return reply({ cmd: 'UNMAP', status: 0, reason: '', info: null });
        // Undo a first map that failed on another member: otherwise this store would stay
        // MAPPED beside unmapped ones and every later map would be refused as a mixture.
        if (!this.mapped) return reply({ cmd: 'UNMAP', status: 0, reason: '', info: null });
        if (!this.fresh_map) return refuse('UNMAP', Errno.EPERM, 'the store was mapped before this attachment: not rolled back');
        this.fresh_map = false;
        return this.writeHeader({ ...this.header, state: this.header.state & ~STATE_MAPPED }, (status) => {
          if (status !== 0) return refuse('UNMAP', status, `header write failed (${errnoName(status)})`);
          this.deps.emit({ kind: 'store_state', pool: this.pool, open: this._open, mapped: false, reason: 'first map rolled back' });
          reply({ cmd: 'UNMAP', status: 0, reason: '', info: null });
        });
      }
      case 'MAP': {
        const h = this.header;
        if (req.mapped_size !== h.mapped_size) return refuse('MAP', Errno.EINVAL, `device size ${req.mapped_size} differs from the store's mapped size ${h.mapped_size}`);
        if (req.pool_uuid.every((x) => x === 0)) return refuse('MAP', Errno.EINVAL, 'MAP without a pool UUID');
        const has_uuid = h.pool_uuid.some((x) => x !== 0);
        if (has_uuid && !h.pool_uuid.equals(req.pool_uuid)) return refuse('MAP', Errno.EINVAL, `store belongs to pool UUID ${uuidText(h.pool_uuid)}, not ${uuidText(req.pool_uuid)}`);
        if (this.mapped) {
          // A repeated MAP of the same device (a first map retried) is harmless.
          if (!sameParams(h.params, req.params)) return refuse('MAP', Errno.EEXIST, 'store is mapped already, with other parameters');
          this.attached = true;
          return reply({ cmd: 'MAP', status: 0, reason: '', info: null });
        }
        if (req.params.logical_block_size < this.backend.params.logical_block_size) return refuse('MAP', Errno.EINVAL, `logical block size ${req.params.logical_block_size} below this device's ${this.backend.params.logical_block_size}`);
        return this.writeHeader({ ...h, pool_uuid: Buffer.from(req.pool_uuid), params: req.params, state: h.state | STATE_MAPPED }, (status) => {
          if (status !== 0) return refuse('MAP', status, `header write failed (${errnoName(status)})`);
          this.attached = true;
          this.fresh_map = true;
          this.deps.emit({ kind: 'store_state', pool: this.pool, open: this._open, mapped: true, reason: 'mapped' });
          reply({ cmd: 'MAP', status: 0, reason: '', info: null });
        });
      }
    }
  }
}

export { BRMR_RSP_MAX };
