// Liveness and reconnect against a server in its own process: SIGSTOP is detected within
// the heartbeat bound; SIGKILL and a restart on the same port bring the session back by
// itself; requests issued during the outage ride it out, or fail with ENOTCONN after the
// disconnect timeout when the server stays away, or at once with a disconnect timeout of 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Env, SECRET, linkEvents } from '../util/transport-env.js';
import { hdr, pattern } from '../util/test-handler.js';
import { nextEvent, within } from '../util/wait.js';
import type { TransportError } from '../../src/transport/errors.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/transport-server.js', import.meta.url));

async function startServer(port: number, hb: [number, number] = [1000, 5000]): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, [FIXTURE, '127.0.0.1', String(port), SECRET.toString('hex'), String(hb[0]), String(hb[1])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await within(
    'server process listening',
    new Promise<string>((resolve, reject) => {
      let buf = '';
      proc.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        const nl = buf.indexOf('\n');
        if (nl >= 0) resolve(buf.slice(0, nl));
      });
      proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    }),
  );
  return { proc, port: (JSON.parse(line) as { port: number }).port };
}

function kill(proc: ChildProcess, sig: NodeJS.Signals): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill(sig);
  return within(`exit after ${sig}`, exited);
}

/** A client environment and a server process the test may SIGSTOP; both go after the test. */
async function stoppableServer(t: { after: (fn: () => Promise<void>) => void }): Promise<{ env: Env; srv: { proc: ChildProcess; port: number } }> {
  const env = new Env();
  const srv = await startServer(0, [1000, 5000]);
  t.after(async () => {
    await env.close();
    srv.proc.kill('SIGCONT');
    await kill(srv.proc, 'SIGKILL');
  });
  return { env, srv };
}

test('a server killed and restarted on the same port: the session reconnects by itself', async (t) => {
  const env = new Env();
  let srv = await startServer(0);
  t.after(async () => {
    await env.close();
    await kill(srv.proc, 'SIGKILL');
  });
  const { session, events } = env.client([{ host: '127.0.0.1', port: srv.port }], { reconnect_delay_ms: 50, reconnect_max_delay_ms: 200 });
  await session.open();
  assert.deepEqual((await session.request('read', hdr(1), null, 64)).data, pattern(1, 64));
  const first_instance = session.server_instance;
  const down = nextEvent('DISCONNECTED', linkEvents(session), (e) => e.type === 'DISCONNECTED');
  await kill(srv.proc, 'SIGKILL');
  await down;
  // A request issued while the server is away waits for the reconnect instead of failing.
  const during = session.request('read', hdr(2), null, 64);
  const up = nextEvent('RECONNECTED', linkEvents(session), (e) => e.type === 'RECONNECTED', 20_000);
  srv = await startServer(srv.port);
  await up;
  assert.deepEqual((await within('request issued during the outage', during)).data, pattern(2, 64));
  assert.notEqual(session.server_instance, first_instance, 'a new server instance answered');
  assert.deepEqual((await session.request('write', hdr(3), Buffer.alloc(4096, 1), 0)).status, 0);
  const kinds = events.map((e) => e.type).filter((k) => k === 'CONNECTED' || k === 'DISCONNECTED' || k === 'RECONNECTED');
  assert.deepEqual(kinds, ['CONNECTED', 'DISCONNECTED', 'RECONNECTED']);
});

test('a stopped server (SIGSTOP) is detected within the heartbeat bound', async (t) => {
  const { env, srv } = await stoppableServer(t);
  const interval = 100;
  const timeout = 500;
  const { session } = env.client([{ host: '127.0.0.1', port: srv.port }], {
    heartbeat_interval_ms: interval,
    heartbeat_timeout_ms: timeout,
    reconnect_delay_ms: 50,
    reconnect_max_delay_ms: 100,
    connect_timeout_ms: 300,
  });
  await session.open();
  const down = nextEvent('PATH_DOWN', linkEvents(session), (e) => e.type === 'PATH_DOWN', 5000);
  const start = Date.now();
  srv.proc.kill('SIGSTOP');
  const ev = await down;
  const took = Date.now() - start;
  assert.ok(took <= timeout + interval + 250, `detected after ${took} ms (bound ${timeout + interval} ms)`);
  assert.match((ev as { reason: string }).reason, /no heartbeat answer/);
  const back = nextEvent('RECONNECTED', linkEvents(session), (e) => e.type === 'RECONNECTED', 15_000);
  srv.proc.kill('SIGCONT');
  await back;
  assert.deepEqual((await session.request('read', hdr(5), null, 10)).data, pattern(5, 10));
});

test('with no server, requests fail with ENOTCONN after the disconnect timeout; attempts are bounded', async (t) => {
  const env = new Env();
  const srv = await startServer(0);
  t.after(async () => {
    await env.close();
    await kill(srv.proc, 'SIGKILL');
  });
  const { session } = env.client([{ host: '127.0.0.1', port: srv.port }], {
    disconnect_timeout_ms: 400,
    reconnect_delay_ms: 50,
    reconnect_max_delay_ms: 100,
    max_reconnect_attempts: 30,
  });
  await session.open();
  const down = nextEvent('DISCONNECTED', linkEvents(session), (e) => e.type === 'DISCONNECTED');
  await kill(srv.proc, 'SIGKILL');
  await down;
  const start = Date.now();
  await assert.rejects(within('failure', session.request('read', null, null, 1)), (e: TransportError) => e.code === 'ENOTCONN');
  const took = Date.now() - start;
  assert.ok(took >= 300 && took < 2000, `failed after ${took} ms`);
  // New work is refused at once while the session stays down.
  await assert.rejects(session.request('read', null, null, 1), (e: TransportError) => e.code === 'ENOTCONN');
  const closed = await nextEvent('CLOSED', linkEvents(session), (e) => e.type === 'CLOSED', 20_000);
  assert.match((closed as { reason: string }).reason, /reconnect attempts exhausted/);
});

test('disconnect_timeout_ms 0: requests in flight fail as soon as the last path is down, and new ones at once; the session reconnects', async (t) => {
  const { env, srv } = await stoppableServer(t);
  const { session } = env.client([{ host: '127.0.0.1', port: srv.port }], {
    heartbeat_interval_ms: 100,
    heartbeat_timeout_ms: 500,
    disconnect_timeout_ms: 0,
    open_timeout_ms: 5000,
    reconnect_delay_ms: 50,
    reconnect_max_delay_ms: 100,
    connect_timeout_ms: 300,
  });
  await session.open();
  srv.proc.kill('SIGSTOP');
  const start = Date.now();
  // Sent on the live path; the server never answers; the heartbeat bound takes the path down.
  await assert.rejects(within('in-flight failure', session.request('read', hdr(7), null, 64), 5000), (e: TransportError) => e.code === 'ENOTCONN');
  const took = Date.now() - start;
  assert.ok(took < 500 + 100 + 1000, `failed ${took} ms after the server stopped (heartbeat bound 600 ms), not after a reconnect`);
  await assert.rejects(session.request('read', hdr(8), null, 64), (e: TransportError) => e.code === 'ENOTCONN');
  const back = nextEvent('RECONNECTED', linkEvents(session), (e) => e.type === 'RECONNECTED', 15_000);
  srv.proc.kill('SIGCONT');
  await back;
  assert.deepEqual((await session.request('read', hdr(9), null, 10)).data, pattern(9, 10));
  assert.equal(session.stats.timeouts, 0);
});

test('manual reconnect moves the session to a new address', async (t) => {
  const env = new Env();
  const a = await env.server();
  const b = await env.server();
  t.after(() => env.close());
  const { session, events } = env.client([a.address]);
  await session.open();
  await session.request('write', hdr(0), Buffer.alloc(1), 0);
  const back = nextEvent('RECONNECTED', linkEvents(session), (e) => e.type === 'RECONNECTED');
  session.reconnect([b.address]);
  await back;
  await session.request('write', hdr(0), Buffer.alloc(1), 0);
  assert.equal(a.handler.executions.size, 1);
  assert.equal(b.handler.executions.size, 1);
  assert.ok(events.some((e) => e.type === 'DISCONNECTED'));
});
