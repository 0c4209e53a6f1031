// Self-tests of the fault proxy: each fault is measured against a deadline on real sockets
// (latency and rate from timings, stall and black hole by what arrives and what does not
// within an observation window, stop_reading by the sender's own buffer growing), the
// shaper's schedule is reproducible from its seed, and the CLI obeys its commands.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultProxy, Shaper, noFaults, parseFaults } from './fault-proxy.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { waitFor, within } from './wait.js';

/** A TCP server that echoes (or only counts, `sink`) and remembers what it received. */
async function server(mode: 'echo' | 'sink'): Promise<{ port: number; received: () => Buffer; accepted: () => number; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  let accepted = 0;
  const socks = new Set<net.Socket>();
  const s = net.createServer((c) => {
    accepted++;
    socks.add(c);
    c.on('error', () => undefined);
    c.on('close', () => socks.delete(c));
    c.on('data', (d: Buffer) => {
      chunks.push(d);
      if (mode === 'echo') c.write(d);
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    port: (s.address() as net.AddressInfo).port,
    received: () => Buffer.concat(chunks),
    accepted: () => accepted,
    close: async () => {
      for (const c of socks) c.destroy();
      await new Promise<void>((r) => s.close(() => r()));
    },
  };
}

class Client {
  readonly sock: net.Socket;
  private readonly chunks: Buffer[] = [];
  closed = false;
  error: string | null = null;
  constructor(port: number) {
    this.sock = net.connect(port, '127.0.0.1');
    this.sock.on('data', (d: Buffer) => this.chunks.push(d));
    this.sock.on('error', (e: NodeJS.ErrnoException) => (this.error = e.code ?? e.message));
    this.sock.on('close', () => (this.closed = true));
  }
  static async open(port: number): Promise<Client> {
    const c = new Client(port);
    await within('connect', new Promise<void>((r, j) => c.sock.once('connect', r).once('error', j)), 5000);
    return c;
  }
  get length(): number {
    return this.chunks.reduce((n, c) => n + c.length, 0);
  }
  data(): Buffer {
    return Buffer.concat(this.chunks);
  }
  async waitBytes(n: number, timeout_ms = 5000): Promise<void> {
    await waitFor(`${n} bytes back (have ${this.length})`, () => this.length >= n, timeout_ms, 1);
  }
}

async function setup(t: { after: (fn: () => Promise<void>) => void }, mode: 'echo' | 'sink' = 'echo', seed = 1) {
  const srv = await server(mode);
  const proxy = await new FaultProxy({ target: { host: '127.0.0.1', port: srv.port }, seed }).start();
  t.after(async () => {
    await proxy.close();
    await srv.close();
  });
  return { srv, proxy };
}

/** Round trip of a small message through an echo, in ms. */
async function rtt(c: Client): Promise<number> {
  const have = c.length;
  const start = performance.now();
  c.sock.write(Buffer.from('ping'));
  await c.waitBytes(have + 4);
  return performance.now() - start;
}

test('without faults the proxy forwards both ways unchanged, half-close included', async (t) => {
  const { proxy } = await setup(t);
  const c = await Client.open(proxy.port);
  const data = randomBytes(3 << 20);
  c.sock.write(data);
  await c.waitBytes(data.length, 10_000);
  assert.ok(c.data().equals(data));
  c.sock.end();
  await waitFor('both sides closed', () => c.closed && proxy.open === 0);
  assert.equal(proxy.stats.up.bytes_out, data.length);
  assert.equal(proxy.stats.down.bytes_out, data.length);
});

test('latency: each direction adds its delay; jitter varies it within bounds and keeps order', async (t) => {
  const { proxy } = await setup(t);
  const c = await Client.open(proxy.port);
  const base = await rtt(c);
  proxy.set('up', { latency_ms: 40 });
  proxy.set('down', { latency_ms: 20 });
  for (let i = 0; i < 3; i++) {
    const r = await rtt(c);
    assert.ok(r >= 59 && r < 60 + base + 250, `rtt ${r.toFixed(1)} ms with 40+20 ms added`);
  }
  proxy.set('both', { latency_ms: 5, jitter_ms: 30 });
  const seq = Buffer.from(Array.from({ length: 200 }, (_, i) => i));
  for (let i = 0; i < seq.length; i += 10) c.sock.write(seq.subarray(i, i + 10));
  const have = c.length;
  await c.waitBytes(have + seq.length);
  assert.ok(c.data().subarray(have).equals(seq), 'order kept under jitter');
  const rs: number[] = [];
  for (let i = 0; i < 8; i++) rs.push(await rtt(c));
  assert.ok(rs.every((r) => r >= 10 && r < 70 + base + 250), JSON.stringify(rs));
});

test('rate: a 1 MiB/s cap makes 512 KiB take about half a second', async (t) => {
  const { proxy } = await setup(t);
  const c = await Client.open(proxy.port);
  proxy.set('down', { rate: 1 << 20 });
  const start = performance.now();
  c.sock.write(randomBytes(512 * 1024));
  await c.waitBytes(512 * 1024, 10_000);
  const took = performance.now() - start;
  assert.ok(took >= 450 && took < 2500, `512 KiB at 1 MiB/s took ${took.toFixed(0)} ms`);
});

test('stall: nothing is forwarded, the sockets stay open, and the held bytes flow when lifted', async (t) => {
  const { proxy, srv } = await setup(t, 'sink');
  const c = await Client.open(proxy.port);
  c.sock.write('before');
  await waitFor('first bytes', () => srv.received().length === 6);
  proxy.set('up', { stall: true });
  c.sock.write('during the stall');
  await waitFor('the proxy read the bytes', () => proxy.stats.up.bytes_in === 22);
  // Observation window: a stall must hold the bytes for as long as it lasts.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(srv.received().toString(), 'before');
  assert.equal(c.closed, false);
  assert.equal(proxy.open, 1);
  proxy.set('up', { stall: false });
  await waitFor('held bytes delivered', () => srv.received().length === 22);
  assert.equal(srv.received().toString(), 'beforeduring the stall');
});

test('black hole: bytes are dropped silently, the connection stays up and carries later bytes', async (t) => {
  const { proxy, srv } = await setup(t, 'sink');
  const c = await Client.open(proxy.port);
  proxy.set('up', { blackhole: true });
  c.sock.write('lost');
  await waitFor('dropped', () => proxy.stats.up.bytes_dropped === 4);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(srv.received().length, 0);
  proxy.set('up', { blackhole: false });
  c.sock.write('kept');
  await waitFor('later bytes arrive', () => srv.received().length === 4);
  assert.equal(srv.received().toString(), 'kept');
  assert.equal(c.closed, false);
});

test('cut: both ends see their connection reset; new connections still work', async (t) => {
  const { proxy, srv } = await setup(t);
  const c = await Client.open(proxy.port);
  await rtt(c);
  assert.equal(proxy.cut(), 1);
  await waitFor('client sees the cut', () => c.closed, 5000);
  assert.equal(c.error, 'ECONNRESET');
  assert.equal(proxy.open, 0);
  const c2 = await Client.open(proxy.port);
  await rtt(c2);
  assert.equal(srv.accepted(), 2);
});

test('refuse: new connections are reset before reaching the target, open ones carry on', async (t) => {
  const { proxy, srv } = await setup(t);
  const c = await Client.open(proxy.port);
  await rtt(c);
  proxy.refuse(true);
  const r = new Client(proxy.port);
  await waitFor('refused connection closed', () => r.closed, 5000);
  assert.equal(srv.accepted(), 1, 'the target never saw it');
  assert.equal(proxy.stats.refused, 1);
  await rtt(c);
  proxy.refuse(false);
  await rtt(await Client.open(proxy.port));
  assert.equal(srv.accepted(), 2);
});

test('stop_reading: the proxy stops draining the client, backpressure reaches the sender', async (t) => {
  const { proxy, srv } = await setup(t, 'sink');
  const c = await Client.open(proxy.port);
  proxy.set('up', { stop_reading: true });
  const total = 32 << 20;
  const block = randomBytes(1 << 20);
  let accepted_by_socket = true;
  for (let i = 0; i < 32; i++) accepted_by_socket = c.sock.write(block) && accepted_by_socket;
  assert.equal(accepted_by_socket, false, 'write() reports a full buffer');
  // The kernel buffers take a few MiB; the rest must stay with the sender.
  await waitFor('sender buffer stays high', () => c.sock.writableLength > 8 << 20, 5000);
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(srv.received().length < total - (8 << 20), `target got ${srv.received().length} of ${total}`);
  assert.ok(c.sock.writableLength > 8 << 20, `sender still holds ${c.sock.writableLength}`);
  proxy.set('up', { stop_reading: false });
  await waitFor('everything arrives', () => srv.received().length === total, 20_000);
  assert.equal(c.sock.writableLength, 0);
});

test('the shaper: a seed gives the same schedule; order is kept; the rate spaces the pieces', () => {
  const f = { ...noFaults(), latency_ms: 10, jitter_ms: 50 };
  const schedule = (seed: number): number[] => {
    const s = new Shaper(new SeededRandom(seed));
    return Array.from({ length: 100 }, (_, i) => s.admit(i, f));
  };
  const a = schedule(5);
  assert.deepEqual(schedule(5), a);
  assert.notDeepEqual(schedule(6), a);
  for (let i = 1; i < a.length; i++) assert.ok((a[i] as number) >= (a[i - 1] as number), 'never before the previous chunk');
  assert.ok(a.every((x, i) => x >= i + 10));
  const r = new Shaper(new SeededRandom(1));
  const rf = { ...noFaults(), rate: 1000 };
  r.sent(0, 500, rf);
  assert.equal(r.slot(0, rf), 500, '500 bytes at 1000 B/s hold the next piece for 500 ms');
  assert.deepEqual(parseFaults(['rate=10M', 'stall=1', 'latency_ms=2.5']), { rate: 10 << 20, stall: true, latency_ms: 2.5 });
  assert.throws(() => parseFaults(['latency=1']), /unknown key 'latency'/);
  assert.throws(() => parseFaults(['stall=maybe']), /not 1 or 0/);
});

test('the CLI: listens, reports its port, obeys commands from stdin and its control socket', async (t) => {
  const srv = await server('echo');
  const dir = mkdtempSync(join(tmpdir(), 'fault-proxy-'));
  const ctl = join(dir, 'ctl.sock');
  const cli = join(process.cwd(), 'dist/test/util/fault-proxy-cli.js');
  const child = spawn(process.execPath, [cli, '--target', `127.0.0.1:${srv.port}`, '--control', ctl, '--seed', '9'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => JSON.parse(String((await within('a line from the CLI', lines.next(), 10_000)).value)) as Record<string, unknown>;
  const hello = await next();
  const port = hello.port as number;
  assert.equal(hello.control, ctl);
  const c = await Client.open(port);
  await rtt(c);
  child.stdin.write('up latency_ms=50\n');
  assert.equal(((await next()).faults as { up: { latency_ms: number } }).up.latency_ms, 50);
  assert.ok((await rtt(c)) >= 49);
  child.stdin.write('bogus\n');
  assert.match(String((await next()).error), /unknown command 'bogus'/);
  const runCode = (...cmds: string[]) =>
    new Promise<{ out: string; code: number | null }>((resolve) => {
      const p = spawn(process.execPath, [cli, 'ctl', ctl, ...cmds], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('exit', (code) => resolve({ out, code }));
    });
  const run = async (...cmds: string[]): Promise<string> => (await runCode(...cmds)).out;
  // An error answer fails the call; a line break would smuggle in a second command.
  assert.equal((await within('ctl bogus', runCode('bogus'), 10_000)).code, 1);
  const smuggled = await within('ctl with a line break', runCode('stats\ncut'), 10_000);
  assert.equal(smuggled.code, 1);
  assert.match(smuggled.out, /may not contain a line break/);
  assert.equal(c.closed, false, 'the smuggled cut was not sent');
  assert.equal((await within('ctl stats', runCode('stats'), 10_000)).code, 0);
  const out = await within('ctl', run('refuse=1', 'cut'), 10_000);
  assert.equal(out.trim().split('\n').length, 2);
  assert.match(out, /"refusing":true/);
  await waitFor('client cut', () => c.closed);
  const r = new Client(port);
  await waitFor('refused', () => r.closed);
  assert.equal(srv.accepted(), 1);
  child.kill('SIGTERM');
  assert.equal(await within('CLI exit', exited, 5000), 0);
});
