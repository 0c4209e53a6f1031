// NBD over TLS (STARTTLS) with real clients against the server in this process: nbdinfo and
// nbdcopy with nbds:// URIs (tls-certificates=, tls-psk-file=), qemu-img and qemu-io with
// tls-creds-x509 and tls-creds-psk objects, fio's nbd engine, the history checker's
// workload; client certificates checked against the CA; and the attacks: a plaintext client
// against `require`, a wrong PSK, a certificate from another CA, junk instead of a
// ClientHello, bytes behind STARTTLS, a stalled handshake, STARTTLS twice. Certificates are
// made with openssl in nbdkit's layout (ca-cert.pem, server-cert.pem, server-key.pem).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdServer, type NbdTls } from '../../src/nbd/server.js';
import { MemBlockDevice } from '../../src/nbd/mem-device.js';
import { Cmd, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, Info, Opt, Rep, ReplyType } from '../../src/nbd/proto.js';
import { NodeNet, PSK_CIPHERS } from '../../src/transport/node-net.js';
import type { Listener } from '../../src/transport/net.js';
import { NodeClock } from '../../src/util/node-ports.js';
import { MemoryLogger } from '../../src/util/ports.js';
import { TestCerts } from '../util/tls-certs.js';
import { WireClient, goData } from '../util/nbd-wire-client.js';
import type { SocketStream} from '../util/socket-stream.js';
import { connectStream, type ClientTls } from '../util/socket-stream.js';
import { checkFio, checkInfo, checkList, checkNbdcopy, checkQemuImg, checkQemuIo, readMap, run, runOk, tempDir, type QemuTarget } from '../util/nbd-checks.js';
import { checkHistory } from '../util/history/checker.js';
import { runWorkload } from '../util/history/nbd-workload.js';
import { LyingDevice } from '../util/history/lying-device.js';
import { waitFor } from '../util/wait.js';

const SIZE = 64 << 20;
const IMAGE = 16 << 20;
const logger = new MemoryLogger();
const nodeNet = new NodeNet();
const server = new NbdServer({ clock: new NodeClock({ unref: true }), logger });
const mem = new MemBlockDevice({ size_bytes: SIZE, allocation: true, dirty_context: 'rmr:dirty:1' });
const certs = new TestCerts();
const listeners: Listener[] = [];
let dir = '';
/** Certificate directories in nbdkit/libnbd/qemu layout. */
let serverDir = '';
let clientDir = '';
let noCertDir = '';
let rogueDir = '';
let pskFile = '';
let wrongPskFile = '';
let qemuPskDir = '';
let fioHome = '';
let fioBase = '';
/** libnbd ignores $HOME for root: fio then runs as nobody. */
const fioUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : null;
const pskKey = randomBytes(32);
let ca = '';
let clientPem: { cert: string; key: string } = { cert: '', key: '' };
let roguePem: { cert: string; key: string } = { cert: '', key: '' };
/** Ports of the TCP listeners, one per TLS policy. */
const port = { x509: 0, psk: 0, verify: 0, on: 0, short: 0 };
let unixPath = '';

async function listen(tls: NbdTls): Promise<number> {
  const l = await nodeNet.listen({ host: '127.0.0.1', port: 0 }, (s) => server.accept(s, tls));
  listeners.push(l);
  return l.address.port;
}

const x509Uri = (name = 'mem', p = port.x509): string => `nbds://127.0.0.1:${p}/${name}?tls-certificates=${clientDir}`;
const pskUri = (name = 'mem', file = pskFile, user = 'alice'): string => `nbds://${user}@127.0.0.1:${port.psk}/${name}?tls-psk-file=${file}`;
const qemu = (kind: 'x509' | 'psk', name = 'mem'): QemuTarget => ({
  object: kind === 'x509' ? `tls-creds-x509,id=tls0,endpoint=client,dir=${clientDir}` : `tls-creds-psk,id=tls0,endpoint=client,dir=${qemuPskDir},username=alice`,
  image_opts: `driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=${kind === 'x509' ? port.x509 : port.psk},file.export=${name},file.tls-creds=tls0`,
});
const x509Client = (): ClientTls => ({ ca: readFileSync(ca), cert: readFileSync(clientPem.cert), key: readFileSync(clientPem.key) });
const pskClient = (key = pskKey): ClientTls => ({
  ciphers: PSK_CIPHERS,
  minVersion: 'TLSv1.3',
  pskCallback: () => ({ identity: 'alice', psk: key }),
  checkServerIdentity: () => undefined,
});

before(async () => {
  dir = await tempDir('nbd-tls-');
  server.addExport('mem', mem, 'memory export');
  server.addExport('scratch', new MemBlockDevice({ size_bytes: SIZE }));
  const caPair = certs.ca('nbd');
  ca = caPair.cert;
  const srv = certs.signed(caPair, 'server', 'localhost', { server: true, san: 'IP:127.0.0.1,DNS:localhost' });
  clientPem = certs.signed(caPair, 'client', 'nbd-client', { server: false });
  roguePem = certs.signed(certs.ca('rogue'), 'rogue', 'nbd-client', { server: false });
  serverDir = certs.layout('server', caPair, 'server', srv);
  clientDir = certs.layout('client', caPair, 'client', clientPem);
  noCertDir = certs.layout('nocert', caPair, 'client');
  rogueDir = certs.layout('rogue-dir', caPair, 'client', roguePem);
  // The PSK file format of nbdkit --tls-psk, libnbd tls-psk-file and qemu tls-creds-psk.
  pskFile = join(dir, 'keys.psk');
  writeFileSync(pskFile, `alice:${pskKey.toString('hex')}\n`, { mode: 0o600 });
  wrongPskFile = join(dir, 'wrong.psk');
  writeFileSync(wrongPskFile, `alice:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  qemuPskDir = join(dir, 'qemu-psk');
  mkdirSync(qemuPskDir, { mode: 0o700 });
  writeFileSync(join(qemuPskDir, 'keys.psk'), readFileSync(pskFile), { mode: 0o600 });
  // libnbd in fio reads no file named in the URI: it takes $HOME/.pki/libnbd, for users other
  // than root (root: /etc/pki/libnbd, not touched here). As root, fio runs as nobody.
  fioBase = mkdtempSync(join(tmpdir(), 'nbd-tls-fio-'));
  chmodSync(fioBase, 0o711);
  fioHome = join(fioBase, 'home');
  mkdirSync(join(fioHome, '.pki'), { recursive: true });
  certs.layout(join(fioHome, '.pki', 'libnbd'), caPair, 'client', clientPem);
  mkdirSync(join(fioBase, 'out'));
  if (fioUser !== null) for (const p of [fioHome, join(fioHome, '.pki'), join(fioHome, '.pki', 'libnbd'), ...['ca-cert.pem', 'client-cert.pem', 'client-key.pem'].map((f) => join(fioHome, '.pki', 'libnbd', f)), join(fioBase, 'out')]) chownSync(p, fioUser.uid, fioUser.gid);

  const read = (f: string): Buffer => readFileSync(join(serverDir, f));
  const x509 = nodeNet.serverTls({ cert: read('server-cert.pem'), key: read('server-key.pem') });
  const verify = nodeNet.serverTls({ cert: read('server-cert.pem'), key: read('server-key.pem'), ca: read('ca-cert.pem'), verifyPeer: true });
  const psk = nodeNet.serverTls({ psk: (id) => (id === 'alice' ? pskKey : null) });
  const short = nodeNet.serverTls({ cert: read('server-cert.pem'), key: read('server-key.pem'), handshakeTimeoutMs: 300 });
  port.x509 = await listen({ mode: 'require', context: x509 });
  port.psk = await listen({ mode: 'require', context: psk });
  port.verify = await listen({ mode: 'require', context: verify });
  port.on = await listen({ mode: 'on', context: x509 });
  port.short = await listen({ mode: 'require', context: short });
  unixPath = join(dir, 'nbd.sock');
  listeners.push(await nodeNet.listenUnix(unixPath, (s) => server.accept(s, { mode: 'on', context: x509 })));
});

after(async () => {
  for (const l of listeners) await l.close();
  await server.close();
  certs.remove();
  await rm(dir, { recursive: true, force: true });
  if (fioBase !== '') await rm(fioBase, { recursive: true, force: true });
});

test('nbdinfo over nbds:// with certificates and with a PSK: TLS on, size, flags, contexts, list, block status', async () => {
  for (const uri of [x509Uri(), pskUri()]) {
    const doc = JSON.parse((await runOk('nbdinfo', ['--json', uri])).stdout) as { TLS?: boolean };
    assert.equal(doc.TLS, true, `${uri}: TLS negotiated`);
    await checkInfo(uri, { size_bytes: SIZE, writable: true, multi_conn: true, can_trim: true, can_zero: true, contexts: ['base:allocation', 'rmr:dirty:1'], description: 'memory export' });
    await checkList(uri, ['mem', 'scratch']);
  }
  await new Promise<void>((resolve, reject) => mem.write(4 << 20, Buffer.alloc(128 * 1024, 7), { fua: false }, (s) => (s === 0 ? resolve() : reject(new Error(`write ${s}`)))));
  const at = (ext: { offset: number; length: number; type: number }[], off: number): number | undefined => ext.find((x) => x.offset <= off && off < x.offset + x.length)?.type;
  const alloc = await readMap(x509Uri(), SIZE);
  assert.equal(at(alloc, 4 << 20), 0, 'written range is data');
  assert.equal(at(alloc, 40 << 20), 3, 'never written is hole,zero');
  const dirty = await readMap(pskUri(), SIZE, 'rmr:dirty:1');
  assert.equal(at(dirty, (4 << 20) + 4096), 1, 'written pages are dirty');
  assert.equal(at(dirty, 50 << 20), 0);
});

test('nbdcopy in and out over nbds:// with certificates and with a PSK', async () => {
  const d = await tempDir();
  try {
    await checkNbdcopy(x509Uri('scratch'), IMAGE, d);
    await checkNbdcopy(pskUri('scratch'), IMAGE, d);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('qemu-img convert and qemu-io with tls-creds-x509 and tls-creds-psk', async () => {
  const d = await tempDir();
  try {
    await checkQemuImg(qemu('x509', 'scratch'), IMAGE, d);
    await checkQemuImg(qemu('psk', 'scratch'), IMAGE, d);
    await checkQemuIo(qemu('x509'), SIZE);
    await checkQemuIo(qemu('psk'), SIZE);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('fio (nbd engine, crc32c verify) over nbds:// with the certificates in $HOME/.pki/libnbd, a client certificate included', async () => {
  const out = join(fioBase, 'out');
  const r = await checkFio(`nbds://127.0.0.1:${port.x509}/scratch`, 8 << 20, out, { HOME: fioHome }, fioUser);
  assert.ok(r.write_bytes > 0 && r.read_bytes > 0);
  // The listener that wants a client certificate lets fio in only if libnbd read the directory.
  const v = await checkFio(`nbds://127.0.0.1:${port.verify}/scratch`, 4 << 20, out, { HOME: fioHome }, fioUser);
  assert.ok(v.write_bytes > 0);
  await assert.rejects(checkFio(`nbds://127.0.0.1:${port.verify}/scratch`, 4 << 20, out, { HOME: join(fioBase, 'out') }, fioUser), /fio/);
});

test('a plaintext client against require gets ERR_TLS_REQD and no export: nbdinfo and qemu-img fail, a raw client sees the error', async () => {
  for (const uri of [`nbd://127.0.0.1:${port.x509}/mem`, `nbd://127.0.0.1:${port.psk}/mem`]) {
    const r = await run('nbdinfo', [uri], 20_000);
    assert.notEqual(r.code, 0, `nbdinfo ${uri} must fail`);
    const l = await run('nbdinfo', ['--list', uri], 20_000);
    assert.notEqual(l.code, 0);
    assert.doesNotMatch(l.stdout, /scratch/, 'no export names in clear');
  }
  const q = await run('qemu-img', ['info', `nbd://127.0.0.1:${port.x509}/mem`], 20_000);
  assert.notEqual(q.code, 0);
  assert.match(q.stderr, /TLS negotiation required/);
  const c = new WireClient(await connectStream({ host: '127.0.0.1', port: port.x509 }));
  await c.greeting();
  c.send(u32(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
  for (const [opt, data] of [[Opt.LIST, Buffer.alloc(0)], [Opt.GO, goData('mem', [Info.NAME])], [Opt.INFO, goData('mem')]] as const) {
    c.sendOption(opt, data);
    const r = await c.optionReply();
    assert.equal(r.type, Rep.ERR_TLS_REQD);
  }
  c.sendOption(Opt.EXPORT_NAME, Buffer.from('mem'));
  await c.waitClosed();
  // The same client over TLS gets in: the refusal is about TLS, not the export.
  await checkInfo(x509Uri(), { size_bytes: SIZE });
});

test('a wrong PSK and an unknown identity are refused and logged; the server keeps serving', async () => {
  const before = logger.count((l) => l.msg === 'nbd TLS handshake failed');
  const wrong = await run('nbdinfo', [pskUri('mem', wrongPskFile)], 20_000);
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.stderr, /TLS|handshake|alert/i);
  const node = new WireClient(await connectStream({ host: '127.0.0.1', port: port.psk }));
  await assert.rejects(node.connect('mem', { tls: () => (node.stream as SocketStream).startClientTls(pskClient(randomBytes(32))) }));
  const mallory = new WireClient(await connectStream({ host: '127.0.0.1', port: port.psk }));
  await assert.rejects(mallory.connect('mem', { tls: () => (mallory.stream as SocketStream).startClientTls({ ...pskClient(), pskCallback: () => ({ identity: 'mallory', psk: pskKey }) }) }));
  await waitFor('three failed handshakes logged', () => logger.count((l) => l.msg === 'nbd TLS handshake failed') >= before + 3, 5000);
  await checkInfo(pskUri(), { size_bytes: SIZE });
});

test('client certificates (verify peer): the CA-signed client gets in; none, or one from another CA, is refused', async () => {
  const uri = (d: string): string => `nbds://127.0.0.1:${port.verify}/mem?tls-certificates=${d}`;
  await checkInfo(uri(clientDir), { size_bytes: SIZE });
  const none = await run('nbdinfo', [uri(noCertDir)], 20_000);
  assert.notEqual(none.code, 0, 'no client certificate');
  // gnutls sends no certificate the server's CA list does not name; Node sends what it has.
  const rogue = await run('nbdinfo', [uri(rogueDir)], 20_000);
  assert.notEqual(rogue.code, 0);
  const c = new WireClient(await connectStream({ host: '127.0.0.1', port: port.verify }));
  await assert.rejects(c.connect('mem', { tls: () => (c.stream as SocketStream).startClientTls({ ca: readFileSync(ca), cert: readFileSync(roguePem.cert), key: readFileSync(roguePem.key) }) }));
  await waitFor('the foreign certificate is refused by name', () => logger.count((l) => l.msg === 'nbd TLS handshake failed' && /client certificate refused/.test(String(l.fields.err))) >= 1, 5000);
  const good = new WireClient(await connectStream({ host: '127.0.0.1', port: port.verify }));
  const { size } = await good.connect('mem', { tls: () => (good.stream as SocketStream).startClientTls(x509Client()) });
  assert.equal(size, SIZE);
  good.stream.destroy();
});

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

function optionBytes(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 'latin1');
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

/** A raw socket that got the greeting and sent the flags; collects what the server sends. */
async function rawClient(p: number): Promise<{ s: net.Socket; got: () => Buffer; closed: Promise<void> }> {
  const s = net.connect(p, '127.0.0.1');
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('error', () => undefined);
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  await waitFor('greeting', () => Buffer.concat(chunks).length >= 18, 5000);
  chunks.length = 0;
  s.write(u32(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
  return { s, got: () => Buffer.concat(chunks), closed };
}

test('hostile STARTTLS over sockets: junk for a ClientHello, bytes behind STARTTLS, a stalled handshake, STARTTLS twice; a TLS client alongside is unaffected', async () => {
  // A client in transmission over TLS the whole time.
  const keep = new WireClient(await connectStream({ host: '127.0.0.1', port: port.x509 }));
  await keep.connect('scratch', { structured: true, tls: () => (keep.stream as SocketStream).startClientTls(x509Client()) });
  const fails = (): number => logger.count((l) => l.msg === 'nbd TLS handshake failed');
  const f0 = fails();

  // Junk instead of a ClientHello: the handshake fails, the connection closes, it is logged.
  const junk = await rawClient(port.x509);
  junk.s.write(optionBytes(Opt.STARTTLS));
  await waitFor('STARTTLS ACK', () => junk.got().length >= 20, 5000);
  assert.equal(junk.got().readUInt32BE(12), Rep.ACK);
  junk.s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await junk.closed;
  await waitFor('junk logged', () => fails() === f0 + 1, 5000);

  // An option (or a pipelined ClientHello) sent behind STARTTLS before the ACK: refused, no ACK.
  const early = await rawClient(port.x509);
  early.s.write(Buffer.concat([optionBytes(Opt.STARTTLS), optionBytes(Opt.LIST)]));
  await early.closed;
  assert.equal(early.got().length, 0, 'not even the ACK');
  assert.ok(logger.count((l) => l.fields.reason === '16 bytes after STARTTLS ahead of the TLS handshake') >= 1);

  // Half a TLS record, then silence: the handshake deadline (300 ms here) closes it.
  const t0 = performance.now();
  const stall = await rawClient(port.short);
  stall.s.write(optionBytes(Opt.STARTTLS));
  await waitFor('STARTTLS ACK', () => stall.got().length >= 20, 5000);
  stall.s.write(Buffer.from([0x16, 0x03, 0x01, 0x02]));
  await stall.closed;
  assert.ok(performance.now() - t0 < 5000, 'closed by the TLS handshake deadline, not the NBD one (30 s)');
  await waitFor('stall logged', () => logger.count((l) => l.msg === 'nbd TLS handshake failed' && /TLS handshake not done within 300 ms/.test(String(l.fields.err))) === 1, 5000);

  // STARTTLS twice: the second, inside TLS, gets ERR_INVALID and the negotiation goes on.
  const twice = new WireClient(await connectStream({ host: '127.0.0.1', port: port.x509 }));
  await twice.greeting();
  twice.send(u32(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
  twice.sendOption(Opt.STARTTLS);
  assert.equal((await twice.optionReply()).type, Rep.ACK);
  await (twice.stream as SocketStream).startClientTls(x509Client());
  twice.sendOption(Opt.STARTTLS);
  assert.equal((await twice.optionReply()).type, Rep.ERR_INVALID);
  const { size } = await twice.connect('mem', { skipGreeting: true });
  assert.equal(size, SIZE);
  twice.stream.destroy();

  // The bystander still reads and writes, with structured replies.
  const payload = randomBytes(64 * 1024);
  keep.request(Cmd.WRITE, 1 << 20, payload.length, { payload });
  assert.equal((await keep.reply()).kind, 'simple');
  keep.request(Cmd.READ, 1 << 20, payload.length);
  const r = await keep.reply();
  assert.ok(r.kind === 'chunk' && r.type === ReplyType.OFFSET_DATA && r.payload.subarray(8).equals(payload));
  keep.stream.destroy();
  await waitFor('every connection closed', () => server.connections.size === 0, 5000);
  assert.equal(logger.count((l) => l.level === 'error'), 0);
});

test('nbds+unix: a Unix socket with TLS "on" serves TLS clients and plain ones', async () => {
  const doc = JSON.parse((await runOk('nbdinfo', ['--json', `nbds+unix:///mem?socket=${unixPath}&tls-certificates=${clientDir}`])).stdout) as { TLS?: boolean };
  assert.equal(doc.TLS, true);
  const plain = JSON.parse((await runOk('nbdinfo', ['--json', `nbd+unix:///mem?socket=${unixPath}`])).stdout) as { TLS?: boolean };
  assert.equal(plain.TLS, false);
  // and the TCP listener in "on" mode too
  await checkInfo(`nbd://127.0.0.1:${port.on}/mem`, { size_bytes: SIZE });
  await checkInfo(x509Uri('mem', port.on), { size_bytes: SIZE });
});

test('the history checker passes over TLS (certificates and PSK) and still catches a lying server', async () => {
  for (const [p, tls, seed] of [[port.x509, x509Client(), 31], [port.psk, pskClient(), 32]] as const) {
    // A fresh export each time: the checker knows only the values of this run's writes.
    server.addExport(`hist${seed}`, new MemBlockDevice({ size_bytes: 1 << 20 }));
    const w = await runWorkload({ target: { host: '127.0.0.1', port: p }, export_name: `hist${seed}`, tls, seed, duration_ms: 800, min_ops: 320 });
    const r = checkHistory(w.ops, { multi_conn: w.multi_conn, trim: 'undefined', final: 'register' });
    assert.deepEqual(r.violations.slice(0, 3).map((v) => v.message), []);
    assert.ok(w.ops.length >= 300 && r.stats.reads_checked > 60, `${w.ops.length} ops, ${r.stats.reads_checked} reads checked`);
    assert.equal(w.stats.connection_failures, 0);
  }
  const liar = new LyingDevice(1 << 20, { drop_write_rate: 0.05, seed: 3 });
  server.addExport('liar', liar);
  const w = await runWorkload({ target: { host: '127.0.0.1', port: port.x509 }, export_name: 'liar', tls: x509Client(), seed: 33, duration_ms: 800 });
  const r = checkHistory(w.ops, { multi_conn: w.multi_conn, trim: 'undefined', final: 'register' });
  assert.ok(liar.lies.dropped_writes > 0);
  assert.equal(r.ok, false, 'dropped writes are caught over TLS too');
});
