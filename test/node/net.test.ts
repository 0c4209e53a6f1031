// Tests of the real Net adapter (TCP, TLS with certificates, TLS-PSK) on 127.0.0.1, and of
// the Node Clock/Random ports. Every wait is on an event with a deadline, never a sleep.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as nodeNet from 'node:net';
import * as nodeTls from 'node:tls';
import { NodeNet, type NodeNetOptions } from '../../src/node/net.js';
import type { Address, Listener, NetStream, TlsOptions } from '../../src/transport/net.js';
import { NodeClock, NodeRandom } from '../../src/node/ports.js';
import { TestCerts } from '../util/tls-certs.js';
import { waitFor, within } from '../util/wait.js';

const HOST = '127.0.0.1';
const WAIT_MS = 5_000;

type CodedError = Error & { code?: string };

// Whatever a test leaves open (a failing test stops halfway) would keep the process alive and
// hang the runner; afterEach closes it all.
const openStreams = new Set<NetStream>();
const openListeners = new Set<Listener>();

function track(s: NetStream): NetStream {
  openStreams.add(s);
  return s;
}

afterEach(async () => {
  for (const s of openStreams) s.destroy();
  openStreams.clear();
  for (const l of openListeners) await l.close();
  openListeners.clear();
});

/** Rejects if `p` has not settled within `ms`: a hung test fails instead of stalling. */
const deadline = <T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> => within(what, p, ms);

/** Lets the event loop run `n` full turns: for asserting that nothing more happens. */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

/** A stream with recording handlers and event-driven waits. */
class Peer {
  readonly chunks: Buffer[] = [];
  readonly closes: (Error | null)[] = [];
  drains = 0;
  private waiters: (() => void)[] = [];

  constructor(readonly stream: NetStream) {
    stream.attach({
      onData: (c) => {
        this.chunks.push(c);
        this.wake();
      },
      onDrain: () => {
        this.drains++;
        this.wake();
      },
      onClose: (err) => {
        this.closes.push(err);
        this.wake();
      },
    });
  }

  get received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  private wake(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  until(cond: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
    const p = new Promise<void>((resolve) => {
      const check = (): void => {
        if (cond()) resolve();
        else this.waiters.push(check);
      };
      check();
    });
    return deadline(p, what, ms);
  }

  bytes(n: number): Promise<void> {
    return this.until(() => this.received.length >= n, `${n} bytes`);
  }

  closed(): Promise<void> {
    return this.until(() => this.closes.length > 0, 'onClose');
  }
}

/** A listener whose accepted streams can be awaited one by one. */
class Server {
  private readonly queue: NetStream[] = [];
  private waiter: (() => void) | null = null;
  accepted = 0;
  constructor(readonly listener: Listener) {}

  static async start(net: NodeNet, tls?: Address['tls']): Promise<Server> {
    let self: Server | null = null;
    const pending: NetStream[] = [];
    const listener = await net.listen({ host: HOST, port: 0, ...(tls ? { tls } : {}) }, (s) => {
      if (self === null) pending.push(s);
      else self.push(s);
    });
    openListeners.add(listener);
    self = new Server(listener);
    for (const s of pending) self.push(s);
    return self;
  }

  private push(s: NetStream): void {
    this.accepted++;
    this.queue.push(track(s));
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  addr(tls?: Address['tls']): Address {
    return { host: HOST, port: this.listener.address.port, ...(tls ? { tls } : {}) };
  }

  next(): Promise<NetStream> {
    const p = new Promise<NetStream>((resolve) => {
      const take = (): void => {
        const s = this.queue.shift();
        if (s !== undefined) resolve(s);
        else this.waiter = take;
      };
      take();
    });
    return deadline(p, 'an accepted connection');
  }
}

function connect(net: NodeNet, addr: Address, timeout_ms = WAIT_MS): Promise<NetStream> {
  return new Promise((resolve, reject) => {
    let calls = 0;
    net.connect(addr, timeout_ms, (err, stream) => {
      calls++;
      assert.equal(calls, 1, 'connect callback called more than once');
      if (err !== null) reject(err);
      else if (stream === null) reject(new Error('connect gave neither error nor stream'));
      else resolve(track(stream));
    });
  });
}

/** Expects the connect to fail; returns the error. Also proves cb is called once. */
async function connectFails(net: NodeNet, addr: Address, timeout_ms = WAIT_MS): Promise<CodedError> {
  let calls = 0;
  const err = await deadline(
    new Promise<CodedError>((resolve, reject) => {
      net.connect(addr, timeout_ms, (e, stream) => {
        calls++;
        if (e === null) {
          if (stream !== null) track(stream).destroy();
          reject(new Error('connect unexpectedly succeeded'));
        } else {
          assert.equal(stream, null);
          resolve(e);
        }
      });
    }),
    'connect failure',
    timeout_ms + WAIT_MS,
  );
  await turns(5);
  assert.equal(calls, 1, 'connect callback called more than once');
  assert.ok(err instanceof Error);
  return err;
}

/** Sends a message each way and checks it arrives intact. */
async function roundTrip(a: Peer, b: Peer): Promise<void> {
  const ab = Buffer.from('hello from a');
  const ba = Buffer.from('and hello back from b, a bit longer');
  assert.equal(a.stream.write([ab]), true);
  await b.bytes(ab.length);
  assert.deepEqual(b.received, ab);
  assert.equal(b.stream.write([ba.subarray(0, 5), ba.subarray(5)]), true);
  await a.bytes(ba.length);
  assert.deepEqual(a.received, ba);
}

async function pair(net: NodeNet, server: Server, tls?: Address['tls']): Promise<[Peer, Peer]> {
  const [c, s] = await Promise.all([deadline(connect(net, server.addr(tls)), 'connect'), server.next()]);
  return [new Peer(c), new Peer(s)];
}

async function closeBoth(a: Peer, b: Peer): Promise<void> {
  a.stream.destroy();
  b.stream.destroy();
  await a.closed();
  await b.closed();
}

/** Runs `fn` with a fresh adapter and plain TCP server, closing the server afterwards. */
async function withServer(fn: (net: NodeNet, server: Server) => Promise<void>, tls?: TlsOptions, opts: NodeNetOptions = {}): Promise<void> {
  const net = new NodeNet(opts);
  const server = await Server.start(net, tls);
  try {
    await fn(net, server);
  } finally {
    await server.listener.close();
  }
}

// ---- certificates, made fresh for this run ----

let certs: TestCerts | null = null;
let certPem = '';
let keyPem = '';
let otherCertPem = '';
let clientCertPem = '';
let clientKeyPem = '';

before(() => {
  certs = new TestCerts();
  const server = certs.selfSigned('server', 'localhost', 'DNS:localhost,IP:127.0.0.1');
  certPem = server.cert;
  keyPem = server.key;
  otherCertPem = certs.selfSigned('other', 'localhost', 'DNS:localhost,IP:127.0.0.1').cert;
  const client = certs.selfSigned('client', 'replica-client', 'DNS:replica-client');
  clientCertPem = client.cert;
  clientKeyPem = client.key;
});

after(() => certs?.remove());

const PSK = { identity: 'replica-7', key: Buffer.from('5f1c9a0e7b3d2c4a6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5', 'hex') };

// ---- plain TCP ----

void test('plain TCP: bytes travel both ways; remote/local are host:port', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server);
    await roundTrip(c, s);
    assert.equal(c.stream.remote, `${HOST}:${server.listener.address.port}`);
    assert.equal(s.stream.local, `${HOST}:${server.listener.address.port}`);
    assert.equal(c.stream.local, s.stream.remote);
    assert.match(c.stream.local, /^127\.0\.0\.1:\d+$/);
    await closeBoth(c, s);
  });
});

/**
 * A receiver assembling one large message, as the frame decoder and the NBD parser do: it
 * offers the unfilled rest as its read target and counts the bytes it found already in place.
 */
class Assembler {
  readonly dest: Buffer;
  fill = 0;
  in_place = 0;
  copied = 0;
  constructor(
    readonly stream: NetStream,
    size: number,
  ) {
    this.dest = Buffer.alloc(size);
    stream.attach({
      onData: (c) => {
        if (c.buffer === this.dest.buffer && c.byteOffset === this.dest.byteOffset + this.fill) this.in_place += c.length;
        else {
          c.copy(this.dest, this.fill);
          this.copied += c.length;
        }
        this.fill += c.length;
      },
      readTarget: () => (this.fill < this.dest.length ? this.dest.subarray(this.fill) : null),
      onDrain: () => undefined,
      onClose: () => undefined,
    });
  }
}

/**
 * Sends a `size`-byte message each way between a fresh connection's two ends, each received
 * by an Assembler; returns both (server side first) once the messages arrived intact.
 */
async function exchangeLarge(net: NodeNet, server: Server, size: number): Promise<[Assembler, Assembler]> {
  const client = await connect(net, server.addr());
  const accepted = await server.next();
  const msg = Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + (i >> 12)) & 0xff));
  // The accepted side (the storage node's and the NBD server's case) and the connecting side.
  const both: [Assembler, Assembler] = [new Assembler(accepted, size), new Assembler(client, size)];
  client.write([msg]);
  accepted.write([msg]);
  for (const a of both) {
    await waitFor('the whole message', () => a.fill === size, WAIT_MS, 0);
    assert.ok(a.dest.equals(msg), 'the message arrived intact');
  }
  client.destroy();
  return both;
}

void test('plain TCP: a large message is read straight into the receiver\'s readTarget, on both ends', async () => {
  await withServer(async (net, server) => {
    const size = 4 * 1024 * 1024;
    for (const a of await exchangeLarge(net, server, size)) {
      // Only what came before the target was offered (the first read) may have been copied.
      assert.ok(a.in_place >= size - 256 * 1024, `${a.in_place} of ${size} bytes in place, ${a.copied} copied`);
    }
  });
});

void test('directReads false: \'data\' events on both ends; a large message arrives intact, copied', async () => {
  await withServer(
    async (net, server) => {
      for (const a of await exchangeLarge(net, server, 2 * 1024 * 1024)) assert.equal(a.in_place, 0, 'the switch is off: nothing is read into the target');
    },
    undefined,
    { directReads: false },
  );
});

void test('plain TCP: received chunks stay valid while later reads arrive (receive memory is never reused)', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server);
    const sent: Buffer[] = [];
    // Many turns of small writes: the receiver keeps every chunk it was given.
    for (let turn = 0; turn < 200; turn++) {
      const batch = Array.from({ length: 20 }, (_, i) => Buffer.from(`${turn}.${i};`.repeat(1 + ((turn * 20 + i) % 50))));
      sent.push(...batch);
      c.stream.write(batch);
      await new Promise<void>((r) => setImmediate(r));
    }
    const total = sent.reduce((n, b) => n + b.length, 0);
    await s.bytes(total);
    assert.deepEqual(s.received, Buffer.concat(sent));
    await closeBoth(c, s);
  });
});

void test('listen reports the port it bound when asked for port 0', async () => {
  await withServer((_net, server) => {
    assert.equal(server.listener.address.host, HOST);
    assert.ok(server.listener.address.port > 0);
    return Promise.resolve();
  });
});

void test('write batching: 1,000 small writes in one loop iteration are corked, then arrive whole and in order', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server);
    const frames: Buffer[] = [];
    for (let i = 0; i < 1000; i++) frames.push(Buffer.from(`${i.toString(36).padStart(2, '0')},`));
    const total = frames.reduce((n, f) => n + f.length, 0);
    for (const f of frames) assert.equal(c.stream.write([f]), true);
    // Nothing reached the kernel yet: the whole iteration's writes wait for one uncork,
    // also past the end of this callback (other IO callbacks of the poll phase add theirs)...
    assert.equal(c.stream.pendingWriteBytes, total);
    await new Promise<void>((r) => process.nextTick(r));
    assert.equal(c.stream.pendingWriteBytes, total);
    // ...and they leave at the end of this loop iteration, not later (loopback takes 3 KB at once).
    await new Promise<void>((r) => setImmediate(r));
    assert.equal(c.stream.pendingWriteBytes, 0);
    await s.bytes(total);
    assert.deepEqual(s.received, Buffer.concat(frames));
    assert.equal(c.stream.pendingWriteBytes, 0);
    await closeBoth(c, s);
  });
});

void test('write returns false above the high-water mark and onDrain follows', async () => {
  const net = new NodeNet({ highWaterMark: 64 * 1024 });
  const server = await Server.start(net);
  try {
    const [c, s] = await pair(net, server);
    const big = Buffer.alloc(1024 * 1024, 0x5a);
    assert.equal(c.stream.write([big.subarray(0, 1024)]), true);
    assert.equal(c.stream.write([big.subarray(1024)]), false);
    assert.ok(c.stream.pendingWriteBytes > 64 * 1024);
    await c.until(() => c.drains > 0, 'onDrain');
    assert.equal(c.drains, 1);
    await s.bytes(big.length);
    assert.deepEqual(s.received, big);
    await closeBoth(c, s);
  } finally {
    await server.listener.close();
  }
});

for (const mode of ['plain TCP', 'TLS-PSK'] as const) {
  void test(`${mode}: bytes sent before attach() wait for it; pauseReading holds bytes back`, async () => {
    const net = new NodeNet();
    const tls = mode === 'TLS-PSK' ? { psk: PSK } : undefined;
    const server = await Server.start(net, tls);
    try {
      const cStream = await deadline(connect(net, server.addr(tls)), 'connect');
      const sStream = await server.next();
      const c = new Peer(cStream);
      const early = Buffer.from('early bytes');
      c.stream.write([early]);
      await waitFor('flush', () => c.stream.pendingWriteBytes === 0, WAIT_MS, 0);
      // Turns in which a reading socket would have taken the bytes in (and lost them).
      await turns(20);
      const s = new Peer(sStream);
      await s.bytes(early.length);
      assert.deepEqual(s.received, early);

      s.stream.pauseReading();
      const later = Buffer.from('later bytes');
      c.stream.write([later]);
      await waitFor('flush', () => c.stream.pendingWriteBytes === 0, WAIT_MS, 0);
      await turns(20);
      assert.equal(s.received.length, early.length, 'data delivered while reading was paused');
      s.stream.resumeReading();
      await s.bytes(early.length + later.length);
      assert.deepEqual(s.received, Buffer.concat([early, later]));
      await closeBoth(c, s);
    } finally {
      await server.listener.close();
    }
  });
}

void test('pauseReading before attach() keeps the stream paused after it', async () => {
  await withServer(async (net, server) => {
    const cStream = await deadline(connect(net, server.addr()), 'connect');
    const sStream = await server.next();
    const c = new Peer(cStream);
    const msg = Buffer.from('held bytes');
    c.stream.write([msg]);
    await waitFor('flush', () => c.stream.pendingWriteBytes === 0, WAIT_MS, 0);
    sStream.pauseReading();
    const s = new Peer(sStream);
    await turns(20);
    assert.equal(s.chunks.length, 0, 'data delivered while reading was paused');
    s.stream.resumeReading();
    await s.bytes(msg.length);
    assert.deepEqual(s.received, msg);
    await closeBoth(c, s);
  });
});

void test('destroy(): exactly one onClose on each side; destroy(err) reports that error', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server);
    c.stream.destroy();
    await c.closed();
    await s.closed();
    c.stream.destroy();
    await turns(10);
    assert.deepEqual(c.closes, [null]);
    assert.equal(s.closes.length, 1);

    const [c2, s2] = await pair(net, server);
    const boom = new Error('boom');
    s2.stream.destroy(boom);
    s2.stream.destroy(new Error('second'));
    await s2.closed();
    await c2.closed();
    await turns(10);
    assert.equal(s2.closes.length, 1, "'error' then 'close' must give one onClose");
    assert.equal(s2.closes[0], boom);
    assert.equal(c2.closes.length, 1);
  });
});

void test('end(): bytes written in the same turn arrive, then both sides close once', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server);
    const goodbye = Buffer.from('goodbye frame');
    c.stream.write([goodbye]);
    c.stream.end(5_000);
    assert.doesNotThrow(() => c.stream.write([Buffer.from('dropped')]));
    await s.bytes(goodbye.length);
    await s.closed();
    await c.closed();
    await turns(10);
    assert.deepEqual(s.received, goodbye);
    assert.equal(c.closes.length, 1);
    assert.equal(s.closes.length, 1);
  });
});

for (const [mode, opts] of [
  ['onread', {}],
  ["'data' events", { directReads: false }],
] as const) {
  void test(`end() with reading paused (${mode}): the peer's close is seen at once, not after linger_ms`, async () => {
    await withServer(
      async (_net, server) => {
        // A plain socket peer that closes when it sees our FIN (allowHalfOpen false).
        const raw = nodeNet.connect({ host: HOST, port: server.listener.address.port });
        raw.on('error', () => undefined);
        raw.resume();
        const s = new Peer(await server.next());
        // Reading has started (a byte came through) before it is paused.
        raw.write('x');
        await s.bytes(1);
        s.stream.pauseReading();
        s.stream.end(60_000);
        await s.closed();
        assert.deepEqual(s.closes, [null]);
        raw.destroy();
      },
      undefined,
      opts,
    );
  });
}

void test('end(): a peer that keeps the connection open is cut after linger_ms', async () => {
  const net = new NodeNet();
  const raw: nodeNet.Socket[] = [];
  const srv = nodeNet.createServer({ allowHalfOpen: true }, (sock) => {
    raw.push(sock);
    sock.on('error', () => undefined);
    // Reads nothing and never ends its side.
    sock.pause();
  });
  await new Promise<void>((r) => srv.listen(0, HOST, () => r()));
  try {
    const port = (srv.address() as nodeNet.AddressInfo).port;
    const c = new Peer(await connect(net, { host: HOST, port }));
    const start = performance.now();
    c.stream.end(200);
    await c.closed();
    const took = performance.now() - start;
    assert.ok(took >= 150 && took < 3000, `closed after ${Math.round(took)} ms`);
  } finally {
    for (const r of raw) r.destroy();
    srv.close();
  }
});

void test('writes after close are dropped silently', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server);
    c.stream.destroy();
    await c.closed();
    await s.closed();
    assert.doesNotThrow(() => c.stream.write([Buffer.from('late')]));
    assert.doesNotThrow(() => s.stream.write([Buffer.from('late')]));
    assert.equal(c.stream.pendingWriteBytes, 0);
    c.stream.pauseReading();
    c.stream.resumeReading();
    await turns(10);
    assert.equal(c.closes.length, 1);
    assert.equal(s.closes.length, 1);
  });
});

void test('connect to a closed port fails with ECONNREFUSED', async () => {
  const net = new NodeNet();
  const server = await Server.start(net);
  const addr = server.addr();
  await server.listener.close();
  const err = await connectFails(net, addr);
  assert.equal(err.code, 'ECONNREFUSED');
});

void test('listen rejects on a port already bound (EADDRINUSE)', async () => {
  await withServer(async (net, server) => {
    await assert.rejects(
      net.listen({ host: HOST, port: server.listener.address.port }, () => undefined),
      (e: CodedError) => e.code === 'EADDRINUSE',
    );
  });
});

void test('Listener.close stops accepting but leaves accepted streams open', async () => {
  const net = new NodeNet();
  const server = await Server.start(net);
  const [c, s] = await pair(net, server);
  await server.listener.close();
  await server.listener.close();
  const err = await connectFails(net, server.addr());
  assert.equal(err.code, 'ECONNREFUSED');
  await roundTrip(c, s);
  await closeBoth(c, s);
});

// ---- TLS with certificates ----

void test('TLS: self-signed certificate verified by ca (IP SAN, then servername localhost)', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server, { ca: certPem });
    await roundTrip(c, s);
    await closeBoth(c, s);
    const [c2, s2] = await pair(net, server, { ca: certPem, servername: 'localhost' });
    await roundTrip(c2, s2);
    await closeBoth(c2, s2);
  }, { cert: certPem, key: keyPem });
});

void test('TLS: 1,000 writes in one turn arrive whole and in order', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server, { ca: certPem });
    const frames: Buffer[] = [];
    for (let i = 0; i < 1000; i++) frames.push(Buffer.from(`tls-frame-${i};`));
    for (const f of frames) c.stream.write([f]);
    const want = Buffer.concat(frames);
    await s.bytes(want.length);
    assert.deepEqual(s.received, want);
    await closeBoth(c, s);
  }, { cert: certPem, key: keyPem });
});

void test('TLS: a server certificate from another CA fails the connect', async () => {
  await withServer(async (net, server) => {
    const err = await connectFails(net, server.addr({ ca: otherCertPem }));
    assert.match(err.code ?? err.message, /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
    // A wrong name fails too, even with the right CA.
    const err2 = await connectFails(net, server.addr({ ca: certPem, servername: 'not-localhost' }));
    assert.equal(err2.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
    assert.equal(server.accepted, 0);
  }, { cert: certPem, key: keyPem });
});

void test('TLS: requestCert admits a client with a trusted certificate only', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server, { ca: certPem, cert: clientCertPem, key: clientKeyPem });
    await roundTrip(c, s);
    await closeBoth(c, s);
    const before = server.accepted;
    // In TLS 1.3 the client may finish its side before the server refuses it, so the
    // refusal shows either as a failed connect or as an error close; never as a stream.
    const outcome = await deadline(
      new Promise<Error>((resolve) => {
        net.connect(server.addr({ ca: certPem }), WAIT_MS, (err, stream) => {
          if (err !== null) return resolve(err);
          if (stream !== null) track(stream);
          stream?.attach({
            onData: () => undefined,
            onDrain: () => undefined,
            onClose: (e) => resolve(e ?? new Error('closed without error')),
          });
        });
      }),
      'client without certificate refused',
    );
    assert.ok(outcome instanceof Error);
    await turns(10);
    assert.equal(server.accepted, before);
  }, { cert: certPem, key: keyPem, ca: clientCertPem, requestCert: true });
});

void test('TLS listener: a failed incoming handshake is harmless', async () => {
  await withServer(async (net, server) => {
    // A plain TCP client speaking garbage to the TLS port.
    const raw = new Peer(await deadline(connect(net, server.addr()), 'plain connect'));
    raw.stream.write([Buffer.from('GET / HTTP/1.0\r\n\r\n')]);
    await raw.closed();
    assert.equal(server.accepted, 0);
    const [c, s] = await pair(net, server, { ca: certPem });
    await roundTrip(c, s);
    await closeBoth(c, s);
  }, { cert: certPem, key: keyPem });
});

void test('TLS listener: a handshake that ends after close() is not handed over', async () => {
  const net = new NodeNet();
  const server = await Server.start(net, { cert: certPem, key: keyPem });
  const raw = nodeNet.connect({ host: HOST, port: server.listener.address.port });
  raw.on('error', () => undefined);
  await deadline(new Promise((r) => raw.once('connect', r)), 'raw connect');
  // Turns for the server to accept the TCP connection; the TLS handshake has not begun.
  await turns(10);
  await server.listener.close();
  const secure = nodeTls.connect({ socket: raw, ca: certPem, servername: 'localhost' });
  secure.on('error', () => undefined);
  await deadline(new Promise((r) => secure.once('close', r)), 'refused TLS session to close');
  assert.equal(server.accepted, 0);
});

// ---- TLS-PSK ----

void test('TLS-PSK: round trip with the shared identity and key', async () => {
  await withServer(async (net, server) => {
    const [c, s] = await pair(net, server, { psk: PSK });
    await roundTrip(c, s);
    await closeBoth(c, s);
  }, { psk: PSK });
});

void test('TLS-PSK: a wrong key or identity fails the connect', async () => {
  await withServer(async (net, server) => {
    const wrongKey = Buffer.from(PSK.key);
    wrongKey[0] = (wrongKey[0] ?? 0) ^ 1;
    await connectFails(net, server.addr({ psk: { identity: PSK.identity, key: wrongKey } }));
    await connectFails(net, server.addr({ psk: { identity: 'someone-else', key: PSK.key } }));
    // A certificate client cannot get in without the key either.
    await connectFails(net, server.addr({ ca: certPem }));
    assert.equal(server.accepted, 0);
  }, { psk: PSK });
});

void test('TLS-PSK: a client refuses a server that answers with a certificate', async () => {
  await withServer(async (net, server) => {
    // Untrusted certificate: Node's own verification refuses it.
    await connectFails(net, server.addr({ psk: PSK }));
    // Trusted certificate, but no PSK: the adapter refuses it.
    const err = await connectFails(net, server.addr({ psk: PSK, ca: certPem }));
    assert.equal(err.code, 'ERR_TLS_PSK_NOT_USED');
    assert.equal(server.accepted, 0);
  }, { cert: certPem, key: keyPem });
});

void test('TLS-PSK: an invalid PSK is refused up front', async () => {
  const net = new NodeNet();
  const err = await connectFails(net, { host: HOST, port: 1, tls: { psk: { identity: '', key: PSK.key } } });
  assert.equal(err.code, 'ERR_PSK_CONFIG');
  await assert.rejects(net.listen({ host: HOST, port: 0, tls: { psk: { identity: 'x', key: Buffer.alloc(0) } } }, () => undefined));
  await assert.rejects(net.listen({ host: HOST, port: 0, tls: {} }, () => undefined));
});

void test('connect timeout: TLS to a TCP server that never speaks fails after timeout_ms', async () => {
  await withServer(async (net, server) => {
    const t0 = performance.now();
    const err = await connectFails(net, server.addr({ psk: PSK }), 300);
    const elapsed = performance.now() - t0;
    assert.equal(err.code, 'ETIMEDOUT');
    assert.ok(elapsed >= 250, `failed after ${elapsed} ms, before the timeout`);
    // The silent server saw the connection go away.
    const s = new Peer(await server.next());
    await s.closed();
  });
});

// ---- Clock and Random ----

void test('NodeClock: timers fire in deadline order, equal delays in arming order; cancel works', async () => {
  const clock = new NodeClock();
  const fired: string[] = [];
  const t0 = clock.now();
  let firedAt = 0;
  const done = new Promise<void>((resolve) => {
    clock.setTimer(30, () => fired.push('30'));
    clock.setTimer(10, () => fired.push('10'));
    clock.setTimer(20, () => fired.push('20'));
    clock.setTimer(15, () => fired.push('15a'));
    const cancelled = clock.setTimer(25, () => fired.push('25-cancelled'));
    clock.setTimer(15, () => {
      fired.push('15b');
      firedAt = clock.now();
    });
    clock.setTimer(40, () => resolve());
    clock.cancel(cancelled);
    clock.cancel(cancelled);
    clock.cancel(9999);
    assert.equal(clock.pendingTimers, 6);
  });
  await deadline(done, 'the last timer');
  assert.deepEqual(fired, ['10', '15a', '15b', '20', '30']);
  assert.ok(firedAt - t0 >= 14, `15 ms timer fired after ${firedAt - t0} ms`);
  assert.equal(clock.pendingTimers, 0, 'fired and cancelled timers must leave the map');
});

void test('NodeClock: equal deadlines fire in arming order, whatever their delays', async () => {
  // Freezing now() makes deadlines exactly equal, which real time never quite does.
  class FrozenClock extends NodeClock {
    t = 1000;
    override now(): number {
      return this.t;
    }
  }
  const clock = new FrozenClock();
  const order: string[] = [];
  let finish: () => void = () => undefined;
  const done = new Promise<void>((r) => (finish = r));
  clock.setTimer(10, () => order.push('A: 10 at 0'));
  clock.setTimer(5, () => order.push('B: 5 at 0'));
  clock.t += 5;
  clock.setTimer(5, () => order.push('C: 5 at 5'));
  clock.setTimer(0, () => order.push('D: 0 at 5'));
  clock.t += 5;
  clock.setTimer(0, () => order.push('E: 0 at 10'));
  clock.setTimer(1, () => finish());
  clock.t += 100;
  await deadline(done, 'frozen-clock timers');
  assert.deepEqual(order, ['B: 5 at 0', 'D: 0 at 5', 'A: 10 at 0', 'C: 5 at 5', 'E: 0 at 10']);
});

void test('NodeClock: now() is monotonic; unref timers still fire', async () => {
  const clock = new NodeClock({ unref: true });
  let last = clock.now();
  for (let i = 0; i < 1000; i++) {
    const t = clock.now();
    assert.ok(t >= last);
    last = t;
  }
  await deadline(new Promise<void>((resolve) => clock.setTimer(5, resolve)), 'unref timer');
  assert.equal(clock.pendingTimers, 0);
});

void test('NodeClock: 2,000 random timers, some cancelled: never early, in (deadline, arming) order', async () => {
  const clock = new NodeClock();
  const rnd = new NodeRandom();
  // setTimer reads the clock itself, between our `lo` and `hi` readings.
  type T = { id: number; lo: number; hi: number; firedAt: number; cancelled: boolean };
  const all: T[] = [];
  const fired: T[] = [];
  let live = 0;
  let allDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (allDone = r));
  for (let i = 0; i < 2000; i++) {
    // Whole and fractional delays, many equal: ties must keep arming order.
    const delay = i % 3 === 0 ? Math.floor(rnd.float() * 30) : rnd.float() * 30;
    const t: T = { id: 0, lo: clock.now() + delay, hi: 0, firedAt: -1, cancelled: false };
    t.id = clock.setTimer(delay, () => {
      t.firedAt = clock.now();
      fired.push(t);
      if (--live === 0) allDone();
    });
    t.hi = clock.now() + delay;
    all.push(t);
    live++;
  }
  for (const t of all) {
    if (rnd.float() < 0.3) {
      clock.cancel(t.id);
      t.cancelled = true;
      live--;
    }
  }
  // A timer armed from inside a callback with delay 0 runs later, not in the same round.
  const order: string[] = [];
  await deadline(
    new Promise<void>((resolve) =>
      clock.setTimer(1, () => {
        clock.setTimer(0, () => {
          order.push('inner');
          resolve();
        });
        order.push('outer');
      }),
    ),
    'nested timer',
  );
  assert.deepEqual(order, ['outer', 'inner']);
  await deadline(done, 'all live timers');
  assert.equal(fired.length, all.filter((t) => !t.cancelled).length);
  assert.ok(fired.every((t) => !t.cancelled));
  for (const t of fired) assert.ok(t.firedAt >= t.lo, `timer fired ${t.lo - t.firedAt} ms early`);
  for (let i = 1; i < fired.length; i++) {
    const a = fired[i - 1];
    const b = fired[i];
    assert.ok(a !== undefined && b !== undefined);
    if (b.hi < a.lo) assert.fail(`deadline ~${b.hi} fired after ~${a.lo}`);
  }
  assert.equal(clock.pendingTimers, 0);
});

void test('NodeRandom: floats in [0, 1), bytes of the asked length', () => {
  const rnd = new NodeRandom();
  let sum = 0;
  for (let i = 0; i < 10_000; i++) {
    const f = rnd.float();
    assert.ok(f >= 0 && f < 1);
    sum += f;
  }
  assert.ok(Math.abs(sum / 10_000 - 0.5) < 0.05);
  assert.equal(rnd.bytes(0).length, 0);
  const a = rnd.bytes(32);
  assert.equal(a.length, 32);
  assert.notDeepEqual(a, rnd.bytes(32));
});
