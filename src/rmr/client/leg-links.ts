// Link events of a shared client session drive the legs that use it (§9.1): a session that
// loses its last path fails every leg on it; when it comes back each leg rejoins and the
// pool's recovery brings it back to NORMAL.

import type { ClientSession, LinkEvent } from '../../transport/client-session.js';
import type { Logger } from '../../util/ports.js';
import type { ClientPool, Leg } from './client-pool.js';

/** Where a session's link stands: taken before a leg's join (see followLinkEvents). */
export interface LinkMark {
  readonly reconnects: number;
}

export function linkMark(session: ClientSession): LinkMark {
  return { reconnects: session.stats.reconnects };
}

/**
 * The leg follows the session's link events from now on, and from `since` (a mark taken
 * before its join): a leg exists only once its add_sess or extend answers, which is after
 * its POOL_INFO, pool_md read or map spread, and a link lost meanwhile went to nobody. The
 * node may have restarted and forgotten the join; a leg left RECONNECTING was then never
 * rejoined, and every spread to it failed. So a loss since the mark fails the leg now and,
 * with the link back, rejoins it, as the events would have. Found by the simulator
 * (schedule 2, seeds 2023 and 5000269: a storage node crashed while its assemble or
 * extension was under way).
 */
export function followLinkEvents(session: ClientSession, pool: ClientPool, leg: Leg, log: Logger, since: LinkMark): () => void {
  const rejoin = (): void =>
    pool.rejoinLeg(leg, (status) => {
      if (status !== 0) log.log('warn', 'rejoin failed', { pool: pool.pool, member: leg.member_id, status });
    });
  const off = session.onLinkEvent((ev: LinkEvent) => {
    if (ev.type === 'DISCONNECTED' || ev.type === 'CLOSED') {
      if (leg.state !== 'REMOVING') pool.setLegState(leg, 'FAILED', `session ${session.name}: ${ev.reason}`);
    } else if (ev.type === 'RECONNECTED' && leg.state === 'FAILED') {
      rejoin();
    }
  });
  const lost = session.state !== 'CONNECTED' || session.stats.reconnects !== since.reconnects;
  if (lost && leg.state !== 'REMOVING' && leg.state !== 'FAILED') {
    pool.setLegState(leg, 'FAILED', `session ${session.name}: the link was lost before the leg followed it`);
    if (session.state === 'CONNECTED') rejoin();
  }
  return off;
}
