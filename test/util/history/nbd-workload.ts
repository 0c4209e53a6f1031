// A Jepsen-style NBD client: several connections keep a bounded number of operations each in
// flight (writes of unique values, FUA writes, reads, flushes, trims, write-zeroes) on a small
// set of blocks, and record every operation's invoke and complete time and outcome. Faults
// are expected: a connection that fails or goes silent marks its operations in flight
// unknown, then reconnects. Afterwards every block is read back (retrying until a deadline),
// and checkHistory() judges the whole history.
//
//   const h = await runWorkload({ target: { host, port }, export_name: 'mem', seed: 1, duration_ms: 2000 });
//   const r = checkHistory(h.ops, { multi_conn: h.multi_conn, trim: 'undefined', final: 'register' });

import { Cmd, CmdFlag, TFlag } from '../../../src/nbd/proto.js';
import { SimRandom } from '../../../src/sim/sim-random.js';
import { WireClient, type Reply } from '../nbd-wire-client.js';
import type { SocketStream} from '../socket-stream.js';
import { connectStream, type ClientTls, type SocketTarget } from '../socket-stream.js';
import { decodeBlock, encodeBlock, type Op, type OpKind } from './model.js';

export type Mix = Record<'write' | 'fua' | 'read' | 'flush' | 'trim' | 'zero', number>;

export interface WorkloadOptions {
  /** Where the workload connects (e.g. through a fault proxy); a function may vary it. */
  target: SocketTarget | (() => SocketTarget);
  /** Where the read-back connects (default: target). */
  final_target?: SocketTarget;
  export_name: string;
  /** NBD over TLS: STARTTLS first, then this client TLS (certificates or PSK). */
  tls?: ClientTls;
  seed: number;
  duration_ms: number;
  /** Stop issuing after this many operations in all (default: unbounded). */
  max_ops?: number;
  /**
   * Keep issuing past duration_ms until this many operations completed, so that a loaded
   * machine gives the checker as much history as a quiet one (bounded by 60 s).
   */
  min_ops?: number;
  connections?: number;
  /** Operations in flight per connection. */
  depth?: number;
  blocks?: number;
  block_size?: number;
  /** Byte offset of block 0 in the export. */
  base_offset?: number;
  mix?: Partial<Mix>;
  /** No answer within this long: the connection counts as failed. */
  op_timeout_ms?: number;
  reconnect_delay_ms?: number;
  /** The read-back keeps retrying until this long after the workload ended. */
  final_deadline_ms?: number;
  /** Called after each completed op (e.g. to inject a fault after N ops). */
  onOp?: (op: Op, ops_done: number) => void;
  /** Runs between the workload and the read-back (heal the faults, crash and restart, ...). */
  beforeReadBack?: () => Promise<void> | void;
}

export interface WorkloadResult {
  ops: Op[];
  /** The export's NBD_FLAG_CAN_MULTI_CONN (pass it to the checker). */
  multi_conn: boolean;
  stats: { connects: number; connection_failures: number; unknown: number; failed: number; by_kind: Record<OpKind, number>; duration_ms: number };
}

const DEFAULT_MIX: Mix = { write: 40, fua: 10, read: 35, flush: 6, trim: 3, zero: 6 };

interface Pending {
  op: Op;
}

export async function runWorkload(o: WorkloadOptions): Promise<WorkloadResult> {
  const conns = o.connections ?? 4;
  const depth = o.depth ?? 4;
  const blocks = o.blocks ?? 32;
  const bs = o.block_size ?? 4096;
  const base = o.base_offset ?? 0;
  const timeout = o.op_timeout_ms ?? 5000;
  const mix = { ...DEFAULT_MIX, ...o.mix };
  const rnd = new SimRandom(o.seed);
  const ops: Op[] = [];
  const stats: WorkloadResult['stats'] = { connects: 0, connection_failures: 0, unknown: 0, failed: 0, by_kind: { write: 0, zero: 0, trim: 0, read: 0, flush: 0 }, duration_ms: 0 };
  let next_value = 1;
  /** Values written to each block so far: what a torn read may hold pieces of. */
  const written = new Map<number, number[]>();
  let issued = 0;
  let completed = 0;
  let multi_conn = false;
  const start = performance.now();
  const end = start + o.duration_ms;
  const target = (): SocketTarget => (typeof o.target === 'function' ? o.target() : o.target);
  const hard_end = start + Math.max(o.duration_ms, 60_000);
  const more = (): boolean => {
    const now = performance.now();
    const time_left = now < end || (o.min_ops !== undefined && completed < o.min_ops && now < hard_end);
    return time_left && (o.max_ops === undefined || issued < o.max_ops);
  };

  const open = async (to: SocketTarget): Promise<{ c: WireClient; flags: number }> => {
    const stream = await connectStream(to, timeout);
    const c = new WireClient(stream);
    try {
      const tls = o.tls;
      const { size, flags } = await c.connect(o.export_name, tls === undefined ? {} : { tls: () => (stream as SocketStream).startClientTls(tls) });
      if (size < base + blocks * bs) throw new Error(`export ${o.export_name} is ${size} bytes, the workload needs ${base + blocks * bs}`);
      stats.connects++;
      return { c, flags };
    } catch (e) {
      stream.destroy();
      throw e;
    }
  };

  const pick = (flags: number): { kind: OpKind; fua: boolean } => {
    const can = (f: number): boolean => (flags & f) !== 0;
    const choices: [OpKind, boolean, number][] = [
      ['write', false, mix.write],
      ['write', true, can(TFlag.SEND_FUA) ? mix.fua : 0],
      ['read', false, mix.read],
      ['flush', false, can(TFlag.SEND_FLUSH) ? mix.flush : 0],
      ['trim', false, can(TFlag.SEND_TRIM) ? mix.trim : 0],
      ['zero', false, can(TFlag.SEND_WRITE_ZEROES) ? mix.zero : 0],
    ];
    const total = choices.reduce((n, c) => n + c[2], 0);
    let x = rnd.float() * total;
    for (const [kind, fua, w] of choices) {
      if (x < w) return { kind, fua };
      x -= w;
    }
    return { kind: 'read', fua: false };
  };

  const issue = (conn: number, c: WireClient, flags: number, pending: Map<number, Pending>): void => {
    const { kind, fua } = pick(flags);
    const block = kind === 'flush' ? -1 : rnd.int(blocks);
    const value = kind === 'write' ? next_value++ : 0;
    if (value > 0) {
      const l = written.get(block);
      if (l === undefined) written.set(block, [value]);
      else l.push(value);
    }
    const op: Op = { conn, kind, block, value, fua, invoke: 0, complete: Infinity, outcome: 'unknown' };
    const off = base + block * bs;
    const f = fua ? CmdFlag.FUA : 0;
    op.invoke = performance.now();
    let cookie: number;
    switch (kind) {
      case 'write':
        cookie = c.request(Cmd.WRITE, off, bs, { flags: f, payload: encodeBlock(block, value, bs) });
        break;
      case 'read':
        cookie = c.request(Cmd.READ, off, bs);
        break;
      case 'flush':
        cookie = c.request(Cmd.FLUSH, 0, 0);
        break;
      case 'trim':
        cookie = c.request(Cmd.TRIM, off, bs);
        break;
      case 'zero':
        cookie = c.request(Cmd.WRITE_ZEROES, off, bs);
        break;
    }
    ops.push(op);
    stats.by_kind[kind]++;
    issued++;
    pending.set(cookie, { op });
  };

  const settle = (p: Pending, r: Reply & { kind: 'simple' }): void => {
    const op = p.op;
    op.complete = performance.now();
    if (r.error !== 0) {
      op.outcome = 'fail';
      op.note = `NBD error ${r.error}`;
      stats.failed++;
    } else {
      op.outcome = 'ok';
      if (op.kind === 'read') {
        const d = decodeBlock(op.block, r.data ?? Buffer.alloc(0), written.get(op.block));
        op.value = d.value;
        if (d.note !== undefined) op.note = d.note;
        if (d.pieces !== undefined) op.pieces = d.pieces;
      }
    }
    completed++;
    o.onOp?.(op, completed);
  };

  /** The ops of a connection that failed: their outcome stays unknown. */
  const abandon = (pending: Map<number, Pending>, why: string): void => {
    for (const p of pending.values()) {
      p.op.note = why;
      stats.unknown++;
    }
    pending.clear();
  };

  const worker = async (conn: number): Promise<void> => {
    while (more()) {
      let cl: { c: WireClient; flags: number };
      try {
        cl = await open(target());
      } catch {
        stats.connection_failures++;
        await new Promise((r) => setTimeout(r, o.reconnect_delay_ms ?? 50));
        continue;
      }
      if ((cl.flags & TFlag.CAN_MULTI_CONN) !== 0) multi_conn = true;
      const pending = new Map<number, Pending>();
      try {
        for (;;) {
          while (pending.size < depth && more()) issue(conn, cl.c, cl.flags, pending);
          if (pending.size === 0) break;
          const r = await cl.c.reply(timeout);
          if (r.kind !== 'simple') throw new Error('structured reply without negotiation');
          const p = pending.get(r.cookie);
          if (p === undefined) throw new Error(`reply to unknown cookie ${r.cookie}`);
          pending.delete(r.cookie);
          settle(p, r);
        }
        cl.c.stream.end(100);
      } catch (e) {
        stats.connection_failures++;
        abandon(pending, e instanceof Error ? e.message : String(e));
        cl.c.stream.destroy();
        await new Promise((r) => setTimeout(r, o.reconnect_delay_ms ?? 50));
      }
    }
  };

  await Promise.all(Array.from({ length: conns }, (_, i) => worker(i + 1)));
  await o.beforeReadBack?.();

  // Read every block back, retrying connection failures until the deadline.
  const deadline = performance.now() + (o.final_deadline_ms ?? 30_000);
  const todo = new Set(Array.from({ length: blocks }, (_, b) => b));
  let last_error = '';
  while (todo.size > 0) {
    if (performance.now() > deadline) throw new Error(`read-back incomplete: ${todo.size} blocks unread (${last_error})`);
    let cl: { c: WireClient; flags: number };
    try {
      cl = await open(o.final_target ?? target());
    } catch (e) {
      last_error = e instanceof Error ? e.message : String(e);
      await new Promise((r) => setTimeout(r, o.reconnect_delay_ms ?? 50));
      continue;
    }
    try {
      for (const b of [...todo]) {
        const op: Op = { conn: 0, kind: 'read', block: b, value: 0, fua: false, invoke: performance.now(), complete: Infinity, outcome: 'unknown', final: true };
        const cookie = cl.c.request(Cmd.READ, base + b * bs, bs);
        const r = await cl.c.reply(timeout);
        if (r.kind !== 'simple' || r.cookie !== cookie) throw new Error('unexpected reply in read-back');
        if (r.error !== 0) {
          last_error = `NBD error ${r.error} reading block ${b}`;
          await new Promise((res) => setTimeout(res, o.reconnect_delay_ms ?? 50));
          continue;
        }
        op.complete = performance.now();
        op.outcome = 'ok';
        const d = decodeBlock(b, r.data ?? Buffer.alloc(0), written.get(b));
        op.value = d.value;
        if (d.note !== undefined) op.note = d.note;
        if (d.pieces !== undefined) op.pieces = d.pieces;
        ops.push(op);
        todo.delete(b);
      }
      cl.c.stream.end(100);
    } catch (e) {
      last_error = e instanceof Error ? e.message : String(e);
      cl.c.stream.destroy();
    }
  }
  stats.duration_ms = performance.now() - start;
  return { ops, multi_conn, stats };
}
