// The gate that lets small file IO run on the event loop while the page cache answers it:
// a slow call or a slow mean sends that kind of IO to the thread pool for a while; the
// first call after that is a probe, whose slowness doubles the interval and whose speed
// resets it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SyncIoGate } from '../../src/brmr/server/sync-io-gate.js';

test('fast calls stay synchronous; a slow one sends IO to the thread pool; slow probes double the interval', () => {
  let now = 0;
  const g = new SyncIoGate(() => now);
  for (let i = 0; i < 100; i++) {
    assert.equal(g.allowed(), true);
    g.took(5);
  }
  g.took(5000); // the disk answered
  assert.equal(g.asynchronous, true);
  assert.equal(g.allowed(), false);
  now += 99;
  assert.equal(g.allowed(), false);
  now += 1;
  assert.equal(g.allowed(), true, 'a probe after 100 ms');
  g.took(4000); // the probe is slow: twice as long
  now += 199;
  assert.equal(g.allowed(), false);
  now += 1;
  assert.equal(g.allowed(), true);
  for (let k = 0; k < 10; k++) {
    g.took(9000);
    now += 100_000;
  }
  g.took(9000);
  now += 9_999;
  assert.equal(g.allowed(), false, 'the interval is capped at 10 s');
  now += 1;
  assert.equal(g.allowed(), true);
  g.took(3); // a fast probe
  g.took(5000); // a sporadic slow call later: back to the shortest interval
  now += 100;
  assert.equal(g.allowed(), true);
  assert.equal(g.stats.slow, 14);
});

test('a slow mean (frequent misses of a fast disk) also counts', () => {
  const now = 0;
  const g = new SyncIoGate(() => now);
  let calls = 0;
  while (!g.asynchronous && calls < 1000) {
    g.allowed();
    g.took(150); // each below the one-call bound, the mean rises above 60 us
    calls++;
  }
  assert.ok(g.asynchronous && calls < 50, `switched after ${calls} calls`);
});
