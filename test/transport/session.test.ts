// Client sessions against a transport server over real loopback TCP: request kinds and
// sizes, permits and queue depth, timeouts, failover across paths with at-most-once
// execution, and path selection policies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Env, linkEvents } from '../util/transport-env.js';
import { hdr, pattern } from '../util/test-handler.js';
import { TcpProxy } from '../util/tcp-proxy.js';
import { nextEvent, waitFor, within } from '../util/wait.js';
import type { TransportError } from '../../src/transport/errors.js';
import type { Permit } from '../../src/transport/client-session.js';
import type { ServerRequest } from '../../src/transport/server.js';

test('every payload direction and size round-trips (0, 1, 4 KiB, max)', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  for (const max_io of [1 << 20, 4 << 20]) {
    const { address, handler } = await env.server({ max_io_size: max_io });
    const { session } = env.client([address], { max_io_size: max_io });
    await within('open', session.open());
    assert.equal(session.max_io_size, max_io);
    for (const size of [0, 1, 4096, max_io]) {
      const r = await session.request('read', hdr(size & 0xff), null, size);
      assert.equal(r.status, 0);
      assert.deepEqual(r.data, pattern(size & 0xff, size), `read of ${size}`);
      const before = handler.written_bytes.n;
      const w = await session.request('write', hdr(1), Buffer.alloc(size, 7), 0);
      assert.equal(w.status, 0);
      assert.equal(w.data, null);
      assert.equal(handler.written_bytes.n - before, size, `write of ${size}`);
    }
    // Status codes travel back unchanged; a user header of the negotiated maximum is fine.
    const e = await session.request('write', hdr(0, 0, 5), Buffer.alloc(10), 0);
    assert.equal(e.status, -5);
    const big = Buffer.alloc(session.max_user_hdr, 0);
    assert.equal((await session.request('read', big, null, 16)).status, 0);
    // Beyond the negotiated limits the caller gets EINVAL, nothing is sent.
    await assert.rejects(session.request('write', null, Buffer.alloc(max_io + 1), 0), (err: TransportError) => err.code === 'EINVAL');
    await assert.rejects(session.request('read', null, null, max_io + 1), (err: TransportError) => err.code === 'EINVAL');
    await assert.rejects(session.request('read', Buffer.alloc(session.max_user_hdr + 1), null, 1), (err: TransportError) => err.code === 'EINVAL');
  }
});

test('queue depth bounds permits: the 513th waits or is refused as asked', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, handler } = await env.server();
  handler.hold = [];
  const { session } = env.client([address], { queue_depth: 512 });
  await session.open();
  assert.equal(session.queue_depth, 512);
  const done: number[] = [];
  for (let i = 0; i < 512; i++) {
    const p = session.tryGetPermit();
    assert.ok(p !== null, `permit ${i}`);
    session.send(p, 'write', hdr(0), Buffer.alloc(8), 0, (err, status) => {
      assert.equal(err, null);
      done.push(status);
    });
  }
  await waitFor('512 requests at the server', () => handler.hold?.length === 512);
  assert.equal(session.tryGetPermit(), null, 'no-wait: refused');
  let waited: Permit | null = null;
  session.getPermit((err, p) => {
    assert.equal(err, null);
    waited = p;
  });
  assert.equal(waited, null, 'wait: queued');
  const first = handler.hold?.shift() as ServerRequest;
  first.respond(0);
  await waitFor('the waiter gets the freed permit', () => waited !== null);
  session.putPermit(waited as unknown as Permit);
  for (const r of handler.hold?.splice(0) ?? []) r.respond(0);
  await waitFor('all answered', () => done.length === 512);
  assert.equal(handler.executions.size, 512);
});

test('the server grants at most its own maximum queue depth and io size', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address } = await env.server({ max_queue_depth: 16, max_io_size: 64 * 1024 });
  const { session } = env.client([address], { queue_depth: 128, max_io_size: 4 << 20 });
  await session.open();
  assert.equal(session.queue_depth, 16);
  assert.equal(session.max_io_size, 64 * 1024);
  assert.throws(() => env.client([address], { queue_depth: 513 }), /queue_depth/);
});

test('a request without answer fails with ETIMEDOUT; its late answer is dropped', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, handler } = await env.server();
  const { session } = env.client([address], { request_timeout_ms: 200, queue_depth: 1 });
  await session.open();
  handler.hold = [];
  await assert.rejects(within('timeout', session.request('write', hdr(0), Buffer.alloc(1), 0), 5000), (e: TransportError) => e.code === 'ETIMEDOUT');
  assert.equal(session.stats.timeouts, 1);
  // The answer arriving after the timeout is recognised as stale and dropped.
  (handler.hold.shift() as ServerRequest).respond(0);
  await waitFor('late answer dropped as stale', () => session.stats.stale_responses === 1);
  // Again, but now the permit is reused while the old request still runs at the server.
  await assert.rejects(session.request('write', hdr(0), Buffer.alloc(1), 0), (e: TransportError) => e.code === 'ETIMEDOUT');
  const old = handler.hold.shift() as ServerRequest;
  handler.hold = null;
  const r = await within('request on the reused permit', session.request('read', hdr(3), null, 8));
  assert.deepEqual(r.data, pattern(3, 8));
  old.respond(0); // the orphan finishes; its answer must not be taken for the new request
  const again = await session.request('read', hdr(4), null, 8);
  assert.deepEqual(again.data, pattern(4, 8));
  assert.equal(session.stats.responses, 2);
});

test('three paths, one cut while 1,000 requests are in flight: none lost, none executed twice', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, handler, server } = await env.server();
  const proxies = await Promise.all(['127.0.0.1', '127.0.0.2', '127.0.0.3'].map((h) => new TcpProxy(address, h).start()));
  env.defer(async () => {
    for (const p of proxies) await p.close();
  });
  const { session, events } = env.client(
    proxies.map((p, i) => ({ host: `127.0.0.${i + 1}`, port: p.port })),
    { queue_depth: 512, path_policy: 'round-robin' },
  );
  await session.open();
  await waitFor('three paths up', () => session.pathStates().every((p) => p.state === 'UP'));
  const results: Promise<{ status: number; data: Buffer | null }>[] = [];
  for (let i = 0; i < 1000; i++) {
    // Answers take up to 20 ms, so hundreds are in flight on every path at the cut.
    const delay = 1 + (i % 20);
    results.push(i % 2 === 0 ? session.request('read', hdr(i, delay), null, 512) : session.request('write', hdr(i, delay), Buffer.alloc(512, i & 0xff), 0));
  }
  await waitFor('requests in flight on path 1', () => (session.pathStates()[1]?.inflight ?? 0) > 50);
  const cut = proxies[1]?.cut();
  assert.ok(cut !== undefined && cut >= 1);
  proxies[1]?.refuse(true);
  const all = await within('all 1,000 answered', Promise.all(results), 30_000);
  all.forEach((r, i) => {
    assert.equal(r.status, 0, `request ${i}`);
    if (i % 2 === 0) assert.deepEqual(r.data, pattern(i, 512), `data of request ${i}`);
  });
  assert.ok(events.some((e) => e.type === 'PATH_DOWN' && e.path_index === 1), 'path 1 went down');
  assert.ok(session.stats.requests_resent > 0, 'some requests failed over');
  assert.equal(handler.executions.size, 1000, 'every request executed');
  assert.deepEqual(handler.duplicates(), [], 'no request executed twice');
  const ss = server.session(session.name);
  assert.ok(ss !== undefined);
  assert.equal(ss.stats.executed, 1000);
  // The cut path comes back once the proxy accepts again.
  proxies[1]?.refuse(false);
  await nextEvent('path 1 back', linkEvents(session), (e) => e.type === 'PATH_UP' && e.path_index === 1, 15_000);
});

test('path policies spread or concentrate load as designed', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server } = await env.server();
  const addrs = [address];
  for (const host of ['127.0.0.2', '127.0.0.3']) addrs.push({ host, port: (await server.listen({ host, port: 0 })).port });
  for (const policy of ['round-robin', 'min-inflight', 'min-latency'] as const) {
    const { session } = env.client(addrs, { path_policy: policy, heartbeat_interval_ms: 50, heartbeat_timeout_ms: 2000 });
    await session.open();
    await waitFor('three paths up', () => session.pathStates().every((p) => p.state === 'UP'));
    const perPath = [0, 0, 0];
    const sent = session.stats.requests_sent;
    const rs = [];
    for (let i = 0; i < 60; i++) {
      rs.push(session.request('write', hdr(0, 5), Buffer.alloc(16), 0));
      for (const p of session.pathStates()) perPath[p.index] = Math.max(perPath[p.index] as number, p.inflight);
    }
    await Promise.all(rs);
    assert.equal(session.stats.requests_sent - sent, 60);
    if (policy === 'round-robin' || policy === 'min-inflight') {
      for (const n of perPath) assert.ok(n >= 15, `${policy}: every path carried load (${perPath.join(',')})`);
    } else {
      // All paths have similar RTT on loopback; the policy picks the single fastest one.
      assert.ok(Math.max(...perPath) >= 40, `min-latency concentrates on the fastest path (${perPath.join(',')})`);
    }
    assert.ok(session.pathStates().every((p) => p.rtt_ms >= 0), 'RTT measured on every path');
    session.close();
  }
});

test('a closed session fails pending work with ESHUTDOWN and refuses new work', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, handler } = await env.server();
  const { session, events } = env.client([address]);
  await session.open();
  handler.hold = [];
  const pending = session.request('write', hdr(0), Buffer.alloc(4), 0);
  await waitFor('request at server', () => handler.hold?.length === 1);
  session.close();
  await assert.rejects(pending, (e: TransportError) => e.code === 'ESHUTDOWN');
  await assert.rejects(session.request('read', null, null, 1), (e: TransportError) => e.code === 'ESHUTDOWN');
  assert.deepEqual(events.map((e) => e.type).filter((x) => x !== 'PATH_UP' && x !== 'PATH_DOWN'), ['CONNECTED', 'CLOSED']);
});

test('many clients, many sessions: each is opened, served and closed on its own', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server, handler } = await env.server({ session_linger_ms: 100 });
  const clients = Array.from({ length: 24 }, () => env.client([address], { queue_depth: 8 }));
  await Promise.all(clients.map((c) => c.session.open()));
  assert.equal(server.sessions().length, 24);
  assert.equal(handler.opened.length, 24);
  await Promise.all(
    clients.flatMap((c, i) => Array.from({ length: 20 }, (_, k) => c.session.request('read', hdr(i + k), null, 100).then((r) => assert.deepEqual(r.data, pattern(i + k, 100))))),
  );
  assert.equal(handler.executions.size, 24 * 20);
  // A client that goes away is forgotten after the linger time; the others are untouched.
  const gone = clients[0]?.session.name as string;
  clients[0]?.session.close();
  await waitFor('session closed at the server', () => handler.closed.some((c) => c.name === gone));
  assert.match(handler.closed.find((c) => c.name === gone)?.reason ?? '', /no path for 100 ms/);
  assert.equal(server.sessions().length, 23);
  assert.equal((await clients[1]?.session.request('read', hdr(1), null, 1))?.status, 0);
});

test('a restarted client (new incarnation, same name) replaces its old server session', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server, handler } = await env.server();
  // The first client must not come back during the test (it stands for a crashed process).
  const first = env.client([address], { session_name: 'host-a@host-b', reconnect_delay_ms: 600_000, reconnect_max_delay_ms: 600_000 });
  await first.session.open();
  const second = env.client([address], { session_name: 'host-a@host-b' });
  await second.session.open();
  await waitFor('old session replaced', () => handler.closed.length === 1);
  assert.match(handler.closed[0]?.reason ?? '', /new incarnation/);
  assert.equal(server.sessions().length, 1);
  assert.equal((await second.session.request('read', hdr(1), null, 4)).status, 0);
});

test('paths cut again and again under load: every request answered once, none executed twice', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, handler } = await env.server();
  const proxies = await Promise.all(['127.0.0.1', '127.0.0.2', '127.0.0.3'].map((h) => new TcpProxy(address, h).start()));
  env.defer(async () => {
    for (const p of proxies) await p.close();
  });
  const { session } = env.client(
    proxies.map((p, i) => ({ host: `127.0.0.${i + 1}`, port: p.port })),
    { queue_depth: 64, path_policy: 'min-inflight', reconnect_delay_ms: 5, reconnect_max_delay_ms: 20 },
  );
  await session.open();
  let issued = 0;
  let answered = 0;
  const failures: string[] = [];
  const deadline = Date.now() + 2000;
  // Each worker keeps one request in flight; 64 workers fill the queue depth.
  const worker = async (w: number): Promise<void> => {
    while (Date.now() < deadline) {
      const i = issued++;
      try {
        const r = await session.request('read', hdr(i, i % 4), null, 64);
        if (r.status !== 0 || !(r.data as Buffer).equals(pattern(i, 64))) failures.push(`request ${i}: bad answer`);
        answered++;
      } catch (e) {
        failures.push(`worker ${w} request ${i}: ${String(e)}`);
      }
    }
  };
  let cuts = 0;
  const cutter = setInterval(() => {
    cuts += (proxies[cuts % 3] as TcpProxy).cut() > 0 ? 1 : 0;
    if ((proxies[cuts % 3] as TcpProxy).open === 0) cuts++;
  }, 40);
  try {
    await within('load with cuts', Promise.all(Array.from({ length: 64 }, (_, w) => worker(w))), 30_000);
  } finally {
    clearInterval(cutter);
  }
  assert.deepEqual(failures, []);
  assert.equal(answered, issued);
  assert.ok(cuts >= 10, `paths were cut ${cuts} times`);
  assert.ok(session.stats.requests_resent > 0, 'requests failed over');
  assert.equal(handler.executions.size, issued);
  assert.deepEqual(handler.duplicates(), []);
});
