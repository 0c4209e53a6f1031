// brmr-client's device (reference §6.8, §10.3): map/unmap over an RMR client pool, and the
// BlockDevice the NBD server exports. IO goes to ClientPool.submit; the device bounds what
// it sends (queue depth) and what waits (a bounded FIFO; beyond it -EBUSY), splits long
// trims and write-zeroes into IOs the pool takes, and answers NBD block status for the meta
// context `rmr:dirty:<member_id>` from the client's dirty maps.
//
// Map rules (§10.3): GET_PARAMS on every leg. No leg mapped = first map: every leg must
// answer, parameters are merged and checked, MAP goes to every leg. Some leg mapped = re-map:
// legs that do not answer are tolerated (they come back through RMR recovery), but an
// unmapped leg beside mapped ones is refused: it never held this device's data (typically a
// crashed node's store re-created instead of re-added).

import { Errno, errnoName } from '../../util/errno.js';
import { nullLogger, type Logger } from '../../util/ports.js';
import type { ClientOp, ClientPool } from '../../rmr/client/client-pool.js';
import type { BlockDevice, BlockSizes, Extent, WriteFlags, ZeroFlags } from '../../util/block-device.js';
import { BRMR_RSP_MAX, decodeAnswer, encodeRequest, type StoreParamsAnswer } from '../msg.js';
import { mergeParams, type DeviceParams } from '../params.js';
import { DeviceStateMachine, type DeviceStateEvent, type DeviceStateView } from './device-state.js';

/** NBD block-status flag of the `rmr:dirty:<id>` context: the chunk is dirty for that member. */
export const NBD_STATE_RMR_DIRTY = 1;
export const DIRTY_CONTEXT_PREFIX = 'rmr:dirty:';
/** One block-status answer holds at most this many extents (the rest is asked again). */
const MAX_EXTENTS = 1024;
/** Chunks scanned one by one within dirty runs per answer (clean runs are skipped by page). */
const MAX_DIRTY_SCAN = 1 << 20;

export interface MapDeviceOptions {
  pool: ClientPool;
  /** Device size in 512-byte sectors; must equal the pool's (and every store's) mapped size. */
  size_sectors: number;
  /** Device name for events and logs (default: the pool name). */
  name?: string;
  /** IOs in flight to the pool at most (default 128). */
  queue_depth?: number;
  /** IOs waiting behind them at most; beyond it IOs fail with -EBUSY (default 4 x queue depth). */
  max_waiting?: number;
  /** Pool UUID for a first map when no store has one yet (default: the first member's store UUID). */
  pool_uuid?: Buffer;
  log?: Logger;
  emit?: (ev: DeviceStateEvent) => void;
}

export interface DeviceStats {
  reads: number;
  writes: number;
  trims: number;
  zeroes: number;
  flushes: number;
  bytes_read: number;
  bytes_written: number;
  errors: number;
  /** IOs refused because the waiting queue was full. */
  busy: number;
  /** Most IOs ever waiting at once. */
  max_waiting_seen: number;
}

export interface DeviceStatus {
  name: string;
  state: DeviceStateView;
  degraded: boolean;
  size_bytes: number;
  members: number;
  legs: number;
  normal_legs: number;
  in_flight: number;
  waiting: number;
  first_map: boolean;
  pool_uuid: Buffer;
  params: DeviceParams;
  stats: DeviceStats;
}

interface Pending {
  op: ClientOp;
  offset: number;
  length: number;
  data: Buffer | null;
  fua: boolean;
  cb: (status: number, data: Buffer | null) => void;
}

type MapCallback = (status: number, device: BrmrDevice | null, reason: string | null) => void;

/** map_device: validates the legs, maps the stores on a first map, opens the device. */
export function mapDevice(o: MapDeviceOptions, cb: MapCallback): void {
  const pool = o.pool;
  const name = o.name ?? pool.pool;
  const log = o.log ?? nullLogger;
  const size = o.size_sectors * 512;
  const fail = (status: number, reason: string, close: boolean): void => {
    log.log('warn', 'map_device refused', { device: name, reason });
    if (close) pool.close(() => cb(status, null, reason));
    else queueMicrotask(() => cb(status, null, reason));
  };
  if (!Number.isSafeInteger(o.size_sectors) || o.size_sectors <= 0) return fail(Errno.EINVAL, `size ${o.size_sectors} sectors`, false);
  if (size !== pool.mapped_size) return fail(Errno.EINVAL, `size ${size} bytes differs from pool ${pool.pool}'s ${pool.mapped_size}`, false);
  const qd = o.queue_depth ?? 128;
  if (!Number.isInteger(qd) || qd < 1 || qd > 65536) return fail(Errno.EINVAL, `queue depth ${qd}`, false);
  if (pool.open() !== 0) return fail(Errno.EBUSY, `pool ${pool.pool} is in use (a device is mapped on it already)`, false);
  pool.commandAll(encodeRequest({ cmd: 'GET_PARAMS' }), BRMR_RSP_MAX, (answers) => {
    const infos: StoreParamsAnswer[] = [];
    const failures: string[] = [];
    for (const a of answers) {
      if (a.status !== 0 || a.data === null) {
        failures.push(`member ${a.member_id}: ${errnoName(a.status !== 0 ? a.status : Errno.EBADMSG)}`);
        continue;
      }
      const d = decodeAnswer(a.data, 'GET_PARAMS');
      if (typeof d === 'string') failures.push(`member ${a.member_id}: ${d}`);
      else if (d.status !== 0 || d.info === null) failures.push(`member ${a.member_id}: ${d.reason !== '' ? d.reason : errnoName(d.status)}`);
      else if (d.info.member_id !== a.member_id) failures.push(`member ${a.member_id} answers as member ${d.info.member_id}`);
      else infos.push(d.info);
    }
    if (answers.length === 0) return fail(Errno.ENODEV, `pool ${pool.pool} has no legs`, true);
    const mapped = infos.filter((i) => i.mapped);
    const first_map = mapped.length === 0;
    if (first_map && failures.length > 0) return fail(Errno.EIO, `first map needs every member: ${failures.join('; ')}`, true);
    if (infos.length === 0) return fail(Errno.EIO, `no member answered: ${failures.join('; ')}`, true);
    if (!first_map && mapped.length < infos.length) {
      const un = infos.filter((i) => !i.mapped).map((i) => i.member_id);
      return fail(Errno.EINVAL, `members ${mapped.map((i) => i.member_id).join(',')} are mapped but ${un.join(',')} are not: an unmapped store never held this device's data (re-created instead of re-added?)`, true);
    }
    const wrong_size = infos.find((i) => i.mapped_size !== size);
    if (wrong_size !== undefined) return fail(Errno.EINVAL, `member ${wrong_size.member_id} stores ${wrong_size.mapped_size} bytes, the device has ${size}`, true);
    const uuids = [...new Set(infos.map((i) => i.pool_uuid).filter((u) => u.some((x) => x !== 0)).map((u) => u.toString('hex')))];
    if (uuids.length > 1) return fail(Errno.EINVAL, `members belong to different pool UUIDs (${uuids.join(', ')})`, true);
    if (!first_map && infos.some((i) => i.pool_uuid.every((x) => x === 0))) return fail(Errno.EINVAL, 'a mapped member has no pool UUID', true);
    if (o.pool_uuid !== undefined && uuids.length === 1 && uuids[0] !== o.pool_uuid.toString('hex')) return fail(Errno.EINVAL, `the members' pool UUID ${uuids[0] ?? ''} is not the one asked for`, true);
    const lowest = [...infos].sort((a, b) => a.member_id - b.member_id)[0] as StoreParamsAnswer;
    const pool_uuid = uuids[0] !== undefined ? Buffer.from(uuids[0], 'hex') : (o.pool_uuid ?? lowest.store_uuid);
    const params = mergeParams(infos.map((i) => i.params));
    if (typeof params === 'string') return fail(Errno.EINVAL, params, true);
    const ready = (): void => {
      const dev = new BrmrDevice(pool, name, params, pool_uuid, first_map, qd, o.max_waiting ?? 4 * qd, log, o.emit ?? (() => undefined));
      dev.sm.change('ready', first_map ? 'first map' : 're-map');
      log.log('info', 'device mapped', { device: name, first_map, members: infos.length, missing: failures.length });
      cb(0, dev, null);
    };
    if (!first_map) return ready();
    pool.commandAll(encodeRequest({ cmd: 'MAP', mapped_size: size, pool_uuid, params }), BRMR_RSP_MAX, (maps) => {
      const bad: string[] = [];
      for (const a of maps) {
        const d = a.status === 0 && a.data !== null ? decodeAnswer(a.data, 'MAP') : `${errnoName(a.status)}`;
        if (typeof d === 'string') bad.push(`member ${a.member_id}: ${d}`);
        else if (d.status !== 0) bad.push(`member ${a.member_id}: ${d.reason !== '' ? d.reason : errnoName(d.status)}`);
      }
      if (maps.length !== infos.length) bad.push(`${infos.length} members validated, ${maps.length} answered MAP`);
      if (bad.length === 0) return ready();
      // Members that took the MAP must not stay mapped beside the others (the next map would
      // refuse the mixture): roll them back, best effort, then report the failure.
      pool.commandAll(encodeRequest({ cmd: 'UNMAP', rollback: true }), BRMR_RSP_MAX, (undo) => {
        const kept = undo.filter((a) => a.status !== 0 || a.data === null || (() => {
          const d = decodeAnswer(a.data, 'UNMAP');
          return typeof d === 'string' || d.status !== 0;
        })());
        const note = kept.length > 0 ? ` (not rolled back on members ${kept.map((a) => a.member_id).join(',')})` : '';
        fail(Errno.EIO, `MAP failed: ${bad.join('; ')}${note}`, true);
      });
    });
  });
}

/** Delivers a USER command to one member and calls back with its answer (status, data). */
export type UserSend = (bytes: Buffer, rsp_len: number, cb: (status: number, data: Buffer | null) => void) => void;

/**
 * MAP of a mapped device on a member that joins its pool later (extend, §9.7). The first
 * map marks every member's store MAPPED; a store made later by create_store is not, and
 * io_allowed = OPEN && MAPPED makes it refuse the application's IO: the first write after
 * an extend under load failed the new member's leg (found by fault scenario 8). `send`
 * reaches the new member before it joins, so it takes no IO unmapped.
 */
export function mapJoiningMember(dev: BrmrDevice, send: UserSend, cb: (status: number, reason: string | null) => void): void {
  send(encodeRequest({ cmd: 'MAP', mapped_size: dev.size_bytes, pool_uuid: dev.pool_uuid, params: dev.params }), BRMR_RSP_MAX, (status, data) => {
    if (status !== 0 || data === null) return cb(status !== 0 ? status : Errno.EBADMSG, `MAP: ${errnoName(status !== 0 ? status : Errno.EBADMSG)}`);
    const d = decodeAnswer(data, 'MAP');
    if (typeof d === 'string') return cb(Errno.EBADMSG, `MAP: ${d}`);
    if (d.status !== 0) return cb(d.status, `MAP: ${d.reason !== '' ? d.reason : errnoName(d.status)}`);
    cb(0, null);
  });
}

export class BrmrDevice implements BlockDevice {
  readonly name: string;
  readonly pool: ClientPool;
  readonly size_bytes: number;
  readonly block_sizes: BlockSizes;
  readonly writable = true;
  readonly can_trim = true;
  readonly can_zero = true;
  /** Zeroes are written (backend.ts): no fast zero. */
  readonly can_fast_zero = false;
  /** A flush goes to every NORMAL leg, so it covers writes of every connection. */
  readonly multi_conn = true;
  readonly params: DeviceParams;
  readonly pool_uuid: Buffer;
  readonly first_map: boolean;
  readonly queue_depth: number;
  readonly max_waiting: number;
  readonly sm: DeviceStateMachine;
  readonly stats: DeviceStats = { reads: 0, writes: 0, trims: 0, zeroes: 0, flushes: 0, bytes_read: 0, bytes_written: 0, errors: 0, busy: 0, max_waiting_seen: 0 };
  private inflight = 0;
  private waiting: Pending[] = [];
  private waiting_head = 0;
  private drained: (() => void)[] = [];
  private readonly log: Logger;
  /** Longest single trim / write-zeroes IO sent to the pool. */
  private readonly max_trim: number;
  private readonly max_zero: number;

  constructor(pool: ClientPool, name: string, params: DeviceParams, pool_uuid: Buffer, first_map: boolean, queue_depth: number, max_waiting: number, log: Logger, emit: (ev: DeviceStateEvent) => void) {
    this.pool = pool;
    this.name = name;
    this.size_bytes = pool.mapped_size;
    this.params = params;
    this.pool_uuid = pool_uuid;
    this.first_map = first_map;
    this.queue_depth = queue_depth;
    this.max_waiting = Math.max(0, max_waiting);
    this.log = log;
    this.sm = new DeviceStateMachine(name, emit);
    const lbs = params.logical_block_size;
    const down = (n: number): number => Math.max(lbs, n - (n % lbs));
    const maximum = down(Math.min(pool.max_io_size, params.max_io_bytes));
    let preferred = Math.max(lbs, Math.min(pool.chunk_size, maximum));
    while ((preferred & (preferred - 1)) !== 0) preferred &= preferred - 1;
    this.block_sizes = { minimum: lbs, preferred, maximum };
    this.max_trim = down(Math.min(pool.max_io_size, params.max_discard_bytes > 0 ? params.max_discard_bytes : maximum));
    this.max_zero = down(Math.min(pool.max_io_size, params.max_write_zeroes_bytes > 0 ? params.max_write_zeroes_bytes : maximum));
  }

  get state(): DeviceStateView {
    const s = this.sm.state;
    return s === 'ready' && this.pool.query().normal_legs === 0 ? 'disconnected' : s;
  }

  /** Fewer legs than members are NORMAL (the reference's never-set map_incomplete). */
  get degraded(): boolean {
    return this.pool.query().normal_legs < this.pool.members.size;
  }

  status(): DeviceStatus {
    const q = this.pool.query();
    return {
      name: this.name,
      state: this.state,
      degraded: this.degraded,
      size_bytes: this.size_bytes,
      members: this.pool.members.size,
      legs: q.legs,
      normal_legs: q.normal_legs,
      in_flight: this.inflight,
      waiting: this.waiting.length - this.waiting_head,
      first_map: this.first_map,
      pool_uuid: this.pool_uuid,
      params: this.params,
      stats: { ...this.stats },
    };
  }

  // ------------------------------------------------------------------ queue

  private later(cb: (status: number, data: Buffer | null) => void, status: number): void {
    if (status !== 0) this.stats.errors++;
    queueMicrotask(() => cb(status, null));
  }

  /** Admits an IO: sent now, queued (bounded), or refused with -EBUSY. */
  private submit(p: Pending): void {
    if (this.sm.state !== 'ready') return this.later(p.cb, Errno.ESHUTDOWN);
    if (this.inflight < this.queue_depth && this.waiting_head === this.waiting.length) return this.start(p);
    if (this.waiting.length - this.waiting_head >= this.max_waiting) {
      this.stats.busy++;
      return this.later(p.cb, Errno.EBUSY);
    }
    this.waiting.push(p);
    this.stats.max_waiting_seen = Math.max(this.stats.max_waiting_seen, this.waiting.length - this.waiting_head);
  }

  private start(p: Pending): void {
    this.inflight++;
    let in_call = true;
    const done = (status: number, data: Buffer | null): void => {
      this.inflight--;
      if (status !== 0) {
        this.stats.errors++;
        this.log.log('debug', 'device IO failed', { device: this.name, op: p.op, offset: p.offset, length: p.length, status: errnoName(status) });
      } else if (p.op === 'read') this.stats.bytes_read += p.length;
      else if (p.op === 'write') this.stats.bytes_written += p.length;
      p.cb(status, data);
      this.pump();
    };
    this.pool.submit(p.op, p.offset, p.length, p.data, { fua: p.fua }, (status, data) => {
      // The pool may answer inside submit (no leg, bad range): never call back from here.
      if (in_call) queueMicrotask(() => done(status, data));
      else done(status, data);
    });
    in_call = false;
  }

  private pump(): void {
    while (this.inflight < this.queue_depth && this.waiting_head < this.waiting.length) {
      const p = this.waiting[this.waiting_head] as Pending;
      this.waiting[this.waiting_head++] = undefined as unknown as Pending;
      if (this.waiting_head > 1024 && this.waiting_head * 2 > this.waiting.length) {
        this.waiting = this.waiting.slice(this.waiting_head);
        this.waiting_head = 0;
      }
      this.start(p);
    }
    if (this.inflight === 0 && this.waiting_head === this.waiting.length && this.drained.length > 0) {
      const ws = this.drained;
      this.drained = [];
      for (const w of ws) w();
    }
  }

  private checkRange(offset: number, length: number, limit: number): number {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > this.size_bytes) return Errno.EINVAL;
    return length > limit ? Errno.EINVAL : 0;
  }

  // ------------------------------------------------------------------ BlockDevice

  read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    const err = this.checkRange(offset, length, this.block_sizes.maximum);
    if (err !== 0) return this.later(cb, err);
    this.stats.reads++;
    this.submit({ op: 'read', offset, length, data: null, fua: false, cb });
  }

  write(offset: number, data: Buffer, flags: WriteFlags, cb: (status: number) => void): void {
    const err = this.checkRange(offset, data.length, this.block_sizes.maximum);
    if (err !== 0) return this.later(cb, err);
    this.stats.writes++;
    this.submit({ op: 'write', offset, length: data.length, data, fua: flags.fua, cb });
  }

  trim(offset: number, length: number, flags: WriteFlags, cb: (status: number) => void): void {
    this.stats.trims++;
    this.pieces('discard', offset, length, this.max_trim, flags.fua, cb);
  }

  writeZeroes(offset: number, length: number, flags: ZeroFlags, cb: (status: number) => void): void {
    // Zeroes are written on every member: never fast.
    if (flags.fast_zero) return this.later(cb, Errno.EOPNOTSUPP);
    this.stats.zeroes++;
    this.pieces('write_zeroes', offset, length, this.max_zero, flags.fua, cb);
  }

  flush(cb: (status: number) => void): void {
    this.stats.flushes++;
    this.submit({ op: 'flush', offset: 0, length: 0, data: null, fua: false, cb });
  }

  /** A trim or write-zeroes longer than the pool takes: pieces one after another. */
  private pieces(op: 'discard' | 'write_zeroes', offset: number, length: number, piece: number, fua: boolean, cb: (status: number) => void): void {
    const err = this.checkRange(offset, length, Number.MAX_SAFE_INTEGER);
    if (err !== 0) return this.later(cb, err);
    const end = offset + length;
    const next = (at: number): void => {
      const n = Math.min(piece, end - at);
      this.submit({ op, offset: at, length: n, data: null, fua, cb: (status) => (status !== 0 || at + n >= end ? cb(status) : next(at + n)) });
    };
    next(offset);
  }

  metaContexts(): readonly string[] {
    return [...this.pool.members].sort((a, b) => a - b).map((id) => `${DIRTY_CONTEXT_PREFIX}${id}`);
  }

  /**
   * `rmr:dirty:<member_id>`: extents of whole chunks (clipped to the request) with flag 1
   * where the client's dirty map says the member misses data, 0 where it is clean.
   */
  blockStatus(context: string, offset: number, length: number, cb: (status: number, extents: Extent[] | null) => void): void {
    const fail = (status: number): void => void queueMicrotask(() => cb(status, null));
    if (!context.startsWith(DIRTY_CONTEXT_PREFIX)) return fail(Errno.EINVAL);
    const id_text = context.slice(DIRTY_CONTEXT_PREFIX.length);
    const id = /^[0-9]{1,3}$/.test(id_text) ? Number(id_text) : -1;
    const map = this.pool.maps.get(id);
    if (map === undefined || !this.pool.members.has(id)) return fail(Errno.EINVAL);
    if (this.checkRange(offset, length, Number.MAX_SAFE_INTEGER) !== 0) return fail(Errno.EINVAL);
    const cs = this.pool.chunk_size;
    const end = offset + length;
    const extents: Extent[] = [];
    let scanned = 0;
    let pos = offset;
    while (pos < end && extents.length < MAX_EXTENTS && scanned < MAX_DIRTY_SCAN) {
      const c = Math.floor(pos / cs);
      const dirty = map.isDirty(c);
      let run_end: number;
      if (!dirty) {
        const nd = map.nextDirty(c);
        run_end = nd < 0 ? end : Math.min(end, nd * cs);
      } else {
        let c2 = c + 1;
        while (c2 * cs < end && scanned < MAX_DIRTY_SCAN && map.isDirty(c2)) {
          c2++;
          scanned++;
        }
        run_end = Math.min(end, c2 * cs);
      }
      extents.push({ length: run_end - pos, flags: dirty ? NBD_STATE_RMR_DIRTY : 0 });
      pos = run_end;
    }
    queueMicrotask(() => cb(0, extents));
  }

  // ------------------------------------------------------------------ unmap

  /**
   * unmap_device: new IO is refused, accepted IO drains, UNMAP goes to every leg (failures
   * ignored: the stores keep MAPPED anyway), the pool is closed.
   */
  unmap(cb: (status: number) => void): void {
    const err = this.sm.change('closing', 'unmap');
    if (err !== null) return void queueMicrotask(() => cb(Errno.EINVAL));
    const after_drain = (): void => {
      this.pool.commandAll(encodeRequest({ cmd: 'UNMAP', rollback: false }), BRMR_RSP_MAX, () => {
        this.pool.close(() => {
          this.sm.change('closed', 'unmapped');
          this.log.log('info', 'device unmapped', { device: this.name });
          cb(0);
        });
      });
    };
    if (this.inflight === 0 && this.waiting_head === this.waiting.length) queueMicrotask(after_drain);
    else this.drained.push(after_drain);
  }
}

/** unmap_device. */
export function unmapDevice(dev: BrmrDevice, cb: (status: number) => void): void {
  dev.unmap(cb);
}
