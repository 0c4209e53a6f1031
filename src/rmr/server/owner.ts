// A storage member's side of pool ownership (docs/ownership.md §3.3): which owner it has
// accepted, whether that owner counts as live, and what a PREPARE or a join with a given
// owner pair gets. Pure: no IO, no clock of its own (times are handed in), so the rules are
// unit- and property-tested apart from the pool (test/rmr/owner.test.ts).

import { compareOwners, NO_OWNER, type OwnerPair } from '../protocol/leg-commands.js';
import type { Liveness } from '../protocol/msg.js';

/** Default of `owner_live_ms`: more than the transport's heartbeat timeout plus a recovery tick. */
export const OWNER_LIVE_MS = 10_000;

export interface OwnerState {
  owner: OwnerPair;
  name: string;
  /** The owner let go of the pool (a handover): liveness does not count. */
  released: boolean;
  /**
   * Incremented on every accepted PREPARE (never persisted). A session binding stores the
   * generation it was made under; a binding of another generation is stale (M1).
   */
  gen: number;
  /** Time of the last request on a session bound to the current owner, or of its last path going down (-Infinity: never). */
  last_contact: number;
  /** When this member loaded its metadata: the restart grace runs from here. */
  started_at: number;
}

export function initialOwnerState(owner: OwnerPair = NO_OWNER, name = '', released = false, started_at = 0): OwnerState {
  return { owner: { epoch: owner.epoch, id: Buffer.from(owner.id) }, name, released, gen: 0, last_contact: -Infinity, started_at };
}

/**
 * Whether the member's owner counts as live (§4.1): a session bound to it is up, or it was
 * heard from within `live_ms`, or this member restarted within `live_ms` with an owner it
 * cannot judge yet. A released owner, and no owner, are never live.
 */
export function liveness(st: OwnerState, now: number, session_up: boolean, live_ms = OWNER_LIVE_MS): Liveness {
  if (st.owner.epoch === 0) return 'none';
  if (st.released) return 'released';
  if (session_up) return 'live';
  if (now - st.last_contact < live_ms) return 'recently_seen';
  if (st.last_contact === -Infinity && now - st.started_at < live_ms) return 'restart_grace';
  return 'none';
}

export const isLive = (l: Liveness): boolean => l === 'live' || l === 'recently_seen' || l === 'restart_grace';

export type PrepareDecision =
  /** An older pair than the member's owner: a newer owner exists. */
  | 'stale'
  /** The member's owner itself (a retry): answer again once the record is durable. */
  | 'same'
  /** Another owner that is live, and no takeover: nothing changes. */
  | 'busy'
  /** A newer owner: promise it (M2). */
  | 'accept';

/** M2: what a PREPARE of `req` gets from a member whose owner is `st`, its liveness `live`. */
export function prepareDecision(st: OwnerState, req: OwnerPair, takeover: boolean, live: Liveness): PrepareDecision {
  const c = compareOwners(req, st.owner);
  if (c < 0) return 'stale';
  if (c === 0) return 'same';
  // The same owner with a higher epoch (a restarted client) is never refused as busy.
  if (!takeover && isLive(live) && !req.id.equals(st.owner.id)) return 'busy';
  return 'accept';
}

/**
 * A JOIN or REJOIN with `pair` (§3.2): 'ok' only for the member's own owner; 'stale' for an
 * older pair (the joiner is fenced); 'prepare_first' for a newer one (it must PREPARE first).
 */
export function joinDecision(st: OwnerState, pair: OwnerPair): 'ok' | 'stale' | 'prepare_first' {
  const c = compareOwners(pair, st.owner);
  return c === 0 ? 'ok' : c < 0 ? 'stale' : 'prepare_first';
}
