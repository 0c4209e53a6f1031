// An in-memory network for the simulator: byte streams between named hosts, delivered on
// simulated time with per-link latency, and the faults the transport must survive: links
// cut (both ends see a reset), partitions both ways or one way (bytes wait, connects time
// out), a bandwidth limit per direction of a host pair (bytes queue behind each other), a
// host that stops reading its sockets (what it is sent piles up; the writers see their
// pending bytes grow), refused connections. Every host gets its own `Net` view, so a
// connection knows both its ends.

import type { Address, Listener, Net, NetStream, StreamHandlers } from '../transport/net.js';
import type { SimClock } from './sim-clock.js';
import type { SeededRandom } from '../util/seeded-random.js';

type NetError = Error & { code?: string };
function netError(code: string, msg: string): NetError {
  const e: NetError = new Error(msg);
  e.code = code;
  return e;
}

export interface MemNetOptions {
  /** One-way delay of every byte. */
  latency_ms: number;
  /** Uniform extra delay in [0, jitter_ms) per write (order is kept). */
  jitter_ms: number;
}

/** Directed: bytes from `a` to `b`. */
const dirKey = (a: string, b: string): string => `${a}>${b}`;

/** Pending bytes above which a stream's write() returns false (then onDrain follows). */
export const MEM_STREAM_HIGH_WATER = 1 << 20;

export class MemNetwork {
  readonly clock: SimClock;
  readonly random: SeededRandom;
  readonly opts: MemNetOptions;
  private readonly listeners = new Map<string, MemListener>();
  /** Directed pairs whose bytes are held (a two-way partition holds both directions). */
  private readonly partitions = new Set<string>();
  /** Bytes per ms allowed from a to b, and when that direction is free again. */
  private readonly bandwidth = new Map<string, { bytes_per_ms: number; free_at: number }>();
  /** Hosts that stopped reading their sockets. */
  private readonly stalled = new Set<string>();
  readonly streams = new Set<MemStream>();
  private next_port = 40000;
  /**
   * How often a fault met traffic, per key: `held a>b` (bytes or a connect held by a
   * partition), `slowed a>b` (bytes sent under a bandwidth limit), `unread h` (bytes waiting
   * for a host that stopped reading). The simulator counts a fault as exercised only if its
   * counter moved while it was on.
   */
  private readonly touched = new Map<string, number>();

  constructor(clock: SimClock, random: SeededRandom, opts: Partial<MemNetOptions> = {}) {
    this.clock = clock;
    this.random = random;
    this.opts = { latency_ms: opts.latency_ms ?? 0.05, jitter_ms: opts.jitter_ms ?? 0 };
  }

  /** The Net a process on `host` uses. */
  host(host: string): Net {
    return new MemNet(this, host);
  }

  delay(): number {
    return this.opts.latency_ms + (this.opts.jitter_ms > 0 ? this.random.float() * this.opts.jitter_ms : 0);
  }

  touch(key: string): void {
    this.touched.set(key, (this.touched.get(key) ?? 0) + 1);
  }

  touches(key: string): number {
    return this.touched.get(key) ?? 0;
  }

  /** Whether bytes from `a` to `b` are held. */
  isBlocked(a: string, b: string): boolean {
    return this.partitions.has(dirKey(a, b));
  }

  partitionedKey(key: string): boolean {
    return this.partitions.has(key);
  }

  /** Either direction held: a connect cannot complete its handshake. */
  isPartitioned(a: string, b: string): boolean {
    return this.isBlocked(a, b) || this.isBlocked(b, a);
  }

  /** Starts or heals a two-way partition between two hosts. Healing releases held bytes. */
  partition(a: string, b: string, on: boolean): void {
    this.partitionOneWay(a, b, on);
    this.partitionOneWay(b, a, on);
  }

  /** Starts or heals a one-way partition: bytes from `from` to `to` are held, the others flow. */
  partitionOneWay(from: string, to: string, on: boolean): void {
    if (on) this.partitions.add(dirKey(from, to));
    else if (this.partitions.delete(dirKey(from, to))) {
      for (const s of this.streams) if (s.local_host === from && s.remote_host === to) s.flushHeld();
    }
  }

  /** Limits bytes from `a` to `b` (0 or less: no limit). Bytes already on the way keep their time. */
  limitBandwidth(a: string, b: string, bytes_per_s: number): void {
    if (bytes_per_s <= 0) this.bandwidth.delete(dirKey(a, b));
    else this.bandwidth.set(dirKey(a, b), { bytes_per_ms: bytes_per_s / 1000, free_at: this.clock.now() });
  }

  /**
   * When `bytes` sent now from `a` to `b` have left the sender (a limited direction sends
   * one write after the other at its rate).
   */
  departure(a: string, b: string, bytes: number): number {
    const now = this.clock.now();
    const bw = this.bandwidth.get(dirKey(a, b));
    if (bw === undefined) return now;
    this.touch(`slowed ${dirKey(a, b)}`);
    const start = Math.max(now, bw.free_at);
    bw.free_at = start + bytes / bw.bytes_per_ms;
    return bw.free_at;
  }

  /** A host stops (or resumes) reading its sockets: bytes sent to it pile up unread. */
  stopReading(host: string, on: boolean): void {
    if (on) this.stalled.add(host);
    else if (this.stalled.delete(host)) for (const s of this.streams) if (s.local_host === host) s.resumeDelivery();
  }

  isStalled(host: string): boolean {
    return this.stalled.has(host);
  }

  /** Resets every connection between two hosts (or touching `a` when `b` is omitted). */
  cut(a: string, b?: string): number {
    let n = 0;
    for (const s of [...this.streams]) {
      const touches = b === undefined ? s.local_host === a || s.remote_host === a : s.local_host === a && s.remote_host === b;
      if (touches) {
        s.reset();
        n++;
      }
    }
    return n;
  }

  /** The host crashed: every stream touching it is reset and its listeners are gone. */
  crashHost(host: string): number {
    for (const key of [...this.listeners.keys()]) if (key.startsWith(`${host}:`)) this.listeners.delete(key);
    return this.cut(host);
  }

  register(host: string, port: number, l: MemListener): number {
    const p = port === 0 ? this.next_port++ : port;
    const key = `${host}:${p}`;
    if (this.listeners.has(key)) throw netError('EADDRINUSE', `${key} already listening`);
    this.listeners.set(key, l);
    return p;
  }

  unregister(host: string, port: number): void {
    this.listeners.delete(`${host}:${port}`);
  }

  listenerAt(host: string, port: number): MemListener | undefined {
    return this.listeners.get(`${host}:${port}`);
  }
}

class MemListener implements Listener {
  readonly address: { host: string; port: number };
  readonly onConnection: (s: NetStream) => void;
  private readonly net: MemNetwork;
  constructor(net: MemNetwork, host: string, port: number, onConnection: (s: NetStream) => void) {
    this.net = net;
    this.onConnection = onConnection;
    this.address = { host, port: net.register(host, port, this) };
  }
  close(): Promise<void> {
    this.net.unregister(this.address.host, this.address.port);
    return Promise.resolve();
  }
}

class MemNet implements Net {
  private readonly w: MemNetwork;
  private readonly host_name: string;
  private next_local_port = 50000;
  constructor(w: MemNetwork, host: string) {
    this.w = w;
    this.host_name = host;
  }

  connect(addr: Address, timeout_ms: number, cb: (err: Error | null, stream: NetStream | null) => void): void {
    const w = this.w;
    const from = this.host_name;
    if (w.isPartitioned(from, addr.host)) {
      for (const k of [dirKey(from, addr.host), dirKey(addr.host, from)]) if (w.partitionedKey(k)) w.touch(`held ${k}`);
      w.clock.setTimer(timeout_ms, () => cb(netError('ETIMEDOUT', `connect to ${addr.host}:${addr.port} timed out`), null));
      return;
    }
    w.clock.setTimer(2 * w.delay(), () => {
      const l = w.listenerAt(addr.host, addr.port);
      if (l === undefined || w.isPartitioned(from, addr.host)) {
        cb(netError('ECONNREFUSED', `connect ECONNREFUSED ${addr.host}:${addr.port}`), null);
        return;
      }
      const local_port = this.next_local_port++;
      const c = new MemStream(w, from, local_port, addr.host, addr.port);
      const s = new MemStream(w, addr.host, addr.port, from, local_port);
      c.peer = s;
      s.peer = c;
      l.onConnection(s);
      cb(null, c);
    });
  }

  listen(addr: Address, onConnection: (stream: NetStream) => void): Promise<Listener> {
    try {
      return Promise.resolve(new MemListener(this.w, addr.host, addr.port, onConnection));
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }
}

export class MemStream implements NetStream {
  readonly remote: string;
  readonly local: string;
  readonly local_host: string;
  readonly remote_host: string;
  peer: MemStream | null = null;
  private readonly w: MemNetwork;
  private handlers: StreamHandlers | null = null;
  private closed = false;
  private close_reported = false;
  private close_err: Error | null = null;
  private ending = false;
  private reading = true;
  /** write() returned false: onDrain is owed. */
  private want_drain = false;
  /** Received bytes not yet handed over (before attach or while paused). */
  private inbox: Buffer[] = [];
  /** Bytes this side sent that the peer has not been handed yet. */
  private in_flight = 0;
  /** Bytes sent while partitioned, released when the partition heals. */
  private held: Buffer[] = [];
  private last_delivery_at = 0;

  constructor(w: MemNetwork, local_host: string, local_port: number, remote_host: string, remote_port: number) {
    this.w = w;
    this.local_host = local_host;
    this.remote_host = remote_host;
    this.local = `${local_host}:${local_port}`;
    this.remote = `${remote_host}:${remote_port}`;
    w.streams.add(this);
  }

  attach(handlers: StreamHandlers): void {
    if (this.handlers !== null) throw new Error('NetStream.attach called twice');
    this.handlers = handlers;
    this.w.clock.setTimer(0, () => this.drainInbox());
    if (this.closed) this.reportClose();
  }

  write(chunks: readonly Buffer[]): boolean {
    if (this.closed || this.ending) return true;
    // The Net contract: the caller does not modify the buffers afterwards, so they travel
    // as they are (no copy), one delivery each, in order.
    for (const c of chunks) if (c.length > 0) this.send(c);
    if (this.pendingWriteBytes <= MEM_STREAM_HIGH_WATER) return true;
    this.want_drain = true;
    return false;
  }

  private send(data: Buffer): void {
    if (this.w.isBlocked(this.local_host, this.remote_host)) {
      this.w.touch(`held ${dirKey(this.local_host, this.remote_host)}`);
      this.held.push(data);
      this.in_flight += data.length;
      return;
    }
    this.in_flight += data.length;
    const gone = this.w.departure(this.local_host, this.remote_host, data.length);
    const at = Math.max(gone + this.w.delay(), this.last_delivery_at);
    this.last_delivery_at = at;
    this.w.clock.setTimer(at - this.w.clock.now(), () => {
      this.in_flight -= data.length;
      if (this.closed) return;
      this.peer?.receive(data);
      this.maybeDrain();
    });
  }

  /** The writer was told to wait (write() returned false) and the backlog is small again. */
  maybeDrain(): void {
    if (!this.want_drain || this.closed || this.pendingWriteBytes > MEM_STREAM_HIGH_WATER / 2) return;
    this.want_drain = false;
    const h = this.handlers;
    if (h !== null) this.w.clock.setTimer(0, () => h.onDrain());
  }

  /** Partition healed: what was held goes out now, in order. */
  flushHeld(): void {
    const h = this.held;
    this.held = [];
    for (const d of h) {
      this.in_flight -= d.length;
      this.send(d);
    }
  }

  private receive(data: Buffer): void {
    if (this.closed) return;
    this.inbox.push(data);
    this.drainInbox();
  }

  private drainInbox(): void {
    let took = false;
    while (this.handlers !== null && this.reading && !this.closed && this.inbox.length > 0 && !this.w.isStalled(this.local_host)) {
      this.handlers.onData(this.inbox.shift() as Buffer);
      took = true;
    }
    if (took) this.peer?.maybeDrain();
    if (this.inbox.length > 0 && this.w.isStalled(this.local_host)) this.w.touch(`unread ${this.local_host}`);
  }

  /** The host reads its sockets again. */
  resumeDelivery(): void {
    this.w.clock.setTimer(0, () => this.drainInbox());
  }

  get pendingWriteBytes(): number {
    return this.closed ? 0 : this.in_flight + (this.peer?.bufferedIn ?? 0);
  }

  /** Bytes received but not consumed (the peer stopped reading). */
  get bufferedIn(): number {
    let n = 0;
    for (const b of this.inbox) n += b.length;
    return n;
  }

  pauseReading(): void {
    this.reading = false;
  }

  resumeReading(): void {
    this.reading = true;
    this.w.clock.setTimer(0, () => this.drainInbox());
  }

  end(linger_ms: number): void {
    if (this.closed || this.ending) return;
    this.ending = true;
    // The FIN travels behind the data; a peer that cannot take it is cut after linger_ms.
    const at = Math.max(this.w.clock.now() + this.w.delay(), this.last_delivery_at);
    this.w.clock.setTimer(Math.min(at - this.w.clock.now(), linger_ms), () => {
      const peer = this.peer;
      this.finish(null);
      peer?.finish(null);
    });
  }

  destroy(err?: Error): void {
    if (this.closed) return;
    const peer = this.peer;
    this.finish(err ?? null);
    // The peer learns of it one latency later, as a reset.
    if (peer !== null) this.w.clock.setTimer(this.w.delay(), () => peer.finish(netError('ECONNRESET', 'read ECONNRESET')));
  }

  /** Both ends reset at once (a cut link). */
  reset(): void {
    const peer = this.peer;
    this.finish(netError('ECONNRESET', 'read ECONNRESET'));
    peer?.finish(netError('ECONNRESET', 'read ECONNRESET'));
  }

  private finish(err: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.close_err = err;
    this.inbox = [];
    this.held = [];
    this.w.streams.delete(this);
    this.reportClose();
  }

  private reportClose(): void {
    this.w.clock.setTimer(0, () => {
      if (this.close_reported || this.handlers === null) return;
      this.close_reported = true;
      this.handlers.onClose(this.close_err);
    });
  }
}
