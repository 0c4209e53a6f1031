// What an unauthenticated attacker can take from a transport listener, with the defaults the
// daemon uses. The security review (finding 5) opened 4,200 idle sockets: they shared the
// 4,096-connection cap with real paths, each was held 10 s, and a later HELLO got
// ECONNRESET. Now connections in their handshake have their own cap (128) and a cap per
// address (16), and the whole handshake has 3 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Env } from '../util/transport-env.js';
import { hdr, pattern } from '../util/test-handler.js';
import { waitFor, within } from '../util/wait.js';
import { addressKey } from '../../src/transport/server.js';

/** Opens `n` TCP connections from `local` that never send a byte. */
async function idle(port: number, local: string, n: number): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<void>((resolve) => {
        const s = net.connect({ port, host: '127.0.0.1', localAddress: local });
        s.on('error', () => undefined);
        s.once('connect', () => resolve());
        s.once('close', () => resolve());
        out.push(s);
      }),
    ),
  );
  return out;
}

test('idle sockets from one address hold at most 16 handshake slots; others still get in, and they go after 3 s', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server } = await env.server();
  const early = env.client([address]);
  await within('a session before the flood', early.session.open());
  const flood = await idle(address.port, '127.0.0.2', 600);
  t.after(() => flood.forEach((s) => s.destroy()));
  await waitFor('the server saw the flood', () => server.stats.connections_accepted + server.stats.connections_refused >= 601);
  assert.equal(server.preauthCount, 16, 'one address holds 16 handshake slots');
  assert.equal(server.stats.connections_refused, 600 - 16);
  // Another host's client gets in during the flood, and the session from before goes on.
  const late = env.client([address]);
  await within('a session during the flood', late.session.open());
  assert.deepEqual((await early.session.request('read', hdr(3), null, 4096)).data, pattern(3, 4096));
  const t0 = Date.now();
  await waitFor('the idle sockets are dropped at the handshake deadline', () => server.preauthCount === 0, 6000);
  assert.ok(Date.now() - t0 < 4500, `dropped after ${Date.now() - t0} ms`);
  await waitFor('every flooding socket is closed', () => flood.every((s) => s.closed), 3000);
});

test('idle sockets from many addresses fill at most 128 handshake slots; authenticated paths are not counted against them', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server } = await env.server();
  const early = env.client([address]);
  await within('a session before the flood', early.session.open());
  const flood: net.Socket[] = [];
  t.after(() => flood.forEach((s) => s.destroy()));
  for (let i = 10; i < 30; i++) flood.push(...(await idle(address.port, `127.0.0.${i}`, 16)));
  await waitFor('the server saw the flood', () => server.stats.connections_accepted + server.stats.connections_refused >= 321);
  assert.equal(server.preauthCount, 128);
  assert.equal(server.connectionCount, 128 + 1);
  assert.deepEqual((await early.session.request('read', hdr(4), null, 4096)).data, pattern(4, 4096));
  await waitFor('the slots free up at the deadline', () => server.preauthCount === 0, 6000);
  const late = env.client([address]);
  await within('a session after the flood', late.session.open());
});

test('addressKey: the host of an address, IPv6 by its /64', () => {
  assert.equal(addressKey('10.0.0.1:4567'), '10.0.0.1');
  assert.equal(addressKey('[::ffff:10.0.0.1]:1'), '10.0.0.1');
  assert.equal(addressKey('[2001:db8:1:2:3:4:5:6]:1234'), '2001:db8:1:2::/64');
  assert.equal(addressKey('[2001:db8::5]:1234'), '2001:db8:0:0::/64');
  assert.equal(addressKey('[::1]:9'), '0:0:0:0::/64');
  assert.equal(addressKey('unix:/run/x.sock'), 'unix:/run/x.sock');
});
