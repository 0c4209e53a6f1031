// What an unauthenticated attacker can take from the NBD TCP listener (issue 21, the NBD
// half of finding 5). Connections in their NBD handshake counted against max_connections
// like attached clients and were held 30 s: idle sockets from one host locked every real
// client out. Now TCP connections in their handshake have their own cap (128) and a cap per
// address (16), and a short deadline; attached clients and the Unix socket are not counted.
// Each test performs the attack with half-open handshakes (a silent socket, the client flags
// and nothing more, half an option header) and shows that a real client still gets in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import { MemBlockDevice } from '../../src/nbd/mem-device.js';
import { NodeNet } from '../../src/node/net.js';
import { NodeClock } from '../../src/node/ports.js';
import { FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, Opt } from '../../src/nbd/proto.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { run } from '../util/nbd-checks.js';
import { waitFor } from '../util/wait.js';

const MiB = 1 << 20;
/** The counting tests keep every half-open handshake for their whole flood (accepting 600 sockets can take a second); the deadline has its own test. */
const LONG_MS = 60_000;
const SHORT_MS = 1000;
const IHAVEOPT = Buffer.from('IHAVEOPT');

async function serve(t: { after: (fn: () => Promise<void>) => void }, opts: NbdServerOptions, deadline_ms = LONG_MS) {
  const logger = new MemoryLogger();
  const server = new NbdServer({ clock: new NodeClock({ unref: true }), logger, limits: { handshake_timeout_ms: deadline_ms }, ...opts });
  server.addExport('disk0', new MemBlockDevice({ size_bytes: 4 * MiB }), 'test disk');
  const dir = mkdtempSync(join(tmpdir(), 'rmr-nbd-preauth-'));
  const n = new NodeNet();
  const tcp = await n.listen({ host: '127.0.0.1', port: 0 }, (s) => server.accept(s));
  const unix = await n.listenUnix(join(dir, 'nbd.sock'), (s) => server.accept(s));
  t.after(async () => {
    await tcp.close();
    await unix.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, logger, port: tcp.address.port, tcpUri: `nbd://127.0.0.1:${tcp.address.port}/disk0`, unixUri: `nbd+unix:///disk0?socket=${unix.address.host}` };
}

/** One half-open handshake from `local`: it reads the greeting, then sends `i % 3` of the way and stops. */
function halfOpen(port: number, local: string, i: number): Promise<net.Socket> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: local });
    s.on('error', () => undefined);
    // Read (and drop) what comes, so that the server's close is seen here.
    s.resume();
    s.once('connect', () => {
      const flags = Buffer.alloc(4);
      flags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
      if (i % 3 === 1) s.write(flags);
      if (i % 3 === 2) s.write(Buffer.concat([flags, IHAVEOPT, Buffer.from([0, 0])]));
      resolve(s);
    });
    s.once('close', () => resolve(s));
  });
}

async function flood(port: number, local: string, n: number): Promise<net.Socket[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => halfOpen(port, local, i)));
}

/** A client that finishes its handshake (EXPORT_NAME) and stays attached, sending nothing. */
function attached(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let got = 0;
    s.on('error', reject);
    s.on('close', () => reject(new Error('closed before it was attached')));
    s.on('data', (b: Buffer) => {
      got += b.length;
      // 18 bytes of greeting, then 8 of size and 2 of flags for EXPORT_NAME with NO_ZEROES.
      if (got >= 18 + 10) resolve(s);
    });
    s.once('connect', () => {
      const head = Buffer.alloc(4 + 8 + 8);
      head.writeUInt32BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 0);
      IHAVEOPT.copy(head, 4);
      head.writeUInt32BE(Opt.EXPORT_NAME, 12);
      head.writeUInt32BE(5, 16);
      s.write(Buffer.concat([head, Buffer.from('disk0')]));
    });
  });
}

/** qemu-io writes a pattern and reads it back through `uri`. */
async function realClient(uri: string, byte: number): Promise<{ ok: boolean; why: string }> {
  const r = await run('qemu-io', ['-f', 'raw', '-c', `write -P ${byte} 0 64k`, '-c', `read -P ${byte} 0 64k`, uri], 30_000);
  return { ok: r.code === 0 && !/fail|error/i.test(r.stdout + r.stderr), why: `${r.stdout}${r.stderr}` };
}

test('the attack without pre-auth limits: idle half-open handshakes from one address take every slot and a real client is refused', async (t) => {
  // The old behaviour, set by hand: no pre-auth caps, only max_connections. The test below
  // is the same attack with the defaults.
  const { server, port, tcpUri } = await serve(t, { max_connections: 64, max_preauth_connections: 100_000, max_preauth_per_address: 100_000 });
  const socks = await flood(port, '127.0.0.2', 100);
  t.after(() => socks.forEach((s) => s.destroy()));
  await waitFor('the server saw the flood', () => server.connections.size + server.refused >= 100);
  assert.equal(server.connections.size, 64, 'the flood holds every slot');
  const r = await realClient(tcpUri, 0x33);
  assert.equal(r.ok, false, 'a real client cannot get in');
});

test('idle half-open handshakes from one address hold at most 16 slots; a real client gets in during the flood; closing them frees the slots', async (t) => {
  const { server, logger, port, tcpUri } = await serve(t, { max_connections: 64 });
  const early = await attached(port);
  t.after(() => early.destroy());
  const socks = await flood(port, '127.0.0.2', 600);
  t.after(() => socks.forEach((s) => s.destroy()));
  await waitFor('the server saw the flood', () => server.connections.size - 1 + server.refused >= 600);
  assert.equal(server.preauthCount, 16, 'one address holds 16 handshake slots');
  assert.equal(server.refused, 600 - 16);
  assert.equal(server.connections.size, 16 + 1, 'the flood and the attached client');
  assert.ok(logger.count((l) => l.msg === 'nbd connection refused' && String(l.fields.reason).includes('from 127.0.0.2 are in their NBD handshake (limit 16)')) > 0);
  const r = await realClient(tcpUri, 0x44);
  assert.ok(r.ok, `a real client during the flood: ${r.why}`);
  assert.equal(early.closed, false, 'the attached client stays');
  socks.forEach((s) => s.destroy());
  await waitFor('closed half-open handshakes give their slots back', () => server.preauthCount === 0 && server.connections.size === 1);
});

test('half-open handshakes from many addresses fill at most 128 slots; attached clients are not counted; the Unix socket still serves', async (t) => {
  const { server, port, unixUri, tcpUri } = await serve(t, {});
  const early = await attached(port);
  t.after(() => early.destroy());
  const socks: net.Socket[] = [];
  t.after(() => socks.forEach((s) => s.destroy()));
  for (let i = 10; i < 30; i++) socks.push(...(await flood(port, `127.0.0.${i}`, 16)));
  await waitFor('the server saw the flood', () => server.connections.size - 1 + server.refused >= 320);
  assert.equal(server.preauthCount, 128);
  assert.equal(server.refused, 320 - 128);
  assert.equal(server.connections.size, 128 + 1);
  // A local client through the Unix socket is not held back by the TCP flood.
  const r = await realClient(unixUri, 0x55);
  assert.ok(r.ok, `the Unix socket during the flood: ${r.why}`);
  socks.forEach((s) => s.destroy());
  await waitFor('the slots free up', () => server.preauthCount === 0);
  const after = await realClient(tcpUri, 0x66);
  assert.ok(after.ok, `a TCP client after the flood: ${after.why}`);
  assert.equal(early.closed, false);
});

test('a half-open handshake is closed at the handshake deadline, and its address gets its slots back', async (t) => {
  const { server, port, tcpUri } = await serve(t, {}, SHORT_MS);
  const t0 = Date.now();
  const socks = await flood(port, '127.0.0.3', 16);
  t.after(() => socks.forEach((s) => s.destroy()));
  await waitFor('the server took them', () => server.preauthCount === 16);
  await waitFor('the server closed every half-open handshake', () => socks.every((s) => s.closed), SHORT_MS + 3000);
  const took = Date.now() - t0;
  assert.ok(took >= SHORT_MS - 50 && took < SHORT_MS + 2000, `closed after ${took} ms (deadline ${SHORT_MS} ms)`);
  assert.equal(server.preauthCount, 0);
  assert.equal(server.connections.size, 0);
  const again = await flood(port, '127.0.0.3', 1);
  t.after(() => again.forEach((s) => s.destroy()));
  await waitFor('the address is served again', () => server.preauthCount === 1);
  const r = await realClient(tcpUri, 0x77);
  assert.ok(r.ok, r.why);
});
