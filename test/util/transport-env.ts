// Builds transport servers and client sessions over real loopback sockets for tests, and
// closes everything they built when the test ends.
import { randomBytes } from 'node:crypto';
import { ClientSession, type ClientSessionOptions, type LinkEvent } from '../../src/transport/client-session.js';
import type { Address } from '../../src/transport/net.js';
import { NodeNet } from '../../src/node/net.js';
import { TransportServer, type ServerOptions } from '../../src/transport/server.js';
import { NodeClock, NodeRandom } from '../../src/node/ports.js';
import { MemoryLogger } from './memory-logger.js';
import { TestHandler } from './test-handler.js';

export const SECRET = randomBytes(32);

export const ports = () => ({ net: new NodeNet(), clock: new NodeClock({ unref: true }), random: new NodeRandom() });

export class Env {
  private readonly closers: (() => Promise<void> | void)[] = [];

  async server(opts: Partial<ServerOptions> = {}, host = '127.0.0.1', tls?: Address['tls']) {
    const handler = new TestHandler();
    const log = new MemoryLogger();
    const server = new TransportServer({ secret: SECRET, ...opts }, { ...ports(), log }, handler);
    const addr = await server.listen({ host, port: 0, ...(tls ? { tls } : {}) });
    this.closers.push(() => server.close());
    return { server, handler, log, port: addr.port, address: { host, port: addr.port, ...(tls ? { tls } : {}) } };
  }

  client(addresses: Address[], opts: Partial<ClientSessionOptions> = {}) {
    const log = new MemoryLogger();
    const events: LinkEvent[] = [];
    const session = new ClientSession(
      { session_name: `client@server-${randomBytes(3).toString('hex')}`, addresses, secret: SECRET, ...opts },
      { ...ports(), log },
    );
    session.onLinkEvent((e) => events.push(e));
    this.closers.push(() => session.close());
    return { session, log, events };
  }

  defer(fn: () => Promise<void> | void): void {
    this.closers.push(fn);
  }

  async close(): Promise<void> {
    for (const c of this.closers.reverse()) {
      try {
        await c();
      } catch {
        // best effort: a test's own failure is what matters
      }
    }
  }
}

/** Subscribes to a session's link events in the shape nextEvent() wants. */
export const linkEvents = (s: ClientSession) => (fn: (e: LinkEvent) => void) => s.onLinkEvent(fn);
