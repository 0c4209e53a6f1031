// The history checker on hand-made histories: valid ones pass (concurrency, unknown and
// failed writes, trims, crashes that lose only what was not durable), and each kind of
// violation is caught and named; plus the block value codec.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkHistory, type CheckOptions, type ViolationKind } from './checker.js';
import { GARBAGE, TORN, decodeBlock, encodeBlock, type Op } from './model.js';

const OPTS: CheckOptions = { multi_conn: true, trim: 'zeroes', final: 'register' };

type Extra = Partial<Pick<Op, 'conn' | 'fua' | 'outcome' | 'final' | 'note'>>;
const base = (kind: Op['kind'], block: number, value: number, invoke: number, complete: number, x: Extra = {}): Op => ({
  conn: x.conn ?? 1,
  kind,
  block,
  value,
  fua: x.fua ?? false,
  invoke,
  complete: x.outcome === 'unknown' ? Infinity : complete,
  outcome: x.outcome ?? 'ok',
  ...(x.final !== undefined ? { final: x.final } : {}),
  ...(x.note !== undefined ? { note: x.note } : {}),
});
const W = (block: number, value: number, inv: number, comp: number, x: Extra = {}) => base('write', block, value, inv, comp, x);
const R = (block: number, value: number, inv: number, comp: number, x: Extra = {}) => base('read', block, value, inv, comp, x);
const F = (inv: number, comp: number, x: Extra = {}) => base('flush', -1, 0, inv, comp, x);
const Z = (block: number, inv: number, comp: number, x: Extra = {}) => base('zero', block, 0, inv, comp, x);
const T = (block: number, inv: number, comp: number, x: Extra = {}) => base('trim', block, 0, inv, comp, x);
const FIN = (block: number, value: number, at = 1000) => R(block, value, at, at + 1, { final: true });

function valid(ops: Op[], o: Partial<CheckOptions> = {}): void {
  const r = checkHistory(ops, { ...OPTS, ...o });
  assert.deepEqual(r.violations.map((v) => v.message), [], 'expected a valid history');
}

function caught(ops: Op[], kind: ViolationKind, o: Partial<CheckOptions> = {}, re?: RegExp): void {
  const r = checkHistory(ops, { ...OPTS, ...o });
  assert.equal(r.ok, false, `expected a ${kind} violation`);
  assert.deepEqual([...new Set(r.violations.map((v) => v.kind))], [kind], JSON.stringify(r.violations.map((v) => v.message)));
  if (re !== undefined) assert.match(r.violations[0]?.message ?? '', re);
}

test('block values: encode/decode round trip; zeroes, foreign and torn blocks are told apart', () => {
  const b = encodeBlock(7, 123456, 4096);
  assert.deepEqual(decodeBlock(7, b), { value: 123456 });
  assert.deepEqual(decodeBlock(7, Buffer.alloc(4096)), { value: 0 });
  assert.deepEqual(decodeBlock(8, b), { value: GARBAGE, note: 'holds value 123456 of block 7' });
  const torn = Buffer.concat([b.subarray(0, 2048), encodeBlock(7, 9, 4096).subarray(2048)]);
  assert.equal(decodeBlock(7, torn).value, GARBAGE);
  assert.match(decodeBlock(7, torn).note ?? '', /torn or corrupt at byte 2048/);
  const flipped = Buffer.from(b);
  flipped[4000] = (flipped[4000] as number) ^ 1;
  assert.equal(decodeBlock(7, flipped).value, GARBAGE);
});

test('block values: a torn block is told apart as pieces of the values written to it; bytes of no such value stay garbage', () => {
  const a = encodeBlock(7, 5, 4096);
  const b = encodeBlock(7, 9, 4096);
  const torn = Buffer.concat([a.subarray(0, 3968), b.subarray(3968)]);
  assert.deepEqual(decodeBlock(7, torn, [5, 9, 11]), { value: TORN, pieces: [5, 9], note: 'torn: v5 from byte 0, v9 from byte 3968' });
  const fromZero = Buffer.concat([Buffer.alloc(2048), a.subarray(2048)]);
  assert.deepEqual(decodeBlock(7, fromZero, [5]).pieces, [0, 5]);
  assert.equal(decodeBlock(7, torn, [5]).value, GARBAGE, 'v9 was never written');
  const flipped = Buffer.from(torn);
  flipped[4000] = (flipped[4000] as number) ^ 1;
  assert.equal(decodeBlock(7, flipped, [5, 9]).value, GARBAGE);
});

const TR = (block: number, pieces: number[], inv: number, comp: number): Op => ({ ...R(block, TORN, inv, comp), pieces });

test('torn reads: pieces of concurrent values pass; a stale, future or phantom piece is caught', () => {
  // Reading while v2 replaces v1: the first bytes already new, the rest still old.
  valid([W(0, 1, 0, 10), W(0, 2, 20, 30), TR(0, [2, 1], 21, 25), FIN(0, 2)]);
  caught([W(0, 1, 0, 10), W(0, 2, 20, 30), TR(0, [2, 1], 31, 35), FIN(0, 2)], 'stale_read', {}, /holds bytes of write v1/);
  caught([W(0, 1, 0, 10), TR(0, [1, 2], 11, 15), W(0, 2, 20, 30), FIN(0, 2)], 'future_read');
  caught([W(0, 1, 0, 10), TR(0, [1, 3], 11, 15), FIN(0, 1)], 'phantom');
  // A torn final read loses a durable write when any of its pieces is older.
  const r = checkHistory([W(0, 1, 0, 10), W(0, 2, 20, 30, { fua: true }), { ...TR(0, [2, 1], 100, 101), final: true }], OPTS);
  assert.deepEqual(r.violations.map((v) => v.kind).sort(), ['lost_write', 'stale_read']);
});

test('valid: sequential and concurrent writes and reads, with a final read-back', () => {
  valid([W(0, 1, 0, 10), R(0, 1, 11, 12), W(0, 2, 20, 30), R(0, 1, 21, 25), R(0, 2, 22, 26), R(0, 2, 31, 32), FIN(0, 2)]);
  // A read concurrent with two concurrent writes may see either, in either order.
  valid([W(1, 3, 0, 100), W(1, 4, 0, 100), R(1, 4, 10, 20), R(1, 3, 30, 40), FIN(1, 3)]);
  // Never-written blocks read as zeroes.
  valid([R(2, 0, 0, 1), FIN(2, 0)]);
});

test('valid: an unknown or failed write may or may not take effect', () => {
  valid([W(0, 1, 0, 10), W(0, 2, 20, 0, { outcome: 'unknown' }), R(0, 1, 30, 31), R(0, 2, 40, 41), FIN(0, 2)]);
  valid([W(0, 1, 0, 10), W(0, 2, 20, 0, { outcome: 'unknown' }), R(0, 1, 30, 31), FIN(0, 1)]);
  // An unknown write may land long after newer writes.
  valid([W(0, 2, 0, 0, { outcome: 'unknown' }), W(0, 3, 50, 60), R(0, 2, 70, 71), FIN(0, 2)]);
  valid([W(0, 1, 0, 10), W(0, 2, 20, 25, { outcome: 'fail' }), R(0, 2, 30, 31), FIN(0, 2)]);
  valid([W(0, 1, 0, 10), W(0, 2, 20, 25, { outcome: 'fail' }), R(0, 1, 30, 31), FIN(0, 1)]);
});

test('valid: zero writes and trims; after a trim anything goes until the next write', () => {
  valid([W(0, 1, 0, 10), Z(0, 20, 30), R(0, 0, 31, 32), W(0, 2, 40, 50), R(0, 2, 51, 52), FIN(0, 2)]);
  valid([W(0, 1, 0, 10), T(0, 20, 30), R(0, 0, 31, 32), FIN(0, 0)]);
  valid([W(0, 1, 0, 10), T(0, 20, 30), R(0, GARBAGE, 31, 32, { note: 'x' }), R(0, 1, 33, 34), FIN(0, 1)], { trim: 'undefined' });
  caught([W(0, 1, 0, 10), T(0, 20, 30), R(0, 1, 31, 32), FIN(0, 0)], 'stale_read', { trim: 'zeroes' });
});

test('valid after a power loss: what was neither FUA nor flushed may be gone', () => {
  const ops = [W(0, 1, 0, 10, { fua: true }), W(0, 2, 20, 30), R(0, 2, 31, 32), FIN(0, 1)];
  valid(ops, { final: 'durable' });
  caught(ops, 'stale_read', { final: 'register' }, /final read v1 .* overwritten by write v2/);
  // Without multi-conn a flush covers only its own connection's writes.
  const other = [W(0, 1, 0, 10, { conn: 1 }), W(0, 2, 20, 30, { conn: 2 }), F(40, 50, { conn: 1 }), FIN(0, 1)];
  valid(other, { final: 'durable', multi_conn: false });
  caught(other, 'lost_write', { final: 'durable', multi_conn: true }, /write v2 .* acknowledged durable \(flushed\)/);
});

test('caught: garbage, phantom values and reads from the future', () => {
  caught([W(0, 1, 0, 10), R(0, GARBAGE, 11, 12, { note: 'value 1 torn or corrupt at byte 2048' }), FIN(0, 1)], 'garbage', {}, /torn or corrupt/);
  caught([W(0, 1, 0, 10), R(0, 99, 11, 12), FIN(0, 1)], 'phantom', {}, /value 99, which no write put into this block/);
  caught([W(0, 1, 0, 10), W(1, 5, 0, 10), R(0, 5, 11, 12), FIN(0, 1), FIN(1, 5)], 'phantom');
  caught([W(0, 1, 50, 60), R(0, 1, 10, 20), FIN(0, 1)], 'future_read', {}, /began after the read ended/);
});

test('caught: a stale read (an acknowledged overwrite before the read began)', () => {
  caught([W(0, 1, 0, 10), W(0, 2, 20, 30), R(0, 1, 40, 41), FIN(0, 2)], 'stale_read', {}, /returned the value of write v1 .* overwritten by write v2/);
  caught([W(0, 2, 20, 30), R(0, 0, 40, 41), FIN(0, 2)], 'stale_read', {}, /the initial zeroes/);
  // Zeroes from a zero write that a later write replaced.
  caught([Z(0, 0, 10), W(0, 2, 20, 30), R(0, 0, 40, 41), FIN(0, 2)], 'stale_read');
});

test('caught: reads that flip back to an older value (an order cycle)', () => {
  // Two long concurrent writes: once a read saw 4 after a read saw 3, 3 cannot come back.
  caught([W(1, 3, 0, 100), W(1, 4, 0, 100), R(1, 3, 10, 20), R(1, 4, 30, 40), R(1, 3, 50, 60), FIN(1, 4, 200)], 'order_cycle', {}, /impossible/);
  // A read sees 5, then a later read sees 6, which ended before 5 began.
  caught([W(2, 6, 0, 10), W(2, 5, 20, 100), R(2, 5, 30, 40), R(2, 6, 50, 60), FIN(2, 5, 200)], 'order_cycle');
});

test('caught: an acknowledged FUA or flushed write missing from the read-back', () => {
  caught([W(0, 1, 0, 10), W(0, 2, 20, 30, { fua: true }), FIN(0, 1)], 'lost_write', { final: 'durable' }, /write\(fua\) v2 .* acknowledged durable \(FUA\)/);
  caught([W(0, 1, 0, 10), W(0, 2, 20, 30), F(31, 40), FIN(0, 0)], 'lost_write', { final: 'durable' });
  // A flush that began before the write ended does not cover it; an unacknowledged flush covers nothing.
  valid([W(0, 1, 0, 10), W(0, 2, 20, 30), F(25, 40), FIN(0, 1)], { final: 'durable' });
  valid([W(0, 1, 0, 10), W(0, 2, 20, 30), F(31, 40, { outcome: 'fail' }), FIN(0, 1)], { final: 'durable' });
  // A later write that may have replaced it excuses the durable one.
  valid([W(0, 2, 20, 30, { fua: true }), W(0, 3, 35, 0, { outcome: 'unknown' }), FIN(0, 3)], { final: 'durable' });
  // In register mode the same loss is also a stale read; both are reported.
  const r = checkHistory([W(0, 1, 0, 10), W(0, 2, 20, 30, { fua: true }), FIN(0, 1)], OPTS);
  assert.deepEqual(new Set(r.violations.map((v) => v.kind)), new Set(['stale_read', 'lost_write']));
});

test('a large random valid history (a serial register) checks quickly and passes', () => {
  const ops: Op[] = [];
  let now = 0;
  let v = 1;
  const cur = new Map<number, number>();
  for (let i = 0; i < 20_000; i++) {
    const b = i % 16;
    if (i % 3 === 0) {
      ops.push(W(b, v, now, now + 1, { fua: i % 7 === 0 }));
      cur.set(b, v++);
    } else ops.push(R(b, cur.get(b) ?? 0, now, now + 1));
    now += 2;
  }
  for (let b = 0; b < 16; b++) ops.push(FIN(b, cur.get(b) ?? 0, now + 10));
  const start = performance.now();
  valid(ops);
  assert.ok(performance.now() - start < 10_000, 'checked in reasonable time');
});

/** Brute force: is a one-block history (writes, zero writes, reads) linearizable? */
function linearizable(all: Op[]): boolean {
  // A write without an ok answer either took effect (within its window) or never did.
  const optional = all.filter((o) => o.kind !== 'read' && o.outcome !== 'ok');
  for (let mask = 0; mask < 1 << optional.length; mask++) {
    const ops = all.filter((o) => !optional.includes(o) || (mask & (1 << optional.indexOf(o))) !== 0);
    if (serial(ops)) return true;
  }
  return false;
}

function serial(ops: Op[]): boolean {
  const n = ops.length;
  const done = new Uint8Array(n);
  const seen = new Set<string>();
  const go = (value: number, left: number): boolean => {
    if (left === 0) return true;
    const key = `${Array.from(done).join('')}:${value}`;
    if (seen.has(key)) return false;
    seen.add(key);
    // The op linearized next must not begin after a pending one ended.
    let horizon = Infinity;
    for (let i = 0; i < n; i++) if (done[i] === 0) horizon = Math.min(horizon, (ops[i] as Op).complete);
    for (let i = 0; i < n; i++) {
      const o = ops[i] as Op;
      if (done[i] !== 0 || o.invoke > horizon) continue;
      if (o.kind === 'read' && o.value !== value) continue;
      done[i] = 1;
      const ok = go(o.kind === 'read' ? value : o.kind === 'write' ? o.value : 0, left - 1);
      done[i] = 0;
      if (ok) return true;
    }
    return false;
  };
  return go(0, n);
}

test('cross-check against brute force on random small histories: every violation reported is real', () => {
  let rnd = 12345;
  const next = (k: number): number => {
    rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0;
    return (rnd >>> 8) % k;
  };
  let reported = 0;
  let nonlin = 0;
  for (let trial = 0; trial < 3000; trial++) {
    // A correct register executed with random overlaps, then (sometimes) one read lies.
    const ops: Op[] = [];
    let cur = 0;
    let v = 1;
    let now = 0;
    const count = 3 + next(4);
    for (let i = 0; i < count; i++) {
      const inv = now + next(3);
      const lin = inv + next(4);
      const comp = lin + next(4);
      now = inv + 1;
      const k = next(10);
      if (k < 4) {
        const outcome = next(6) === 0 ? 'unknown' : next(6) === 0 ? 'fail' : 'ok';
        const takes = outcome === 'ok' || next(2) === 0;
        ops.push(W(0, v, inv, comp, { outcome }));
        if (takes) cur = v;
        v++;
      } else if (k < 5) {
        ops.push(Z(0, inv, comp));
        cur = 0;
      } else ops.push(R(0, cur, inv, comp));
    }
    // Overlapping ops were "executed" at their invoke order, which a linearization may not
    // respect when windows overlap; brute force is the judge either way.
    if (next(2) === 0) {
      const reads = ops.filter((o) => o.kind === 'read');
      const r = reads[next(Math.max(1, reads.length))];
      if (r !== undefined) r.value = next(v);
    }
    const res = checkHistory(ops, OPTS);
    const lin = linearizable(ops);
    if (!lin) nonlin++;
    if (!res.ok) {
      reported++;
      assert.equal(lin, false, `checker reported ${res.violations.map((x) => x.message).join(' | ')} on a linearizable history:\n${JSON.stringify(ops)}`);
    }
  }
  assert.ok(reported > 200, `violations found: ${reported} (of ${nonlin} non-linearizable)`);
  if (process.env.HISTORY_STATS !== undefined) console.log({ reported, nonlin });
  // Completeness is not claimed, but the checker should find nearly all of them.
  assert.ok(reported >= nonlin * 0.9, `reported ${reported} of ${nonlin} non-linearizable histories`);
});
