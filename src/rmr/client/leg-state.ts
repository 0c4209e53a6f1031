// State of a leg: one client pool session, i.e. one replica of a pool as the client sees it
// (the reference's rmr_clt_pool_sess_state, §4.1). `LegGatekeeper.change` is the only writer
// of a leg's state; it enforces the table and keeps the pool-wide side effects that data
// integrity depends on: the count of NORMAL legs, which leg was the last authoritative one,
// and the map version bump when a leg fails.
//
//   from \ to      CREATED  NORMAL        FAILED  RECONNECTING      REMOVING
//   CREATED           -     enable        ok      assemble          ok
//   NORMAL            .       -           ok      maintenance only  ok
//   FAILED            .     sync legs     (noop)  non-sync only     ok
//   RECONNECTING      .     try_enable    ok        -               ok
//   REMOVING          .       .           .         .               -   (terminal)
//
// Extra rules: NORMAL is refused while the leg is in maintenance; a sync leg never enters
// RECONNECTING; FAILED -> FAILED is a no-op that does not bump the map version.
//
// Side effects (non-sync legs only):
//   entering NORMAL: normal_count + 1, was_last_authoritative cleared on every leg
//   NORMAL -> FAILED, or NORMAL -> RECONNECTING (maintenance): normal_count - 1; when it
//     reaches 0 this leg becomes was_last_authoritative (it held the last complete map)
//   NORMAL -> REMOVING: normal_count - 1; entering REMOVING clears the authoritative flag
//   entering FAILED from another state: pool map_ver + 1

export const LEG_STATES = ['CREATED', 'NORMAL', 'FAILED', 'RECONNECTING', 'REMOVING'] as const;
export type LegState = (typeof LEG_STATES)[number];

/** What a leg is, as far as its state machine cares. */
export interface LegStateHolder {
  readonly member_id: number;
  readonly sync: boolean;
  state: LegState;
  maintenance: boolean;
  was_last_authoritative: boolean;
}

/** The pool-wide counters the gatekeeper maintains. */
export interface LegPoolCounters {
  readonly pool: string;
  normal_count: number;
  map_ver: number;
  /** Every leg of the pool (to keep at most one authoritative leg). */
  legs(): Iterable<LegStateHolder>;
}

export interface LegStateEvent {
  kind: 'leg_state';
  pool: string;
  member_id: number;
  from: LegState;
  to: LegState;
  reason: string;
  map_ver: number;
}

/** Whether the table allows `from -> to` for a leg (same-state is handled by the caller). */
export function legTransitionLegal(from: LegState, to: LegState, sync: boolean, maintenance: boolean): boolean {
  if (from === 'REMOVING') return false;
  switch (to) {
    case 'CREATED':
      return false;
    case 'NORMAL':
      if (maintenance) return false;
      if (from === 'CREATED' || from === 'RECONNECTING') return true;
      return from === 'FAILED' && sync;
    case 'FAILED':
      return true;
    case 'RECONNECTING':
      if (sync) return false;
      if (from === 'NORMAL') return maintenance;
      return from === 'CREATED' || from === 'FAILED';
    case 'REMOVING':
      return true;
  }
}

export class LegGatekeeper {
  private readonly pool: LegPoolCounters;
  private readonly emit: (ev: LegStateEvent) => void;

  constructor(pool: LegPoolCounters, emit: (ev: LegStateEvent) => void) {
    this.pool = pool;
    this.emit = emit;
  }

  /** Moves `leg` to `to`; returns the refusal reason, or null on success (or no-op). */
  change(leg: LegStateHolder, to: LegState, reason: string): string | null {
    const from = leg.state;
    if (from === to) return null;
    if (!legTransitionLegal(from, to, leg.sync, leg.maintenance)) {
      return `illegal leg transition ${from} -> ${to} for member ${leg.member_id}${leg.maintenance ? ' (maintenance)' : ''}${leg.sync ? ' (sync)' : ''}: ${reason}`;
    }
    leg.state = to;
    const p = this.pool;
    if (!leg.sync) {
      if (to === 'NORMAL') {
        p.normal_count++;
        // A NORMAL leg holds the complete map now: nobody is "last authoritative" any more.
        // (The reference clears only the entering leg's flag, which a stale flag on another
        // leg can outlive.)
        for (const l of p.legs()) l.was_last_authoritative = false;
      } else if (from === 'NORMAL') {
        p.normal_count--;
        if (p.normal_count < 0) throw new Error(`invariant: normal_count < 0 in pool ${p.pool}`);
        leg.was_last_authoritative = to !== 'REMOVING' && p.normal_count === 0;
      }
      if (to === 'FAILED') p.map_ver++;
      // A leg on its way out is no map source, whatever it was before.
      if (to === 'REMOVING') leg.was_last_authoritative = false;
    }
    this.emit({ kind: 'leg_state', pool: p.pool, member_id: leg.member_id, from, to, reason, map_ver: p.map_ver });
    return null;
  }
}
