// The transport, unchanged, on simulated time and an in-memory network: the sans-IO claim
// made concrete. Timing bounds are exact here, and a seed replays the same history.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ClientSession, type LinkEvent } from '../../src/transport/client-session.js';
import { TransportServer, type ServerRequest } from '../../src/transport/server.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemNetwork } from '../../src/sim/mem-net.js';
import { pattern } from '../util/test-handler.js';

const SECRET = Buffer.alloc(32, 7);

function world(seed: number, latency_ms = 0.1, jitter_ms = 0.05) {
  const clock = new SimClock();
  const random = new SeededRandom(seed);
  const net = new MemNetwork(clock, random, { latency_ms, jitter_ms });
  const trace: string[] = [];
  const executions = new Map<number, number>();
  const server = new TransportServer(
    { secret: SECRET, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 500 },
    { net: net.host('server'), clock, random },
    {
      onRequest(req: ServerRequest) {
        executions.set(req.id, (executions.get(req.id) ?? 0) + 1);
        // Answers take a seeded 0-5 ms, like a disk.
        clock.setTimer(random.float() * 5, () => {
          if (req.kind === 'read') req.respond(0, pattern(req.user_hdr[0] ?? 0, req.read_len));
          else req.respond(0);
        });
      },
    },
  );
  return { clock, random, net, server, trace, executions };
}

async function listenAll(w: ReturnType<typeof world>): Promise<void> {
  for (const port of [1234, 1235, 1236]) await w.server.listen({ host: 'server', port });
}

function client(w: ReturnType<typeof world>, paths = 3) {
  const session = new ClientSession(
    {
      session_name: 'compute@server',
      addresses: Array.from({ length: paths }, (_, i) => ({ host: 'server', port: 1234 + i })),
      secret: SECRET,
      queue_depth: 128,
      heartbeat_interval_ms: 100,
      heartbeat_timeout_ms: 500,
      reconnect_delay_ms: 50,
      reconnect_max_delay_ms: 200,
    },
    { net: w.net.host('compute'), clock: w.clock, random: w.random },
  );
  const events: LinkEvent[] = [];
  session.onLinkEvent((e) => {
    events.push(e);
    w.trace.push(`${w.clock.now().toFixed(3)} ${JSON.stringify(e)}`);
  });
  return { session, events };
}

test('sim: 1,000 requests over 3 paths, one path cut mid-flight: all answered, none twice', async () => {
  const w = world(1);
  await listenAll(w);
  const { session, events } = client(w);
  void session.open();
  w.clock.runUntilTrue('open', () => session.state === 'CONNECTED', 1000);
  w.clock.runUntilTrue('3 paths', () => session.pathStates().every((p) => p.state === 'UP'), 1000);
  const answers = new Map<number, Buffer | null>();
  let failed = 0;
  let next = 0;
  const issue = (): void => {
    const i = next++;
    session.getPermit((err, p) => {
      if (err !== null || p === null) return void failed++;
      session.send(p, 'read', Buffer.from([i & 0xff]), null, 256, (e, status, data) => {
        if (e !== null || status !== 0) failed++;
        else answers.set(i, data);
      });
    });
  };
  for (let i = 0; i < 1000; i++) issue();
  w.clock.runUntilTrue('requests on path 1', () => (session.pathStates()[1]?.inflight ?? 0) > 10, 1000);
  assert.ok(w.net.cut('compute', 'server') >= 0);
  w.clock.runUntilTrue('all answered', () => answers.size + failed === 1000, 30_000);
  assert.equal(failed, 0);
  for (const [i, d] of answers) assert.deepEqual(d, pattern(i & 0xff, 256));
  assert.equal(w.executions.size, 1000);
  assert.deepEqual([...w.executions.values()].filter((n) => n > 1), []);
  assert.ok(events.some((e) => e.type === 'PATH_DOWN'));
  assert.ok(session.stats.requests_resent > 0);
  session.close();
  await w.server.close();
});

test('sim: a partition is detected within heartbeat interval + timeout, and heals', async () => {
  const w = world(2);
  await listenAll(w);
  const { session, events } = client(w, 1);
  void session.open();
  w.clock.runUntilTrue('open', () => session.state === 'CONNECTED', 1000);
  const start = w.clock.now();
  w.net.partition('compute', 'server', true);
  w.clock.runUntilTrue('path down', () => events.some((e) => e.type === 'PATH_DOWN'), start + 5000);
  const took = w.clock.now() - start;
  assert.ok(took > 500 && took <= 500 + 100 + 1, `detected after ${took} ms of simulated time`);
  assert.ok(events.some((e) => e.type === 'DISCONNECTED'));
  w.clock.runUntil(w.clock.now() + 2000);
  w.net.partition('compute', 'server', false);
  w.clock.runUntilTrue('reconnected', () => events.some((e) => e.type === 'RECONNECTED'), w.clock.now() + 5000);
  session.close();
  await w.server.close();
});

async function scenario(seed: number): Promise<string> {
  const w = world(seed, 0.2, 0.3);
  await listenAll(w);
  const { session } = client(w);
  void session.open();
  w.clock.runUntil(50);
  let done = 0;
  for (let i = 0; i < 300; i++) {
    session.getPermit((err, p) => {
      if (err !== null || p === null) return;
      const write = w.random.float() < 0.5;
      session.send(p, write ? 'write' : 'read', Buffer.from([i & 0xff]), write ? Buffer.alloc(64, i & 0xff) : null, write ? 0 : 64, (e, status) => {
        w.trace.push(`${w.clock.now().toFixed(4)} done ${i} ${e?.code ?? status}`);
        done++;
      });
    });
    if (i === 100) w.net.cut('compute');
  }
  w.clock.runUntilTrue('scenario done', () => done === 300, 60_000);
  assert.ok(w.trace.length >= 300);
  session.close();
  await w.server.close();
  return createHash('sha256').update(w.trace.join('\n')).digest('hex');
}

test('sim: the same seed gives the same history, byte for byte', async () => {
  const a = await scenario(42);
  const b = await scenario(42);
  const c = await scenario(43);
  assert.equal(a, b);
  assert.notEqual(a, c);
});
