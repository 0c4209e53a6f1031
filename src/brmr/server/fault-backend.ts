// An error-injecting StoreBackend filter (in the spirit of nbdkit's error and delay filters):
// it sits in front of any backend and, as its FaultController says at run time, fails reads,
// writes and flushes at a seeded rate or on byte ranges, delays IO, or holds it until the
// stall is lifted. Scenario tests and operators switch it through one control file:
//
//   read_error_rate=0.1 write_error_ranges=0+4096,1M+64K delay_ms=5 stall=1 off=1
//
// `panic=<op>` is of another kind: the next IO of that kind throws an exception from a timer
// callback instead of completing, as a programming error in an IO completion would. It tests
// the daemon's fail-stop (log, record the failure in state.json, exit non-zero).
//
// `set()` changes only the keys given (`off=1` first resets everything), so `stall=1` and
// `stall=0` leave the error settings alone. Positions are the backend's absolute byte
// positions (the store header is at 0, device data at 4096). Sans-IO: time and randomness come
// from the Clock and Random ports; `seed=N` switches to a reproducible generator.

import { Errno, errnoName } from '../../util/errno.js';
import type { Clock, Random } from '../../util/ports.js';
import type { IoCallback, ReadCallback } from '../../rmr/server/io-store.js';
import { SeededRandom } from '../../util/seeded-random.js';
import type { BackendOpener, StoreBackend } from './backend.js';

export type FaultOp = 'read' | 'write' | 'flush';
const OPS: readonly FaultOp[] = ['read', 'write', 'flush'];

export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

/** What the controller currently injects. Rates are in [0, 1]; delays in milliseconds. */
export interface FaultSettings {
  error_rate: Record<FaultOp, number>;
  /** Reads / writes overlapping one of these fail (flushes have no range). */
  error_ranges: Record<'read' | 'write', ByteRange[]>;
  /** The status injected errors carry (a negative errno). */
  error: number;
  /** A failing write first reaches the disk, then reports the error (outcome unknown to the caller). */
  write_error_after: boolean;
  /** Added before each IO: `delay_ms` for all plus the per-op value, plus up to `jitter_ms`. */
  delay_ms: number;
  op_delay_ms: Record<FaultOp, number>;
  jitter_ms: number;
  /** New IO of these kinds is held until the stall is lifted. */
  stall: boolean;
  stall_ops: Set<FaultOp>;
  /** The next IO of this kind throws (once), or null. */
  panic: FaultOp | null;
}

/** What `panic=<op>` throws. */
export class FaultPanic extends Error {
  override readonly name = 'FaultPanic';
}

export interface FaultStats {
  /** IOs that went through the filter, per op. */
  ios: Record<FaultOp, number>;
  /** Errors injected, per op. */
  errors: Record<FaultOp, number>;
  /** IOs delayed. */
  delayed: number;
  /** IOs currently held by a stall, and the total ever held. */
  held: number;
  held_total: number;
}

/** A bad `set()` input: `code` is the errno name the control tree answers with. */
export class FaultSpecError extends Error {
  override readonly name = 'FaultSpecError';
  readonly code = 'EINVAL' as const;
}

const ERRNOS: Readonly<Record<string, number>> = {
  EIO: Errno.EIO,
  ENOSPC: Errno.ENOSPC,
  EROFS: Errno.EROFS,
  ENXIO: Errno.ENXIO,
  EBUSY: Errno.EBUSY,
  EAGAIN: Errno.EAGAIN,
  ETIMEDOUT: Errno.ETIMEDOUT,
};

/** One line naming every key, for the control file's help and for error messages. */
export const FAULT_USAGE =
  'off=1 seed=<n> error=EIO|ENOSPC|EROFS|ENXIO|EBUSY|EAGAIN|ETIMEDOUT ' +
  'read_error_rate=<0..1> write_error_rate=<0..1> flush_error_rate=<0..1> ' +
  'read_error_ranges=<off>+<len>[,...]|none write_error_ranges=<off>+<len>[,...]|none write_error_after=0|1 ' +
  'delay_ms=<n> read_delay_ms=<n> write_delay_ms=<n> flush_delay_ms=<n> jitter_ms=<n> ' +
  'stall=0|1 stall_ops=read,write,flush panic=read|write|flush|none';

const MAX_DELAY_MS = 600_000;
const MAX_RANGES = 64;
const MAX_INPUT = 4096;

function bad(msg: string): never {
  throw new FaultSpecError(msg);
}

function defaults(): FaultSettings {
  return {
    error_rate: { read: 0, write: 0, flush: 0 },
    error_ranges: { read: [], write: [] },
    error: Errno.EIO,
    write_error_after: false,
    delay_ms: 0,
    op_delay_ms: { read: 0, write: 0, flush: 0 },
    jitter_ms: 0,
    stall: false,
    stall_ops: new Set(OPS),
    panic: null,
  };
}

/** `4096`, `64K`, `1M`, `2G` (binary units) as a byte count. */
export function parseSize(what: string, text: string): number {
  const m = /^([0-9]{1,16})([KMGT]?)$/i.exec(text);
  if (m === null) bad(`${what}: '${text}' is not a size (bytes, or a number with K, M, G or T)`);
  const mult = { '': 1, K: 1024, M: 1 << 20, G: 1 << 30, T: 2 ** 40 }[(m[2] as string).toUpperCase()] as number;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n)) bad(`${what}: '${text}' is too large`);
  return n;
}

function formatSize(n: number): string {
  for (const [u, m] of [['T', 2 ** 40], ['G', 1 << 30], ['M', 1 << 20], ['K', 1024]] as const) if (n >= m && n % m === 0) return `${n / m}${u}`;
  return String(n);
}

function parseRanges(key: string, text: string): ByteRange[] {
  if (text === 'none') return [];
  const parts = text.split(',');
  if (parts.length > MAX_RANGES) bad(`${key}: more than ${MAX_RANGES} ranges`);
  return parts.map((p) => {
    const plus = p.indexOf('+');
    if (plus <= 0) bad(`${key}: '${p}' is not <offset>+<length> (e.g. 0+4096 or 1M+64K)`);
    const offset = parseSize(`${key} offset`, p.slice(0, plus));
    const length = parseSize(`${key} length`, p.slice(plus + 1));
    if (length === 0) bad(`${key}: '${p}' has length 0`);
    return { offset, length };
  });
}

function parseRate(key: string, text: string): number {
  if (!/^(0|1|0?\.[0-9]{1,9}|1\.0{1,9}|[0-9]{1,3}%)$/.test(text)) bad(`${key}: '${text}' is not a rate (0..1, e.g. 0.05, or a percentage such as 5%)`);
  const v = text.endsWith('%') ? Number(text.slice(0, -1)) / 100 : Number(text);
  if (!(v >= 0 && v <= 1)) bad(`${key}: '${text}' is outside 0..1`);
  return v;
}

function parseMs(key: string, text: string): number {
  if (!/^[0-9]{1,9}$/.test(text)) bad(`${key}: '${text}' is not a whole number of milliseconds`);
  const v = Number(text);
  if (v > MAX_DELAY_MS) bad(`${key}: ${v} is above the maximum ${MAX_DELAY_MS}`);
  return v;
}

function parseFlag(key: string, text: string): boolean {
  if (text === '1' || text === 'y') return true;
  if (text === '0' || text === 'n') return false;
  return bad(`${key}: '${text}' is not one of 1, 0, y, n`);
}

/** The op a per-op key names: `read_error_rate` -> read. */
function opOf(key: string): FaultOp {
  return key.slice(0, key.indexOf('_')) as FaultOp;
}

function overlaps(ranges: readonly ByteRange[], pos: number, length: number): boolean {
  const end = pos + Math.max(length, 1);
  for (const r of ranges) if (pos < r.offset + r.length && r.offset < end) return true;
  return false;
}

interface Held {
  readonly op: FaultOp;
  /** The backend the IO came through (close() fails only its own). */
  readonly owner: object | null;
  readonly go: () => void;
  readonly fail: (status: number) => void;
}

/**
 * The switch board of one store's fault injection. Shared by every backend opened through
 * it (a store reopened after a restart keeps its faults). Wiring it into the control tree:
 * `fault_injection: file({ read: () => c.describe() + '\n', write: (v) => c.set(v) })` with
 * FaultSpecError mapped to EINVAL.
 */
export class FaultController {
  private s: FaultSettings = defaults();
  private seed: number | null = null;
  private rnd: Random;
  private readonly clock: Clock;
  private readonly port_random: Random;
  private held: Held[] = [];
  /** Backends closed through failHeld(status, owner), with that status. */
  private readonly gone = new WeakMap<object, number>();
  readonly stats: FaultStats = { ios: { read: 0, write: 0, flush: 0 }, errors: { read: 0, write: 0, flush: 0 }, delayed: 0, held: 0, held_total: 0 };

  constructor(deps: { clock: Clock; random: Random }, initial = '') {
    this.clock = deps.clock;
    this.port_random = deps.random;
    this.rnd = deps.random;
    if (initial !== '') this.set(initial);
  }

  /** Applies `key=value` tokens; on any bad token nothing changes and FaultSpecError names it. */
  set(spec: string): void {
    if (spec.length > MAX_INPUT) bad(`input is ${spec.length} bytes, at most ${MAX_INPUT} are accepted`);
    const tokens = spec.trim() === '' ? [] : spec.trim().split(/[ \t\r\n]+/);
    if (tokens.length === 0) bad(`nothing to set (keys: ${FAULT_USAGE})`);
    const seen = new Set<string>();
    let next = this.copy(this.s);
    let seed = this.seed;
    let reseed = false;
    // off=1 applies first wherever it stands, so `delay_ms=5 off=1` means "only delay_ms=5".
    for (const t of tokens) {
      if (t === 'off=1' || t === 'off=y') {
        next = defaults();
        seed = null;
        reseed = true;
      }
    }
    for (const t of tokens) {
      const eq = t.indexOf('=');
      if (eq <= 0 || eq === t.length - 1) bad(`'${t}' is not a key=value token (keys: ${FAULT_USAGE})`);
      const key = t.slice(0, eq);
      const v = t.slice(eq + 1);
      if (seen.has(key)) bad(`duplicate key '${key}'`);
      seen.add(key);
      switch (key) {
        case 'off':
          if (!parseFlag(key, v)) bad("off: only off=1 means something (it clears every fault)");
          break;
        case 'seed':
          if (!/^[0-9]{1,10}$/.test(v) || Number(v) > 0xffffffff) bad(`seed: '${v}' is not an integer 0..4294967295`);
          seed = Number(v);
          reseed = true;
          break;
        case 'error': {
          const e = ERRNOS[v];
          if (e === undefined) bad(`error: '${v}' is not one of ${Object.keys(ERRNOS).join(', ')}`);
          next.error = e;
          break;
        }
        case 'read_error_rate':
        case 'write_error_rate':
        case 'flush_error_rate':
          next.error_rate[opOf(key)] = parseRate(key, v);
          break;
        case 'read_error_ranges':
        case 'write_error_ranges':
          next.error_ranges[opOf(key) as 'read' | 'write'] = parseRanges(key, v);
          break;
        case 'write_error_after':
          next.write_error_after = parseFlag(key, v);
          break;
        case 'delay_ms':
          next.delay_ms = parseMs(key, v);
          break;
        case 'read_delay_ms':
        case 'write_delay_ms':
        case 'flush_delay_ms':
          next.op_delay_ms[opOf(key)] = parseMs(key, v);
          break;
        case 'jitter_ms':
          next.jitter_ms = parseMs(key, v);
          break;
        case 'stall':
          next.stall = parseFlag(key, v);
          break;
        case 'panic':
          if (v !== 'none' && !(OPS as readonly string[]).includes(v)) bad(`panic: '${v}' is not one of read, write, flush, none`);
          next.panic = v === 'none' ? null : (v as FaultOp);
          break;
        case 'stall_ops': {
          const ops = new Set<FaultOp>();
          for (const o of v.split(',')) {
            if (!(OPS as readonly string[]).includes(o)) bad(`stall_ops: '${o}' is not one of read, write, flush`);
            ops.add(o as FaultOp);
          }
          next.stall_ops = ops;
          break;
        }
        default:
          bad(`unknown key '${key}' (keys: ${FAULT_USAGE})`);
      }
    }
    // Everything parsed: apply at once.
    this.s = next;
    if (reseed) {
      this.seed = seed;
      this.rnd = seed === null ? this.port_random : new SeededRandom(seed);
    }
    this.releaseUnstalled();
  }

  /** The active settings as `key=value` tokens that set() accepts (`off=1` when none). */
  describe(): string {
    const s = this.s;
    const out: string[] = [];
    if (this.seed !== null) out.push(`seed=${this.seed}`);
    if (s.error !== Errno.EIO) out.push(`error=${errnoName(s.error)}`);
    for (const op of OPS) if (s.error_rate[op] > 0) out.push(`${op}_error_rate=${s.error_rate[op]}`);
    for (const op of ['read', 'write'] as const) {
      if (s.error_ranges[op].length > 0) out.push(`${op}_error_ranges=${s.error_ranges[op].map((r) => `${formatSize(r.offset)}+${formatSize(r.length)}`).join(',')}`);
    }
    if (s.write_error_after) out.push('write_error_after=1');
    if (s.delay_ms > 0) out.push(`delay_ms=${s.delay_ms}`);
    for (const op of OPS) if (s.op_delay_ms[op] > 0) out.push(`${op}_delay_ms=${s.op_delay_ms[op]}`);
    if (s.jitter_ms > 0) out.push(`jitter_ms=${s.jitter_ms}`);
    if (s.stall) out.push('stall=1');
    if (s.stall_ops.size !== OPS.length) out.push(`stall_ops=${OPS.filter((o) => s.stall_ops.has(o)).join(',')}`);
    if (s.panic !== null) out.push(`panic=${s.panic}`);
    return out.length === 0 ? 'off=1' : out.join(' ');
  }

  /** Counters as `key=value` tokens (a second line of the control file). */
  describeStats(): string {
    const st = this.stats;
    return OPS.map((o) => `${o === 'flush' ? 'flushes' : `${o}s`}=${st.ios[o]} ${o}_errors=${st.errors[o]}`).join(' ') + ` delayed=${st.delayed} held=${st.held} held_total=${st.held_total}`;
  }

  get settings(): Readonly<FaultSettings> {
    return this.s;
  }

  /** IOs held by the stall right now. */
  get heldCount(): number {
    return this.held.length;
  }

  /** Lets up to `n` held IOs proceed, oldest first, without lifting the stall. */
  release(n = Infinity): number {
    const take = this.held.splice(0, Math.min(n, this.held.length));
    this.stats.held = this.held.length;
    for (const h of take) h.go();
    return take.length;
  }

  /**
   * Fails the held IOs (of one backend, or all) with `status`: the device went away. With an
   * owner, that backend is gone for good: its IO still under a delay fails with `status` too
   * when the delay ends (it was pushed onto the held list after close and waited for stall=0).
   */
  failHeld(status: number, owner: object | null = null): number {
    if (owner !== null) this.gone.set(owner, status);
    const take = owner === null ? this.held : this.held.filter((h) => h.owner === owner);
    this.held = owner === null ? [] : this.held.filter((h) => h.owner !== owner);
    this.stats.held = this.held.length;
    for (const h of take) h.fail(status);
    return take.length;
  }

  private releaseUnstalled(): void {
    if (this.held.length === 0) return;
    const keep: Held[] = [];
    const go: Held[] = [];
    for (const h of this.held) (this.s.stall && this.s.stall_ops.has(h.op) ? keep : go).push(h);
    this.held = keep;
    this.stats.held = keep.length;
    for (const h of go) h.go();
  }

  private copy(s: FaultSettings): FaultSettings {
    return {
      ...s,
      error_rate: { ...s.error_rate },
      error_ranges: { read: [...s.error_ranges.read], write: [...s.error_ranges.write] },
      op_delay_ms: { ...s.op_delay_ms },
      stall_ops: new Set(s.stall_ops),
    };
  }

  /**
   * Decides one IO: the injected error (0: none) and whether it is delayed; then runs it
   * (through `start`, after any delay and stall) or fails it. Decided when the IO arrives,
   * so a seeded run draws the same numbers in the same order.
   */
  run(op: FaultOp, pos: number, length: number, start: (inject: number) => void, fail: (status: number) => void, owner: object | null = null): void {
    const s = this.s;
    this.stats.ios[op]++;
    if (s.panic === op) {
      // The IO never completes: its completion path throws instead.
      s.panic = null;
      this.clock.setTimer(0, () => {
        throw new FaultPanic(`fault injection: panic=${op} at byte ${pos} (an exception in an IO completion)`);
      });
      return;
    }
    let inject = 0;
    if (op !== 'flush' && overlaps(s.error_ranges[op], pos, length)) inject = s.error;
    else if (s.error_rate[op] > 0 && this.rnd.float() < s.error_rate[op]) inject = s.error;
    if (inject !== 0) this.stats.errors[op]++;
    let delay = s.delay_ms + s.op_delay_ms[op];
    if (s.jitter_ms > 0) delay += this.rnd.float() * s.jitter_ms;
    const go = (): void => start(inject);
    const after_delay = (): void => {
      const gone = owner === null ? undefined : this.gone.get(owner);
      if (gone !== undefined) return fail(gone);
      if (this.s.stall && this.s.stall_ops.has(op)) {
        this.held.push({ op, owner, go, fail });
        this.stats.held = this.held.length;
        this.stats.held_total++;
      } else go();
    };
    if (delay > 0) {
      this.stats.delayed++;
      this.clock.setTimer(delay, after_delay);
    } else after_delay();
  }
}

/** `inner` behind the controller's faults. close() fails any IO still held with ENXIO. */
export class FaultBackend implements StoreBackend {
  readonly kind: StoreBackend['kind'];
  readonly path: string;
  readonly size_bytes: number;
  readonly params: StoreBackend['params'];
  readonly zeroed: boolean;
  readonly inner: StoreBackend;
  readonly faults: FaultController;

  constructor(inner: StoreBackend, faults: FaultController) {
    this.inner = inner;
    this.faults = faults;
    this.kind = inner.kind;
    this.path = inner.path;
    this.size_bytes = inner.size_bytes;
    this.params = inner.params;
    this.zeroed = inner.zeroed === true;
  }

  read(pos: number, length: number, cb: ReadCallback): void {
    this.faults.run(
      'read',
      pos,
      length,
      (inject) => (inject !== 0 ? queueMicrotask(() => cb(inject, null)) : this.inner.read(pos, length, cb)),
      (status) => cb(status, null),
      this,
    );
  }

  write(pos: number, data: Buffer, fua: boolean, cb: IoCallback): void {
    this.faults.run('write', pos, data.length, (inject) => this.writeOr(inject, (done) => this.inner.write(pos, data, fua, done), cb), cb, this);
  }

  writeZeroes(pos: number, length: number, cb: IoCallback): void {
    this.faults.run('write', pos, length, (inject) => this.writeOr(inject, (done) => this.inner.writeZeroes(pos, length, done), cb), cb, this);
  }

  flush(cb: IoCallback): void {
    this.faults.run('flush', 0, 0, (inject) => (inject !== 0 ? queueMicrotask(() => cb(inject)) : this.inner.flush(cb)), cb, this);
  }

  close(cb: () => void): void {
    this.faults.failHeld(Errno.ENXIO, this);
    this.inner.close(cb);
  }

  private writeOr(inject: number, io: (done: IoCallback) => void, cb: IoCallback): void {
    if (inject === 0) return io(cb);
    if (!this.faults.settings.write_error_after) return void queueMicrotask(() => cb(inject));
    io(() => cb(inject));
  }
}

/** An opener whose backends all go through `faults` (or through the controller `faults(path)` picks; null = none). */
export function withFaults(opener: BackendOpener, faults: FaultController | ((path: string) => FaultController | null)): BackendOpener {
  return (path, opts, cb) => {
    opener(path, opts, (status, backend, reason) => {
      const c = typeof faults === 'function' ? faults(path) : faults;
      cb(status, backend === null || c === null ? backend : new FaultBackend(backend, c), reason);
    });
  };
}
