// Fuzzing the NBD listener: seeded mutations of valid client byte streams (handshakes and
// transmission requests): flipped bytes, boundary lengths, bad magics and option codes,
// truncations, insertions, splices. Over 10,000 cases go through in-memory streams and a
// few hundred through real TCP sockets; afterwards the server must have no connection left,
// no internal error logged, and still serve nbdinfo and qemu-io. The STARTTLS paths get the
// same: thousands of in-memory cases with TLS required or optional (test/util/fake-tls.ts
// stands in for the handshake), options before STARTTLS, bytes behind it, mutated
// negotiation and requests after it; then over real TLS sockets, mutated ClientHellos, junk
// where one belongs, and mutated NBD inside a real TLS session.
// Replay: RMR_FUZZ_SEED=<seed> (or NBD_FUZZ_SEED) node --test dist/test/nbd/fuzz.test.js;
// longer: RMR_FUZZ_SECONDS=N (npm run fuzz -- --seconds N) runs in-memory cases for N seconds.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/server.js';
import { MemBlockDevice } from '../../src/nbd/mem-device.js';
import { NodeNet } from '../../src/node/net.js';
import type { NbdTls } from '../../src/nbd/server.js';
import { CLIENT_HELLO, FAKE_SERVER_TLS, FakeTlsStream } from '../util/fake-tls.js';
import { TestCerts } from '../util/tls-certs.js';
import { Cmd, CmdFlag, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT_HI, IHAVEOPT_LO, Info, Opt, encodeRequest } from '../../src/nbd/proto.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { FilterDevice } from '../util/filter-device.js';
import { memStreamPair } from '../util/mem-stream.js';
import { goData, metaData } from '../util/nbd-wire-client.js';
import { checkInfo, runOk } from '../util/nbd-checks.js';
import { waitFor } from '../util/wait.js';
import { fuzzBudget } from '../util/fuzz.js';

const budget = fuzzBudget(0, Number(process.env.NBD_FUZZ_SEED ?? 20261122));
const SEED = budget.seed;
const MEM_CASES = 10_000;
const TCP_CASES = 300;
const TLS_MEM_CASES = 4_000;
const TLS_TCP_CASES = 160;
const SIZE = 4 << 20;

const logger = new MemoryLogger();
const server = new NbdServer({ logger, limits: { max_skip_bytes: 1 << 20 } });
const mem = new MemBlockDevice({ size_bytes: SIZE, dirty_context: 'rmr:dirty:1', allocation: true, block_sizes: { minimum: 512, preferred: 4096, maximum: 128 * 1024 } });
server.addExport('mem', mem, 'fuzzed');
server.addExport('ro', new MemBlockDevice({ size_bytes: 1 << 20, writable: false }));
server.addExport('flaky', new FilterDevice(new MemBlockDevice({ size_bytes: SIZE }), { fail: { read: -5, flush: -108 } }));

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(IHAVEOPT_HI, 0);
  h.writeUInt32BE(IHAVEOPT_LO, 4);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

function requests(rnd: SeededRandom): Buffer[] {
  const out: Buffer[] = [];
  const n = 1 + rnd.int(6);
  for (let i = 0; i < n; i++) {
    const type = [Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS][rnd.int(6)] as number;
    const length = [0, 512, 4096, 65536][rnd.int(4)] as number;
    const offset = rnd.int(SIZE / 512) * 512;
    const flags = [0, CmdFlag.FUA, CmdFlag.REQ_ONE, CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO][rnd.int(4)] as number;
    out.push(encodeRequest({ flags, type, cookie_hi: 0, cookie_lo: i, offset, length }));
    if (type === Cmd.WRITE) out.push(rnd.bytes(length));
  }
  if (rnd.int(2) === 0) out.push(encodeRequest({ flags: 0, type: Cmd.DISC, cookie_hi: 0, cookie_lo: 99, offset: 0, length: 0 }));
  return out;
}

/** A valid client byte stream of one of several shapes: [handshake, requests]. */
function valid(rnd: SeededRandom): [Buffer, Buffer] {
  const flags = u32(FLAG_FIXED_NEWSTYLE | (rnd.int(2) === 0 ? FLAG_NO_ZEROES : 0));
  const name = ['mem', 'ro', 'flaky', '', 'nope'][rnd.int(5)] as string;
  switch (rnd.int(6)) {
    case 0:
      return [Buffer.concat([flags, option(Opt.LIST), option(Opt.INFO, goData(name, [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE]))]), option(Opt.ABORT)];
    case 1:
      return [Buffer.concat([flags, option(Opt.LIST_META_CONTEXT, metaData(name, ['base:', 'rmr:']))]), Buffer.concat([option(Opt.STARTTLS), option(Opt.ABORT)])];
    case 2:
      return [Buffer.concat([flags, option(Opt.EXPORT_NAME, Buffer.from(name))]), Buffer.concat(requests(rnd))];
    case 3:
      return [Buffer.concat([flags, option(Opt.GO, goData(name))]), Buffer.concat(requests(rnd))];
    default:
      return [
        Buffer.concat([
          flags,
          option(Opt.STRUCTURED_REPLY),
          option(Opt.SET_META_CONTEXT, metaData(name, ['base:allocation', 'rmr:dirty:1'])),
          option(Opt.GO, goData(name, [Info.BLOCK_SIZE])),
        ]),
        Buffer.concat(requests(rnd)),
      ];
  }
}

const BOUNDARY = [0, 1, 3, 0x7fffffff, 0x80000000, 0xfffffff0, 0xffffffff, 4096, 4097, 65536, 65537, 1 << 20, 33 << 20];

function mutate(rnd: SeededRandom, b: Buffer): Buffer {
  const out = Buffer.from(b);
  const n = 1 + rnd.int(4);
  let cur = out;
  for (let i = 0; i < n; i++) {
    const at = cur.length === 0 ? 0 : rnd.int(cur.length);
    switch (rnd.int(8)) {
      case 0: // flip bits
        if (cur.length > 0) cur[at] = (cur[at] as number) ^ (1 << rnd.int(8));
        break;
      case 1: // a boundary 32-bit value (lengths, counts, option codes)
        if (cur.length >= 4) cur.writeUInt32BE(BOUNDARY[rnd.int(BOUNDARY.length)] as number, Math.min(at, cur.length - 4));
        break;
      case 2: // truncate
        cur = cur.subarray(0, at);
        break;
      case 3: // insert random bytes
        cur = Buffer.concat([cur.subarray(0, at), rnd.bytes(1 + rnd.int(32)), cur.subarray(at)]);
        break;
      case 4: // duplicate a segment (repeated options / requests)
        cur = Buffer.concat([cur, cur.subarray(at, Math.min(cur.length, at + 64))]);
        break;
      case 5: // random option code in an option header
        {
          const i = cur.indexOf('IHAVEOPT', 0, 'latin1');
          if (i >= 0 && i + 12 <= cur.length) cur.writeUInt32BE(rnd.int(4) === 0 ? rnd.u32() : rnd.int(16), i + 8);
        }
        break;
      case 6: // break a magic
        {
          const i = cur.indexOf(rnd.int(2) === 0 ? 'IHAVEOPT' : '%`\x95\x13', 0, 'latin1');
          if (i >= 0) cur[i] = (cur[i] as number) ^ 0x20;
        }
        break;
      default: // a random 16-bit value (flags, command types, info counts)
        if (cur.length >= 2) cur.writeUInt16BE(rnd.int(65536), Math.min(at, cur.length - 2));
    }
  }
  return cur;
}

/** The whole stream mutated, or (half the time) only the part after the handshake. */
function fuzzed(rnd: SeededRandom): Buffer {
  const [head, rest] = valid(rnd);
  const r = rnd.int(10);
  if (r === 0) return Buffer.concat([head, rest]);
  if (r <= 5) return Buffer.concat([head, mutate(rnd, rest)]);
  return mutate(rnd, Buffer.concat([head, rest]));
}

/** One case over an in-memory stream: send in random pieces, let the server work, leave. */
async function memCase(rnd: SeededRandom, bytes: Buffer): Promise<void> {
  const [c, s] = memStreamPair();
  c.attach({ onData: () => undefined, onDrain: () => undefined, onClose: () => undefined });
  server.accept(s);
  let at = 0;
  while (at < bytes.length) {
    const n = 1 + rnd.int(bytes.length - at);
    c.write([bytes.subarray(at, at + n)]);
    at += n;
    if (rnd.int(3) === 0) await new Promise((r) => setImmediate(r));
  }
  for (let i = rnd.int(4); i > 0; i--) await new Promise((r) => setImmediate(r));
  c.destroy();
}

const certs = new TestCerts();

after(async () => {
  await server.close();
  certs.remove();
});

// ---- STARTTLS ----

const NO_BYTES = Buffer.alloc(0);

/**
 * A client that upgrades: [what it sends up to and including STARTTLS, what it sends once
 * the server acknowledged]. Before STARTTLS a few options (refused under `require`, served
 * under `on`); after it the "ClientHello" and one of the plaintext shapes, sometimes with a
 * second STARTTLS.
 */
function tlsValid(rnd: SeededRandom, hello: Buffer): [Buffer, Buffer] {
  const pre: Buffer[] = [u32(FLAG_FIXED_NEWSTYLE | (rnd.int(2) === 0 ? FLAG_NO_ZEROES : 0))];
  for (let i = rnd.int(3); i > 0; i--) {
    pre.push([option(Opt.LIST), option(Opt.STRUCTURED_REPLY), option(Opt.INFO, goData('mem')), option(Opt.LIST_META_CONTEXT, metaData('mem', [])), option(Opt.EXPORT_NAME, Buffer.from('mem'))][rnd.int(5)] as Buffer);
  }
  pre.push(option(Opt.STARTTLS));
  const [head, rest] = valid(rnd);
  return [Buffer.concat(pre), Buffer.concat([hello, rnd.int(5) === 0 ? option(Opt.STARTTLS) : NO_BYTES, head.subarray(4), rest])];
}

/** Mutated in either half, or both halves mutated as one (bytes behind STARTTLS). */
function tlsFuzzed(rnd: SeededRandom, hello: Buffer): { before: Buffer; after: Buffer } {
  const [before, after] = tlsValid(rnd, hello);
  const r = rnd.int(10);
  if (r === 0) return { before, after };
  if (r <= 5) return { before, after: mutate(rnd, after) };
  if (r <= 7) return { before: mutate(rnd, before), after };
  return { before: mutate(rnd, Buffer.concat([before, after])), after: NO_BYTES };
}

async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

async function sendInPieces(rnd: SeededRandom, write: (b: Buffer) => void, bytes: Buffer): Promise<void> {
  let at = 0;
  while (at < bytes.length) {
    const n = 1 + rnd.int(bytes.length - at);
    write(bytes.subarray(at, at + n));
    at += n;
    if (rnd.int(3) === 0) await ticks(1);
  }
}

const FAKE_TLS: readonly NbdTls[] = [
  { mode: 'require', context: FAKE_SERVER_TLS },
  { mode: 'on', context: FAKE_SERVER_TLS },
];

/** One STARTTLS case over an in-memory stream; the pause between the halves is random (0 = the client did not wait for the ACK). */
async function memTlsCase(rnd: SeededRandom): Promise<void> {
  const { before, after } = tlsFuzzed(rnd, CLIENT_HELLO);
  const [c, s] = memStreamPair();
  c.attach({ onData: () => undefined, onDrain: () => undefined, onClose: () => undefined });
  server.accept(new FakeTlsStream(s), FAKE_TLS[rnd.int(2)]);
  const write = (b: Buffer): void => void c.write([b]);
  await sendInPieces(rnd, write, before);
  await ticks(rnd.int(5));
  await sendInPieces(rnd, write, after);
  await ticks(rnd.int(4));
  c.destroy();
}

/** The first flight of a real TLS client (its ClientHello), captured from a stream that answers nothing. */
async function captureClientHello(o: tls.ConnectionOptions): Promise<Buffer> {
  let first: Buffer | null = null;
  const d = new Duplex({
    read: () => undefined,
    write: (chunk: Buffer, _enc, cb) => {
      first ??= Buffer.from(chunk);
      cb();
    },
  });
  const t = tls.connect({ ...o, socket: d });
  t.on('error', () => undefined);
  await waitFor('a ClientHello', () => first !== null, 5000);
  t.destroy();
  return first as unknown as Buffer;
}

test(`${MEM_CASES} mutated handshakes and requests over in-memory streams (seed ${SEED})`, async () => {
  const rnd = new SeededRandom(SEED);
  const batch = 250;
  const end = performance.now() + budget.ms;
  for (let done = 0; done < MEM_CASES || (budget.long && performance.now() < end); done += batch) {
    const cases: Promise<void>[] = [];
    for (let i = 0; i < batch; i++) {
      cases.push(memCase(rnd, fuzzed(rnd)));
    }
    await Promise.all(cases);
  }
  await waitFor('every fuzzed connection closed', () => server.connections.size === 0, 10_000);
  assert.equal(logger.count((l) => l.level === 'error'), 0, JSON.stringify(logger.lines.filter((l) => l.level === 'error').slice(0, 3)));
  assert.ok(logger.count((l) => l.msg === 'nbd connection closed') > 1000, 'the mutations did hit the protocol checks');
  assert.ok(mem.ops > 1000, `requests reached the device (${mem.ops})`);
  if (process.env.NBD_FUZZ_STATS !== undefined) {
    const reasons = new Map<string, number>();
    for (const l of logger.lines) reasons.set(String(l.fields.reason ?? l.msg), (reasons.get(String(l.fields.reason ?? l.msg)) ?? 0) + 1);
    console.log(mem.ops, [...reasons].sort((a, b) => b[1] - a[1]).slice(0, 25));
  }
});

test(`${TCP_CASES} mutated streams over TCP, then nbdinfo and qemu-io still work (seed ${SEED})`, async () => {
  const rnd = new SeededRandom(SEED + 1);
  const listener = await new NodeNet().listen({ host: '127.0.0.1', port: 0 }, (s) => server.accept(s));
  // close() in after() refuses new connections; a second server object is not needed.
  try {
    const port = listener.address.port;
    for (let done = 0; done < TCP_CASES; done += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async () => {
          const bytes = fuzzed(rnd);
          const sock = net.connect(port, '127.0.0.1');
          sock.on('error', () => undefined);
          sock.on('data', () => undefined);
          await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
          sock.write(bytes);
          await new Promise<void>((resolve) => {
            const t = setTimeout(() => sock.destroy(), 20);
            sock.once('close', () => {
              clearTimeout(t);
              resolve();
            });
          });
        }),
      );
    }
    await waitFor('every fuzzed TCP connection closed', () => server.connections.size === 0, 10_000);
    assert.equal(logger.count((l) => l.level === 'error'), 0);
    const uri = `nbd://127.0.0.1:${port}/mem`;
    await checkInfo(uri, { size_bytes: SIZE, writable: true, contexts: ['base:allocation', 'rmr:dirty:1'] });
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 64k', '-c', 'read -P 0x3c 0 64k', uri]);
  } finally {
    await listener.close();
  }
});

test(`${TLS_MEM_CASES} mutated STARTTLS negotiations over in-memory streams, TLS required or optional (seed ${SEED})`, async () => {
  const rnd = new SeededRandom(SEED + 2);
  const batch = 250;
  const end = performance.now() + budget.ms;
  const established0 = logger.count((l) => l.msg === 'nbd TLS established');
  const ops0 = mem.ops;
  for (let done = 0; done < TLS_MEM_CASES || (budget.long && performance.now() < end); done += batch) {
    await Promise.all(Array.from({ length: batch }, () => memTlsCase(rnd)));
  }
  await waitFor('every fuzzed connection closed', () => server.connections.size === 0, 10_000);
  assert.equal(logger.count((l) => l.level === 'error'), 0, JSON.stringify(logger.lines.filter((l) => l.level === 'error').slice(0, 3)));
  const established = logger.count((l) => l.msg === 'nbd TLS established') - established0;
  assert.ok(established > TLS_MEM_CASES / 10, `TLS came up in ${established} cases`);
  assert.ok(logger.count((l) => /bytes after STARTTLS ahead of the TLS handshake/.test(String(l.fields.reason))) > 20, 'bytes behind STARTTLS were refused');
  assert.ok(logger.count((l) => l.msg === 'nbd TLS handshake failed') > 20, 'broken handshakes were seen');
  assert.ok(mem.ops - ops0 > 200, `requests reached the device over "TLS" (${mem.ops - ops0})`);
  if (process.env.NBD_FUZZ_STATS !== undefined || process.env.RMR_FUZZ_STATS !== undefined) console.log(JSON.stringify({ tls_established: established, device_ops: mem.ops - ops0 }));
});

test(`${TLS_TCP_CASES} hostile STARTTLS cases over real TLS sockets, then nbdinfo over TLS still works (seed ${SEED})`, async () => {
  const rnd = new SeededRandom(SEED + 3);
  const ca = certs.ca('fuzz');
  const srv = certs.signed(ca, 'fuzz-server', 'localhost', { server: true, san: 'IP:127.0.0.1' });
  const clientDir = certs.layout('fuzz-client', ca, 'client');
  const nodeNet = new NodeNet();
  const context = nodeNet.serverTls({ cert: readFileSync(srv.cert), key: readFileSync(srv.key), handshakeTimeoutMs: 500 });
  let accepted = 0;
  const listener = await nodeNet.listen({ host: '127.0.0.1', port: 0 }, (s) => server.accept(s, { mode: accepted++ % 2 === 0 ? 'require' : 'on', context }));
  const clientTls = { ca: readFileSync(join(clientDir, 'ca-cert.pem')), servername: 'localhost' };
  const hello = await captureClientHello(clientTls);
  const established0 = logger.count((l) => l.msg === 'nbd TLS established');
  const end = performance.now() + budget.ms;
  try {
    const port = listener.address.port;
    const oneCase = async (): Promise<void> => {
      const kind = rnd.int(4);
      const sock = net.connect(port, '127.0.0.1');
      sock.on('error', () => undefined);
      let got = 0;
      sock.on('data', (c: Buffer) => void (got += c.length));
      const closed = new Promise<void>((r) => sock.once('close', () => r()));
      const finish = async (ms: number): Promise<void> => {
        const t = setTimeout(() => sock.destroy(), ms);
        await closed;
        clearTimeout(t);
      };
      await new Promise<void>((r) => sock.once('connect', () => r()));
      if (kind === 0) {
        // Plaintext mutations (with and without STARTTLS) against a TLS listener.
        sock.write(fuzzed(rnd));
        return finish(20);
      }
      // 1: a mutated ClientHello; 2: a real one, then the client goes quiet; 3: a real handshake.
      const { before, after } = tlsFuzzed(rnd, kind === 1 ? mutate(rnd, hello) : hello);
      sock.write(before);
      // The greeting (18) and the STARTTLS reply (20) — unless the mutations made it something else.
      const t0 = performance.now();
      while (got < 18 + 20 && !sock.destroyed && performance.now() - t0 < 200) await ticks(1);
      if (kind === 3 && !sock.destroyed && after.length > 0) {
        // A real handshake, then the mutated rest inside TLS.
        const t = tls.connect({ ...clientTls, socket: sock });
        t.on('error', () => undefined);
        // A mutated negotiation may have left the server waiting for option bytes, not TLS.
        const give_up = setTimeout(() => t.destroy(), 300);
        await new Promise<void>((r) => {
          t.once('secureConnect', () => r());
          t.once('close', () => r());
        });
        clearTimeout(give_up);
        if (!t.destroyed) t.write(after.subarray(hello.length));
        const tt = setTimeout(() => {
          t.destroy();
          sock.destroy();
        }, 30);
        await closed;
        clearTimeout(tt);
        return;
      }
      if (!sock.destroyed) sock.write(after);
      return finish(30);
    };
    for (let done = 0; done < TLS_TCP_CASES || (budget.long && performance.now() < end); done += 20) {
      await Promise.all(Array.from({ length: 20 }, oneCase));
    }
    await waitFor('every fuzzed TLS connection closed', () => server.connections.size === 0, 10_000);
    assert.equal(logger.count((l) => l.level === 'error'), 0, JSON.stringify(logger.lines.filter((l) => l.level === 'error').slice(0, 3)));
    assert.ok(logger.count((l) => l.msg === 'nbd TLS established') - established0 > 5, 'real TLS sessions came up');
    await checkInfo(`nbds://127.0.0.1:${port}/mem?tls-certificates=${clientDir}`, { size_bytes: SIZE, writable: true, contexts: ['base:allocation', 'rmr:dirty:1'] });
  } finally {
    await listener.close();
  }
});
