// Checks a block-device history (model.ts) against a per-block register model. Sound: every
// violation reported is a real one (no linearization of the history can explain it). The
// checks, per block:
//   garbage      a read returned bytes that are no whole value written to this block
//   phantom      a read returned a value that no write put into this block
//   future_read  a read returned a value whose write began only after the read ended
//   stale_read   a read returned a value that an acknowledged write had overwritten
//                before the read began
//   order_cycle  the orders the reads reveal contradict each other or real time (a read
//                going back to an older value after a newer one was seen, and the like)
//   lost_write   the final read-back misses an acknowledged FUA write, or an acknowledged
//                write covered by an acknowledged flush: it returns an older value
// A write with an unknown outcome may or may not take effect, at any time after its invoke;
// a write answered with an error may or may not have taken effect before the answer.

import { GARBAGE, TORN, type Op } from './model.js';

export interface CheckOptions {
  /** A flush covers writes completed on every connection (NBD_FLAG_CAN_MULTI_CONN), else only its own. */
  multi_conn: boolean;
  /** What a trim leaves: zeroes, or (the NBD spec's rule) anything until the next write. */
  trim: 'zeroes' | 'undefined';
  /**
   * The final read-back: 'register': reads like any other (nothing acknowledged may be lost,
   * the normal case, also across failures a replicated store must hide); 'durable': after a
   * power loss, only acknowledged durable writes (FUA, or flushed) must survive.
   */
  final: 'register' | 'durable';
}

export type ViolationKind = 'garbage' | 'phantom' | 'future_read' | 'stale_read' | 'order_cycle' | 'lost_write';

export interface Violation {
  kind: ViolationKind;
  block: number;
  message: string;
  ops: Op[];
}

export interface CheckResult {
  ok: boolean;
  violations: Violation[];
  stats: { ops: number; blocks: number; reads_checked: number; reads_excused: number; reads_torn: number; writes: number; durable_writes: number; final_reads: number };
}

/** A write as the checker sees it: the window in which it may take effect. */
interface W {
  op: Op | null;
  value: number;
  kind: 'write' | 'zero' | 'trim' | 'initial';
  invoke: number;
  /** End of the window: the answer, or Infinity when unknown. */
  complete: number;
  /** Known to have taken effect: acknowledged, or its unique value was read. */
  effective: boolean;
}

const INITIAL = (): W => ({ op: null, value: 0, kind: 'initial', invoke: -Infinity, complete: -Infinity, effective: true });

/**
 * For writes sorted by invoke: sufMin[i] is the smallest complete of sorted[i..] (Infinity
 * past the end), firstAfter(x) the index of the first write that began after time x. So
 * "the writes that began after x" are sorted[firstAfter(x)..], and their earliest end is
 * one look-up.
 */
function byInvokeIndex(sorted: readonly W[]): { sufMin: Float64Array; firstAfter: (x: number) => number } {
  const sufMin = new Float64Array(sorted.length + 1).fill(Infinity);
  for (let i = sorted.length - 1; i >= 0; i--) sufMin[i] = Math.min(sufMin[i + 1] as number, (sorted[i] as W).complete);
  const firstAfter = (x: number): number => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((sorted[mid] as W).invoke > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
  return { sufMin, firstAfter };
}

function t(x: number): string {
  return Number.isFinite(x) ? x.toFixed(1) : x > 0 ? '∞' : '-∞';
}

export function describeOp(o: Op | null): string {
  if (o === null) return 'the initial zeroes';
  const read = o.kind === 'read' && o.value === GARBAGE ? 'garbage' : o.kind === 'read' && o.value === TORN ? `torn(${(o.pieces ?? []).map((v) => `v${v}`).join('|')})` : `v${o.value}`;
  const what = o.kind === 'flush' ? 'flush' : `${o.kind}${o.fua ? '(fua)' : ''} ${read} @block ${o.block}`;
  return `${o.final === true ? 'final ' : ''}${what} conn ${o.conn} [${t(o.invoke)}, ${t(o.complete)}] ${o.outcome}${o.note !== undefined ? ` (${o.note})` : ''}`;
}

function describeW(w: W): string {
  return describeOp(w.op);
}

export function checkHistory(ops: readonly Op[], o: CheckOptions): CheckResult {
  const violations: Violation[] = [];
  const stats = { ops: ops.length, blocks: 0, reads_checked: 0, reads_excused: 0, reads_torn: 0, writes: 0, durable_writes: 0, final_reads: 0 };
  const byBlock = new Map<number, Op[]>();
  const flushes: Op[] = [];
  for (const op of ops) {
    if (op.kind === 'flush') {
      flushes.push(op);
      continue;
    }
    let l = byBlock.get(op.block);
    if (l === undefined) byBlock.set(op.block, (l = []));
    l.push(op);
  }
  // Acknowledged flushes, by connection, sorted by invoke: does one start after `w` ended?
  const okFlushes = flushes.filter((f) => f.outcome === 'ok');
  const flushedAfter = (w: Op): boolean => okFlushes.some((f) => f.invoke > w.complete && (o.multi_conn || f.conn === w.conn));
  for (const [block, list] of byBlock) {
    stats.blocks++;
    checkBlock(block, list, o, flushedAfter, violations, stats);
  }
  return { ok: violations.length === 0, violations, stats };
}

function checkBlock(block: number, list: readonly Op[], o: CheckOptions, flushedAfter: (w: Op) => boolean, out: Violation[], stats: CheckResult['stats']): void {
  const before = out.length;
  const writers: W[] = [INITIAL()];
  const byValue = new Map<number, W>();
  for (const op of list) {
    if (op.kind !== 'write' && op.kind !== 'zero' && op.kind !== 'trim') continue;
    stats.writes++;
    const w: W = { op, value: op.kind === 'write' ? op.value : 0, kind: op.kind, invoke: op.invoke, complete: op.outcome === 'unknown' ? Infinity : op.complete, effective: op.outcome === 'ok' };
    writers.push(w);
    if (w.value > 0) {
      if (byValue.has(w.value)) throw new Error(`history: value ${w.value} written twice to block ${block}`);
      byValue.set(w.value, w);
    }
  }
  const zeroes = writers.filter((w) => w.value === 0 && (w.kind !== 'trim' || o.trim === 'zeroes'));
  const trims = o.trim === 'undefined' ? writers.filter((w) => w.kind === 'trim') : [];
  const reads = list.filter((r) => r.kind === 'read' && r.outcome === 'ok');
  const finals = reads.filter((r) => r.final === true);
  stats.final_reads += finals.length;
  const checked = o.final === 'register' ? reads : reads.filter((r) => r.final !== true);

  // A value that was read was written: its write took effect whatever its answer said.
  for (const r of reads) for (const v of r.value === TORN ? (r.pieces ?? []) : [r.value]) if (v > 0) {
    const w = byValue.get(v);
    if (w !== undefined) w.effective = true;
  }
  // Effective writes by invoke, with the smallest complete of each suffix: "some effective
  // write began after c ended and ended before `at`" is one binary search.
  const eff = writers.filter((w) => w.effective).sort((a, b) => a.invoke - b.invoke);
  const { sufMin, firstAfter } = byInvokeIndex(eff);
  /** Whether an effective write surely replaced `c` before time `at`. */
  const overwritten = (c: W, at: number): boolean => (sufMin[firstAfter(c.complete)] as number) < at;
  /** The latest such write (for messages). */
  const overwrittenBy = (c: W, at: number): W | null => {
    let best: W | null = null;
    for (const w of eff) if (w !== c && c.complete < w.invoke && w.complete < at && (best === null || w.complete > best.complete)) best = w;
    return best;
  };
  const possible = (c: W, r: Op): boolean => c.invoke <= r.complete && !overwritten(c, r.invoke);
  const candidates = (value: number): W[] => (value === 0 ? zeroes : byValue.has(value) ? [byValue.get(value) as W] : []);
  const report = (kind: ViolationKind, message: string, ops: (Op | null)[]): void => {
    out.push({ kind, block, message: `block ${block}: ${message}`, ops: ops.filter((x): x is Op => x !== null) });
  };

  // ---- each read on its own
  const observed: { r: Op; w: W }[] = [];
  const validity = (r: Op): void => {
    if (r.value === GARBAGE) return report('garbage', `${describeOp(r)} returned bytes no write put there`, [r]);
    if (candidates(r.value).length === 0) report('phantom', `${describeOp(r)} returned value ${r.value}, which no write put into this block`, [r]);
  };
  /** Each piece of a torn read is a read of its own bytes (not used for the order checks). */
  const tornRead = (r: Op): void => {
    stats.reads_torn++;
    for (const v of new Set(r.pieces ?? [])) {
      const cands = candidates(v);
      if (cands.length === 0) {
        report('phantom', `${describeOp(r)} holds bytes of value ${v}, which no write put into this block`, [r]);
        return;
      }
      const started = cands.filter((c) => c.invoke <= r.complete);
      if (started.length === 0) {
        const c = cands[0] as W;
        report('future_read', `${describeOp(r)} holds bytes of ${describeW(c)}, which began after the read ended`, [r, c.op]);
        return;
      }
      if (!started.some((c) => possible(c, r))) {
        const c = started.reduce((a, b) => (b.complete > a.complete ? b : a));
        const by = overwrittenBy(c, r.invoke) as W;
        report('stale_read', `${describeOp(r)} holds bytes of ${describeW(c)}, overwritten by ${describeW(by)} before the read began`, [r, c.op, by.op]);
        return;
      }
    }
  };
  for (const r of checked) {
    // After a trim the spec allows any content until the next write.
    if (trims.some((tr) => possible(tr, r))) {
      stats.reads_excused++;
      continue;
    }
    stats.reads_checked++;
    if (r.value === TORN) {
      tornRead(r);
      continue;
    }
    if (r.value === GARBAGE || candidates(r.value).length === 0) {
      validity(r);
      continue;
    }
    const cands = candidates(r.value);
    const started = cands.filter((c) => c.invoke <= r.complete);
    if (started.length === 0) {
      const c = cands[0] as W;
      report('future_read', `${describeOp(r)} returned the value of ${describeW(c)}, which began after the read ended`, [r, c.op]);
      continue;
    }
    if (!started.some((c) => possible(c, r))) {
      const c = started.reduce((a, b) => (b.complete > a.complete ? b : a));
      const by = overwrittenBy(c, r.invoke) as W;
      report('stale_read', `${describeOp(r)} returned the value of ${describeW(c)}, overwritten by ${describeW(by)} before the read began`, [r, c.op, by.op]);
      continue;
    }
    if (cands.length === 1) observed.push({ r, w: cands[0] as W });
  }
  if (o.final === 'durable') {
    for (const r of finals) {
      if (r.value === TORN) tornRead(r);
      else validity(r);
    }
  }

  // ---- the orders reads reveal, against each other and real time
  if (out.length === before) {
    const cycle = orderCycle(writers.filter((w) => w.effective), observed);
    if (cycle !== null) {
      report('order_cycle', `the order of writes the reads imply is impossible: ${cycle.map((s) => `${describeW(s.w)} before ${s.why}`).join('; ')}`, cycle.flatMap((s) => [s.w.op, s.because]));
    }
  }

  // ---- durability: the final read-back keeps every acknowledged durable write
  // A torn final read: every piece must hold the durable write or a newer one.
  const finalPieces = finals.flatMap((f) => (f.value === TORN ? [...new Set(f.pieces ?? [])] : [f.value]).map((value) => ({ f, value })));
  for (const { f, value } of finalPieces) {
    if (value === GARBAGE) continue;
    const cands = candidates(value);
    if (cands.length === 0) continue;
    for (const w of writers) {
      if (w.op === null || w.kind === 'trim' || w.op.outcome !== 'ok') continue;
      const durable = w.op.fua || flushedAfter(w.op);
      if (!durable) continue;
      stats.durable_writes++;
      if (trims.some((tr) => !(tr.complete < w.invoke))) continue;
      if (cands.every((c) => c !== w && c.complete < w.invoke)) {
        const c = cands.reduce((a, b) => (b.complete > a.complete ? b : a));
        report('lost_write', `${describeW(w)} was acknowledged durable (${w.op.fua ? 'FUA' : 'flushed'}), but ${describeOp(f)} returns the older value of ${describeW(c)}`, [w.op, f, c.op]);
      }
    }
  }
}

interface Step {
  w: W;
  /** Why the next write in the cycle must come after this one. */
  why: string;
  because: Op | null;
}

/** Why one write must take effect before another (built into words only for a reported cycle). */
interface Edge {
  kind: 'real_time' | 'read_after' | 'read_before' | 'two_reads';
  r: Op | null;
  r2: Op | null;
}

function explain(e: Edge, next: W): string {
  switch (e.kind) {
    case 'real_time':
      return `${describeW(next)} (it ended before that began)`;
    case 'read_after':
      return `${describeW(next)} (${describeOp(e.r)} saw that after this ended)`;
    case 'read_before':
      return `${describeW(next)} (${describeOp(e.r)} saw this before that began)`;
    case 'two_reads':
      return `${describeW(next)} (${describeOp(e.r)} saw this and ended before ${describeOp(e.r2)}, which saw that, began)`;
  }
}

/**
 * Builds "must take effect before" edges between writes and looks for a cycle:
 *   real time        a ended before b began
 *   a read of b      a ended before the read began (so b came after a), or
 *                    a began after the read ended (so b came before a)
 *   two reads        a read of a ended before a read of b began
 */
function orderCycle(nodes: W[], observed: { r: Op; w: W }[]): Step[] | null {
  const idx = new Map<W, number>(nodes.map((w, i) => [w, i]));
  const edges: Map<number, Edge>[] = nodes.map(() => new Map<number, Edge>());
  const add = (a: W, b: W, kind: Edge['kind'], r: Op | null = null, r2: Op | null = null): void => {
    const ia = idx.get(a);
    const ib = idx.get(b);
    if (ia === undefined || ib === undefined || ia === ib) return;
    const m = edges[ia] as Map<number, Edge>;
    if (!m.has(ib)) m.set(ib, { kind, r, r2 });
  };
  // Only edges not implied by others are added (real time is an interval order: of the
  // writes that began after `a` ended, those that began before the first of them ended
  // reach every other through real-time edges). Keeps the graph near linear in size.
  const byInvoke = [...nodes].sort((x, y) => x.invoke - y.invoke);
  const { sufMin, firstAfter } = byInvokeIndex(byInvoke);
  /** Calls fn for the minimal writes among those that began after time x. */
  const minimalAfter = (x: number, fn: (b: W) => void): void => {
    const i0 = firstAfter(x);
    const m = sufMin[i0] as number;
    for (let i = i0; i < byInvoke.length && (byInvoke[i] as W).invoke <= m; i++) fn(byInvoke[i] as W);
  };
  const byComplete = [...nodes].sort((x, y) => x.complete - y.complete);
  const preMaxInvoke = new Float64Array(byComplete.length + 1).fill(-Infinity);
  for (let i = 0; i < byComplete.length; i++) preMaxInvoke[i + 1] = Math.max(preMaxInvoke[i] as number, (byComplete[i] as W).invoke);
  /** Calls fn for the maximal writes among those that ended before time x. */
  const maximalBefore = (x: number, fn: (a: W) => void): void => {
    let lo = 0;
    let hi = byComplete.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((byComplete[mid] as W).complete < x) lo = mid + 1;
      else hi = mid;
    }
    const m = preMaxInvoke[lo] as number;
    for (let i = lo - 1; i >= 0 && (byComplete[i] as W).complete >= m; i--) fn(byComplete[i] as W);
  };
  for (const a of nodes) minimalAfter(a.complete, (b) => add(a, b, 'real_time'));
  for (const { r, w } of observed) {
    maximalBefore(r.invoke, (a) => {
      if (a !== w) add(a, w, 'read_after', r);
    });
    minimalAfter(r.complete, (a) => {
      if (a !== w) add(w, a, 'read_before', r);
    });
  }
  // Two reads: of the reads that ended before y began, the maximal ones (in real time) suffice.
  const obs = [...observed].sort((x, y) => x.r.complete - y.r.complete);
  const obsMaxInvoke = new Float64Array(obs.length + 1).fill(-Infinity);
  for (let i = 0; i < obs.length; i++) obsMaxInvoke[i + 1] = Math.max(obsMaxInvoke[i] as number, (obs[i] as { r: Op }).r.invoke);
  for (const y of obs) {
    let lo = 0;
    let hi = obs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((obs[mid] as { r: Op }).r.complete < y.r.invoke) lo = mid + 1;
      else hi = mid;
    }
    const m = obsMaxInvoke[lo] as number;
    for (let i = lo - 1; i >= 0; i--) {
      const x = obs[i] as { r: Op; w: W };
      if (x.r.complete < m) break;
      if (x.w !== y.w) add(x.w, y.w, 'two_reads', x.r, y.r);
    }
  }
  // Iterative DFS: 0 unseen, 1 on the stack, 2 done.
  const color = new Uint8Array(nodes.length);
  const parent = new Int32Array(nodes.length).fill(-1);
  for (let s = 0; s < nodes.length; s++) {
    if (color[s] !== 0) continue;
    const stack: { n: number; it: Iterator<number> }[] = [{ n: s, it: (edges[s] as Map<number, Edge>).keys() }];
    color[s] = 1;
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as { n: number; it: Iterator<number> };
      const nx = top.it.next();
      if (nx.done === true) {
        color[top.n] = 2;
        stack.pop();
        continue;
      }
      const m = nx.value;
      if (color[m] === 0) {
        color[m] = 1;
        parent[m] = top.n;
        stack.push({ n: m, it: (edges[m] as Map<number, Edge>).keys() });
      } else if (color[m] === 1) {
        // A cycle m -> ... -> top.n -> m.
        const path: number[] = [];
        for (let k = top.n; k !== m && k >= 0; k = parent[k] as number) path.push(k);
        path.push(m);
        path.reverse();
        return path.map((k, i) => {
          const next = path[(i + 1) % path.length] as number;
          const e = (edges[k] as Map<number, Edge>).get(next) as Edge;
          return { w: nodes[k] as W, why: explain(e, nodes[next] as W), because: e.r2 ?? e.r };
        });
      }
    }
  }
  return null;
}
