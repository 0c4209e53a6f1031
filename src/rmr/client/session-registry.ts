// One client session per storage node, shared by every pool (and leg) that reaches it
// (reference §2.3): sessions pin memory on the server, so their number grows with the
// storage hosts, not with the pools. Reference counted; the last user closes it.

import { ClientSession, type ClientPorts, type ClientSessionOptions } from '../../transport/client-session.js';

export class SessionRegistry {
  private readonly sessions = new Map<string, { session: ClientSession; refs: number }>();
  private readonly ports: ClientPorts;
  private readonly defaults: Omit<ClientSessionOptions, 'session_name' | 'addresses'>;

  constructor(ports: ClientPorts, defaults: Omit<ClientSessionOptions, 'session_name' | 'addresses'>) {
    this.ports = ports;
    this.defaults = defaults;
  }

  /** The session named `name`, opened on first use; every get needs a matching put. */
  get(name: string, addresses: ClientSessionOptions['addresses']): ClientSession {
    const e = this.sessions.get(name);
    if (e !== undefined && e.session.state !== 'CLOSED') {
      e.refs++;
      return e.session;
    }
    const session = new ClientSession({ ...this.defaults, session_name: name, addresses }, this.ports);
    this.sessions.set(name, { session, refs: 1 });
    return session;
  }

  put(session: ClientSession): void {
    const e = this.sessions.get(session.name);
    if (e === undefined || e.session !== session) return;
    if (--e.refs > 0) return;
    this.sessions.delete(session.name);
    session.close('no pool uses this session any more');
  }

  get size(): number {
    return this.sessions.size;
  }
}
