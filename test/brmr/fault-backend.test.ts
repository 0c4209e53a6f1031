// The error-injecting store filter on simulated time: each fault does what its key says
// (errors by rate and by range, errors after the write, delays, stalls held until lifted),
// a seed reproduces the same failures, bad input is refused with a message naming the token
// and changes nothing, and a store manager on top of it sees the injected errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultBackend, FaultController, FaultSpecError, withFaults, parseSize } from '../../src/brmr/server/fault-backend.js';
import { MemBackend, MemDevice, memOpener, type StoreBackend } from '../../src/brmr/server/backend.js';
import { faultInjectionFile } from '../../src/daemon/fault-file.js';
import { ControlTree, dir } from '../../src/daemon/control-tree.js';
import { ControlError } from '../../src/daemon/control-error.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { Errno } from '../../src/util/errno.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { StoreManager } from '../../src/brmr/server/store-manager.js';

const SIZE = 1 << 20;

function setup(spec = ''): { clock: SimClock; c: FaultController; b: FaultBackend; dev: MemDevice } {
  const clock = new SimClock();
  const c = new FaultController({ clock, random: new SeededRandom(1) }, spec);
  const dev = new MemDevice(SIZE);
  return { clock, c, b: new FaultBackend(new MemBackend('mem0', dev), c), dev };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Simulated time moves `ms` ahead in 1 ms steps, letting microtask completions run between. */
async function advance(clock: SimClock, ms: number): Promise<void> {
  await turn();
  for (let i = 0; i < ms; i++) {
    clock.runUntil(clock.now() + 1);
    await turn();
  }
}

/** Runs one IO to completion on simulated time; returns status and the time it took. */
async function io(clock: SimClock, start: (cb: (status: number) => void) => void, until = 10_000): Promise<{ status: number | null; took: number }> {
  const t0 = clock.now();
  let status: number | null = null;
  let at = 0;
  start((s) => {
    status = s;
    at = clock.now();
  });
  for (;;) {
    await turn();
    if (status !== null) break;
    if (!clock.step() || clock.now() - t0 > until) throw new Error('io did not complete');
  }
  return { status, took: at - t0 };
}

const write = (b: StoreBackend, pos: number, len: number, fill = 0xaa, fua = false) => (cb: (s: number) => void) => b.write(pos, Buffer.alloc(len, fill), fua, cb);
const read = (b: StoreBackend, pos: number, len: number) => (cb: (s: number) => void) => b.read(pos, len, (s) => cb(s));
const flush = (b: StoreBackend) => (cb: (s: number) => void) => b.flush(cb);

test('no faults: IO passes through unchanged', async () => {
  const { clock, b, dev } = setup();
  assert.equal((await io(clock, write(b, 4096, 512, 0x5a))).status, 0);
  assert.equal(dev.bytes[4096], 0x5a);
  let got: Buffer | null = null;
  b.read(4096, 512, (_s, d) => (got = d));
  await advance(clock, 1);
  assert.deepEqual(got, Buffer.alloc(512, 0x5a));
  assert.equal((await io(clock, flush(b))).status, 0);
  assert.equal(dev.stats.flushes, 1);
});

test('error ranges fail exactly the IO that overlaps them, with the chosen errno', async () => {
  const { clock, c, b, dev } = setup('write_error_ranges=8K+4K,1M+64K read_error_ranges=0+1 error=ENOSPC');
  assert.equal((await io(clock, write(b, 8192 - 512, 512))).status, 0, 'just below the range');
  assert.equal((await io(clock, write(b, 8192 - 512, 1024))).status, Errno.ENOSPC, 'straddles the start');
  assert.equal((await io(clock, write(b, 12288 - 1, 1))).status, Errno.ENOSPC, 'last byte');
  assert.equal((await io(clock, write(b, 12288, 512))).status, 0, 'just above');
  assert.equal(dev.bytes[8192 - 512 + 600], 0, 'a failed write (before mode) did not reach the disk');
  assert.equal((await io(clock, (cb) => b.writeZeroes(9000, 10, cb))).status, Errno.ENOSPC, 'write-zeroes is a write');
  assert.equal((await io(clock, read(b, 0, 512))).status, Errno.ENOSPC);
  assert.equal((await io(clock, read(b, 1, 512))).status, 0);
  assert.equal((await io(clock, flush(b))).status, 0, 'flushes have no range');
  assert.deepEqual([c.stats.errors.write, c.stats.errors.read], [3, 1]);
  c.set('write_error_ranges=none');
  assert.equal((await io(clock, write(b, 8192, 512))).status, 0);
  assert.equal(c.describe(), 'error=ENOSPC read_error_ranges=0+1');
});

test('error rates are seeded: the same seed fails the same IOs, and the rate is about right', async () => {
  const failures = async (seed: number): Promise<number[]> => {
    const { clock, b } = setup(`seed=${seed} write_error_rate=0.2 flush_error_rate=50%`);
    const out: number[] = [];
    for (let i = 0; i < 2000; i++) if ((await io(clock, write(b, (i % 200) * 512, 512))).status !== 0) out.push(i);
    return out;
  };
  const a = await failures(7);
  assert.deepEqual(await failures(7), a);
  assert.notDeepEqual(await failures(8), a);
  assert.ok(a.length > 320 && a.length < 480, `${a.length} of 2000 failed at rate 0.2`);
  const { clock, b } = setup('seed=3 flush_error_rate=1');
  assert.equal((await io(clock, flush(b))).status, Errno.EIO);
});

test('write_error_after: the data reaches the disk, the caller is told it failed', async () => {
  const { clock, b, dev } = setup('write_error_ranges=0+4K write_error_after=1');
  assert.equal((await io(clock, write(b, 0, 512, 0x77))).status, Errno.EIO);
  assert.equal(dev.bytes[0], 0x77);
});

test('delays: fixed per op, plus seeded jitter, on simulated time', async () => {
  const { clock, c, b } = setup('delay_ms=5 write_delay_ms=20');
  assert.equal((await io(clock, read(b, 0, 512))).took, 5);
  assert.equal((await io(clock, write(b, 0, 512))).took, 25);
  assert.equal((await io(clock, flush(b))).took, 5);
  c.set('off=1 flush_delay_ms=3 jitter_ms=10 seed=1');
  const took: number[] = [];
  for (let i = 0; i < 50; i++) took.push((await io(clock, flush(b))).took);
  assert.ok(took.every((t) => t >= 3 && t < 13), JSON.stringify(took));
  assert.ok(new Set(took.map(Math.floor)).size > 3, 'jitter varies');
  assert.equal(c.stats.delayed, 53);
});

test('stall: new IO is held until stall=0; stall_ops picks which; held IO runs in order', async () => {
  const { clock, c, b, dev } = setup('stall=1 stall_ops=write,flush');
  const done: string[] = [];
  b.write(0, Buffer.alloc(512, 1), false, (s) => done.push(`w1:${s}`));
  b.write(0, Buffer.alloc(512, 2), false, (s) => done.push(`w2:${s}`));
  b.flush((s) => done.push(`f:${s}`));
  let r = -1;
  b.read(0, 512, (s) => (r = s));
  await advance(clock, 1000);
  assert.deepEqual(done, [], 'writes and flushes are held');
  assert.equal(r, 0, 'reads still run');
  assert.equal(c.heldCount, 3);
  assert.equal(c.describe(), 'stall=1 stall_ops=write,flush');
  assert.equal(c.release(1), 1, 'release lets one through without lifting the stall');
  await advance(clock, 1);
  assert.deepEqual(done, ['w1:0']);
  c.set('stall=0');
  await advance(clock, 1);
  assert.deepEqual(done, ['w1:0', 'w2:0', 'f:0']);
  assert.equal(dev.bytes[0], 2, 'the writes ran in their order');
  assert.equal(c.stats.held_total, 3);
});

test('off=1 clears everything and releases held IO; close fails what its backend still holds', async () => {
  const { clock, c, b } = setup('stall=1 read_error_rate=1 delay_ms=9');
  let s1: number | null = null;
  b.flush((s) => (s1 = s));
  await advance(clock, 100);
  assert.equal(s1, null);
  c.set('off=1');
  assert.equal(c.describe(), 'off=1');
  await advance(clock, 1);
  assert.equal(s1, 0);
  c.set('stall=1');
  const other = new FaultBackend(new MemBackend('mem1', new MemDevice(SIZE)), c);
  let s2: number | null = null;
  let s3: number | null = null;
  b.flush((s) => (s2 = s));
  other.flush((s) => (s3 = s));
  let closed = false;
  b.close(() => (closed = true));
  await advance(clock, 1);
  assert.deepEqual([s2, s3, closed], [Errno.ENXIO, null, true], 'only the closed backend\'s IO fails');
  assert.equal(c.heldCount, 1);
});

test('close during a delay: the delayed IO fails ENXIO when its delay ends, not held by a stall until stall=0', async () => {
  const { clock, c, b } = setup('delay_ms=10 stall=1');
  let s1: number | null = null;
  b.flush((s) => (s1 = s));
  await advance(clock, 5);
  let closed = false;
  b.close(() => (closed = true));
  await advance(clock, 10);
  assert.deepEqual([s1, closed, c.heldCount], [Errno.ENXIO, true, 0]);
});

test('bad input is refused with a message naming the token, and changes nothing', () => {
  const { c } = setup('delay_ms=5');
  const bad: [string, RegExp][] = [
    ['', /^nothing to set/],
    ['delay_ms', /^'delay_ms' is not a key=value token/],
    ['delay_ms=', /^'delay_ms=' is not a key=value token/],
    ['delay=5', /^unknown key 'delay' \(keys: off=1 /],
    ['read_error_rate=1.5', /^read_error_rate: '1\.5' is not a rate/],
    ['read_error_rate=150%', /^read_error_rate: '150%' is outside 0\.\.1/],
    ['read_error_rate=-0.1', /is not a rate/],
    ['write_error_ranges=4096', /^write_error_ranges: '4096' is not <offset>\+<length>/],
    ['write_error_ranges=0+0', /has length 0/],
    ['write_error_ranges=1X+5', /^write_error_ranges offset: '1X' is not a size/],
    ['write_error_ranges=9999999T+1', /is too large/],
    ['delay_ms=700000', /above the maximum 600000/],
    ['delay_ms=1.5', /not a whole number/],
    ['stall=yes', /^stall: 'yes' is not one of 1, 0, y, n/],
    ['stall_ops=read,trim', /^stall_ops: 'trim' is not one of read, write, flush/],
    ['error=EPERM', /^error: 'EPERM' is not one of EIO, ENOSPC/],
    ['seed=-1', /^seed: '-1' is not an integer/],
    ['off=0', /only off=1/],
    ['stall=1 stall=0', /^duplicate key 'stall'/],
    ['stall=1 bogus=1', /^unknown key 'bogus'/],
    [`delay_ms=${'1'.repeat(5000)}`, /at most 4096/],
  ];
  for (const [input, re] of bad) {
    assert.throws(() => c.set(input), (e: unknown) => e instanceof FaultSpecError && e.code === 'EINVAL' && re.test(e.message), input);
  }
  assert.equal(c.describe(), 'delay_ms=5', 'no bad input changed anything (stall=1 before bogus=1 included)');
});

test('describe() round-trips through set()', () => {
  const spec = 'seed=42 error=EROFS read_error_rate=0.25 flush_error_rate=1 read_error_ranges=0+4K write_error_ranges=1M+64K,4K+512 write_error_after=1 delay_ms=2 write_delay_ms=7 jitter_ms=3 stall=1 stall_ops=read';
  const { c } = setup(spec);
  assert.equal(c.describe(), spec);
  const d = setup();
  d.c.set(c.describe());
  assert.equal(d.c.describe(), spec);
  assert.equal(parseSize('x', '64K'), 65536);
  assert.equal(parseSize('x', '2G'), 2 ** 31);
});

test('withFaults: every backend the opener opens goes through the controller', async () => {
  const clock = new SimClock();
  const c = new FaultController({ clock, random: new SeededRandom(2) }, 'write_error_ranges=0+4K');
  const open = withFaults(memOpener(new Map()), c);
  let b: StoreBackend | null = null;
  open('disk1', { create: true, size_bytes: SIZE }, (_s, backend) => (b = backend));
  await advance(clock, 1);
  assert.ok(b !== null);
  assert.equal((await io(clock, write(b, 0, 512))).status, Errno.EIO);
  assert.equal((await io(clock, write(b, 4096, 512))).status, 0);
  const none = withFaults(memOpener(new Map()), () => null);
  let plain: StoreBackend | null = null;
  none('disk2', { create: true, size_bytes: SIZE }, (_s, backend) => (plain = backend));
  await advance(clock, 1);
  assert.ok((plain as StoreBackend | null) instanceof MemBackend);
});

test('the control file: reads show settings and counters, bad writes are EINVAL', async () => {
  const clock = new SimClock();
  const c = new FaultController({ clock, random: new SeededRandom(2) });
  const tree = new ControlTree();
  tree.mount('brmr-server/stores/pool1', dir({ fault_injection: faultInjectionFile(c) }));
  const path = 'brmr-server/stores/pool1/fault_injection';
  assert.equal(await tree.write(path, 'read_error_rate=0.1 delay_ms=5'), 'read_error_rate=0.1 delay_ms=5');
  assert.match(await tree.read(path), /^read_error_rate=0\.1 delay_ms=5\nreads=0 read_errors=0 writes=0 write_errors=0 flushes=0 flush_errors=0 delayed=0 held=0 held_total=0\n$/);
  await assert.rejects(tree.write(path, 'read_error_rate=2'), (e: unknown) => e instanceof ControlError && e.code === 'EINVAL' && /read_error_rate: '2' is not a rate/.test(e.message));
});

test('a store manager on top: a header write error fails create_store with the reason; lifted, it succeeds', async () => {
  const clock = new SimClock();
  const c = new FaultController({ clock, random: new SeededRandom(3) }, 'write_error_ranges=0+4K');
  const CHUNK = 64 * 1024;
  const pool = new ServerPool({ pool_name: 'pool1', group_id: 7, member_id: 1, chunk_size: CHUNK }, () => undefined);
  const mgr = new StoreManager({ open: withFaults(memOpener(new Map()), c), random: new SeededRandom(4), wall_ms: () => 0, serverPool: (n) => (n === 'pool1' ? pool : undefined), log: new MemoryLogger(), emit: () => undefined });
  const create = async (device: string): Promise<[number, string | null]> => {
    let out: [number, string | null] | null = null;
    mgr.createStore({ pool: 'pool1', device, mapped_size: 16 * CHUNK }, (s, _st, why) => (out = [s, why]));
    for (let i = 0; i < 1000 && out === null; i++) await advance(clock, 1);
    assert.ok(out !== null, 'create_store answered');
    return out;
  };
  const [s1, why1] = await create('d1');
  assert.equal(s1, Errno.EIO);
  assert.match(why1 ?? '', /cannot write the store header \(EIO\)/);
  c.set('off=1');
  assert.deepEqual(await create('d2'), [0, null]);
  assert.ok(c.stats.ios.write > 2);
});
