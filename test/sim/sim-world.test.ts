// The simulator's own parts: the clock fires in (deadline, arming) order and never runs
// ahead; the random stream depends only on the seed; the memory disk loses exactly the
// unflushed writes at a power loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemDisk } from '../../src/sim/mem-disk.js';
import { Errno } from '../../src/util/errno.js';

test('SimClock: deadline then arming order; cancel; time jumps only to deadlines', () => {
  const c = new SimClock();
  const got: string[] = [];
  c.setTimer(5, () => got.push(`a@${c.now()}`));
  const x = c.setTimer(1, () => got.push('cancelled'));
  c.setTimer(5, () => got.push(`b@${c.now()}`));
  c.setTimer(2, () => {
    got.push(`c@${c.now()}`);
    c.setTimer(0, () => got.push(`d@${c.now()}`));
  });
  c.cancel(x);
  c.runUntil(4);
  assert.deepEqual(got, ['c@2', 'd@2']);
  assert.equal(c.now(), 4);
  c.runUntil(100);
  assert.deepEqual(got, ['c@2', 'd@2', 'a@5', 'b@5']);
  assert.equal(c.pending, 0);
  assert.throws(() => c.runUntilTrue('never', () => false, 200), /simulated time 200 ms reached waiting for never/);
});

test('SeededRandom: one stream per seed', () => {
  const a = new SeededRandom(7);
  const b = new SeededRandom(7);
  const c = new SeededRandom(8);
  const xs = Array.from({ length: 100 }, () => a.u32());
  assert.deepEqual(xs, Array.from({ length: 100 }, () => b.u32()));
  assert.notDeepEqual(xs, Array.from({ length: 100 }, () => c.u32()));
  for (let i = 0; i < 1000; i++) {
    const f = a.float();
    assert.ok(f >= 0 && f < 1);
  }
});

test('MemDisk: flushed and FUA writes survive a power loss, others do not; errors on bad ranges', () => {
  const clock = new SimClock();
  const d = new MemDisk(64 * 1024, clock, new SeededRandom(1));
  const st: number[] = [];
  d.write(0, Buffer.alloc(4096, 1), false, (s) => st.push(s));
  d.write(4096, Buffer.alloc(4096, 2), true, (s) => st.push(s));
  clock.runUntil(1);
  d.flush((s) => st.push(s));
  clock.runUntil(2);
  d.write(8192, Buffer.alloc(4096, 3), false, (s) => st.push(s));
  clock.runUntil(3);
  assert.equal(d.contents(8192, 1)[0], 3, 'visible before the crash');
  d.powerLoss('drop');
  assert.deepEqual(st, [0, 0, 0, 0]);
  assert.equal(d.contents(0, 1)[0], 1);
  assert.equal(d.contents(4096, 1)[0], 2);
  assert.equal(d.contents(8192, 1)[0], 0, 'unflushed write lost');
  d.faults.bad_ranges = [{ offset: 16384, length: 512 }];
  let rs = 1;
  d.read(16000, 1000, (s) => (rs = s));
  let ws = 1;
  d.write(60 * 1024, Buffer.alloc(8192), false, (s) => (ws = s));
  clock.runUntil(4);
  assert.equal(rs, Errno.EIO);
  assert.equal(ws, Errno.EINVAL, 'beyond the end');
});

test('MemDisk: a torn write keeps some sectors and loses others', () => {
  const clock = new SimClock();
  const d = new MemDisk(1 << 20, clock, new SeededRandom(3));
  d.write(0, Buffer.alloc(64 * 512, 9), false, () => undefined);
  clock.runUntil(1);
  d.powerLoss('tear');
  const c = d.contents(0, 64 * 512);
  let kept = 0;
  for (let s = 0; s < 64; s++) {
    const v = c[s * 512];
    assert.ok(v === 9 || v === 0);
    assert.ok(c.subarray(s * 512, (s + 1) * 512).every((b) => b === v), 'sectors are atomic');
    if (v === 9) kept++;
  }
  assert.ok(kept > 0 && kept < 64, `${kept} of 64 sectors kept`);
});
