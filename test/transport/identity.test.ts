// Per-peer identities on the transport: every connection is upgraded to TLS, the peer the TLS
// handshake proved (a PSK identity or a verified certificate's subject) names the session,
// and sessions are kept per peer. The attack of the security review (finding 11): any holder
// of the one cluster secret could open a session under another node's session name with a
// new incarnation, which closed that node's session, or take over its path index. Now a
// peer reaches only its own sessions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Env, SECRET } from '../util/transport-env.js';
import { RawClient } from '../util/raw-client.js';
import { TestCerts } from '../util/tls-certs.js';
import { hdr, pattern } from '../util/test-handler.js';
import { waitFor, within } from '../util/wait.js';
import { NodeNet, PSK_CIPHERS } from '../../src/node/net.js';
import type { TlsPeer } from '../../src/transport/net.js';
import type { PeerIdentity } from '../../src/transport/server.js';
import type { TransportError } from '../../src/transport/errors.js';
import { readFileSync } from 'node:fs';

const KEYS = new Map([
  ['cli1', Buffer.alloc(32, 1)],
  ['stg2', Buffer.alloc(32, 2)],
]);

function identifyPsk(peer: TlsPeer | null): PeerIdentity | string {
  if (peer === null || peer.kind !== 'psk') return 'no PSK identity';
  return { name: peer.identity, roles: [peer.identity.startsWith('cli') ? 'client' : 'storage'] };
}

const fast = { disconnect_timeout_ms: 600, connect_timeout_ms: 300, reconnect_delay_ms: 50 };

async function pskServer(env: Env) {
  const tls = new NodeNet().serverTls({ psk: (id) => KEYS.get(id) ?? null });
  return env.server({ tls, identify: identifyPsk });
}

function pskAddress(port: number, identity: string, key?: Buffer) {
  return { host: '127.0.0.1', port, tls: { psk: { identity, key: key ?? KEYS.get(identity) ?? Buffer.alloc(0) } } };
}

test('a peer cannot replace, resume or join another peer\'s session by its name', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server } = await pskServer(env);
  const victim = env.client([pskAddress(port, 'cli1')], { session_name: 'cli1@stg1' });
  await within('victim opens', victim.session.open());
  assert.equal((await victim.session.request('write', hdr(0), Buffer.alloc(4096, 1), 0)).status, 0);
  const mine = server.session('cli1@stg1', 'cli1');
  assert.ok(mine !== undefined && mine.peer?.name === 'cli1');
  // stg2 holds a valid key of its own and the cluster secret: under the shared-secret mode its
  // new incarnation of `cli1@stg1` closed the victim's session.
  const attacker = env.client([pskAddress(port, 'stg2')], { session_name: 'cli1@stg1' });
  await within('attacker opens', attacker.session.open());
  // And a hand-made HELLO for the victim's path 0 with the victim's incarnation unknown:
  // the path stays the victim's.
  const raw = await RawClient.connect(port, '127.0.0.1', { tls: { pskCallback: () => ({ identity: 'stg2', psk: KEYS.get('stg2') as Buffer }), ciphers: PSK_CIPHERS, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', checkServerIdentity: () => undefined } });
  t.after(() => raw.destroy());
  await raw.handshake('cli1@stg1', SECRET, { incarnation: 7, path_index: 0 });
  assert.equal(server.session('cli1@stg1', 'cli1'), mine, 'the victim\'s session is the same object');
  assert.equal(mine.closed, false);
  assert.equal(mine.pathCount, 1);
  assert.equal(server.sessions().length, 2, 'the attacker got a session of its own');
  assert.equal(server.session('cli1@stg1', 'stg2')?.peer?.name, 'stg2');
  // The victim's session still carries requests.
  assert.deepEqual((await victim.session.request('read', hdr(5), null, 8192)).data, pattern(5, 8192));
  assert.equal(victim.session.state, 'CONNECTED');
});

test('TLS and an identity are required: a plaintext client, an unknown PSK identity and a wrong key get nothing', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server, handler } = await pskServer(env);
  // Plaintext: its HELLO is taken as a TLS record and the handshake fails.
  const plain = await RawClient.connect(port);
  plain.hello('cli1@stg1');
  await plain.waitClosed();
  const unknown = env.client([pskAddress(port, 'mallory', Buffer.alloc(32, 9))], fast);
  await assert.rejects(within('unknown identity', unknown.session.open()), (e: TransportError) => e.code === 'ETIMEDOUT');
  const wrong = env.client([pskAddress(port, 'cli1', Buffer.alloc(32, 3))], fast);
  await assert.rejects(within('wrong key', wrong.session.open()), (e: TransportError) => e.code === 'ETIMEDOUT');
  assert.equal(server.sessions().length, 0);
  assert.equal(handler.executions.size, 0);
  await waitFor('no connection left', () => server.connectionCount === 0);
});

let certs: TestCerts;
before(() => (certs = new TestCerts()));
after(() => certs.remove());

test('with certificates, a session\'s peer is the verified certificate\'s CN with its OU roles; a certificate from another CA is refused', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const ca = certs.ca('id');
  const srv = certs.signed(ca, 'id-srv', 'stg1', { server: true, san: 'IP:127.0.0.1' });
  const cli = certs.signed(ca, 'id-cli', 'cli1', { server: false, ou: ['client'] });
  const other = certs.ca('other');
  const forged = certs.signed(other, 'id-forged', 'cli1', { server: false, ou: ['client'] });
  const read = (p: string): string => readFileSync(p, 'utf8');
  const seen: TlsPeer[] = [];
  const tls = new NodeNet().serverTls({ cert: read(srv.cert), key: read(srv.key), ca: read(ca.cert), verifyPeer: true });
  const { port, server } = await env.server({
    tls,
    identify: (p) => {
      if (p !== null) seen.push(p);
      if (p === null || p.kind !== 'x509') return 'no verified certificate';
      const cn = p.subject.CN?.[0];
      return cn === undefined ? 'no CN' : { name: cn, roles: [...(p.subject.OU ?? [])] };
    },
  });
  const good = env.client([{ host: '127.0.0.1', port, tls: { ca: read(ca.cert), cert: read(cli.cert), key: read(cli.key) } }], { session_name: 'cli1@stg1' });
  await within('certificate client opens', good.session.open());
  const s = server.session('cli1@stg1', 'cli1');
  assert.deepEqual(s?.peer, { name: 'cli1', roles: ['client'] });
  const bad = env.client([{ host: '127.0.0.1', port, tls: { ca: read(ca.cert), cert: read(forged.cert), key: read(forged.key) } }], { ...fast, session_name: 'cli1@stg1' });
  await assert.rejects(within('forged certificate', bad.session.open()), (e: TransportError) => e.code === 'ETIMEDOUT');
  const none = env.client([{ host: '127.0.0.1', port, tls: { ca: read(ca.cert) } }], { ...fast, session_name: 'cli1@stg1' });
  await assert.rejects(within('no client certificate', none.session.open()), (e: TransportError) => e.code === 'ETIMEDOUT');
  assert.equal(server.sessions().length, 1);
  assert.ok(seen.every((p) => p.kind === 'x509' && p.subject.CN?.[0] === 'cli1' && p.subject.OU?.[0] === 'client'), 'identify saw only the verified certificate');
});
