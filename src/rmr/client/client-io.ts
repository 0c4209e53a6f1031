// The compute client's IO path (the reference's rmr_clt IO, §6.1-§6.4). Writes, discards and
// write-zeroes go to every NORMAL leg in one hop, carrying the members that cannot take them
// (piggyback); a leg that fails a write is recorded dirty on the legs that took it (MAP_ADD)
// before the write is acknowledged. Reads go to one NORMAL leg, round robin, retried on
// untried legs. Also the upper layer's command channel and the single-member read of
// diagnostics. It works on the pool's state only through ClientPoolCore.
//
// Guarantees: a write is acknowledged only if it is on at least one leg and every member
// that missed it is recorded dirty on a surviving leg and in client memory; an IO with no
// NORMAL leg fails at once (ENODEV); with `min_replicas`, writes and flushes are refused
// (EROFS) while fewer legs are NORMAL, and fail (EIO) when they complete on fewer legs; a
// FLUSH is acknowledged only if every chunk written since the last good flush has a clean
// copy on a leg that flushed (ARCHITECTURE §2.14), else it fails (EIO). A FUA write needs no
// more: each leg that took it wrote it durably into a chunk it held clean.

import { Errno } from '../../util/errno.js';
import { chunkRange } from '../protocol/dirty-map.js';
import { IO_F_FUA, IO_F_SYNC, IoOp, MAX_MEMBERS, type MapAddValue } from '../protocol/msg.js';
import type { ClientOp, Leg } from './leg.js';
import type { ClientPoolCore } from './pool-core.js';

/** The IOs that go to every NORMAL leg. */
type ReplicatedOp = Exclude<ClientOp, 'read'>;

const NO_MEMBERS: readonly number[] = [];
const OP_CODE: Record<ClientOp, number> = { read: IoOp.READ, write: IoOp.WRITE, discard: IoOp.DISCARD, write_zeroes: IoOp.WRITE_ZEROES, flush: IoOp.FLUSH };

export class ClientIo {
  private readonly core: ClientPoolCore;
  /** Round-robin position of reads. */
  private rr = 0;

  constructor(core: ClientPoolCore) {
    this.core = core;
  }

  /**
   * Submits an IO. `data` is the write payload (write only). `cb` gets 0 or -errno, and the
   * data for reads. Never hangs: every path ends in exactly one call of `cb`.
   */
  submit(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: { fua?: boolean; sync?: boolean }, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    if (!core.inUse) return cb(Errno.ENXIO, null);
    if (core.isFrozen) {
      // Held in order and submitted again by the last unfreeze.
      if (!core.holdIo(() => this.submit(op, offset, length, data, flags, cb))) return cb(Errno.EBUSY, null);
      return;
    }
    core.ioStarted();
    this.start(op, offset, length, data, flags, (status, d) => {
      core.ioDone();
      cb(status, d);
    });
  }

  private start(op: ClientOp, offset: number, length: number, data: Buffer | null, flags: { fua?: boolean; sync?: boolean }, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    if (op === 'flush') {
      if (offset !== 0 || length !== 0) return cb(Errno.EINVAL, null);
    } else {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > core.mapped_size) return cb(Errno.EINVAL, null);
      if (length > core.max_io_size) return cb(Errno.EINVAL, null);
      if (op === 'write' ? data === null || data.length !== length : data !== null) return cb(Errno.EINVAL, null);
    }
    const f = OP_CODE[op] | (flags.fua === true ? IO_F_FUA : 0) | (flags.sync === true ? IO_F_SYNC : 0);
    if (op === 'read') return this.read(offset, length, f, null, 0, cb);
    this.replicate(op, offset, length, data, f, cb);
  }

  /**
   * The upper layer's command channel (reference §5.6): `bytes` to every leg that is not
   * REMOVING or FAILED; one answer per leg, FAILED legs counted as failures.
   */
  commandAll(bytes: Buffer, rsp_len: number, cb: (answers: { member_id: number; status: number; data: Buffer | null }[]) => void): void {
    const legs = [...this.core.legs()].filter((l) => l.state !== 'REMOVING');
    const out: { member_id: number; status: number; data: Buffer | null }[] = [];
    let pending = legs.length;
    if (pending === 0) return cb(out);
    for (const leg of legs) {
      if (leg.state === 'FAILED') {
        out.push({ member_id: leg.member_id, status: Errno.ENOTCONN, data: null });
        if (--pending === 0) cb(out);
        continue;
      }
      leg.channel.command({ kind: 'user', bytes, rsp_len }, (status, _v, _r, data) => {
        out.push({ member_id: leg.member_id, status, data: data ?? null });
        if (--pending === 0) cb(out);
      });
    }
  }

  /**
   * Reads a range from one NORMAL member (diagnostics and the simulator's stability check):
   * the node syncs a dirty chunk first, as for any read. A failure does not fail the leg.
   */
  readFrom(member_id: number, offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    const leg = core.leg(member_id);
    if (leg === undefined || leg.state !== 'NORMAL') return cb(Errno.ENODEV, null);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > core.mapped_size || length > core.max_io_size) return cb(Errno.EINVAL, null);
    leg.channel.sendIo(core.ioMsg(leg, offset, length, IoOp.READ, [], 0), null, (status, d) => cb(status === 0 && d !== null && d.length === length ? 0 : status !== 0 ? status : Errno.EIO, status === 0 ? d : null));
  }

  // ------------------------------------------------------------------ reads (§6.3)

  /** `tried`: the members this read already failed on (null on the first attempt). */
  private read(offset: number, length: number, flags: number, tried: Set<number> | null, first_err: number, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    // Round robin over the NORMAL legs not tried yet, in leg order (no arrays: every read
    // passes here).
    let n = 0;
    for (const l of core.legs()) if (l.state === 'NORMAL' && (tried === null || !tried.has(l.member_id))) n++;
    if (n === 0) {
      core.stats.failed_ios++;
      return cb(tried === null ? Errno.ENODEV : first_err, null);
    }
    let pick = this.rr++ % n;
    let leg: Leg | null = null;
    for (const l of core.legs()) {
      if (l.state !== 'NORMAL' || (tried !== null && tried.has(l.member_id))) continue;
      if (pick-- === 0) {
        leg = l;
        break;
      }
    }
    const chosen = leg as Leg;
    if (tried === null) core.stats.reads++;
    else core.stats.read_retries++;
    chosen.channel.sendIo(core.ioMsg(chosen, offset, length, flags, NO_MEMBERS, 0), null, (status, d) => {
      if (status === 0 && d !== null && d.length === length) return cb(0, d);
      const err = status !== 0 ? status : Errno.EIO;
      if (!core.sync) core.failLeg(chosen, `read failed (${err})`);
      const again = tried ?? new Set<number>();
      again.add(chosen.member_id);
      this.read(offset, length, flags, again, first_err === 0 ? err : first_err, cb);
    });
  }

  // ------------------------------------------------------------------ writes (§6.2, §6.4)

  private replicate(op: ReplicatedOp, offset: number, length: number, data: Buffer | null, flags: number, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    if (op === 'flush') return this.replicateLocked(op, offset, length, data, flags, 0, cb);
    const end = offset + length;
    // Overlapping writes are ordered (ClientPoolCore.lockRange).
    const queued = core.lockRange(offset, end, () => {
      const seq = core.beginWrite();
      this.replicateLocked(op, offset, length, data, flags, seq, (s, d) => {
        core.endWrite(seq);
        core.unlockRange(offset, end);
        cb(s, d);
      });
    });
    if (!queued) cb(Errno.EBUSY, null);
  }

  private replicateLocked(op: ReplicatedOp, offset: number, length: number, data: Buffer | null, flags: number, seq: number, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    const targets = core.normalLegs();
    if (targets.length === 0) {
      core.stats.failed_ios++;
      return cb(Errno.ENODEV, null);
    }
    if (targets.length < core.min_replicas) {
      core.stats.failed_ios++;
      return cb(Errno.EROFS, null);
    }
    core.stats.writes++;
    const has_range = op !== 'flush';
    const flush_n = has_range ? 0 : core.flushIssued();
    const [first, count] = has_range ? chunkRange(offset, length, core.chunk_size) : [0, 0];
    // Piggyback: members that cannot take this write, recorded by every leg that does.
    const missing: number[] = [];
    if (has_range && !core.sync) {
      const now = core.now();
      for (const id of core.members) {
        const leg = core.leg(id);
        if (leg === undefined || leg.state === 'FAILED' || leg.state === 'RECONNECTING') {
          missing.push(id);
          core.mapOf(id).setDirty(first, count, now);
        }
      }
    }
    let pending = targets.length;
    const answered_ok: Leg[] = [];
    const failed: Leg[] = [];
    const sent_at = targets.map((l) => l.failures);
    let first_err = 0;
    for (const leg of targets) {
      leg.channel.sendIo(core.ioMsg(leg, offset, length, flags, missing, seq), data, (status) => {
        if (status === 0) answered_ok.push(leg);
        else {
          if (first_err === 0) first_err = status;
          failed.push(leg);
          if (!core.sync) core.failLeg(leg, `${op} failed (${status})`);
        }
        if (--pending > 0) return;
        // A leg that failed after it took the write (its node may have crashed and lost it)
        // is one that missed it. Found by the simulator (seed 4009 with crashes: a write
        // waited for a partitioned leg while the node that took it crashed, lost it, and came
        // back as the last authoritative member; the write was then acknowledged).
        const ok = answered_ok.filter((l) => l.failures === sent_at[targets.indexOf(l)]);
        for (const l of answered_ok) if (!ok.includes(l)) failed.push(l);
        if (first_err === 0 && ok.length < answered_ok.length) first_err = Errno.EIO;
        if (ok.length === 0) {
          core.stats.failed_ios++;
          if (!has_range) core.flushAbandoned(flush_n);
          if (has_range && !core.sync) core.markUncertain(first, count, seq);
          return cb(first_err, null);
        }
        if (!has_range) return this.flushDone(flush_n, ok, cb);
        for (const l of ok) core.copyLanded(l, first, count);
        if (failed.length === 0) return this.acked(op, ok.length, first, count, cb);
        this.mapAddPhase(op, ok, failed, first, count, seq, (l) => l.failures === sent_at[targets.indexOf(l)], cb);
      });
    }
  }

  /**
   * The legs answered: acknowledged if `copies` legs (with every miss recorded) meet
   * min_replicas. Below it the IO fails, though its copies stay and its misses are recorded,
   * so the members converge on it (a failed write may or may not be there).
   */
  private acked(op: ReplicatedOp, copies: number, first: number, count: number, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    if (copies < core.min_replicas) {
      core.ioFailed(op, 'min_replicas', Errno.EIO, `${op} of chunks ${first}..${first + count - 1} completed on ${copies} leg(s), fewer than min_replicas ${core.min_replicas}`);
      return cb(Errno.EIO, null);
    }
    core.writeAcked(first, count);
    cb(0, null);
  }

  /** A FLUSH succeeded on the legs `flushed`: acknowledged if durable (see ClientPoolCore.flushDone) and on enough legs. */
  private flushDone(n: number, flushed: Leg[], cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    if (flushed.length < core.min_replicas) {
      core.flushAbandoned(n);
      core.ioFailed('flush', 'min_replicas', Errno.EIO, `flush completed on ${flushed.length} leg(s), fewer than min_replicas ${core.min_replicas}`);
      return cb(Errno.EIO, null);
    }
    const why = core.flushDone(n, flushed);
    if (why !== null) {
      core.ioFailed('flush', 'not_durable', Errno.EIO, why);
      return cb(Errno.EIO, null);
    }
    cb(0, null);
  }

  /**
   * Some legs missed a write: record it on the legs that took it before acknowledging.
   * `unfailed(l)`: leg `l` has not failed since the write was sent to it.
   */
  private mapAddPhase(op: ReplicatedOp, ok: Leg[], failed: Leg[], first: number, count: number, seq: number, unfailed: (l: Leg) => boolean, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    core.stats.map_adds++;
    const now = core.now();
    for (const l of failed) core.mapOf(l.member_id).setDirty(first, count, now);
    const ids = Buffer.alloc(MAX_MEMBERS);
    failed.forEach((l, i) => (ids[i] = l.member_id));
    const msg: MapAddValue = { first_chunk: first, chunk_count: count, map_ver: core.map_ver, failed_cnt: failed.length, failed_ids: ids };
    // Only NORMAL legs count: a RECONNECTING leg's maps are replaced at its next spread, so a
    // record there would be lost. Found by the simulator (seed 5132: the only MAP_ADD went to
    // a RECONNECTING leg, the write was acknowledged, and the next spread erased the record).
    const targets = ok.filter((l) => l.state === 'NORMAL');
    if (targets.length === 0) {
      core.stats.failed_ios++;
      if (!core.sync) core.markUncertain(first, count, seq);
      return cb(Errno.EIO, null);
    }
    let pending = targets.length;
    const recorded: Leg[] = [];
    let last_err: number = Errno.EIO;
    for (const leg of targets) {
      leg.channel.sendMapAdd(msg, (status) => {
        if (status === 0) recorded.push(leg);
        else {
          last_err = status;
          if (!core.sync) core.failLeg(leg, `map_add failed (${status})`);
        }
        if (--pending > 0) return;
        // As for the data (above): a record counts only on a leg that has not failed since
        // the write was sent, checked when the last MAP_ADD is answered. A leg that took the
        // write and failed before its MAP_ADD was recorded holds the data without knowing
        // who missed it; if every leg that recorded the miss failed before it, it is the last
        // authoritative leg, enabled directly (Case 2) and the source of every map. Found by
        // the simulator (seed 30000953, swarm: node3's MAP_ADD waited in a partition, node1
        // recorded the miss of node2 and was then cut; node3 failed last, its MAP_ADD failed,
        // the write was acknowledged on node1's record, and node3's maps, spread to node2,
        // said clean where node2 held the older data). Such a write fails and its chunks are
        // uncertain: the reconciliation before the next spread gives them one source.
        const kept = recorded.filter(unfailed);
        if (kept.length > 0) return this.acked(op, kept.length, first, count, cb);
        if (recorded.length > 0) last_err = Errno.EIO;
        core.stats.failed_ios++;
        if (!core.sync) core.markUncertain(first, count, seq);
        cb(last_err, null);
      });
    }
  }
}
