// brmr-server's ctl (reference §10.1, §11.3): create_store, add_store (optionally
// mode=replace), remove_store, delete_store, and the link of each store to its RMR server
// pool. One store per pool on a node. Sizes are bytes here; the control tree converts the
// reference's sectors.
//
// Identity (ARCHITECTURE.md §2.7): a store is known by pool name, pool UUID and its own
// store UUID, all in its header. add_store checks every one it is given, so a disk of
// another pool, or a store re-created on a member's disk, is refused before it joins.

import { Errno, errnoName } from '../../util/errno.js';
import { nullLogger, type Logger, type Random } from '../../util/ports.js';
import { rmrMetaBytes, type RecoveryReport, type ServerPool } from '../../rmr/server/server-pool.js';
import type { BackendOpener, StoreBackend } from './backend.js';
import { DATA_OFFSET, HEADER_BYTES, STATE_BLANK, STATE_MAPPED, STATE_NEED_SYNC, decodeHeader, hasHeaderMagic, makeUuid, uuidText, type StoreHeader } from './header.js';
import { BrmrStore, type StoreEvent } from './store.js';

export interface StoreManagerDeps {
  open: BackendOpener;
  /** Store UUIDs. */
  random: Random;
  wall_ms: () => number;
  /** rmr-server's pool of that name (join_pool comes first, as in the reference). */
  serverPool: (pool_name: string) => ServerPool | undefined;
  log?: Logger;
  emit?: (ev: StoreManagerEvent) => void;
}

export type StoreManagerEvent =
  | StoreEvent
  | { kind: 'store_added'; pool: string; mode: 'create' | 'add' | 'replace'; store_uuid: string; path: string }
  | { kind: 'store_removed'; pool: string; deleted: boolean }
  | { kind: 'store_need_full_resync'; pool: string; member_id: number };

export interface CreateStoreArgs {
  pool: string;
  device: string;
  mapped_size: number;
  /** Known at create when the cluster file names it; otherwise the first map assigns it. */
  pool_uuid?: Buffer;
  /** Size of a regular file to create (default: exactly what header, data and metadata need). */
  device_size?: number;
  /** Overwrite an existing file or device that holds data but no store (see notAStore). */
  force?: boolean;
}

export interface AddStoreArgs {
  pool: string;
  device: string;
  /** Checked against the header when given. */
  mapped_size?: number;
  pool_uuid?: Buffer;
  store_uuid?: Buffer;
  /** An empty disk replacing a member: needs pool_uuid and mapped_size. */
  mode?: 'replace';
  /** replace: overwrite a disk that holds data but no store. */
  force?: boolean;
}

/**
 * Why the first bytes of an existing file or device must not become a store without
 * `force`: they hold data (not all zeroes) and no BRMR header (a store is refused or taken
 * by the header checks instead). The security review (finding 4) turned a 48-byte text file,
 * and one reached through a symlink, into 135,168-byte stores.
 */
export function notAStore(first: Buffer): string | null {
  if (hasHeaderMagic(first)) return null;
  if (first.every((b) => b === 0)) return null;
  return 'holds data that is not a BRMR store (its first bytes are not zero): check the path, or give force=y to overwrite it';
}

export type StoreCallback = (status: number, store: BrmrStore | null, reason: string | null) => void;

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/** Bytes of RMR metadata a store of `mapped_size` in a pool of `chunk_size` reserves. */
export function storeMetaBytes(mapped_size: number, chunk_size: number): number {
  return roundUp(rmrMetaBytes(Math.ceil(mapped_size / chunk_size)), 4096);
}

export class StoreManager {
  private readonly deps: StoreManagerDeps;
  private readonly log: Logger;
  private readonly by_pool = new Map<string, BrmrStore>();
  /** Pools with a ctl operation running: one at a time per pool. */
  private readonly busy = new Set<string>();

  constructor(deps: StoreManagerDeps) {
    this.deps = deps;
    this.log = deps.log ?? nullLogger;
  }

  store(pool: string): BrmrStore | undefined {
    return this.by_pool.get(pool);
  }

  stores(): BrmrStore[] {
    return [...this.by_pool.values()];
  }

  private emit(ev: StoreManagerEvent): void {
    this.deps.emit?.(ev);
  }

  private newStore(backend: StoreBackend, header: StoreHeader): BrmrStore {
    return new BrmrStore(backend, header, { wall_ms: this.deps.wall_ms, log: this.log, emit: (ev) => this.emit(ev) });
  }

  /** Common checks; on success the pool is marked busy and its server pool returned. */
  private begin(pool: string, cb: StoreCallback): ServerPool | null {
    const sp = this.deps.serverPool(pool);
    const fail = (status: number, why: string): null => {
      queueMicrotask(() => cb(status, null, why));
      return null;
    };
    if (sp === undefined) return fail(Errno.ENOENT, `no rmr-server pool ${pool} (join_pool first)`);
    if (this.busy.has(pool)) return fail(Errno.EBUSY, `another store operation on pool ${pool} is running`);
    if (this.by_pool.has(pool)) return fail(Errno.EEXIST, `pool ${pool} already has a store`);
    this.busy.add(pool);
    return sp;
  }

  private layoutFor(sp: ServerPool, mapped_size: number): { meta_size: number; need: number } | string {
    if (!Number.isSafeInteger(mapped_size) || mapped_size <= 0 || mapped_size % 4096 !== 0) return `mapped_size ${mapped_size} must be a positive multiple of 4096 bytes`;
    const meta_size = storeMetaBytes(mapped_size, sp.chunk_size);
    return { meta_size, need: DATA_OFFSET + mapped_size + meta_size };
  }

  /** Reads page 0 of a freshly opened backend. */
  private readPage0(b: StoreBackend, cb: (status: number, page: Buffer | null) => void): void {
    if (b.size_bytes < HEADER_BYTES) return void queueMicrotask(() => cb(0, Buffer.alloc(HEADER_BYTES)));
    b.read(0, HEADER_BYTES, cb);
  }

  /**
   * create_store: a new member's store on a device without a BRMR header. Writes a fresh
   * header and a zeroed metadata region, registers with RMR in create mode.
   */
  createStore(a: CreateStoreArgs, cb: StoreCallback): void {
    const sp = this.begin(a.pool, cb);
    if (sp === null) return;
    const done = this.finisher(a.pool, cb);
    const lay = this.layoutFor(sp, a.mapped_size);
    if (typeof lay === 'string') return done(Errno.EINVAL, null, lay);
    if (a.pool_uuid !== undefined && a.pool_uuid.length !== 16) return done(Errno.EINVAL, null, 'pool UUID must be 16 bytes');
    const size = a.device_size ?? lay.need;
    this.deps.open(a.device, { create: true, size_bytes: size, ...(a.force === true ? {} : { existing: notAStore }) }, (s0, b, why0) => {
      if (s0 !== 0 || b === null) return done(s0 !== 0 ? s0 : Errno.EIO, null, why0 ?? 'cannot open the device');
      const bail = (status: number, why: string): void => b.close(() => done(status, null, why));
      if (b.size_bytes < lay.need) return bail(Errno.ENOSPC, `${a.device} holds ${b.size_bytes} bytes; header, ${a.mapped_size} bytes of data and ${lay.meta_size} of metadata need ${lay.need}`);
      if (a.mapped_size % b.params.logical_block_size !== 0) return bail(Errno.EINVAL, `mapped_size is not a multiple of the device's logical block size ${b.params.logical_block_size}`);
      this.readPage0(b, (s1, page) => {
        if (s1 !== 0 || page === null) return bail(s1 !== 0 ? s1 : Errno.EIO, `cannot read ${a.device}`);
        if (hasHeaderMagic(page)) {
          const h = decodeHeader(page);
          const what = typeof h === 'string' ? `a damaged BRMR header (${h})` : `the store of pool ${h.pool_name} (member ${h.member_id}, store ${uuidText(h.store_uuid)})`;
          return bail(Errno.EEXIST, `${a.device} already holds ${what}: add_store it, or delete_store it first`);
        }
        const header: StoreHeader = {
          pool_name: a.pool,
          pool_uuid: a.pool_uuid !== undefined ? Buffer.from(a.pool_uuid) : Buffer.alloc(16),
          store_uuid: makeUuid(this.deps.random.bytes(16)),
          member_id: sp.member_id,
          state: b.zeroed === true ? STATE_BLANK : 0,
          mapped_size: a.mapped_size,
          device_size: b.size_bytes,
          data_offset: DATA_OFFSET,
          meta_offset: DATA_OFFSET + a.mapped_size,
          meta_size: lay.meta_size,
          chunk_size: sp.chunk_size,
          timestamp_ms: 0,
          params: b.params,
        };
        this.initStore(sp, b, header, 'create', done);
      });
    });
  }

  /**
   * Zeroes the metadata region (an old pool's metadata slots must never be taken for this
   * one's), registers with RMR, then writes the header: a crash before the header leaves a
   * device create_store accepts again.
   */
  private initStore(sp: ServerPool, b: StoreBackend, header: StoreHeader, mode: 'create' | 'replace', done: StoreCallback): void {
    const store = this.newStore(b, header);
    const bail = (status: number, why: string): void => store.close(why, () => done(status, null, why));
    b.writeZeroes(header.meta_offset, header.meta_size, (s0) => {
      if (s0 !== 0) return bail(s0, `cannot clear the metadata region (${errnoName(s0)})`);
      // replace: an empty disk; RMR holds every chunk dirty for this member and keeps a
      // persisted discard flag until every peer holds it fully dirty too (§9.8).
      const err = sp.register(store.registered(), mode, header.mapped_size);
      if (err !== null) return bail(Errno.EINVAL, `RMR refused the store: ${err}`);
      if (mode === 'replace') this.emit({ kind: 'store_need_full_resync', pool: header.pool_name, member_id: header.member_id });
      store.writeHeader(header, (s1) => {
        if (s1 !== 0) {
          sp.unregister('store header write failed');
          return bail(s1, `cannot write the store header (${errnoName(s1)})`);
        }
        const persist = (next: () => void): void => (mode === 'replace' ? sp.persistMetadata(() => next()) : next());
        persist(() => {
          this.by_pool.set(header.pool_name, store);
          this.log.log('info', 'store added', { pool: header.pool_name, mode, path: b.path, store_uuid: uuidText(store.header.store_uuid) });
          this.emit({ kind: 'store_added', pool: header.pool_name, mode, store_uuid: uuidText(store.header.store_uuid), path: b.path });
          done(0, store, null);
        });
      });
    });
  }

  /**
   * add_store: an existing member's store comes back (after a restart, or moved). The
   * header must match everything given; RMR then restores its metadata from the store.
   * `mode=replace`: an empty disk takes over a member's place (see replace()).
   */
  addStore(a: AddStoreArgs, cb: (status: number, store: BrmrStore | null, reason: string | null, report?: RecoveryReport) => void): void {
    const sp = this.begin(a.pool, cb);
    if (sp === null) return;
    const done = this.finisher(a.pool, cb);
    if (a.mode === 'replace') return this.replace(sp, a, done);
    this.deps.open(a.device, { create: false, size_bytes: 0 }, (s0, b, why0) => {
      if (s0 !== 0 || b === null) return done(s0 !== 0 ? s0 : Errno.EIO, null, why0 ?? 'cannot open the device');
      const bail = (status: number, why: string): void => b.close(() => done(status, null, why));
      this.readPage0(b, (s1, page) => {
        if (s1 !== 0 || page === null) return bail(s1 !== 0 ? s1 : Errno.EIO, `cannot read ${a.device}`);
        if (!hasHeaderMagic(page)) return bail(Errno.ENOENT, `${a.device} holds no BRMR store: create_store it, or add_store mode=replace for a replacement disk`);
        const h = decodeHeader(page);
        if (typeof h === 'string') return bail(Errno.EBADMSG, `${a.device}: store header invalid: ${h}`);
        const why = this.mismatch(h, a, sp, b);
        if (why !== null) return bail(Errno.EINVAL, `${a.device}: ${why}`);
        const store = this.newStore(b, h);
        const fail = (status: number, reason: string): void => store.close(reason, () => done(status, null, reason));
        const err = sp.register(store.registered(), 'add', h.mapped_size);
        if (err !== null) return fail(Errno.EINVAL, `RMR refused the store: ${err}`);
        sp.loadMetadata((s2, report, why2) => {
          if (s2 !== 0 || report === null) {
            sp.unregister('metadata not restored');
            return fail(s2 !== 0 ? s2 : Errno.EIO, `RMR metadata not restored: ${why2 ?? errnoName(s2)}`);
          }
          store.writeHeader(h, (s3) => {
            if (s3 !== 0) {
              sp.unregister('store header write failed');
              return fail(s3, `cannot write the store header (${errnoName(s3)})`);
            }
            this.by_pool.set(a.pool, store);
            if (report.md_notes !== undefined) {
              this.log.log('warn', 'store metadata: a damaged copy was ignored and recovered from the other copy (or, beside a blank one, taken as a torn first write)', { pool: a.pool, path: b.path, notes: report.md_notes.join('; ') });
            }
            if (report.maps_lost !== null) {
              this.log.log('error', 'store added without usable maps: every chunk is dirty for this node and it knows nothing of what its peers missed', { pool: a.pool, path: b.path, reason: report.maps_lost });
            }
            this.log.log('info', 'store added', { pool: a.pool, mode: 'add', path: b.path, maps_lost: report.maps_lost, intent_chunks: report.intent_chunks, found: report.found });
            this.emit({ kind: 'store_added', pool: a.pool, mode: 'add', store_uuid: uuidText(h.store_uuid), path: b.path });
            done(0, store, null, report);
          });
        });
      });
    });
  }

  /** Why header `h` is not the store `a` asks for, or null. */
  private mismatch(h: StoreHeader, a: AddStoreArgs, sp: ServerPool, b: StoreBackend): string | null {
    if (h.pool_name !== a.pool) return `store belongs to pool '${h.pool_name}', not '${a.pool}'`;
    if (a.pool_uuid !== undefined && !h.pool_uuid.equals(a.pool_uuid)) return `pool UUID differs: the store has ${uuidText(h.pool_uuid)}, expected ${uuidText(a.pool_uuid)}`;
    if (a.store_uuid !== undefined && !h.store_uuid.equals(a.store_uuid)) return `store UUID differs: the disk holds store ${uuidText(h.store_uuid)}, expected ${uuidText(a.store_uuid)} (re-created or another member's disk)`;
    if (h.member_id !== sp.member_id) return `store is member ${h.member_id}'s, this node is member ${sp.member_id}`;
    if (h.chunk_size !== sp.chunk_size) return `store was made for chunk size ${h.chunk_size}, the pool has ${sp.chunk_size}`;
    if (a.mapped_size !== undefined && a.mapped_size !== h.mapped_size) return `store holds ${h.mapped_size} bytes of data, not ${a.mapped_size}`;
    if (h.device_size !== b.size_bytes) return `device size changed from ${h.device_size} to ${b.size_bytes} bytes`;
    if (h.meta_size < storeMetaBytes(h.mapped_size, sp.chunk_size)) return 'metadata region too small for this pool';
    return null;
  }

  /**
   * add_store mode=replace: an empty disk (no BRMR header) becomes the store of this node's
   * member: a fresh header with the pool UUID, a new store UUID, MAPPED (it replaces a member
   * of a mapped device) and NEED_SYNC; RMR gets it in replace mode: every chunk dirty for
   * this member and a persisted discard flag. The compute client's leg (failed by the
   * store's absence) comes back through its store check; seeing the flag in the node's
   * pool_md, the client has every peer mark the member fully dirty (SEND_DISCARD) before the
   * member gets its maps, and clears the flags after; the member then copies everything from
   * its peers while IO continues (client-recovery.ts).
   */
  private replace(sp: ServerPool, a: AddStoreArgs, done: StoreCallback): void {
    if (a.pool_uuid === undefined || a.pool_uuid.length !== 16 || a.pool_uuid.every((x) => x === 0)) return done(Errno.EINVAL, null, 'replace needs the pool UUID');
    if (a.mapped_size === undefined) return done(Errno.EINVAL, null, 'replace needs the mapped size');
    const lay = this.layoutFor(sp, a.mapped_size);
    if (typeof lay === 'string') return done(Errno.EINVAL, null, lay);
    const pool_uuid = a.pool_uuid;
    const mapped_size = a.mapped_size;
    this.deps.open(a.device, { create: true, size_bytes: lay.need, ...(a.force === true ? {} : { existing: notAStore }) }, (s0, b, why0) => {
      if (s0 !== 0 || b === null) return done(s0 !== 0 ? s0 : Errno.EIO, null, why0 ?? 'cannot open the device');
      const bail = (status: number, why: string): void => b.close(() => done(status, null, why));
      if (b.size_bytes < lay.need) return bail(Errno.ENOSPC, `${a.device} holds ${b.size_bytes} bytes, ${lay.need} needed`);
      this.readPage0(b, (s1, page) => {
        if (s1 !== 0 || page === null) return bail(s1 !== 0 ? s1 : Errno.EIO, `cannot read ${a.device}`);
        if (hasHeaderMagic(page)) return bail(Errno.EEXIST, `${a.device} holds a BRMR header: replace takes an empty disk (delete_store the old store first)`);
        const header: StoreHeader = {
          pool_name: a.pool,
          pool_uuid: Buffer.from(pool_uuid),
          store_uuid: makeUuid(this.deps.random.bytes(16)),
          member_id: sp.member_id,
          state: STATE_MAPPED | STATE_NEED_SYNC,
          mapped_size,
          device_size: b.size_bytes,
          data_offset: DATA_OFFSET,
          meta_offset: DATA_OFFSET + mapped_size,
          meta_size: lay.meta_size,
          chunk_size: sp.chunk_size,
          timestamp_ms: 0,
          params: b.params,
        };
        this.initStore(sp, b, header, 'replace', done);
      });
    });
  }

  /**
   * remove_store: data IO stops, RMR's maps are persisted, the store leaves the pool, IO
   * drains, the device is closed. The store can be added again.
   */
  removeStore(pool: string, cb: (status: number, reason: string | null) => void): void {
    this.takeDown(pool, false, cb);
  }

  /**
   * delete_store: as remove_store, and the header page and RMR metadata are zeroed. Refused
   * (EBUSY) while the store is a live member of its pool (ServerPool.deleteRefusal) unless
   * `force`: the reference wiped a member its client still used, and the peers kept counting
   * on a copy that was gone (issue 19, item 6).
   */
  deleteStore(pool: string, cb: (status: number, reason: string | null) => void, force = false): void {
    const sp = this.deps.serverPool(pool);
    const live = sp !== undefined && this.by_pool.has(pool) ? sp.deleteRefusal() : null;
    if (live !== null && !force) return void queueMicrotask(() => cb(Errno.EBUSY, `the store is a live member of its pool: ${live}`));
    if (live !== null) this.log.log('warn', 'delete_store forced on a live member of its pool', { pool, why: live });
    this.takeDown(pool, true, cb);
  }

  private takeDown(pool: string, del: boolean, cb: (status: number, reason: string | null) => void): void {
    const store = this.by_pool.get(pool);
    if (store === undefined) return void queueMicrotask(() => cb(Errno.ENOENT, `pool ${pool} has no store`));
    if (this.busy.has(pool)) return void queueMicrotask(() => cb(Errno.EBUSY, `another store operation on pool ${pool} is running`));
    const sp = this.deps.serverPool(pool);
    this.busy.add(pool);
    const finish = (status: number, reason: string | null): void => {
      this.busy.delete(pool);
      cb(status, reason);
    };
    store.beginClose();
    const persist = (next: () => void): void => {
      if (del || sp === undefined || !sp.hasStore || !store.open) return next();
      sp.persistMetadata((s) => {
        if (s !== 0) this.log.log('warn', 'maps not persisted at remove_store', { pool, status: errnoName(s) });
        next();
      });
    };
    persist(() => {
      const err = sp !== undefined && sp.hasStore ? sp.unregister(del ? 'delete_store' : 'remove_store') : null;
      if (err !== null) {
        store.cancelClose();
        return finish(Errno.EBUSY, `RMR keeps the store: ${err}`);
      }
      this.by_pool.delete(pool);
      store.drain(() => {
        const close = (): void =>
          store.close(del ? 'deleted' : 'removed', () => {
            this.log.log('info', del ? 'store deleted' : 'store removed', { pool });
            this.emit({ kind: 'store_removed', pool, deleted: del });
            finish(0, null);
          });
        if (!del) return close();
        this.wipe(store, (s) => {
          if (s !== 0) this.log.log('error', 'delete_store could not wipe the store', { pool, status: errnoName(s) });
          close();
        });
      });
    });
  }

  /** Zeroes the header page and the RMR metadata region, durably. */
  private wipe(store: BrmrStore, cb: (status: number) => void): void {
    const b = store.backend;
    const h = store.header;
    b.writeZeroes(0, HEADER_BYTES, (s1) => {
      if (s1 !== 0) return cb(s1);
      b.writeZeroes(h.meta_offset, Math.min(h.meta_size, b.size_bytes - h.meta_offset), (s2) => {
        if (s2 !== 0) return cb(s2);
        b.flush(cb);
      });
    });
  }

  private finisher<A extends unknown[]>(pool: string, cb: (...args: A) => void): (...args: A) => void {
    return (...args: A) => {
      this.busy.delete(pool);
      cb(...args);
    };
  }
}
