// A fault-injecting TCP proxy: the project's stand-in for netem (this kernel has none). Each
// connection through it is two pipes, `up` (client → target) and `down` (target → client),
// and each direction can be given, at run time:
//   latency_ms + jitter_ms   every chunk is held that long (seeded jitter, order kept)
//   rate                      bytes per second (a bandwidth cap, paced in small pieces)
//   stall                     stop forwarding, keep reading and buffering, sockets stay open
//   blackhole                 read and silently drop what arrives
//   stop_reading              stop draining the source socket: the sender's buffers fill
// and the proxy as a whole can cut every connection (RST) and refuse new ones.
//
// Control from a test: `proxy.set('up', { latency_ms: 50 })`, or the same as text,
// `proxy.command('up latency_ms=50 jitter_ms=10')`, which the CLI (fault-proxy-cli.ts) also
// reads from stdin or its control socket. Bounded: a direction buffers at most
// `max_buffer_bytes` per connection before it stops reading.

import net from 'node:net';
import { SeededRandom } from '../../src/util/seeded-random.js';

export type Direction = 'up' | 'down';

export interface DirectionFaults {
  latency_ms: number;
  jitter_ms: number;
  /** Bytes per second; 0 = unlimited. */
  rate: number;
  stall: boolean;
  blackhole: boolean;
  stop_reading: boolean;
}

export interface DirectionStats {
  /** Bytes read from the source sockets. */
  bytes_in: number;
  /** Bytes written to the destination sockets. */
  bytes_out: number;
  /** Bytes dropped by the black hole (or queued when a connection was cut). */
  bytes_dropped: number;
}

export type Endpoint = { host: string; port: number } | { path: string };

export interface FaultProxyOptions {
  target: Endpoint;
  /** Where to listen (default 127.0.0.1, a free port). */
  listen?: { host?: string; port?: number } | { path: string };
  /** Seed of the jitter draws (default 1). */
  seed?: number;
  /** Per connection and direction, bytes held (latency, stall, rate) before reading stops. */
  max_buffer_bytes?: number;
  /** Sees every chunk read from either side (recording a handshake to replay it, say). */
  tap?: (dir: Direction, conn: number, chunk: Buffer) => void;
}

const PIECE = 16 * 1024;

export function noFaults(): DirectionFaults {
  return { latency_ms: 0, jitter_ms: 0, rate: 0, stall: false, blackhole: false, stop_reading: false };
}

/**
 * When each chunk of one direction may leave: pure arithmetic, so a seed gives the same
 * schedule. Arrival + latency + jitter, never before the previous chunk (TCP keeps order).
 */
export class Shaper {
  private last_at = 0;
  private next_free = 0;
  constructor(private readonly rnd: SeededRandom) {}

  /** Earliest departure of a chunk arriving at `now`. */
  admit(now: number, f: DirectionFaults): number {
    const at = now + f.latency_ms + (f.jitter_ms > 0 ? this.rnd.float() * f.jitter_ms : 0);
    this.last_at = Math.max(this.last_at, at);
    return this.last_at;
  }

  /** With a rate cap: when `len` bytes may start leaving, given the earliest time `at`. */
  slot(at: number, f: DirectionFaults): number {
    return f.rate > 0 ? Math.max(at, this.next_free) : at;
  }

  /** Books `len` bytes sent at `now` against the rate. */
  sent(now: number, len: number, f: DirectionFaults): void {
    if (f.rate > 0) this.next_free = Math.max(now, this.next_free) + (len * 1000) / f.rate;
  }
}

interface Chunk {
  at: number;
  buf: Buffer;
}

/** One direction of one connection. */
class Pipe {
  private readonly queue: Chunk[] = [];
  private queued = 0;
  private timer: NodeJS.Timeout | null = null;
  private waiting_drain = false;
  private src_ended = false;
  done = false;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly faults: () => DirectionFaults,
    private readonly shaper: Shaper,
    private readonly stats: DirectionStats,
    private readonly max_buffer: number,
    private readonly onDone: () => void,
    tap: ((chunk: Buffer) => void) | null,
  ) {
    src.on('data', (c: Buffer) => {
      tap?.(c);
      this.onData(c);
    });
    src.on('end', () => {
      this.src_ended = true;
      this.pump();
    });
    dst.on('drain', () => {
      this.waiting_drain = false;
      this.pump();
    });
    this.refresh();
  }

  private onData(c: Buffer): void {
    const f = this.faults();
    this.stats.bytes_in += c.length;
    if (f.blackhole) {
      this.stats.bytes_dropped += c.length;
      return;
    }
    this.queue.push({ at: this.shaper.admit(performance.now(), f), buf: c });
    this.queued += c.length;
    this.refresh();
    this.pump();
  }

  /** Reading follows stop_reading and the buffer bound. */
  refresh(): void {
    if (this.done) return;
    const f = this.faults();
    if (f.stop_reading || this.queued >= this.max_buffer) this.src.pause();
    else this.src.resume();
    this.pump();
  }

  private pump(): void {
    if (this.done) return;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const f = this.faults();
    while (!this.waiting_drain && !f.stall) {
      const head = this.queue[0];
      if (head === undefined) break;
      const now = performance.now();
      const start = this.shaper.slot(head.at, f);
      if (start > now) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.pump();
        }, Math.max(1, Math.ceil(start - now)));
        return;
      }
      const n = f.rate > 0 ? Math.min(head.buf.length, PIECE, Math.max(512, Math.floor(f.rate / 50))) : head.buf.length;
      const piece = n === head.buf.length ? head.buf : head.buf.subarray(0, n);
      if (n === head.buf.length) this.queue.shift();
      else head.buf = head.buf.subarray(n);
      this.queued -= n;
      this.shaper.sent(now, n, f);
      this.stats.bytes_out += n;
      if (!this.dst.write(piece)) this.waiting_drain = true;
      if (this.queued < this.max_buffer && !f.stop_reading) this.src.resume();
    }
    if (this.queue.length === 0 && this.src_ended && !this.done) {
      this.done = true;
      this.dst.end();
      this.onDone();
    }
  }

  /** Drops what is queued (the connection is gone). */
  discard(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.stats.bytes_dropped += this.queued;
    this.queue.length = 0;
    this.queued = 0;
    this.done = true;
  }
}

class Conn {
  up!: Pipe;
  down!: Pipe;
  constructor(
    readonly client: net.Socket,
    readonly upstream: net.Socket,
  ) {}
}

function parseBool(k: string, v: string): boolean {
  if (v === '1' || v === 'y' || v === 'true') return true;
  if (v === '0' || v === 'n' || v === 'false') return false;
  throw new Error(`${k}: '${v}' is not 1 or 0`);
}

function parseNum(k: string, v: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)([KMG]?)$/i.exec(v);
  if (m === null) throw new Error(`${k}: '${v}' is not a number (K, M, G allowed)`);
  return Number(m[1]) * ({ '': 1, K: 1024, M: 1 << 20, G: 1 << 30 }[(m[2] as string).toUpperCase()] as number);
}

/** `latency_ms=50 stall=1` as a partial DirectionFaults. */
export function parseFaults(tokens: readonly string[]): Partial<DirectionFaults> {
  const out: Partial<DirectionFaults> = {};
  for (const t of tokens) {
    const eq = t.indexOf('=');
    const k = t.slice(0, eq);
    const v = t.slice(eq + 1);
    if (eq <= 0 || v === '') throw new Error(`'${t}' is not key=value`);
    switch (k) {
      case 'latency_ms':
      case 'jitter_ms':
      case 'rate':
        out[k] = parseNum(k, v);
        break;
      case 'stall':
      case 'blackhole':
      case 'stop_reading':
        out[k] = parseBool(k, v);
        break;
      default:
        throw new Error(`unknown key '${k}' (latency_ms, jitter_ms, rate, stall, blackhole, stop_reading)`);
    }
  }
  return out;
}

export class FaultProxy {
  private readonly server: net.Server;
  private readonly conns = new Set<Conn>();
  private readonly f: Record<Direction, DirectionFaults> = { up: noFaults(), down: noFaults() };
  private readonly rnd: SeededRandom;
  private readonly max_buffer: number;
  private refusing = false;
  readonly stats = {
    up: { bytes_in: 0, bytes_out: 0, bytes_dropped: 0 },
    down: { bytes_in: 0, bytes_out: 0, bytes_dropped: 0 },
    accepted: 0,
    refused: 0,
    cut: 0,
  };
  /** Listening port (TCP) once started. */
  port = 0;

  constructor(private readonly o: FaultProxyOptions) {
    this.rnd = new SeededRandom(o.seed ?? 1);
    this.max_buffer = o.max_buffer_bytes ?? 16 << 20;
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => this.accept(client));
  }

  async start(): Promise<this> {
    const l = this.o.listen ?? {};
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      if ('path' in l) this.server.listen(l.path, () => resolve());
      else this.server.listen(l.port ?? 0, l.host ?? '127.0.0.1', () => resolve());
    });
    // Once listening, an accept error (EMFILE under a connection flood) costs that one
    // connection; without a listener the second such error would end the test process.
    this.server.removeAllListeners('error');
    this.server.on('error', () => undefined);
    const a = this.server.address();
    if (a !== null && typeof a === 'object') this.port = a.port;
    return this;
  }

  /** host:port of the listener (for URIs and Address objects). */
  get address(): { host: string; port: number } {
    const a = this.server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  private accept(client: net.Socket): void {
    if (this.refusing) {
      this.stats.refused++;
      client.on('error', () => undefined);
      client.resetAndDestroy();
      return;
    }
    this.stats.accepted++;
    const id = this.stats.accepted;
    const tap = this.o.tap;
    const t = this.o.target;
    const upstream = 'path' in t ? net.connect({ path: t.path, allowHalfOpen: true }) : net.connect({ host: t.host, port: t.port, allowHalfOpen: true });
    upstream.pause();
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const c = new Conn(client, upstream);
    this.conns.add(c);
    let finished = 0;
    const maybeDone = (): void => {
      if (++finished === 2) this.drop(c, false);
    };
    c.up = new Pipe(client, upstream, () => this.f.up, new Shaper(this.rnd), this.stats.up, this.max_buffer, maybeDone, tap === undefined ? null : (b) => tap('up', id, b));
    c.down = new Pipe(upstream, client, () => this.f.down, new Shaper(this.rnd), this.stats.down, this.max_buffer, maybeDone, tap === undefined ? null : (b) => tap('down', id, b));
    // An error (or reset) on either side resets the other: the path failed.
    client.on('error', () => this.drop(c, true));
    upstream.on('error', () => this.drop(c, true));
    client.on('close', () => this.drop(c, false));
    upstream.on('close', () => this.drop(c, false));
  }

  private drop(c: Conn, reset: boolean): void {
    if (!this.conns.delete(c)) return;
    c.up.discard();
    c.down.discard();
    if (reset) {
      if (!c.client.destroyed) c.client.resetAndDestroy();
      if (!c.upstream.destroyed) c.upstream.resetAndDestroy();
    } else {
      c.client.destroy();
      c.upstream.destroy();
    }
  }

  /** Changes one direction's faults (only the fields given). */
  set(dir: Direction | 'both', f: Partial<DirectionFaults>): void {
    for (const d of dir === 'both' ? (['up', 'down'] as const) : [dir]) Object.assign(this.f[d], f);
    for (const c of this.conns) {
      c.up.refresh();
      c.down.refresh();
    }
  }

  faults(dir: Direction): Readonly<DirectionFaults> {
    return { ...this.f[dir] };
  }

  /** Both directions back to plain forwarding (stalled data flows again). */
  clear(): void {
    this.set('both', noFaults());
  }

  /** Resets every connection through the proxy (both ends see a reset). */
  cut(): number {
    const n = this.conns.size;
    for (const c of [...this.conns]) this.drop(c, true);
    this.stats.cut += n;
    return n;
  }

  /** While on, new connections are reset as soon as they arrive (existing ones go on). */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  get open(): number {
    return this.conns.size;
  }

  /**
   * A text command, as the CLI reads them: `up|down|both key=value...`, `clear`, `cut`,
   * `refuse=1|0`, `stats`. Returns a one-line JSON answer; throws on a bad command.
   */
  command(line: string): string {
    const words = line.trim().split(/\s+/).filter((w) => w !== '');
    const [head, ...rest] = words;
    if (head === undefined) throw new Error('empty command');
    if (head === 'up' || head === 'down' || head === 'both') {
      if (rest.length === 0) throw new Error(`${head}: give key=value faults`);
      this.set(head, parseFaults(rest));
    } else if (head === 'clear') this.clear();
    else if (head === 'cut') this.cut();
    else if (head.startsWith('refuse=')) this.refuse(parseBool('refuse', head.slice(7)));
    else if (head !== 'stats') throw new Error(`unknown command '${head}' (up|down|both key=value..., clear, cut, refuse=1|0, stats)`);
    return JSON.stringify(this.snapshot());
  }

  snapshot(): { open: number; refusing: boolean; faults: Record<Direction, DirectionFaults>; stats: FaultProxy['stats'] } {
    return { open: this.open, refusing: this.refusing, faults: { up: { ...this.f.up }, down: { ...this.f.down } }, stats: this.stats };
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
