// Pool recovery on the compute client (reference §8.2-§8.5, §9.1-§9.4): rejoin, try_enable
// with all four cases, the map spread, and the recovery tick.
//
//   Case 1   a leg is NORMAL: it spreads its maps to the RECONNECTING legs (IO frozen only
//            for the spread), which then serve IO.
//   Case 2   no leg is NORMAL, the last authoritative leg is back: it is enabled directly
//            (its maps are complete), then Case 1 from it.
//   Case 3/4 no leg is NORMAL and every member of the pool is attached and RECONNECTING: a
//            compute-client crash (or a disassembled pool assembled again). The maps with the
//            highest version are the base; each member's own dirtiness and crash chunks are
//            marked on it; then each member in turn turns its intent record into dirty
//            entries (INTENT_TO_MAP) and spreads the result to all others, so each chunk a
//            crashed client may have left different gets one source and is dirty for the
//            others. Every spread is MAP_DONE(enable=0); the members are enabled together at
//            the end. Correct for any number of members (the reference's last-IO update
//            enables in each round and loses entries with three or more, §12.4).
//
// Before any spread to a receiver: the POOL_INFO it missed while FAILED is replayed; a
// replaced store is marked fully dirty on every NORMAL member first (SEND_DISCARD) and the
// flag is cleared on all of them only after the receiver has its maps (DISCARD_CLEAR_FLAG,
// §9.8); what the receiver knows of its own dirtiness (its own map and the intent chunks of
// its crash) is marked on the source and every NORMAL leg, where another member is clean for
// it (MAP_MARK, conditional).

import { Errno } from '../../util/errno.js';
import type { DirtyMap } from '../protocol/dirty-map.js';
import { MAP_GET_VER_LOST, MD_WRITE_NOT_SERVING, MD_WRITE_UNJOINED, decodeRanges } from '../protocol/leg-commands.js';
import { MAX_INTENT_RANGES, MAX_MEMBERS, MAX_RANGES_PER_CMD, IoOp } from '../protocol/msg.js';
import { decodePoolMd, encodePoolMd, uuidConflict, type PoolMd } from '../protocol/pool-md.js';
import type { Leg, OpCallback } from './leg.js';
import { readMapPages } from './map-compare.js';
import type { ClientPoolCore } from './pool-core.js';

type Done = (status: number) => void;

/** Chunk ranges cut into what one INTENT_TO_MAP or MAP_MARK carries. */
function inBatches(ranges: readonly [number, number][]): [number, number][][] {
  const batches: [number, number][][] = [];
  for (let i = 0; i < ranges.length; i += MAX_RANGES_PER_CMD) batches.push(ranges.slice(i, i + MAX_RANGES_PER_CMD));
  return batches;
}

export class ClientRecovery {
  private readonly core: ClientPoolCore;
  /** Settled mark last sent to each member (the tick's beacon sends only news). */
  private readonly beacon_sent = new Map<number, number>();

  constructor(core: ClientPoolCore) {
    this.core = core;
  }

  // ------------------------------------------------------------------ rejoin

  rejoinLeg(leg: Leg, cb: Done): void {
    const core = this.core;
    leg.channel.command({ kind: 'rejoin', owner: core.owner }, (status) => {
      if (status !== 0) return cb(status);
      // A sync leg needs no map: it serves peer reads again at once (§7.1).
      if (core.sync) return cb(core.setLegState(leg, 'NORMAL', 'sync leg rejoined') === null ? 0 : Errno.EINVAL);
      // Its pool_md says whether its store was replaced meanwhile (§9.8).
      this.readMd(leg, (s2) => {
        if (s2 !== 0) return cb(s2);
        if (leg.state !== 'FAILED' && leg.state !== 'CREATED') return cb(0);
        if (core.setLegState(leg, 'RECONNECTING', 'rejoined') !== null) return cb(Errno.EINVAL);
        this.tryEnable(() => undefined);
        cb(0);
      });
    });
  }

  /**
   * MD_SEND(read_full_md): the node's pool_md. Learns the pool's identity, the members it
   * lists (on assemble), and whether this node's store was replaced.
   */
  readMd(leg: Leg, cb: (status: number, md: PoolMd | null, reason?: string) => void): void {
    const core = this.core;
    leg.channel.command({ kind: 'md_read' }, (status, _v, _r, data) => {
      if (status !== 0) return cb(status, null);
      const md = decodePoolMd(data ?? Buffer.alloc(0));
      if (typeof md === 'string') return cb(Errno.EBADMSG, null);
      if (md.header.pool_name !== core.pool || md.header.chunk_size !== core.chunk_size) return cb(Errno.EINVAL, null, `member ${leg.member_id} holds pool ${md.header.pool_name} with chunk size ${md.header.chunk_size}`);
      // A member of another pool of this name is refused (issue 19, item 6): the client kept
      // the first UUID it saw and took every later member whatever its UUID.
      const clash = uuidConflict(md.header.pool_uuid, `member ${leg.member_id}`, core.pool_uuid, `pool ${core.pool} of this client`);
      if (clash !== null) return cb(Errno.EINVAL, null, clash);
      core.adoptIdentity(md.header);
      leg.replaced = md.srv_md.some((s) => s.member_id === leg.member_id && s.discard_entries);
      leg.discard_flags = md.srv_md.filter((s) => s.member_id !== 0 && s.member_id !== leg.member_id && s.discard_entries).map((s) => s.member_id);
      // Its authority was the maps on the disk that went: never again the last authoritative
      // leg (Case 2). Checking `replaced` at Case 2 was not enough, since the flag is cleared
      // once the member has its maps, also in a reconciliation that fails later. Found by the
      // simulator (seed 55308163: Cases 3/4 stopped half way after the spread to the
      // replaced member; Case 2 then enabled it, and its maps spread to every other).
      if (leg.replaced) core.revokeAuthority(leg);
      cb(0, md);
    });
  }

  /**
   * Loads every map a node holds into the client's maps (READ_MAP_BUF, §5.4), replacing
   * them: how the client learns the dirtiness after a reconciliation without a NORMAL leg.
   */
  loadMapsFrom(leg: Leg, cb: (status: number) => void): void {
    const core = this.core;
    const mapFor = (member: number): DirtyMap | null => (!core.members.has(member) && core.members.size >= MAX_MEMBERS ? null : core.mapOf(member));
    readMapPages((cmd, done) => leg.channel.command(cmd, done), mapFor, () => core.now(), cb);
  }

  // ------------------------------------------------------------------ try_enable

  tryEnable(cb: Done): void {
    const core = this.core;
    if (core.sync) return cb(0);
    if (!core.tryLock()) return cb(Errno.EBUSY);
    this.enableLocked((st) => {
      core.unlock();
      cb(st);
    });
  }

  /** try_enable with the pool's lock held (operator actions call it too). */
  enableLocked(cb: Done): void {
    const core = this.core;
    if (core.normalLegs().length === 0) return this.decide(cb);
    // Case 1 (and the uncertain chunks) need IO drained, and draining may take long: a leg
    // can fail meanwhile, so the case is decided once IO is frozen. Found by the simulator
    // (seed 49: a spread chose its source, waited for a stalled write, and by then the
    // source had failed and missed writes; the receiver got its stale maps).
    core.freeze(() =>
      this.decide((status) => {
        core.unfreeze();
        cb(status);
      }),
    );
  }

  private decide(cb: Done): void {
    const core = this.core;
    // Said again below while it holds (the status shows the last word).
    core.recovery_blocked = null;
    const legs = [...core.legs()];
    const receivers = legs.filter((l) => l.state === 'RECONNECTING' && !l.maintenance);
    const source = legs.find((l) => l.state === 'NORMAL');
    if (receivers.length === 0) {
      if (source === undefined || !core.hasUncertain) return cb(0);
      // Nothing to spread, but writes failed everywhere: give those chunks a source now.
      return this.reconcileUncertain(cb);
    }
    const auth = legs.find((l) => l.was_last_authoritative);
    if (source !== undefined && auth !== undefined) throw new Error(`invariant: authoritative leg ${auth.member_id} beside NORMAL leg ${source.member_id}`);
    if (source === undefined) {
      if (auth !== undefined && auth.state === 'RECONNECTING' && !auth.maintenance && !auth.replaced) {
        // Case 2: its map is complete; it serves again without a spread. Unless its maps
        // were lost (issue 19 item 3): then its data is the newest the pool has, but nothing
        // says what the others missed, and only the operator can say which data to keep.
        const failures = auth.failures;
        return this.mapVersion(auth, (sv) => {
          if (sv !== 0) return cb(sv);
          if (auth.maps_lost) {
            core.recovery_blocked =
              `member ${auth.member_id}, the last member in service, lost its maps: its data is the newest the pool has, but no map says what the others missed. ` +
              `Trust its data (every other member then resyncs every chunk from it), or replace its store to go back to the others' older data`;
            return cb(Errno.EAGAIN);
          }
          this.caseTwo(auth, failures, cb);
        });
      }
      // Cases 3/4: every member back, none NORMAL, none known authoritative (a replaced store
      // is no authority: what only its old disk held is gone).
      const all_back = core.members.size > 0 && [...core.members].every((id) => receivers.some((l) => l.member_id === id));
      if (all_back && (auth === undefined || auth.replaced)) return this.reassemble(receivers, cb);
      return cb(Errno.EAGAIN);
    }
    // Case 1, with IO frozen (the caller's).
    if (!core.isFrozen) throw new Error('invariant: Case 1 spread without an IO freeze');
    // The uncertain chunks get a source from the maps of the NORMAL legs, so those maps must
    // first hold what the receivers know of themselves: a replaced store (fully dirty) and
    // each one's own dirtiness, which `prepare` marks before each receiver's spread anyway.
    // Found by the simulator (seed 72000901: a chunk was given as source the member whose
    // disk had just been replaced, clean in the source's maps; once that member was marked
    // fully dirty, every member was dirty for the chunk and nobody could sync it).
    const known = (next: Done): void => (!core.hasUncertain ? next(0) : this.each(receivers, (r, n) => this.prepare(source, r, n), next));
    known((s0) => {
      if (s0 !== 0) return cb(s0);
      this.reconcileUncertain((s1) => {
        if (s1 !== 0) return cb(s1);
        this.spread(source, receivers, true, cb);
      });
    });
  }

  /** Case 2: the last authoritative leg serves again without a spread; then Case 1 from it. */
  private caseTwo(auth: Leg, failures: number, cb: Done): void {
    const core = this.core;
    this.replayPoolInfo(auth, (s0) => {
      if (s0 !== 0) return cb(s0);
      auth.channel.command({ kind: 'enable_pool', enable: true }, (status) => {
        if (status !== 0) {
          core.failLeg(auth, `enable of the last authoritative leg failed (${status})`);
          return cb(status);
        }
        if (!core.promoteLeg(auth, 'RECONNECTING', failures, 'last authoritative leg enabled')) return cb(Errno.EAGAIN);
        // Case 1 from it; nothing ran meanwhile (no NORMAL leg, so no IO).
        core.freeze(() =>
          this.decide((status) => {
            core.unfreeze();
            cb(status);
          }),
        );
      });
    });
  }

  /**
   * With IO frozen (so the set is stable): every NORMAL leg turns the uncertain chunks into
   * dirty entries with one source per chunk (INTENT_TO_MAP), so the spread that follows
   * carries them and the members converge on one value. Found by the simulator (seeds 1011,
   * 5088, 5092, 5140: both legs of a pair failed around a write that landed on one of them;
   * the spread from the last authoritative leg left the other different).
   */
  private reconcileUncertain(cb: Done): void {
    const core = this.core;
    if (!core.hasUncertain) return cb(0);
    const ranges = core.uncertainRuns();
    const targets = core.normalLegs();
    if (targets.length === 0) return cb(Errno.ENODEV);
    const batches = inBatches(ranges);
    let pending = targets.length * batches.length;
    let err = 0;
    for (const leg of targets) {
      for (const batch of batches) {
        leg.channel.command({ kind: 'intent_to_map', with_intent: false, ranges: batch }, (status) => {
          if (status !== 0) {
            err = status;
            core.failLeg(leg, `intent_to_map failed (${status})`);
          }
          if (--pending > 0) return;
          if (err === 0) core.uncertainReconciled();
          cb(err);
        });
      }
    }
  }

  // ------------------------------------------------------------------ Cases 3/4

  /**
   * The client-crash reconciliation over `legs` (every member, all RECONNECTING, with the
   * lock held). See the file comment.
   */
  private reassemble(legs: Leg[], cb: Done): void {
    const core = this.core;
    const ordered = [...legs].sort((a, b) => a.member_id - b.member_id);
    // A leg that fails during the reconciliation is not promoted at its end (enableAll).
    const failures = new Map(ordered.map((l) => [l, l.failures]));
    core.freeze(() => {
      const done = (status: number): void => {
        core.unfreeze();
        cb(status);
      };
      const failAll = (status: number): void => {
        for (const l of ordered) l.channel.command({ kind: 'map_disable' }, () => undefined);
        done(status);
      };
      this.collect(ordered, (status, versions) => {
        if (status !== 0 || versions === null) return failAll(status);
        this.each(ordered, (l, next) => this.clearStaleDiscards(l, next), (s0) => {
          if (s0 !== 0) return failAll(s0);
          // The newest maps are the base (first on ties); never a replaced store's, nor maps
          // that were lost (issue 19 item 3).
          const candidates = ordered.filter((l) => !l.replaced && !l.maps_lost);
          let s = candidates[0];
          for (const l of candidates) if ((versions.get(l.member_id) ?? 0) > (versions.get(s?.member_id ?? 0) ?? 0)) s = l;
          // A member whose maps were lost and whose version is not below the base's may hold
          // writes the base missed (versions tie when no MAP_ADD reached the others, simulator
          // seed 40002141): nothing says which, so the operator decides.
          const best = s === undefined ? 0 : (versions.get(s.member_id) ?? 0);
          const lost = ordered.filter((l) => l.maps_lost && !l.replaced && (s === undefined || (versions.get(l.member_id) ?? 0) >= best));
          if (lost.length > 0) {
            core.recovery_blocked =
              `member ${lost.map((l) => l.member_id).join(', ')} lost its maps at map version ${Math.max(...lost.map((l) => versions.get(l.member_id) ?? 0))}, not below the best member with maps ` +
              `(${s === undefined ? 'none' : `member ${s.member_id} at ${best}`}): it may hold writes the others missed. Trust its data, or replace its store to go back to the others' data`;
            return failAll(Errno.EAGAIN);
          }
          if (s === undefined) return failAll(Errno.ENODEV);
          const source = s;
          core.adoptMapVersion(Math.max(...versions.values()));
          // Replaced members are fully dirty in the base before anything else (§9.8).
          this.each(ordered.filter((l) => l.replaced), (l, next) => this.command(source, { kind: 'send_discard', member_id: l.member_id }, next), (s1) => {
            if (s1 !== 0) return failAll(s1);
            // What each member knows of its own dirtiness goes into the base.
            this.each(ordered, (l, next) => this.markOwn(l, [source], next), (s2) => {
              if (s2 !== 0) return failAll(s2);
              // Each member in turn: its intent record into the maps, then everyone gets them.
              const rounds = [source, ...ordered.filter((l) => l !== source)];
              this.each(
                rounds,
                (l, next) =>
                  this.command(l, { kind: 'intent_to_map', with_intent: true, ranges: [] }, (s3) => {
                    if (s3 !== 0) return next(s3);
                    this.spread(l, ordered.filter((x) => x !== l), false, next);
                  }),
                (s4) => {
                  if (s4 !== 0) return failAll(s4);
                  this.enableAll(ordered, source, failures, done);
                },
              );
            });
          });
        });
      });
    });
  }

  /**
   * MAP_GET_VER of every leg, once it learned the membership changes it missed while FAILED:
   * the base spreads before it is ever a receiver (whose POOL_INFO is replayed in `prepare`),
   * so without this a member deleted while every leg was FAILED came back with its map on
   * every member.
   */
  private collect(legs: Leg[], cb: (status: number, versions: Map<number, number> | null) => void): void {
    const versions = new Map<number, number>();
    this.each(
      legs,
      (l, next) =>
        this.replayPoolInfo(l, (s0) => {
          if (s0 !== 0) return next(s0);
          this.mapVersion(l, (status, value) => {
            if (status !== 0) return next(status);
            versions.set(l.member_id, value);
            next(0);
          });
        }),
      (status) => cb(status, status === 0 ? versions : null),
    );
  }

  /** MAP_GET_VER: the node's map version, and whether its maps were lost (Leg.maps_lost). */
  private mapVersion(leg: Leg, cb: (status: number, map_ver: number) => void): void {
    leg.channel.command({ kind: 'map_get_ver' }, (status, value, _reason, data) => {
      if (status !== 0) {
        this.core.failLeg(leg, `map_get_ver failed (${status})`);
        return cb(status, 0);
      }
      leg.maps_lost = data !== undefined && data !== null && data.length > 0 && ((data[0] as number) & MAP_GET_VER_LOST) !== 0;
      cb(0, value);
    });
  }

  /**
   * The operator names the data of `leg`, whose maps were lost, the newest the pool has
   * (issue 19 item 3): the node is enabled clean for itself with every other member dirty
   * everywhere, then every other member resyncs every chunk from it (Case 1). Only while no
   * leg serves: a NORMAL leg's maps decide the sources.
   */
  trustData(leg: Leg, cb: OpCallback): void {
    const core = this.core;
    if (!core.tryLock()) return cb(Errno.EBUSY, `pool ${core.pool} is recovering; try again`);
    const done = (status: number, reason: string | null): void => {
      core.unlock();
      cb(status, reason);
    };
    const serving = core.normalLegs()[0];
    if (serving !== undefined) return done(Errno.EINVAL, `member ${serving.member_id} serves with its maps: they decide the sources, there is nothing to trust`);
    if (leg.state !== 'RECONNECTING' || leg.maintenance) return done(Errno.EINVAL, `member ${leg.member_id} is ${leg.state}${leg.maintenance ? ' in maintenance' : ''}: it must be back (RECONNECTING) and out of maintenance`);
    const failures = leg.failures;
    this.mapVersion(leg, (s0) => {
      if (s0 !== 0) return done(s0, `map_get_ver of member ${leg.member_id} failed`);
      if (!leg.maps_lost) return done(Errno.EINVAL, `member ${leg.member_id}'s maps are intact: they decide the sources, there is nothing to trust`);
      this.replayPoolInfo(leg, (s1) => {
        if (s1 !== 0) return done(s1, `pool info replay to member ${leg.member_id} failed`);
        leg.channel.command({ kind: 'enable_pool', enable: true, trust: true }, (s2, _v, reason) => {
          if (s2 !== 0) return done(s2, reason ?? `enable of member ${leg.member_id} failed (${s2})`);
          leg.maps_lost = false;
          if (!core.promoteLeg(leg, 'RECONNECTING', failures, 'the operator trusted its data (its maps were lost)')) return done(Errno.EAGAIN, `member ${leg.member_id} failed meanwhile`);
          core.recovery_blocked = null;
          // The client's maps follow the node's (every other member dirty everywhere).
          this.loadMapsFrom(leg, (s3) => {
            if (s3 !== 0) for (const l of core.legs()) if (l !== leg) core.mapOf(l.member_id).setAll(core.now());
            // Case 1 from it for the members that are back.
            this.enableLocked((s4) => done(s4, s4 === 0 ? null : `member ${leg.member_id} serves; the spread to the others will be retried (${s4})`));
          });
        });
      });
    });
  }

  /**
   * The last step of Cases 3/4: every member serves again, and the client loads the maps.
   * Only legs that did not fail since the reconciliation began (`failures`) are promoted.
   */
  private enableAll(legs: Leg[], source: Leg, failures: ReadonlyMap<Leg, number>, cb: Done): void {
    const core = this.core;
    this.each(
      legs,
      (l, next) =>
        l.channel.command({ kind: 'enable_pool', enable: true }, (status) => {
          if (status !== 0) core.failLeg(l, `enable after reconciliation failed (${status})`);
          next(0);
        }),
      () => {
        this.loadMapsFrom(source, (s) => {
          // The maps are on every member; the client's copy only guides piggyback and MAP_CHECK.
          if (s !== 0) for (const l of legs) core.mapOf(l.member_id).setAll(core.now());
          // Decided now, not before the load: a leg can fail while the maps are read
          // (simulator seed 63000709 promoted a leg that had failed meanwhile).
          let promoted = 0;
          for (const l of legs) if (core.promoteLeg(l, 'RECONNECTING', failures.get(l) ?? -1, 'client-crash reconciliation')) promoted++;
          if (promoted === legs.length) return cb(0);
          // The members left out hold the same maps at the same version (outrunReceivers).
          this.outrunReceivers(() => cb(Errno.EIO));
        });
      },
    );
  }

  // ------------------------------------------------------------------ the spread (§8.2)

  /**
   * Map spread from `source` to each receiver in turn: MAP_READY, MAP_SEND, MAP_DONE(enable).
   * With `enable` the receivers go NORMAL; a failure puts the ones not yet promoted back out
   * of service (MAP_DISABLE).
   */
  spread(source: Leg, receivers: Leg[], enable: boolean, cb: Done): void {
    const core = this.core;
    // The maps must come from the source as it was when the spread began: one that failed
    // meanwhile may answer MAP_SEND from a restarted node (the transport resends after a
    // reconnect) whose maps, reloaded from its disk, lack misses it had recorded. Found by
    // the simulator (schedule 3, seed 10000872: the receiver was promoted clean for a chunk
    // whose last write it had missed).
    const source_state = source.state;
    const source_failures = source.failures;
    let i = 0;
    // The receiver under way has taken the maps, at the pool's version, and is not promoted.
    let maps_out = false;
    const fail = (status: number): void => {
      // Receivers promoted earlier in this spread are NORMAL now and keep serving (the
      // reference skips NORMAL legs too); only the rest are put back out of service.
      // Found by the simulator (seed 3050: an earlier receiver was disabled behind the
      // client's back and stayed NO_IO while its leg looked NORMAL).
      for (const other of receivers.slice(i)) other.channel.command({ kind: 'map_disable' }, () => undefined);
      if (enable && maps_out) return this.outrunReceivers(() => cb(status));
      cb(status);
    };
    const next = (): void => {
      const r = receivers[i];
      if (r === undefined) return cb(0);
      // The update is for the leg as it is now: if it fails before it is promoted, the answers
      // that follow (which the transport may deliver after a reconnect) do not promote it.
      const failures = r.failures;
      this.prepare(source, r, (s0) => {
        if (s0 !== 0) return fail(s0);
        r.channel.command({ kind: 'map_ready' }, (s1) => {
          if (s1 !== 0) return fail(s1);
          source.channel.command({ kind: 'map_send', receiver: r.member_id, map_ver: core.map_ver }, (s2) => {
            // A source that is no map source (its store went, it restarted) is failed, so the
            // next try picks another (found by the simulator, seed 2026: a replaced node's leg
            // stayed NORMAL and every spread from it failed).
            if (s2 === Errno.ENODEV) core.failLeg(source, 'the map source cannot send maps');
            if (s2 !== 0) return fail(s2);
            maps_out = true;
            if (!core.unchangedSince(source, source_state, source_failures)) return fail(Errno.EAGAIN);
            r.channel.command({ kind: 'map_done', enable }, (s3) => {
              if (s3 !== 0) return fail(s3);
              // The receiver's link failed meanwhile: it is no NORMAL leg now; the node is put
              // back out of service (best effort; its rejoin does it too). Found by the
              // simulator (seed 60008: a promotion from FAILED was attempted).
              if (!core.unchangedSince(r, 'RECONNECTING', failures)) return fail(Errno.EAGAIN);
              this.finishReplace(r, (s4) => {
                if (s4 !== 0) return fail(s4);
                // And again after the discard flags went, which takes more round trips (seed
                // 58183127: the receiver's node crashed meanwhile, and its answer came from the
                // restarted node after the transport reconnected).
                if (!core.unchangedSince(r, 'RECONNECTING', failures)) return fail(Errno.EAGAIN);
                // The client keeps its own map of the member: it is cleaned only through
                // MAP_CHECK with the timestamp guard (§8.5), once the member reports itself clean.
                if (enable && core.setLegState(r, 'NORMAL', `map spread from member ${source.member_id}`) !== null) return fail(Errno.EINVAL);
                maps_out = false;
                i++;
                next();
              });
            });
          });
        });
      });
    };
    next();
  }

  /**
   * A receiver took the maps at the pool's version and did not enter service: the members in
   * service move to a new version (MAP_SET_VER), since they go on recording what the others
   * miss and the receiver does not. Without this the two tie, and a client-crash
   * reconciliation may take the receiver's older maps as the base (lowest member first on a
   * tie) and lose those records. Found by the simulator (seed 61000688: a write acknowledged
   * on node3 alone was recorded only in node3's maps; node2 held node3's maps of before at
   * the same version, was the base, and the write's chunk came back clean on node2).
   */
  private outrunReceivers(cb: Done): void {
    const core = this.core;
    const legs = core.normalLegs();
    if (legs.length === 0) return cb(0);
    core.bumpMapVersion();
    this.each(legs, (l, n) => this.command(l, { kind: 'map_set_ver', map_ver: core.map_ver }, () => n(0)), () => cb(0));
  }

  /** What must reach the nodes before `r` gets maps from `source`. */
  private prepare(source: Leg, r: Leg, cb: Done): void {
    const core = this.core;
    const targets = [...new Set([source, ...core.normalLegs()])].filter((l) => l !== r);
    this.replayPoolInfo(r, (s0) => {
      if (s0 !== 0) return cb(s0);
      const discard = (next: Done): void => {
        if (!r.replaced) return next(0);
        core.mapOf(r.member_id).setAll(core.now());
        this.each(targets, (l, n) => this.command(l, { kind: 'send_discard', member_id: r.member_id }, n), next);
      };
      this.clearStaleDiscards(r, (s1) => {
        if (s1 !== 0) return cb(s1);
        discard((s2) => {
          if (s2 !== 0) return cb(s2);
          this.markOwn(r, targets, cb);
        });
      });
    });
  }

  /**
   * A receiver's own knowledge of what it lacks (its own map and the intent chunks of its
   * crash) is marked on `targets` where another member is clean for it. Without this only the
   * receiver knew, and a later source choice trusted the others' maps (simulator seed 14:
   * three members each dirty for a chunk, nobody able to sync it).
   */
  private markOwn(r: Leg, targets: Leg[], cb: Done): void {
    const core = this.core;
    const step = (from: number, rounds: number): void => {
      if (rounds > core.no_of_chunks / MAX_INTENT_RANGES + 2) return cb(Errno.ELOOP);
      r.channel.command({ kind: 'own_dirty', from_chunk: from }, (s0, next, _r, data) => {
        if (s0 !== 0) return cb(s0);
        const ranges = decodeRanges(data ?? Buffer.alloc(0));
        if (ranges === null) return cb(Errno.EBADMSG);
        const map = core.mapOf(r.member_id);
        for (const [first, count] of ranges) if (first + count <= core.no_of_chunks) map.setDirty(first, count, core.now());
        const go = (): void => (next > from && next < core.no_of_chunks ? step(next, rounds + 1) : cb(0));
        if (ranges.length === 0) return go();
        const marks = targets.filter((l) => l !== r).flatMap((l) => inBatches(ranges).map((batch) => ({ l, batch })));
        this.each(
          marks,
          ({ l, batch }, n) => this.command(l, { kind: 'map_mark', member_id: r.member_id, conditional: true, ranges: batch }, n),
          (s1) => (s1 !== 0 ? cb(s1) : go()),
        );
      });
    };
    step(0, 0);
  }

  /**
   * The discard flags `r` still holds for members whose replacement has finished: the member's
   * own pool_md, read by this client since its leg came back, has no flag (its own goes last,
   * `finishReplace`), so the flag on `r` only missed its DISCARD_CLEAR_FLAG (r's leg was down
   * then). Left there, every map update `r` receives makes that member fully dirty again, and
   * once `r` spreads, every member is dirty for every chunk with nobody to sync from. Found by
   * the simulator (seed 60000136: node2's link was cut while node1's replacement finished; in
   * the client-crash reconciliation node2 re-marked node1 fully dirty and spread it).
   */
  private clearStaleDiscards(r: Leg, cb: Done): void {
    const core = this.core;
    const stale = r.discard_flags.filter((id) => {
      const l = core.leg(id);
      return l !== undefined && !l.replaced && (l.state === 'NORMAL' || l.state === 'RECONNECTING');
    });
    this.each(
      stale,
      (id, next) =>
        this.command(r, { kind: 'discard_clear', member_id: id }, (s) => {
          if (s === 0) r.discard_flags = r.discard_flags.filter((x) => x !== id);
          next(s);
        }),
      cb,
    );
  }

  /** After a replaced member has its maps: every leg clears the discard flag, the member last. */
  private finishReplace(r: Leg, cb: Done): void {
    const core = this.core;
    if (!r.replaced) return cb(0);
    const others = [...core.legs()].filter((l) => l !== r && l.state !== 'FAILED' && l.state !== 'REMOVING');
    this.each(others, (l, n) => this.command(l, { kind: 'discard_clear', member_id: r.member_id }, n), (s0) => {
      if (s0 !== 0) return cb(s0);
      this.command(r, { kind: 'discard_clear', member_id: r.member_id }, (s1) => {
        if (s1 === 0) r.replaced = false;
        cb(s1);
      });
    });
  }

  /** POOL_INFO the node missed while FAILED, in order (§12.1: the reference drops them). */
  private replayPoolInfo(r: Leg, cb: Done): void {
    const step = (): void => {
      const cmd = r.pending_info[0];
      if (cmd === undefined) return cb(0);
      r.channel.command(cmd, (status) => {
        if (status !== 0) return cb(status);
        // Out of the queue; a member's deletion may complete a del_sess (see there).
        this.core.poolInfoDelivered(r, cmd);
        step();
      });
    };
    step();
  }

  // ------------------------------------------------------------------ the tick

  tick(): void {
    const core = this.core;
    if (core.sync) return;
    // A spread that failed leaves legs RECONNECTING: try again every tick until it works.
    if ([...core.legs()].some((l) => l.state === 'RECONNECTING' && !l.maintenance) || core.hasUncertain) this.tryEnable(() => undefined);
    const md = encodePoolMd(core.poolMd());
    const settled = core.settledBelow();
    for (const leg of core.legs()) {
      if (leg.state === 'FAILED' && leg.channel.isConnected()) {
        leg.channel.command({ kind: 'store_check' }, (status, value) => {
          if (status !== 0 || value !== 1 || leg.state !== 'FAILED') return;
          // As after a reconnect: the node may still think itself NORMAL; REJOIN takes it
          // out of IO service so it can receive a map. A leg in maintenance rejoins too and
          // waits in RECONNECTING (§9.5).
          this.rejoinLeg(leg, () => undefined);
        });
        continue;
      }
      if (leg.state !== 'NORMAL' && leg.state !== 'RECONNECTING') continue;
      // The client's pool_md to every member (SEND_MD_BUF, §8.7); the node keeps the header.
      // A NORMAL leg whose node answers that it is out of IO service (its store was replaced,
      // a peer's read of it failed) is failed here, so recovery brings it back; otherwise
      // nothing would until some IO of the client failed on it. Found by the simulator
      // (seeds 72 and 2000: an idle pool never noticed).
      const failures = leg.failures;
      const was_normal = leg.state === 'NORMAL';
      const was_state = leg.state;
      leg.channel.command({ kind: 'md_write', md }, (status, serving) => {
        if (status !== 0 || leg.state !== was_state || leg.failures !== failures) return;
        // Not while a recovery runs: a spread takes its receivers out of service on purpose.
        if (serving === MD_WRITE_NOT_SERVING && was_normal && !core.isLocked) core.failLeg(leg, 'the node reports it is out of IO service');
        // A node that awaits a join (its store was replaced or added again since this leg
        // joined, here while the leg was in maintenance) refuses every map update: the leg
        // fails so the store check rejoins it. Found by the simulator (seed 50002168: a store
        // replaced while its leg entered maintenance; after maintenance off every spread
        // failed at MAP_READY and the leg stayed RECONNECTING). Also while a recovery runs: no
        // step of it can reach a node that is not joined.
        else if (serving === MD_WRITE_UNJOINED) core.failLeg(leg, 'the node awaits a join (its store was replaced or added again)');
      });
      if (leg.state !== 'NORMAL') continue;
      // The settled mark, when no IO has carried it there (intent-log.ts).
      if ((this.beacon_sent.get(leg.member_id) ?? 0) < settled) {
        this.beacon_sent.set(leg.member_id, settled);
        leg.channel.sendIo(core.ioMsg(leg, 0, 0, IoOp.READ, [], 0), null, () => undefined);
      }
      if (leg.maintenance) continue;
      // Map cleaning with the timestamp guard (§8.5): wiped only if nothing was added since
      // the question was asked nor within the clean delay; single-threaded, so check and
      // wipe cannot interleave with a write's map update (the race the reference admits).
      const map = core.maps.get(leg.member_id);
      if (map === undefined || map.isEmpty()) continue;
      const ts_asked = map.ts;
      leg.channel.command({ kind: 'map_check' }, (status, value) => {
        if (status !== 0 || value !== 1) return;
        if (map.ts !== ts_asked || core.now() - map.ts < core.map_clean_delay_ms) return;
        core.mapWiped(leg.member_id);
        map.clearAll(core.now());
      });
    }
  }

  // ------------------------------------------------------------------ helpers

  /** A command that must succeed; a failure fails the leg (it is retried when it is back). */
  private command(l: Leg, cmd: Parameters<Leg['channel']['command']>[0], cb: Done): void {
    l.channel.command(cmd, (status) => {
      if (status !== 0 && cmd.kind !== 'discard_clear') this.core.failLeg(l, `${cmd.kind} failed (${status})`);
      cb(status);
    });
  }

  /** Runs `fn` on each item in order; stops at the first failure. */
  private each<T>(items: readonly T[], fn: (item: T, next: Done) => void, cb: Done): void {
    const step = (i: number): void => {
      const x = items[i];
      if (x === undefined) return cb(0);
      fn(x, (status) => (status !== 0 ? cb(status) : step(i + 1)));
    };
    step(0);
  }
}
