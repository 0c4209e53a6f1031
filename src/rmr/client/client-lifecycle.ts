// The operator's actions on a compute client's pool (reference §9.5-§9.7, §9.10): add_sess
// (create / assemble), extend (a new member on a live pool), enable, del_sess (delete /
// disassemble), maintenance mode. Each holds the pool's lock; the ones that change which
// legs take writes freeze IO while they do (a freeze drains the IO in flight first).
//
// POOL_INFO (a member added or removed) goes to every other leg; a FAILED leg gets it queued
// and replayed before its next map (client-recovery.ts), so a node that was away does not
// keep a removed member or miss a new one.

import { Errno } from '../../util/errno.js';
import { JOIN_ANSWER_BLANK, type LegCommand } from '../protocol/leg-commands.js';
import { MAX_MEMBERS } from '../protocol/msg.js';
import type { ClientRecovery } from './client-recovery.js';
import type { Leg, LegChannel, OpCallback } from './leg.js';
import type { ClientPoolCore } from './pool-core.js';

export interface DelSessOptions {
  /** Delete even if the member holds the only clean copy of some chunks (they are lost). */
  force?: boolean;
}

type LegCallback = (status: number, leg: Leg | null, reason: string | null) => void;

export class ClientLifecycle {
  private readonly core: ClientPoolCore;
  /** Recovery brings legs back after an assemble, an extend and maintenance off. */
  private readonly recovery: ClientRecovery;

  constructor(core: ClientPoolCore, recovery: ClientRecovery) {
    this.core = core;
    this.recovery = recovery;
  }

  /** Runs `fn` under the pool's lock; `fn` calls `release` exactly once. */
  private locked(busy: () => void, fn: (release: () => void) => void): void {
    const core = this.core;
    let released = false;
    const release = (): void => {
      if (released) throw new Error('invariant: pool lock released twice');
      released = true;
      core.unlock();
    };
    if (!core.lock(() => fn(release))) busy();
  }

  /** An operator operation under the pool lock: `done` releases it, then answers. */
  private lockedOp(cb: OpCallback, fn: (done: OpCallback) => void): void {
    this.locked(
      () => cb(Errno.EBUSY, 'too many operations waiting for the pool'),
      (release) =>
        fn((status, reason) => {
          release();
          cb(status, reason);
        }),
    );
  }

  // ------------------------------------------------------------------ add_sess

  addSess(name: string, channel: LegChannel, mode: 'create' | 'assemble' | null, queue_depth: number, cb: LegCallback): void {
    const core = this.core;
    if (core.sync !== (mode === null)) return cb(Errno.EINVAL, null, core.sync ? 'sync pools take no mode' : 'a mode (create or assemble) is required');
    this.locked(
      () => cb(Errno.EBUSY, null, 'too many operations waiting for the pool'),
      (release) =>
        this.join(name, channel, mode, queue_depth, false, (status, leg, reason) => {
          release();
          // An assembled member may complete the set (Cases 3/4) or find a NORMAL leg.
          if (status === 0 && mode === 'assemble') this.recovery.tryEnable(() => undefined);
          cb(status, leg, reason);
        }),
    );
  }

  extend(name: string, channel: LegChannel, queue_depth: number, cb: LegCallback): void {
    const core = this.core;
    if (core.sync) return cb(Errno.EINVAL, null, 'sync pools are not extended');
    this.locked(
      () => cb(Errno.EBUSY, null, 'too many operations waiting for the pool'),
      (release) => {
        if (core.normalLegs().length === 0) {
          release();
          return cb(Errno.ENODEV, null, 'extend needs a NORMAL leg to copy the maps and data from');
        }
        this.join(name, channel, 'create', queue_depth, true, (status, leg, reason) => {
          if (status !== 0 || leg === null) {
            release();
            return cb(status, null, reason);
          }
          // It serves once it has the maps (Case 1); every chunk is dirty for it until synced.
          this.recovery.enableLocked((s2) => {
            release();
            cb(0, leg, s2 === 0 ? null : `joined, the map spread will be retried (${s2})`);
          });
        });
      },
    );
  }

  /**
   * The join of a leg and what the others must learn. `extend`: a new member on a live pool:
   * fully dirty, straight to RECONNECTING (the reference reuses CREATED and lets MAP_READY in
   * there, §9.7).
   */
  private join(name: string, channel: LegChannel, mode: 'create' | 'assemble' | null, queue_depth: number, extend: boolean, cb: LegCallback): void {
    const core = this.core;
    const others = [...core.legs()].filter((l) => l.state !== 'REMOVING');
    if (others.length >= MAX_MEMBERS) return cb(Errno.ENOSPC, null, `pool ${core.pool} already has ${MAX_MEMBERS} legs`);
    const create = mode === 'create';
    const start_dirty = extend || (create && others.length > 0);
    // Beside members whose stores are all blank, a blank store starts clean (no initial sync).
    const blank_ok = start_dirty && create && !extend && !core.sync && core.allBlank;
    const members = others.map((l) => ({ id: l.member_id, dirty: !(core.maps.get(l.member_id)?.isEmpty() ?? true) }));
    channel.command({ kind: 'join', create, dirty: start_dirty, blank_ok, extend, queue_depth, members, owner: core.owner }, (status, member_id, reason, data) => {
      if (status !== 0) return cb(status, null, reason);
      const blank = data !== undefined && data !== null && data.length > 0 && ((data[0] as number) & JOIN_ANSWER_BLANK) !== 0;
      if (create && !extend) core.noteJoinedBlank(blank);
      // The node's rule (membership.join): dirty unless blank beside blank members.
      const dirty = start_dirty && !(blank_ok && blank);
      if (core.leg(member_id) !== undefined) return cb(Errno.EEXIST, null, `member ${member_id} already has a leg`);
      if (!core.members.has(member_id) && core.members.size >= MAX_MEMBERS) return cb(Errno.ENOSPC, null, `pool ${core.pool} already has ${MAX_MEMBERS} members`);
      core.raiseQueueDepth(queue_depth);
      const leg = core.addLeg(name, member_id, channel);
      if (dirty) core.mapOf(member_id).setAll(core.now());
      if (core.sync) {
        core.setLegState(leg, 'NORMAL', 'sync leg joined');
        return cb(0, leg, null);
      }
      const attach = (): void => {
        // The other members learn of it (and, for a new member, that it starts dirty).
        this.poolInfoAll({ kind: 'pool_info', member_id, op: 'add', mode: create ? 'create' : 'assemble', dirty }, leg, () => {
          if (!create || extend) core.setLegState(leg, 'RECONNECTING', extend ? 'extend' : 'assembled');
          cb(0, leg, null);
        });
      };
      if (create && !extend) return attach();
      // Assemble (and extend): the node's pool_md tells the members the pool has (§8.7).
      this.recovery.readMd(leg, (s2, md, why) => {
        if (s2 !== 0 || md === null) {
          core.removeLeg(member_id, false);
          return cb(s2 !== 0 ? s2 : Errno.EBADMSG, null, why ?? `pool metadata of member ${member_id} unreadable (${s2})`);
        }
        if (!extend) {
          for (const slot of md.srv_md) {
            if (slot.member_id === 0) continue;
            // A member listed but not attached yet: writes piggyback it until it is back.
            if (core.learnMember(slot.member_id) === 'full') break;
          }
        }
        attach();
      });
    });
  }

  /**
   * POOL_INFO to every leg but `except`: FAILED legs get it queued for their return; a leg
   * that fails it is failed (and gets it queued). `cb` once every live leg answered, with
   * how many members took it (persisted) and how many legs there were.
   */
  private poolInfoAll(cmd: LegCommand, except: Leg | null, cb: (took: number, legs: number) => void): void {
    const core = this.core;
    const rest = [...core.legs()].filter((l) => l !== except && l.state !== 'REMOVING');
    let pending = rest.length;
    let took = 0;
    if (pending === 0) return cb(0, 0);
    for (const o of rest) {
      if (o.state === 'FAILED') {
        core.queuePoolInfo(o, cmd);
        if (--pending === 0) cb(took, rest.length);
        continue;
      }
      o.channel.command(cmd, (status) => {
        if (status === 0) took++;
        else {
          core.failLeg(o, `${cmd.kind} failed (${status})`);
          core.queuePoolInfo(o, cmd);
        }
        if (--pending === 0) cb(took, rest.length);
      });
    }
  }

  /**
   * The user's enable of a created leg (ENABLE_POOL(1), then NORMAL), with IO drained; or
   * maintenance off. A write in flight went only to the NORMAL legs and is not recorded as
   * missed by a created member (it is dirty everywhere), so once NORMAL the member could
   * sync that chunk from a peer the write had not reached yet and keep the old bytes as
   * clean. Found by the disk-replacement fault scenario (a stale read after add_sess
   * mode=create + enable under load).
   */
  enableLeg(leg: Leg, cb: OpCallback): void {
    const core = this.core;
    if (leg.maintenance) return this.maintenance(leg.member_id, false, cb);
    this.locked(
      () => cb(Errno.EBUSY, 'too many operations waiting for the pool'),
      (release) =>
        core.freeze(() => {
          const from = leg.state;
          const failures = leg.failures;
          leg.channel.command({ kind: 'enable_pool', enable: true }, (status, _v, reason) => {
            const done = (st: number, why: string | null): void => {
              core.unfreeze();
              release();
              cb(st, why);
            };
            if (status !== 0) return done(status, reason);
            // A leg that failed while the enable was on the way stays out (ClientPoolCore.promoteLeg).
            if (from === 'CREATED' || from === 'RECONNECTING') {
              return core.promoteLeg(leg, from, failures, 'enabled') ? done(0, null) : done(Errno.EAGAIN, 'the leg failed while it was enabled');
            }
            const err = core.setLegState(leg, 'NORMAL', 'enabled');
            done(err === null ? 0 : Errno.EINVAL, err);
          });
        }),
    );
  }

  // ------------------------------------------------------------------ del_sess (§9.6)

  delSess(member_id: number, mode: 'delete' | 'disassemble', cb: OpCallback, opts: DelSessOptions): void {
    const core = this.core;
    this.lockedOp(cb, (done) => {
      const leg = core.leg(member_id);
      if (leg === undefined) {
        // Already detached: a delete still forgets the member (idempotent).
        if (mode === 'delete' && core.members.has(member_id)) {
          core.forgetMember(member_id);
          return this.poolInfoAll({ kind: 'pool_info', member_id, op: 'remove', mode: 'delete', dirty: false }, null, (took, legs) =>
            done(took > 0 || legs === 0 ? 0 : Errno.EIO, took > 0 || legs === 0 ? null : 'no member recorded the removal: re-run del_sess'),
          );
        }
        return done(0, null);
      }
      core.freeze(() => {
        // Checked with IO drained, right before the leg goes: legs may have failed while
        // the freeze waited, leaving this one the only holder (found by the simulator, seed
        // 10084: the check passed when del_sess was called, the other legs failed during the
        // drain, and the writes only the deleted member held were lost).
        if (mode === 'delete' && opts.force !== true && leg.state !== 'REMOVING') {
          const only = this.onlyCleanCopies(member_id);
          const last = leg.state === 'NORMAL' && core.normalLegs().length === 1 && [...core.legs()].some((l) => l !== leg && l.state !== 'REMOVING');
          if (only > 0 || last) {
            core.unfreeze();
            return done(Errno.EBUSY, last ? `member ${member_id} is the only NORMAL member: the others need its maps (or force)` : `member ${member_id} holds the only clean copy of ${only} chunks: wait until the others have synced them (or force)`);
          }
        }
        // Out of IO service first; a re-run (after a failure below) skips what is done.
        core.setLegState(leg, 'REMOVING', `del_sess ${mode}`);
        const leave = (next: () => void): void => {
          if (leg.left) return next();
          // The node may be gone already: leaving it is best effort, the others must know.
          leg.channel.command({ kind: 'leave', member_id, delete: mode === 'delete' }, (status) => {
            if (status === 0) leg.left = true;
            next();
          });
        };
        leave(() => {
          if (mode === 'delete') core.forgetMember(member_id);
          this.poolInfoAll({ kind: 'pool_info', member_id, op: 'remove', mode, dirty: false }, leg, (took, legs) => {
            // A removal no remaining member recorded would come back with the next client
            // (it learns the members from their pool_md): the leg stays REMOVING until a
            // member records it, at the replay of its queued POOL_INFO (ClientPoolCore.poolInfoDelivered) or
            // at a re-run.
            if (mode === 'delete' && took === 0 && legs > 0) {
              core.unfreeze();
              return done(Errno.EIO, 'no member recorded the removal yet: it completes when a member comes back (or re-run del_sess)');
            }
            // The leg is REMOVING already, so this detaches it without a state change.
            core.removeLeg(member_id, false);
            // The last leg gone: the maps are rebuilt from pool_md at the next assemble.
            if (core.legCount === 0 && mode === 'disassemble') core.forgetAllMaps();
            core.unfreeze();
            done(0, null);
          });
        });
      });
    });
  }

  /**
   * Chunks no other member holds clean (by the client's maps, which only over-approximate
   * dirtiness): deleting `member_id` would lose them.
   */
  private onlyCleanCopies(member_id: number): number {
    const core = this.core;
    const mine = core.mapOf(member_id);
    const others = [...core.members].filter((id) => id !== member_id).map((id) => core.mapOf(id));
    const first_other = others[0];
    if (first_other === undefined) return 0;
    // Candidates are dirty for every other member, so for the first one: walk its runs.
    let n = 0;
    for (const [first, count] of first_other.runs()) {
      for (let c = first; c < first + count; c++) if (!mine.isDirty(c) && others.every((m) => m.isDirty(c))) n++;
    }
    return n;
  }

  // ------------------------------------------------------------------ maintenance (§9.5)

  maintenance(member_id: number, on: boolean, cb: OpCallback): void {
    const core = this.core;
    if (core.sync) return cb(Errno.EINVAL, 'sync pools have no maintenance mode');
    this.lockedOp(cb, (done) => {
      const leg = core.leg(member_id);
      if (leg === undefined) return done(Errno.ENOENT, `pool ${core.pool} has no leg for member ${member_id}`);
      if (leg.state === 'CREATED' || leg.state === 'REMOVING') return done(Errno.EINVAL, `a ${leg.state.toLowerCase()} leg has no maintenance mode`);
      if (on) return leg.maintenance ? done(0, null) : this.enterMaintenance(leg, done);
      if (!leg.maintenance) return done(0, null);
      // The node clears its flag and stays out of IO service until it has a map.
      leg.channel.command({ kind: 'maintenance', on: false }, (status, _v, reason) => {
        if (status !== 0 && leg.state !== 'FAILED') return done(status, reason ?? `leaving maintenance failed (${status})`);
        core.setMaintenance(leg, false);
        // FAILED: recovery goes on when it reconnects; otherwise Case 1, 2 or 3/4 now.
        if (leg.state === 'FAILED') return done(0, null);
        this.recovery.enableLocked((s2) => done(0, s2 === 0 ? null : `maintenance off; recovery will retry (${s2})`));
      });
    });
  }

  /**
   * With IO drained, the node leaves IO service first (ENABLE_POOL(0)), then the leg stops
   * taking writes: in the other order a peer could sync a chunk from the node that it had
   * just missed.
   */
  private enterMaintenance(leg: Leg, done: OpCallback): void {
    const core = this.core;
    core.freeze(() => {
      leg.channel.command({ kind: 'maintenance', on: true }, (status, _v, reason) => {
        core.setMaintenance(leg, true);
        core.bumpMapVersion();
        if (status !== 0) {
          // Unreachable or refused: out of service anyway, as a failed leg in maintenance.
          core.failLeg(leg, `maintenance on failed (${status})`);
          core.unfreeze();
          return done(0, reason);
        }
        if (leg.state === 'NORMAL') core.setLegState(leg, 'RECONNECTING', 'maintenance');
        core.unfreeze();
        done(0, null);
      });
    });
  }

  // ------------------------------------------------------------------ map version (§3.7)

  /**
   * MAP_SET_VER (reference §3.7, whose client sender is compiled out): the pool's map version
   * becomes at least `map_ver`, in the client and on every NORMAL member together, so their
   * order against the members out of service (staler, lower) stays as it was. A member that
   * does not take it is failed (recovery brings it back with maps).
   */
  setMapVersion(map_ver: number, cb: OpCallback): void {
    const core = this.core;
    if (core.sync) return cb(Errno.EINVAL, 'sync pools have no map version');
    if (!Number.isSafeInteger(map_ver) || map_ver < 1) return cb(Errno.EINVAL, `map version ${map_ver}`);
    this.lockedOp(cb, (done) => {
      core.adoptMapVersion(map_ver);
      const legs = core.normalLegs();
      let pending = legs.length;
      let err = 0;
      let why: string | null = null;
      if (pending === 0) return done(0, null);
      for (const leg of legs) {
        leg.channel.command({ kind: 'map_set_ver', map_ver: core.map_ver }, (status, _v, reason) => {
          if (status !== 0) {
            err = status;
            why = `member ${leg.member_id}: ${reason ?? `MAP_SET_VER failed (${status})`}`;
            core.failLeg(leg, why);
          }
          if (--pending === 0) done(err, why);
        });
      }
    });
  }
}
