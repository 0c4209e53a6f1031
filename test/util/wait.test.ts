// The test waits themselves: waitUntil returns the probe's first non-null value, fails at the
// deadline naming what it waited for and why, and fails at once when the probe throws.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor, waitUntil } from './wait.js';

test('waitUntil returns the first value an async probe gives, and passes the time left', async () => {
  let probes = 0;
  const left: number[] = [];
  const v = await waitUntil(
    'the fourth probe',
    async (left_ms) => {
      left.push(left_ms);
      await Promise.resolve();
      return ++probes === 4 ? { at: probes } : null;
    },
    { timeout_ms: 5000, poll_ms: 1 },
  );
  assert.deepEqual(v, { at: 4 });
  assert.equal(left.length, 4);
  assert.ok(left.every((l, i) => l <= 5000 && (i === 0 || l <= (left[i - 1] as number))), `left_ms not decreasing: ${left.join(',')}`);
  // undefined is a value (a leg that is gone): only null means "not yet".
  assert.equal(await waitUntil('undefined', () => undefined), undefined);
});

test('at the deadline the failure names what was awaited and the explanation, computed once', async () => {
  let explained = 0;
  await assert.rejects(
    waitFor('a flag that never rises', () => false, 30, 5, () => `explained ${++explained}`),
    (e: Error) => e.message === 'timed out after 30 ms waiting for a flag that never rises: explained 1',
  );
  assert.equal(explained, 1);
  await assert.rejects(
    waitUntil('nothing', () => null, {
      timeout_ms: 10,
      explain: () => {
        throw new Error('no log');
      },
    }),
    /waiting for nothing: \(explain failed: Error: no log\)/,
  );
  await assert.rejects(waitFor('no explanation', async () => Promise.resolve(false), 10), (e: Error) => e.message === 'timed out after 10 ms waiting for no explanation');
});

test('a probe that throws fails the wait at once, not at the deadline', async () => {
  let probes = 0;
  const t0 = performance.now();
  await assert.rejects(
    waitUntil('a daemon', () => {
      if (++probes === 3) throw new Error('daemon exited');
      return null;
    }, { timeout_ms: 60_000, poll_ms: 1 }),
    /daemon exited/,
  );
  assert.equal(probes, 3);
  assert.ok(performance.now() - t0 < 30_000, 'the wait ran to its deadline');
});

test('poll_ms 0 probes once per event-loop turn', async () => {
  let turns = 0;
  const spin = (): void => {
    if (++turns < 50) setImmediate(spin);
  };
  setImmediate(spin);
  let probes = 0;
  await waitFor('50 turns', () => (probes++, turns >= 50), 10_000, 0);
  // setImmediate callbacks queued in one turn run in the next: the probe and the spinner
  // alternate, so the probe ran about once per turn (a 5 ms poll would have run a few times).
  assert.ok(probes >= 40 && probes <= 60, `${probes} probes over 50 turns`);
});
