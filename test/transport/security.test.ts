// Authentication of transport peers against an attacker on the wire: a client without the
// cluster secret gets no session and no request executed; a recorded real handshake (and
// the requests after it) replayed to the server is refused, and a recorded server side
// replayed to a client is refused by the client; TLS with certificates in both directions
// admits a client with a trusted certificate only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Env, SECRET } from '../util/transport-env.js';
import { RawClient } from '../util/raw-client.js';
import { FaultProxy } from '../util/fault-proxy.js';
import { TestCerts } from '../util/tls-certs.js';
import { hdr, pattern } from '../util/test-handler.js';
import { waitFor, within } from '../util/wait.js';
import { FrameType, encodeFrameHead, FLAG_READ } from '../../src/transport/frame.js';
import { decodeChallenge, decodeReject } from '../../src/transport/handshake.js';
import type { TransportError } from '../../src/transport/errors.js';

let certs: TestCerts;
before(() => (certs = new TestCerts()));
after(() => certs.remove());

test('a client without the secret: a zero proof or a request instead of a proof gets no session', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server, handler } = await env.server();
  const raw = await RawClient.connect(port);
  raw.hello('nosecret@server');
  const ch = await raw.waitFrame(FrameType.CHALLENGE);
  assert.ok(decodeChallenge(ch.data).ok);
  raw.sendFrame(FrameType.AUTH, Buffer.alloc(32));
  const rej = await raw.waitFrame(FrameType.REJECT);
  const r = decodeReject(rej.data);
  assert.ok(r.ok && /authentication failed/.test(r.value.reason));
  await raw.waitClosed();
  // Skipping the proof: a request right after the challenge.
  const raw2 = await RawClient.connect(port);
  raw2.hello('skipper@server');
  await raw2.waitFrame(FrameType.CHALLENGE);
  raw2.send(encodeFrameHead(FrameType.REQ, FLAG_READ, hdr(1), 0, 0, 16, 1, 0));
  await raw2.waitClosed();
  assert.equal(server.sessions().length, 0);
  assert.equal(handler.executions.size, 0);
  assert.equal(server.stats.auth_failures, 1);
});

test('a recorded handshake and its requests, replayed to the server, are refused and never executed', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server, handler } = await env.server();
  // Record what a real client sends on its first connection, through a tapping proxy.
  const up: Buffer[] = [];
  const down: Buffer[] = [];
  const proxy = await new FaultProxy({ target: { host: '127.0.0.1', port }, tap: (dir, conn, b) => conn === 1 && (dir === 'up' ? up : down).push(Buffer.from(b)) }).start();
  t.after(() => proxy.close());
  const { session } = env.client([{ host: '127.0.0.1', port: proxy.port }]);
  await within('open', session.open());
  assert.equal((await session.request('write', hdr(3), Buffer.alloc(4096, 9), 0)).status, 0);
  assert.deepEqual((await session.request('read', hdr(4), null, 512)).data, pattern(4, 512));
  const executed = handler.executions.size;
  const captured = Buffer.concat(up);
  assert.ok(captured.length > 64 + 4096, `captured ${captured.length} bytes`);
  const failures = server.stats.auth_failures;
  // Replay 1: everything at once, while the original session is still up.
  const r1 = await RawClient.connect(port);
  r1.send(captured);
  const rej = await r1.waitFrame(FrameType.REJECT);
  const reason = decodeReject(rej.data);
  assert.ok(reason.ok && /authentication failed/.test(reason.value.reason), JSON.stringify(reason));
  await r1.waitClosed();
  // Replay 2: paced like the real client (HELLO, wait for the challenge, then the rest),
  // after the original session closed.
  session.close();
  const helloLen = 32 + captured.readUInt32LE(4);
  const r2 = await RawClient.connect(port);
  r2.send(captured.subarray(0, helloLen));
  await r2.waitFrame(FrameType.CHALLENGE);
  r2.send(captured.subarray(helloLen));
  await r2.waitFrame(FrameType.REJECT);
  await r2.waitClosed();
  assert.equal(server.stats.auth_failures, failures + 2);
  assert.equal(handler.executions.size, executed, 'no replayed request executed');
  assert.ok(down.length > 0);
});

test('a recorded server side, replayed to a client by an impostor, is refused by the client', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port } = await env.server();
  const down: Buffer[] = [];
  const proxy = await new FaultProxy({ target: { host: '127.0.0.1', port }, tap: (dir, conn, b) => conn === 1 && dir === 'down' && down.push(Buffer.from(b)) }).start();
  t.after(() => proxy.close());
  const first = env.client([{ host: '127.0.0.1', port: proxy.port }]);
  await within('open', first.session.open());
  first.session.close();
  // The impostor answers any HELLO with the recorded CHALLENGE and WELCOME.
  const recorded = Buffer.concat(down);
  const impostor = net.createServer((c) => {
    c.on('error', () => undefined);
    c.once('data', () => c.write(recorded));
  });
  await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => impostor.close(() => r())));
  const fake = (impostor.address() as net.AddressInfo).port;
  const { session, log } = env.client([{ host: '127.0.0.1', port: fake }], { connect_timeout_ms: 500, disconnect_timeout_ms: 500, reconnect_delay_ms: 50 });
  await assert.rejects(within('open against the impostor', session.open()), (e: TransportError) => e.code === 'EAUTH');
  assert.ok(log.count((l) => l.msg === 'server failed authentication') >= 1);
});

test('TLS with certificates both ways: a client with a trusted certificate gets in, others do not', async (t) => {
  const srv = certs.selfSigned('mtls-server', 'localhost', 'DNS:localhost,IP:127.0.0.1');
  const cli = certs.selfSigned('mtls-client', 'client1', 'DNS:client1');
  const rogue = certs.selfSigned('mtls-rogue', 'client1', 'DNS:client1');
  const env = new Env();
  t.after(() => env.close());
  const { address, server } = await env.server({}, '127.0.0.1', { cert: srv.cert, key: srv.key, ca: cli.cert, requestCert: true });
  const ok = env.client([{ host: '127.0.0.1', port: address.port, tls: { ca: srv.cert, cert: cli.cert, key: cli.key } }]);
  await within('mutual TLS open', ok.session.open());
  assert.deepEqual((await ok.session.request('read', hdr(5), null, 1000)).data, pattern(5, 1000));
  const opts = { connect_timeout_ms: 400, disconnect_timeout_ms: 600, reconnect_delay_ms: 50 };
  for (const tls of [{ ca: srv.cert }, { ca: srv.cert, cert: rogue.cert, key: rogue.key }]) {
    const bad = env.client([{ host: '127.0.0.1', port: address.port, tls }], opts);
    await assert.rejects(within('refused TLS open', bad.session.open()), (e: TransportError) => e.code === 'ETIMEDOUT');
  }
  await waitFor('only the trusted session', () => server.sessions().length === 1);
  // Inside TLS the cluster secret is still checked.
  const wrong = env.client([{ host: '127.0.0.1', port: address.port, tls: { ca: srv.cert, cert: cli.cert, key: cli.key } }], { ...opts, secret: Buffer.alloc(32, 1) });
  await assert.rejects(within('wrong secret inside TLS', wrong.session.open()), (e: TransportError) => e.code === 'EAUTH');
  assert.ok(SECRET.length >= 32);
});
