// The dashboard's HTTP server treats input as hostile: only the bundle's files by exact name
// (no path traversal, however encoded), the Host header checked on loopback (DNS
// rebinding), actions only as same-origin JSON POSTs of bounded size, a token (header or
// the login cookie) on every request when one is set, TLS and a token required off
// loopback, bounded headers and event streams. Real sockets, raw bytes where a client
// library would normalise the request.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import https from 'node:https';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDashboard, type RunningDashboard } from '../../src/dashboard/node-dashboard.js';
import type { ClusterLayout } from '../../src/dashboard/collector.js';
import { TestCerts } from '../util/tls-certs.js';
import { DashboardApi } from '../../src/dashboard/http-api.js';
import { tokenDigest } from '../../src/daemon/control-api.js';

const layout: ClusterLayout = { cluster: 't', nodes: [], pools: [{ name: 'p', chunk_size: 131072, members: [{ node: 'stg1', member_id: 1 }] }], client_node: null };
const TOKEN = 'dashboard-token-0123456789-0123456789abcdef';
let dir = '';
let bundle = '';
let plain: RunningDashboard;
let secure: RunningDashboard;
let certs: TestCerts;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rmr-dash-http-'));
  bundle = join(dir, 'web');
  mkdirSync(bundle);
  writeFileSync(join(bundle, 'index.html'), '<!doctype html><title>t</title>');
  writeFileSync(join(bundle, 'app.js'), 'console.log(1)');
  writeFileSync(join(bundle, 'notes.txt'), 'not a type the dashboard serves');
  writeFileSync(join(dir, 'secret.js'), 'outside the bundle');
  certs = new TestCerts();
  const c = certs.selfSigned('dash', 'localhost', 'IP:127.0.0.1');
  plain = await startDashboard({ layout, host: '127.0.0.1', port: 0, tls: null, token: null, interval_ms: 60_000, bundle_dir: bundle });
  secure = await startDashboard({ layout, host: '127.0.0.1', port: 0, tls: { cert: Buffer.from(c.cert), key: Buffer.from(c.key) }, token: TOKEN, interval_ms: 60_000, bundle_dir: bundle });
});

after(async () => {
  await plain.close();
  await secure.close();
  certs.remove();
  rmSync(dir, { recursive: true, force: true });
});

/** One raw request; the whole answer (the server closes: `connection: close`). */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (out += d));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(10_000, () => s.destroy(new Error('no answer')));
  });
}

const get = (port: number, path: string, headers = ''): Promise<string> => raw(port, `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nconnection: close\r\n${headers}\r\n`);
const status = (answer: string): number => Number(/^HTTP\/1\.1 (\d+)/.exec(answer)?.[1] ?? 0);

test('the page and the bundle are served, with a content security policy', async () => {
  const r = await get(plain.port, '/');
  assert.equal(status(r), 200);
  assert.match(r, /content-type: text\/html/i);
  assert.match(r, /content-security-policy: default-src 'none'; script-src 'self'/i);
  assert.match(r, /x-content-type-options: nosniff/i);
  assert.equal(status(await get(plain.port, '/assets/app.js')), 200);
  assert.equal(status(await get(plain.port, '/api/state')), 200);
});

test('no path traversal, however encoded; only the bundle files of known types', async () => {
  for (const p of ['/assets/../secret.js', '/assets/..%2fsecret.js', '/assets/%2e%2e/secret.js', '/assets/%2e%2e%2fsecret.js', '/../secret.js', '/assets/..\\secret.js', '/assets//etc/passwd', '/assets/notes.txt', '/assets/', '/assets/app.js/', '/assets/index.html', '/assets/app.js%00.png', '/etc/passwd', '/assets/.', '/assets/..']) {
    const r = await get(plain.port, p);
    assert.equal(status(r), 404, `${p}: ${r.split('\r\n')[0] ?? ''}`);
    assert.doesNotMatch(r, /outside the bundle|not a type/);
  }
  assert.equal(status(await get(plain.port, `/${'a'.repeat(3000)}`)), 400, 'request target too long');
  assert.equal(status(await raw(plain.port, 'GET assets/app.js HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')), 400, 'not an absolute path');
});

test('on loopback the Host header must name the listener (DNS rebinding)', async () => {
  assert.equal(status(await raw(plain.port, `GET /api/state HTTP/1.1\r\nhost: evil.example:${plain.port}\r\nconnection: close\r\n\r\n`)), 421);
  assert.equal(status(await raw(plain.port, 'GET /api/state HTTP/1.1\r\nconnection: close\r\n\r\n')), 400, 'no Host: Node refuses it already');
  assert.equal(status(await raw(plain.port, `GET /api/state HTTP/1.1\r\nhost: 127.0.0.1:${plain.port}.evil.example\r\nconnection: close\r\n\r\n`)), 421);
  assert.equal(status(await raw(plain.port, `GET /api/state HTTP/1.1\r\nhost: localhost:${plain.port}\r\nconnection: close\r\n\r\n`)), 200);
});

test('actions: POST only, JSON only, same origin only, bounded', async () => {
  const post = (body: string, headers: string): Promise<string> => raw(plain.port, `POST /api/action HTTP/1.1\r\nhost: 127.0.0.1:${plain.port}\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${headers}\r\n${body}`);
  const good = '{"op":"sync_start","pool":"p","node":"stg1"}';
  assert.equal(status(await get(plain.port, '/api/action')), 405);
  assert.equal(status(await post(good, '')), 415, 'no content type');
  assert.equal(status(await post(good, 'content-type: text/plain\r\n')), 415, 'a form-like content type');
  assert.equal(status(await post(good, 'content-type: application/json\r\norigin: http://evil.example\r\n')), 403);
  assert.equal(status(await post(good, 'content-type: application/json\r\nsec-fetch-site: cross-site\r\n')), 403);
  assert.equal(status(await post('{"op":', 'content-type: application/json\r\n')), 400);
  assert.equal(status(await post('\xff\xfe', 'content-type: application/json\r\n')), 400, 'not UTF-8');
  const big = await post(`{"op":"sync_start","pool":"p","node":"${'x'.repeat(5000)}"}`, 'content-type: application/json\r\n');
  assert.equal(status(big), 413);
  // Accepted by the checks, refused by the cluster (its node does not answer): a JSON reason.
  const r = await post(good, `content-type: application/json\r\norigin: http://127.0.0.1:${plain.port}\r\nsec-fetch-site: same-origin\r\n`);
  assert.equal(status(r), 400);
  assert.match(r, /"ok":false,.*"error":"no node stg1"/);
  assert.equal(status(await raw(plain.port, `DELETE / HTTP/1.1\r\nhost: 127.0.0.1:${plain.port}\r\nconnection: close\r\n\r\n`)), 405);
});

test('oversized headers are refused and garbage gets a bare 400', async () => {
  assert.equal(status(await get(plain.port, '/', `x-big: ${'a'.repeat(20_000)}\r\n`)), 431);
  assert.equal(status(await raw(plain.port, 'NOT HTTP AT ALL\r\n\r\n')), 400);
});

test('event streams are bounded in number', async () => {
  const socks: net.Socket[] = [];
  try {
    for (let i = 0; i < 32; i++) {
      const s = net.connect(plain.port, '127.0.0.1');
      socks.push(s);
      await new Promise<void>((res, rej) => {
        s.once('error', rej);
        s.write(`GET /api/stream HTTP/1.1\r\nhost: 127.0.0.1:${plain.port}\r\n\r\n`);
        s.once('data', (d: Buffer) => (assert.match(d.toString(), /^HTTP\/1\.1 200[\s\S]*text\/event-stream/), res()));
      });
    }
    assert.equal(status(await get(plain.port, '/api/stream')), 503);
  } finally {
    for (const s of socks) s.destroy();
  }
});

function tlsGet(path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: secure.port, path, headers: { host: `127.0.0.1:${secure.port}`, ...headers }, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (res.headers['content-type']?.startsWith('text/event-stream') === true && body.includes('\n\n')) req.destroy();
      });
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
    req.end();
  });
}

test('with a token: every request needs it (header or login cookie), over TLS', async () => {
  assert.equal((await tlsGet('/')).status, 401);
  assert.equal((await tlsGet('/assets/app.js')).status, 401);
  assert.equal((await tlsGet('/api/state', { authorization: 'Bearer wrong-token-0123456789' })).status, 401);
  assert.equal((await tlsGet('/api/state', { authorization: `Bearer ${TOKEN}` })).status, 200);
  assert.equal((await tlsGet('/?token=wrong')).status, 401);
  const login = await tlsGet(`/?token=${TOKEN}`);
  assert.equal(login.status, 303);
  const cookie = String(login.headers['set-cookie']);
  assert.match(cookie, /^rmr_dashboard=.+; Path=\/; HttpOnly; SameSite=Strict; Secure/);
  const jar = cookie.split(';')[0] ?? '';
  assert.equal((await tlsGet('/api/state', { cookie: jar })).status, 200);
  assert.equal((await tlsGet('/api/state', { cookie: 'rmr_dashboard=nope' })).status, 401);
  const sse = await tlsGet('/api/stream', { cookie: `other=1; ${jar}` });
  assert.equal(sse.status, 200);
  assert.match(sse.body, /event: snapshot\ndata: \{"state":/);
  // Plain HTTP to the TLS listener is not served.
  const r = await raw(secure.port, `GET / HTTP/1.1\r\nhost: 127.0.0.1:${secure.port}\r\nconnection: close\r\n\r\n`).catch(() => '');
  assert.doesNotMatch(r, /^HTTP\/1\.1 200/);
});

test('an address other than loopback needs TLS and a token; a short token is refused', async () => {
  await assert.rejects(startDashboard({ layout, host: '0.0.0.0', port: 0, tls: null, token: TOKEN, interval_ms: 1000, bundle_dir: bundle }), /needs TLS .* and a token/);
  await assert.rejects(startDashboard({ layout, host: '10.1.2.3', port: 0, tls: null, token: null, interval_ms: 1000, bundle_dir: bundle }), /needs TLS/);
  await assert.rejects(startDashboard({ layout, host: '127.0.0.1', port: 0, tls: null, token: 'short', interval_ms: 1000, bundle_dir: bundle }), /at least 32 characters/);
  await assert.rejects(startDashboard({ layout, host: '127.0.0.1', port: 0, tls: null, token: null, interval_ms: 1000, bundle_dir: join(dir, 'nothing') }), /not built/);
});

test('a token with cookie-breaking characters still logs in (the cookie holds it encoded)', async () => {
  const token = 'tok;en,with=odd"chars%0123-0123456789abcdef';
  const api = new DashboardApi({ files: new Map([['index.html', { type: 'text/html', body: Buffer.from('x') }]]), token_digest: tokenDigest(token), hosts: null, max_body_bytes: 4096, tls: true, snapshot: () => ({ state: null as never, pictures: {}, charts: [], events: [] }), act: () => Promise.resolve({ ok: false }) });
  const login = await api.handle({ method: 'GET', url: `/?token=${encodeURIComponent(token)}`, headers: {}, body: Buffer.alloc(0) });
  assert.equal(login.kind === 'body' ? login.status : 0, 303);
  const set = login.kind === 'body' ? (login.headers['set-cookie'] ?? '') : '';
  const jar = set.split('; ')[0] ?? '';
  assert.doesNotMatch(jar.slice('rmr_dashboard='.length), /[;,"]/);
  const r = await api.handle({ method: 'GET', url: '/', headers: { cookie: jar }, body: Buffer.alloc(0) });
  assert.equal(r.kind === 'body' ? r.status : 0, 200);
  const bad = await api.handle({ method: 'GET', url: '/', headers: { cookie: 'rmr_dashboard=%E0%A4%A' }, body: Buffer.alloc(0) });
  assert.equal(bad.kind === 'body' ? bad.status : 0, 401, 'a cookie that does not decode is no token');
});
