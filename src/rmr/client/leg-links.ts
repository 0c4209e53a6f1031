// Link events of a shared client session drive the legs that use it (§9.1): a session that
// loses its last path fails every leg on it; when it comes back each leg rejoins and the
// pool's recovery brings it back to NORMAL.

import type { ClientSession, LinkEvent } from '../../transport/client-session.js';
import type { Logger } from '../../util/ports.js';
import type { ClientPool, Leg } from './client-pool.js';

export function followLinkEvents(session: ClientSession, pool: ClientPool, leg: Leg, log: Logger): () => void {
  return session.onLinkEvent((ev: LinkEvent) => {
    if (ev.type === 'DISCONNECTED' || ev.type === 'CLOSED') {
      if (leg.state !== 'REMOVING') pool.setLegState(leg, 'FAILED', `session ${session.name}: ${ev.reason}`);
    } else if (ev.type === 'RECONNECTED' && leg.state === 'FAILED') {
      pool.rejoinLeg(leg, (status) => {
        if (status !== 0) log.log('warn', 'rejoin failed', { pool: pool.pool, member: leg.member_id, status });
      });
    }
  });
}
