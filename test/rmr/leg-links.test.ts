// A leg follows its session's link from its join on: a link lost after the join was sent
// and before the caller started following the session (an add_sess or extend answers only
// after its POOL_INFO, pool_md read or spread) fails the leg and rejoins it, as if the
// events had been seen. Found by the simulator (schedule 2, seeds 2023 and 5000269: a
// storage node crashed while its assemble / extend was under way; the leg stayed
// RECONNECTING, the restarted node never got a rejoin, and every spread to it failed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientSession } from '../../src/transport/client-session.js';
import { TransportServer } from '../../src/transport/server.js';
import { ClientPool, type Leg } from '../../src/rmr/client/client-pool.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { RmrServerNode } from '../../src/rmr/server/server-node.js';
import { TransportLeg } from '../../src/rmr/client/transport-leg.js';
import { followLinkEvents, linkMark } from '../../src/rmr/client/leg-links.js';
import { groupId } from '../../src/util/jhash.js';
import { nullLogger } from '../../src/util/ports.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemNetwork } from '../../src/sim/mem-net.js';
import { MemDisk } from '../../src/sim/mem-disk.js';

const POOL = 'p';
const GID = groupId(POOL);
const CHUNK = 16 * 1024;
const SIZE = 16 * CHUNK;
const SECRET = Buffer.alloc(32, 7);
const fast = { heartbeat_interval_ms: 100, heartbeat_timeout_ms: 500, reconnect_delay_ms: 20, reconnect_max_delay_ms: 100 };

test('a link lost between a leg join and following the session fails the leg, which rejoins', async () => {
  const clock = new SimClock();
  const random = new SeededRandom(1);
  const net = new MemNetwork(clock, random);
  const node = new ServerPool({ pool_name: POOL, group_id: GID, member_id: 1, chunk_size: CHUNK }, () => undefined);
  assert.equal(node.register({ block: new MemDisk(SIZE, clock), meta: new MemDisk(1 << 20, clock), meta_base: 0, ioAllowed: () => true }, 'create', SIZE), null);
  const rmr = new RmrServerNode(new MemoryLogger());
  rmr.addPool(node);
  const server = new TransportServer({ secret: SECRET, ...fast }, { net: net.host('node1'), clock, random }, rmr);
  await server.listen({ host: 'node1', port: 1 });
  const session = new ClientSession({ session_name: 'client@node1', addresses: [{ host: 'node1', port: 1 }], secret: SECRET, ...fast }, { net: net.host('client'), clock, random });
  void session.open().catch(() => undefined);
  clock.runUntilTrue('connected', () => session.state === 'CONNECTED', 5000);

  const events: string[] = [];
  const pool = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20 }, () => clock.now(), (ev) => events.push(`${ev.from}>${ev.to}`));
  const mark = linkMark(session);
  let leg: Leg | null = null;
  pool.addSess(session.name, new TransportLeg(session, GID, POOL, CHUNK, false), 'create', 128, (st, l) => {
    assert.equal(st, 0);
    leg = l;
  });
  clock.runUntilTrue('joined', () => leg !== null, 5000);
  // The link goes and comes back before anyone follows the session: nobody saw it.
  assert.ok(net.cut('client', 'node1') > 0);
  clock.runUntilTrue('reconnected', () => session.state === 'CONNECTED' && session.stats.reconnects === 1, 5000);
  const l = leg as unknown as Leg;
  assert.equal(l.state, 'CREATED', 'the leg saw nothing');

  followLinkEvents(session, pool, l, nullLogger, mark);
  assert.equal(l.state, 'FAILED', 'the missed link loss fails the leg at once');
  // And it rejoins: the node takes it back out of service and it waits for its maps.
  clock.runUntilTrue('rejoined', () => l.state === 'RECONNECTING', 5000);
  assert.deepEqual(events.slice(0, 2), ['CREATED>FAILED', 'FAILED>RECONNECTING']);
  session.close('done');
  await server.close();
});

test('a leg whose link stayed up since its join is left alone', async () => {
  const clock = new SimClock();
  const random = new SeededRandom(2);
  const net = new MemNetwork(clock, random);
  const node = new ServerPool({ pool_name: POOL, group_id: GID, member_id: 1, chunk_size: CHUNK }, () => undefined);
  assert.equal(node.register({ block: new MemDisk(SIZE, clock), meta: new MemDisk(1 << 20, clock), meta_base: 0, ioAllowed: () => true }, 'create', SIZE), null);
  const rmr = new RmrServerNode(new MemoryLogger());
  rmr.addPool(node);
  const server = new TransportServer({ secret: SECRET, ...fast }, { net: net.host('node1'), clock, random }, rmr);
  await server.listen({ host: 'node1', port: 1 });
  const session = new ClientSession({ session_name: 'client@node1', addresses: [{ host: 'node1', port: 1 }], secret: SECRET, ...fast }, { net: net.host('client'), clock, random });
  void session.open().catch(() => undefined);
  clock.runUntilTrue('connected', () => session.state === 'CONNECTED', 5000);
  const pool = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: CHUNK, mapped_size: SIZE, max_io_size: 1 << 20 }, () => clock.now(), () => undefined);
  const mark = linkMark(session);
  let leg: Leg | null = null;
  pool.addSess(session.name, new TransportLeg(session, GID, POOL, CHUNK, false), 'create', 128, (_st, l) => (leg = l));
  clock.runUntilTrue('joined', () => leg !== null, 5000);
  const l = leg as unknown as Leg;
  followLinkEvents(session, pool, l, nullLogger, mark);
  clock.runUntil(clock.now() + 1000);
  assert.equal(l.state, 'CREATED');
  // Followed from now on: a cut fails it.
  net.cut('client', 'node1');
  clock.runUntilTrue('failed', () => l.state === 'FAILED', 5000);
  session.close('done');
  await server.close();
});
