// Fuzzing the data plane's TLS handshake (issue 21: `npm run fuzz` covers the TLS handshake
// paths). fuzz.test.ts mutates frames after a plaintext handshake and hostile.test.ts sends
// bad bytes before one; this file attacks the TLS layer the daemon puts in front of the HELLO
// (startTls on every accepted connection, identities from data-tls.ts): garbage, truncated
// and mutated ClientHellos (PSK and certificate clients), a wrong PSK identity or key, a
// plaintext HELLO to a TLS listener, TLS to a plaintext listener, and real handshakes whose
// later client flights are mutated by a proxy. Each named case must be refused; in the
// seeded loop, every connection must end with no session for anyone but a known identity.
// Afterwards: no connection or handshake slot left, nothing logged at level error, the
// listeners still accept a good client, and its reads are correct.
// Longer: npm run fuzz -- --seconds 60 tls-fuzz; replay: RMR_FUZZ_SEED=<seed>.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { Env } from '../util/transport-env.js';
import { TestCerts } from '../util/tls-certs.js';
import { hdr, pattern } from '../util/test-handler.js';
import { waitFor, within } from '../util/wait.js';
import { fuzzBudget, mutate } from '../util/fuzz.js';
import type { MemoryLogger } from '../util/memory-logger.js';
import { NodeNet, PSK_CIPHERS } from '../../src/node/net.js';
import { identifyByCertificate, identifyByPsk, type DataPskEntry } from '../../src/daemon/data-tls.js';
import { FrameType, encodeFrameHead } from '../../src/transport/frame.js';
import { PROTOCOL_VERSION, encodeHello } from '../../src/transport/handshake.js';
import type { TransportServer } from '../../src/transport/server.js';
import { SeededRandom } from '../../src/util/seeded-random.js';

const budget = fuzzBudget(4000, 20261207);
/** Short, so that truncated handshakes end quickly; the deadline is part of what is tested. */
const HANDSHAKE_MS = 800;

const KEYS = new Map<string, DataPskEntry>([
  ['cli1', { key: Buffer.alloc(32, 1), roles: ['client'] }],
  ['stg2', { key: Buffer.alloc(32, 2), roles: ['storage'] }],
]);

function pskClientOpts(identity: string, key: Buffer): tls.ConnectionOptions {
  return { pskCallback: () => ({ identity, psk: key }), ciphers: PSK_CIPHERS, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', checkServerIdentity: () => undefined };
}

function helloFrame(name: string): Buffer {
  const body = encodeHello({ version: PROTOCOL_VERSION, path_index: 0, queue_depth: 8, max_io_size: 1 << 20, incarnation: 1, client_nonce: Buffer.alloc(32, 7), session_name: name });
  return Buffer.concat([encodeFrameHead(FrameType.HELLO, 0, null, body.length, 0, 0, 0, 0), body]);
}

/** The first flight (the ClientHello record) a TLS client with `opts` sends. */
async function captureClientHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  let got = Buffer.alloc(0);
  const srv = net.createServer();
  const hello = new Promise<Buffer>((resolve) =>
    srv.on('connection', (s) => {
      s.on('data', (c: Buffer) => {
        got = Buffer.concat([got, c]);
        if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
          resolve(got.subarray(0, 5 + got.readUInt16BE(3)));
          s.destroy();
        }
      });
      s.on('error', () => undefined);
    }),
  );
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  const c = tls.connect({ host: '127.0.0.1', port, ...opts });
  c.on('error', () => undefined);
  try {
    const h = await within('a ClientHello', hello);
    assert.equal(h[0], 0x16, 'a TLS handshake record');
    return h;
  } finally {
    c.destroy();
    srv.close();
  }
}

interface Outcome {
  /** The server closed the connection (as opposed to our deadline). */
  closed: boolean;
  reply: Buffer;
}

/** Sends `bytes` from `local` (then half-closes when `end`), and waits for the server to close. */
function hostile(port: number, bytes: Buffer, local: string, end: boolean, deadline_ms = HANDSHAKE_MS + 4000): Promise<Outcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ port, host: '127.0.0.1', localAddress: local });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ closed: false, reply: Buffer.concat(chunks) });
    }, deadline_ms);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => undefined);
    s.on('connect', () => (end ? s.end(bytes) : s.write(bytes)));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ closed: true, reply: Buffer.concat(chunks) });
    });
  });
}

/**
 * A real TLS client with `opts`: 'failed' if its handshake did not complete, else 'secure'
 * (it then goes away). With `linger` it stays, sending nothing, and the answer is how long
 * after its handshake completed the server closed the connection: in TLS 1.3 a client's
 * handshake completes before the server has checked its certificate, so a refused
 * certificate is closed at once, an accepted one at the handshake deadline (no HELLO came).
 */
function tlsAttempt(port: number, opts: tls.ConnectionOptions, linger = false): Promise<'failed' | 'secure' | number> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...opts });
    let result: 'failed' | 'secure' | number = 'failed';
    let secureAt = 0;
    const timer = setTimeout(() => s.destroy(), HANDSHAKE_MS + 4000);
    s.on('secureConnect', () => {
      secureAt = Date.now();
      result = 'secure';
      if (!linger) s.destroy();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(linger && result === 'secure' ? Date.now() - secureAt : result);
    });
  });
}

/**
 * A proxy in front of `port` that replaces the client's chunk number `pick()` (0: the
 * ClientHello, 1: the client's second flight, e.g. its Finished or its Certificate) with
 * `edit(chunk)`; the server's bytes pass unchanged.
 */
async function mutatingProxy(env: Env, port: number, pick: () => number, edit: (b: Buffer) => Buffer): Promise<number> {
  const srv = net.createServer((c) => {
    const up = net.connect({ port, host: '127.0.0.1' });
    const target = pick();
    let n = 0;
    c.on('data', (b: Buffer) => up.write(n++ === target ? edit(b) : b));
    up.on('data', (b: Buffer) => c.write(b));
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  env.defer(() => new Promise<void>((r) => srv.close(() => r())));
  return (srv.address() as net.AddressInfo).port;
}

function errorsLogged(log: MemoryLogger): string[] {
  return log.lines.filter((l) => l.level === 'error').map((l) => `${l.msg} ${JSON.stringify(l.fields)}`);
}

/** No session but those of known identities, nothing left in its handshake, no connection but `keep`. */
async function settled(what: string, server: TransportServer, keep = 0): Promise<void> {
  await waitFor(`${what}: every hostile connection is gone`, () => server.connectionCount === keep && server.preauthCount === 0, HANDSHAKE_MS + 5000);
  for (const s of server.sessions()) assert.ok(s.peer !== null && s.peer !== undefined && KEYS.has(s.peer.name), `${what}: a session for ${s.peer?.name ?? 'nobody'}`);
}

let certs: TestCerts;
before(() => (certs = new TestCerts()));
after(() => certs.remove());

test(`data-plane TLS handshake: named attacks are refused, then seeded mutations for ${budget.ms} ms (seed ${budget.seed}); good clients still get in`, async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const read = (p: string): string => readFileSync(p, 'utf8');
  const psk = await env.server({ tls: new NodeNet().serverTls({ psk: (id) => KEYS.get(id)?.key ?? null }), identify: identifyByPsk(KEYS), handshake_timeout_ms: HANDSHAKE_MS });
  const caFiles = certs.ca('fz');
  const ca = read(caFiles.cert);
  const srvCert = certs.signed(caFiles, 'fz-srv', 'stg1', { server: true, san: 'IP:127.0.0.1', ou: ['storage'] });
  const cliCert = certs.signed(caFiles, 'fz-cli', 'cli1', { server: false, ou: ['client'] });
  const otherCa = certs.ca('fz-other');
  const forged = certs.signed(otherCa, 'fz-forged', 'cli1', { server: false, ou: ['client'] });
  const x509 = await env.server({ tls: new NodeNet().serverTls({ cert: read(srvCert.cert), key: read(srvCert.key), ca, verifyPeer: true }), identify: identifyByCertificate, handshake_timeout_ms: HANDSHAKE_MS });
  const plain = await env.server({ handshake_timeout_ms: HANDSHAKE_MS });
  const good = pskClientOpts('cli1', (KEYS.get('cli1') as DataPskEntry).key);
  const certOpts: tls.ConnectionOptions = { ca, cert: read(cliCert.cert), key: read(cliCert.key) };
  const pskHello = await captureClientHello(good);
  const certHello = await captureClientHello(certOpts);

  // --- Named attacks, each refused.
  const garbage = await hostile(psk.port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), '127.0.0.2', false);
  assert.ok(garbage.closed, 'garbage: the TLS listener closes the connection');
  assert.ok(garbage.reply.length === 0 || garbage.reply[0] === 0x15, 'garbage: nothing but a TLS alert comes back');
  const t0 = Date.now();
  const truncated = await Promise.all([hostile(psk.port, pskHello.subarray(0, 3), '127.0.0.2', false), hostile(psk.port, pskHello.subarray(0, pskHello.length - 20), '127.0.0.2', false)]);
  assert.ok(truncated.every((o) => o.closed && o.reply.length === 0), 'a truncated ClientHello gets no answer and is closed');
  assert.ok(Date.now() - t0 < HANDSHAKE_MS + 1500, `truncated ClientHellos are dropped at the handshake deadline (${Date.now() - t0} ms)`);
  const truncatedEnd = await hostile(psk.port, pskHello.subarray(0, 40), '127.0.0.2', true);
  assert.ok(truncatedEnd.closed, 'a truncated ClientHello followed by EOF is closed');
  assert.equal(await tlsAttempt(psk.port, pskClientOpts('mallory', Buffer.alloc(32, 9))), 'failed', 'an unknown PSK identity does not complete TLS');
  assert.equal(await tlsAttempt(psk.port, pskClientOpts('cli1', Buffer.alloc(32, 3))), 'failed', 'a wrong key for a known identity does not complete TLS');
  const plaintextHello = await hostile(psk.port, helloFrame('cli1@stg1'), '127.0.0.2', false);
  assert.ok(plaintextHello.closed && (plaintextHello.reply.length === 0 || plaintextHello.reply[0] === 0x15), 'a plaintext HELLO to a TLS listener: no WELCOME, closed');
  const tlsToPlain = await hostile(plain.port, pskHello, '127.0.0.2', false);
  assert.ok(tlsToPlain.closed, 'a ClientHello to a plaintext listener is closed');
  assert.equal(await tlsAttempt(plain.port, good), 'failed', 'a TLS client gets no handshake from a plaintext listener');
  // TLS 1.3: the client's side of the handshake is done before the server has checked its
  // certificate, so the refusal is the server closing the connection at once.
  const refusedAt = async (o: tls.ConnectionOptions): Promise<number> => {
    const r = await tlsAttempt(x509.port, o, true);
    return typeof r === 'number' ? r : 0;
  };
  const noCert = await refusedAt({ ca });
  assert.ok(noCert < HANDSHAKE_MS / 2, `no client certificate: refused at once (${noCert} ms)`);
  const otherCaMs = await refusedAt({ ca, cert: read(forged.cert), key: read(forged.key) });
  assert.ok(otherCaMs < HANDSHAKE_MS / 2, `a certificate of another CA: refused at once (${otherCaMs} ms)`);
  const goodMs = await refusedAt(certOpts);
  assert.ok(goodMs >= HANDSHAKE_MS / 2, `the good certificate is kept until the HELLO deadline (${goodMs} ms): the check can fail`);
  const certTruncated = await hostile(x509.port, certHello.subarray(0, certHello.length >> 1), '127.0.0.2', false);
  assert.ok(certTruncated.closed && certTruncated.reply.length === 0, 'a truncated ClientHello to the certificate listener is closed');
  for (const [what, s] of [['psk', psk], ['x509', x509], ['plain', plain]] as const) {
    await settled(what, s.server);
    assert.equal(s.server.sessions().length, 0, `${what}: no session from the named attacks`);
  }

  // --- Seeded mutations.
  // Case i draws from its own generator (seed, i), so a case replays whatever ran beside it;
  // the proxies' mutations draw from one generator in connection order.
  const proxyRnd = new SeededRandom(budget.seed ^ 0x5a5a);
  const proxyPsk = await mutatingProxy(env, psk.port, () => proxyRnd.int(2), (b) => mutate(proxyRnd, b));
  const proxyCert = await mutatingProxy(env, x509.port, () => proxyRnd.int(2), (b) => mutate(proxyRnd, b));
  const kinds = new Map<string, number>();
  const completed = new Map<string, number>();
  const deadline = Date.now() + budget.ms;
  let cases = 0;
  const oneCase = async (i: number): Promise<void> => {
    const rnd = new SeededRandom(budget.seed * 7919 + i);
    const local = `127.0.${1 + rnd.int(4)}.${2 + rnd.int(200)}`;
    const end = rnd.int(2) === 0;
    const kind = ['hello-psk', 'hello-cert', 'garbage', 'truncated', 'proxy-psk', 'proxy-cert', 'tls-to-plain', 'record-junk'][rnd.int(8)] as string;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    const note = (ok: boolean): void => {
      if (ok) completed.set(kind, (completed.get(kind) ?? 0) + 1);
    };
    switch (kind) {
      case 'hello-psk':
        return note(((await hostile(psk.port, mutate(rnd, pskHello), local, end)).reply[0] ?? 0) === 0x16);
      case 'hello-cert':
        return note(((await hostile(x509.port, mutate(rnd, certHello), local, end)).reply[0] ?? 0) === 0x16);
      case 'garbage':
        await hostile(rnd.int(2) === 0 ? psk.port : x509.port, rnd.bytes(1 + rnd.int(600)), local, end);
        return;
      case 'truncated':
        await hostile(psk.port, pskHello.subarray(0, rnd.int(pskHello.length)), local, end);
        return;
      case 'proxy-psk':
        return note((await tlsAttempt(proxyPsk, good)) === 'secure');
      case 'proxy-cert':
        return note((await tlsAttempt(proxyCert, certOpts)) === 'secure');
      case 'tls-to-plain':
        await hostile(plain.port, mutate(rnd, rnd.int(2) === 0 ? pskHello : certHello), local, end);
        return;
      default: {
        // A TLS record header with a hostile type and length, then junk.
        const head = Buffer.from([[0x14, 0x15, 0x16, 0x17, 0x18][rnd.int(5)] as number, 3, rnd.int(5), 0, 0]);
        head.writeUInt16BE([0, 1, 0x4000, 0x4800, 0xffff][rnd.int(5)] as number, 3);
        await hostile(rnd.int(2) === 0 ? psk.port : x509.port, Buffer.concat([head, rnd.bytes(rnd.int(300))]), local, end);
      }
    }
  };
  // 12 cases in flight: below the per-address cap even if several pick one address.
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline && (budget.long || cases < 2000)) await oneCase(cases++);
  };
  await Promise.all(Array.from({ length: 12 }, worker));
  if (process.env.RMR_FUZZ_STATS !== undefined) console.log({ cases, kinds: Object.fromEntries(kinds), tls_completed: Object.fromEntries(completed), psk: psk.server.stats, x509: x509.server.stats, plain: plain.server.stats });
  assert.ok(cases >= 8, `${cases} cases ran`);
  for (const [what, s] of [['psk', psk], ['x509', x509], ['plain', plain]] as const) {
    await settled(`after ${cases} cases: ${what}`, s.server);
    assert.deepEqual(errorsLogged(s.log), [], `${what}: nothing logged at level error`);
  }
  // A mutated handshake may still complete TLS (a flipped bit the transcript tolerates is
  // unlikely but possible); it then owns an identity's key, so a session would be that
  // identity's. None is made here: the fuzz clients never send a HELLO.
  assert.equal(psk.server.sessions().length + x509.server.sessions().length + plain.server.sessions().length, 0);

  // --- Good clients still get in, on all three listeners, and read correct data.
  const a = env.client([{ host: '127.0.0.1', port: psk.port, tls: { psk: { identity: 'cli1', key: (KEYS.get('cli1') as DataPskEntry).key } } }], { session_name: 'cli1@stg1' });
  await within('a PSK client after the fuzzing', a.session.open());
  assert.deepEqual((await a.session.request('read', hdr(3), null, 4096)).data, pattern(3, 4096));
  assert.deepEqual(psk.server.session('cli1@stg1', 'cli1')?.peer, { name: 'cli1', roles: ['client'] });
  const b = env.client([{ host: '127.0.0.1', port: x509.port, tls: { ca, cert: read(cliCert.cert), key: read(cliCert.key) } }], { session_name: 'cli1@stg1' });
  await within('a certificate client after the fuzzing', b.session.open());
  assert.deepEqual((await b.session.request('read', hdr(4), null, 4096)).data, pattern(4, 4096));
  const c = env.client([{ host: '127.0.0.1', port: plain.port }]);
  await within('a plaintext client of the plaintext listener after the fuzzing', c.session.open());
  assert.deepEqual((await c.session.request('read', hdr(5), null, 4096)).data, pattern(5, 4096));
});
