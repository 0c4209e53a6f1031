// Whole transport sessions over TLS: certificates verified against a CA, and TLS-PSK; the
// cluster-secret authentication still runs inside the encrypted stream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Env } from '../util/transport-env.js';
import { TestCerts } from '../util/tls-certs.js';
import { hdr, pattern } from '../util/test-handler.js';
import { within } from '../util/wait.js';
import type { TransportError } from '../../src/transport/errors.js';

let certs: TestCerts;
let server_cert: { cert: string; key: string };
let other_cert: { cert: string; key: string };

before(() => {
  certs = new TestCerts();
  server_cert = certs.selfSigned('server', 'localhost', 'DNS:localhost,IP:127.0.0.1');
  other_cert = certs.selfSigned('other', 'localhost', 'DNS:localhost,IP:127.0.0.1');
});
after(() => certs.remove());

test('a TLS session with a verified server certificate carries requests both ways', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server } = await env.server({}, '127.0.0.1', { cert: server_cert.cert, key: server_cert.key });
  const { session } = env.client([{ host: '127.0.0.1', port: address.port, tls: { ca: server_cert.cert } }]);
  await within('TLS open', session.open());
  const r = await session.request('read', hdr(11), null, 256 * 1024);
  assert.deepEqual(r.data, pattern(11, 256 * 1024));
  assert.equal((await session.request('write', hdr(0), Buffer.alloc(300_000, 3), 0)).status, 0);
  assert.equal(server.sessions().length, 1);
});

test('a client that does not trust the server certificate never opens the session', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, server } = await env.server({}, '127.0.0.1', { cert: server_cert.cert, key: server_cert.key });
  const { session } = env.client([{ host: '127.0.0.1', port: address.port, tls: { ca: other_cert.cert } }], {
    disconnect_timeout_ms: 500,
    connect_timeout_ms: 300,
    reconnect_delay_ms: 50,
  });
  await assert.rejects(within('open fails', session.open()), (e: TransportError) => e.code === 'ETIMEDOUT' && /certificate/.test(e.message));
  assert.equal(server.sessions().length, 0);
});

test('a TLS-PSK session works; a wrong PSK is refused', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const psk = { identity: 'cluster-a', key: Buffer.alloc(32, 9) };
  const { address } = await env.server({}, '127.0.0.1', { psk });
  const { session } = env.client([{ host: '127.0.0.1', port: address.port, tls: { psk } }]);
  await within('PSK open', session.open());
  assert.deepEqual((await session.request('read', hdr(2), null, 4096)).data, pattern(2, 4096));
  const bad = env.client([{ host: '127.0.0.1', port: address.port, tls: { psk: { identity: 'cluster-a', key: Buffer.alloc(32, 1) } } }], {
    disconnect_timeout_ms: 500,
    connect_timeout_ms: 300,
    reconnect_delay_ms: 50,
  });
  await assert.rejects(within('bad PSK open fails', bad.session.open()), (e: TransportError) => e.code === 'ETIMEDOUT' && /last error: path 0/.test(e.message));
});
