// The simulator's network faults, each on one connection: a one-way partition holds one
// direction only; a bandwidth limit spaces deliveries by size; a host that stops reading
// leaves bytes piling up at the writer (write() turns false past the high-water mark, and
// onDrain follows once the host reads again).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MEM_STREAM_HIGH_WATER, MemNetwork } from '../../src/sim/mem-net.js';
import type { NetStream } from '../../src/transport/net.js';

interface End {
  stream: NetStream;
  got: { at: number; bytes: number }[];
  drains: number;
}

async function pair(): Promise<{ clock: SimClock; net: MemNetwork; a: End; b: End }> {
  const clock = new SimClock();
  const net = new MemNetwork(clock, new SeededRandom(1), { latency_ms: 1, jitter_ms: 0 });
  const ends: End[] = [];
  const attach = (stream: NetStream): End => {
    const e: End = { stream, got: [], drains: 0 };
    stream.attach({ onData: (c) => e.got.push({ at: clock.now(), bytes: c.length }), onDrain: () => e.drains++, onClose: () => undefined });
    return e;
  };
  await net.host('b').listen({ host: 'b', port: 1 }, (s) => ends.push(attach(s)));
  let a: End | null = null;
  net.host('a').connect({ host: 'b', port: 1 }, 1000, (err, s) => {
    assert.equal(err, null);
    a = attach(s as NetStream);
  });
  clock.runUntil(10);
  assert.ok(a !== null && ends.length === 1);
  return { clock, net, a, b: ends[0] as End };
}

const total = (e: End): number => e.got.reduce((n, g) => n + g.bytes, 0);

test('one-way partition: a->b held, b->a flows; healing releases what was held', async () => {
  const { clock, net, a, b } = await pair();
  net.partitionOneWay('a', 'b', true);
  a.stream.write([Buffer.alloc(100)]);
  b.stream.write([Buffer.alloc(50)]);
  clock.runUntil(clock.now() + 20);
  assert.equal(total(b), 0, 'a->b held');
  assert.equal(total(a), 50, 'b->a delivered');
  assert.equal(net.isBlocked('a', 'b'), true);
  assert.equal(net.isBlocked('b', 'a'), false);
  assert.equal(net.isPartitioned('b', 'a'), true, 'a connect cannot complete either way');
  net.partitionOneWay('a', 'b', false);
  clock.runUntil(clock.now() + 20);
  assert.equal(total(b), 100);
});

test('bandwidth limit: deliveries spaced by size at the rate, the other direction unlimited', async () => {
  const { clock, net, a, b } = await pair();
  net.limitBandwidth('a', 'b', 1_000_000); // 1000 bytes per ms
  const t0 = clock.now();
  for (let i = 0; i < 5; i++) a.stream.write([Buffer.alloc(10_000)]);
  b.stream.write([Buffer.alloc(10_000)]);
  clock.runUntil(t0 + 100);
  assert.equal(b.got.length, 5);
  b.got.forEach((g, i) => assert.ok(Math.abs(g.at - t0 - (10 * (i + 1) + 1)) < 1e-6, `write ${i} at ${g.at - t0} ms`));
  assert.ok(Math.abs((a.got[0]?.at ?? 0) - t0 - 1) < 1e-6, 'b->a only latency');
  net.limitBandwidth('a', 'b', 0);
  const t1 = clock.now();
  a.stream.write([Buffer.alloc(10_000)]);
  clock.runUntil(t1 + 5);
  assert.ok(Math.abs((b.got[5]?.at ?? 0) - t1 - 1) < 1e-6, 'limit lifted');
});

test('a host that stops reading: bytes pile up, write() turns false, onDrain after it reads again', async () => {
  const { clock, net, a, b } = await pair();
  net.stopReading('b', true);
  let full = false;
  let sent = 0;
  while (!full && sent < 4 * MEM_STREAM_HIGH_WATER) {
    full = !a.stream.write([Buffer.alloc(64 * 1024)]);
    sent += 64 * 1024;
  }
  assert.equal(full, true, 'backpressure reached the writer');
  clock.runUntil(clock.now() + 50);
  assert.equal(total(b), 0, 'nothing read');
  assert.ok(a.stream.pendingWriteBytes >= sent - 64 * 1024, `pending ${a.stream.pendingWriteBytes}`);
  assert.equal(a.drains, 0);
  net.stopReading('b', false);
  clock.runUntil(clock.now() + 50);
  assert.equal(total(b), sent);
  assert.equal(a.stream.pendingWriteBytes, 0);
  assert.equal(a.drains, 1, 'one onDrain');
});
