// The server against hostile and broken peers: wrong secrets in both directions, silence,
// garbage before and after the handshake, a peer that stops reading, and a fuzz run of
// 10,000 malformed connections after which a normal session still works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Env, SECRET } from '../util/transport-env.js';
import { RawClient } from '../util/raw-client.js';
import { hdr, pattern } from '../util/test-handler.js';
import { waitFor, within } from '../util/wait.js';
import { FLAG_READ, FrameType, encodeFrameHead } from '../../src/transport/frame.js';
import { PROTOCOL_VERSION, decodeReject, encodeHello } from '../../src/transport/handshake.js';
import { Errno } from '../../src/util/errno.js';
import type { TransportError } from '../../src/transport/errors.js';

test('a client with the wrong secret refuses the server (the server cannot prove itself)', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server, handler } = await env.server();
  const { session, log } = env.client([address], { secret: randomBytes(32) });
  await assert.rejects(within('open', session.open()), (e: TransportError) => e.code === 'EAUTH');
  assert.equal(session.state, 'CLOSED');
  assert.ok(log.count((l) => l.msg === 'server failed authentication') >= 1);
  assert.equal(server.sessions().length, 0);
  assert.deepEqual(handler.opened, []);
});

test('the server refuses a client whose proof is wrong, before any request', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server, handler, log } = await env.server();
  const raw = await RawClient.connect(port);
  await assert.rejects(raw.handshake('intruder@server', randomBytes(32)), /rejected: authentication failed/);
  await raw.waitClosed();
  assert.equal(server.stats.auth_failures, 1);
  assert.equal(handler.executions.size, 0);
  assert.ok(log.count((l) => l.msg === 'client failed authentication') === 1);
  // A request sent before authentication is a protocol error, never executed.
  const raw2 = await RawClient.connect(port);
  raw2.send(Buffer.concat([encodeFrameHead(FrameType.REQ, FLAG_READ, null, 0, 0, 16, 1, 0)]));
  await raw2.waitClosed();
  assert.equal(handler.executions.size, 0);
});

test('an unsupported protocol version is rejected with a reason', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port } = await env.server();
  const raw = await RawClient.connect(port);
  const body = encodeHello({
    version: PROTOCOL_VERSION + 1, path_index: 0, queue_depth: 8, max_io_size: 1 << 20, incarnation: 1,
    client_nonce: randomBytes(32), session_name: 'future@server',
  });
  raw.sendFrame(FrameType.HELLO, body);
  const rej = await raw.waitFrame(FrameType.REJECT);
  const r = decodeReject(rej.data);
  assert.ok(r.ok);
  assert.equal(r.value.status, Errno.EPROTO);
  assert.match(r.value.reason, /protocol version 2 not supported/);
});

test('a peer that connects and never speaks is dropped at the handshake bound', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server } = await env.server({ handshake_timeout_ms: 200 });
  const raw = await RawClient.connect(port);
  const start = Date.now();
  await raw.waitClosed(5000);
  const took = Date.now() - start;
  assert.ok(took >= 150 && took < 2000, `dropped after ${took} ms`);
  await waitFor('no connection left', () => server.connectionCount === 0);
});

test('garbage after the handshake closes that path only; other sessions keep working', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, port, server, log } = await env.server();
  const { session } = env.client([address]);
  await session.open();
  const raw = await RawClient.connect(port);
  await raw.handshake('rogue@server', SECRET);
  raw.send(randomBytes(64));
  await raw.waitClosed();
  assert.ok(log.count((l) => l.msg === 'protocol error; closing path') >= 1);
  // A request with a tag beyond the queue depth, on a fresh authenticated path.
  const raw2 = await RawClient.connect(port);
  await raw2.handshake('rogue2@server', SECRET);
  raw2.send(encodeFrameHead(FrameType.REQ, FLAG_READ, null, 0, 9999, 16, 1, 0));
  await raw2.waitClosed();
  const r = await session.request('read', hdr(9), null, 100);
  assert.deepEqual(r.data, pattern(9, 100));
  assert.equal(server.session(session.name)?.pathCount, 1);
});

test('a peer that stops answering heartbeats is dropped by the server within the bound', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server } = await env.server({ heartbeat_interval_ms: 50, heartbeat_timeout_ms: 300 });
  const raw = await RawClient.connect(port);
  await raw.handshake('silent@server', SECRET);
  // The raw client never answers PINGs: it neither reads nor writes from now on.
  raw.socket.pause();
  const start = Date.now();
  await waitFor('server drops the silent path', () => server.connectionCount === 0, 5000, 2);
  const took = Date.now() - start;
  assert.ok(took < 300 + 50 + 200, `dropped after ${took} ms`);
  raw.destroy();
});

test('a client that never reads its answers cannot make the server buffer without bound', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  // A tiny queue depth and io size make the server's bound on queued answers small.
  const { port, server } = await env.server({ max_queue_depth: 4, max_io_size: 64 * 1024, heartbeat_interval_ms: 50, heartbeat_timeout_ms: 400 });
  const raw = await RawClient.connect(port);
  await raw.handshake('hoarder@server', SECRET);
  raw.socket.pause();
  // Keep asking for 64 KiB answers on ever new ids, never reading them.
  let id = 1;
  const flood = setInterval(() => {
    if (raw.closed) return;
    const batch = [];
    for (let i = 0; i < 64; i++) batch.push(encodeFrameHead(FrameType.REQ, FLAG_READ, hdr(1), 0, (id % 4) >>> 0, 64 * 1024, id++, 0));
    raw.socket.write(Buffer.concat(batch));
  }, 5);
  try {
    await raw.waitClosed(10_000);
  } finally {
    clearInterval(flood);
  }
  await waitFor('connection gone', () => server.connectionCount === 0);
});

test('10,000 malformed connections, then a normal session still works', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, port, server, handler } = await env.server({ handshake_timeout_ms: 2000 });
  const valid_hello = Buffer.concat([
    encodeFrameHead(FrameType.HELLO, 0, null, 0, 0, 0, 0, 0),
    encodeHello({ version: 1, path_index: 0, queue_depth: 8, max_io_size: 1 << 20, incarnation: 1, client_nonce: randomBytes(32), session_name: 'fuzz@server' }),
  ]);
  valid_hello.writeUInt32LE(valid_hello.length - 32, 4);
  const inputs = (i: number): Buffer => {
    switch (i % 5) {
      case 0:
        return randomBytes(1 + (i % 300)); // plain garbage
      case 1: {
        const b = Buffer.from(valid_hello); // a mutated valid hello
        for (let k = 0; k < 1 + (i % 4); k++) b[(i * 7919 + k * 104729) % b.length] = (i * 31 + k) & 0xff;
        return b;
      }
      case 2:
        return valid_hello.subarray(0, i % valid_hello.length); // truncated
      case 3:
        return Buffer.concat([valid_hello, randomBytes(100)]); // hello then garbage
      default:
        return encodeFrameHead(i & 0xff, i & 3, null, (i * 2654435761) >>> 0, i, 0, 0, 0); // wild header
    }
  };
  const TOTAL = 10_000;
  const CONCURRENCY = 64;
  let next = 0;
  let finished = 0;
  const worker = async (): Promise<void> => {
    while (next < TOTAL) {
      const i = next++;
      await new Promise<void>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => undefined);
        s.on('close', () => resolve());
        s.on('connect', () => {
          s.write(inputs(i));
          s.end();
        });
        s.on('data', () => undefined);
        s.setTimeout(3000, () => s.destroy());
      });
      finished++;
    }
  };
  await within('fuzz run', Promise.all(Array.from({ length: CONCURRENCY }, worker)), 240_000);
  assert.equal(finished, TOTAL);
  assert.ok(server.stats.connections_accepted >= TOTAL);
  assert.equal(handler.executions.size, 0, 'nothing executed');
  await waitFor('every fuzz connection closed', () => server.connectionCount === 0, 10_000);
  const { session } = env.client([address]);
  await within('open after fuzz', session.open());
  const r = await session.request('read', hdr(42), null, 4096);
  assert.deepEqual(r.data, pattern(42, 4096));
});
