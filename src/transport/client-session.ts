// Client session (the rtrs-clt equivalent): one named session to one server over 1..N paths,
// with permits bounded by the negotiated queue depth, read-type and write-type requests,
// failover of in-flight requests to a live path, and automatic reconnect with backoff.
//
// Session states and transitions (setState is the only place that changes them and the
// only place that emits link events):
//
//   from \ to      CONNECTING  CONNECTED          DISCONNECTED       CLOSED
//   CONNECTING         -       first path up      -                  open failed / close()
//                              (event CONNECTED)
//   CONNECTED          -          -               last path down     close()
//                                                 (event DISCONNECTED)
//   DISCONNECTED       -       a path up          -                  attempts exhausted /
//                              (event RECONNECTED)                   close()
//   CLOSED             -          -               -                  -
//
// Path states: IDLE -> CONNECTING -> HANDSHAKE -> UP -> (down) -> IDLE (retry timer) ...
//
// Requests: a permit (tag) is taken (waiting or not), `send` transmits on a path chosen by
// the policy. A request whose path dies is re-sent on another path with the same tag and id;
// the server executes each id at most once. A request is failed to its caller on its own
// timeout, or when the session stays without any path for `disconnect_timeout_ms` (0: as
// soon as the last path is down); a failed request is never transmitted again (a late copy
// could overwrite newer data).

import type { Clock, Logger, Random, TimerId } from '../util/ports.js';
import { nullLogger } from '../util/ports.js';
import { TransportError, type TransportErrorCode } from './errors.js';
import { FLAG_READ, FrameType, encodeFrameHead, type DecoderLimits, type FrameFields } from './frame.js';
import {
  MIN_SECRET_BYTES,
  NONCE_BYTES,
  PROTOCOL_VERSION,
  clientProof,
  decodeChallenge,
  decodeReject,
  decodeWelcome,
  encodeHello,
  proofMatches,
  serverProof,
} from './handshake.js';
import { Link, type LinkOwner } from './link.js';
import type { Address, Net, NetStream } from './net.js';
import {
  DEFAULT_HEARTBEAT,
  DEFAULT_MAX_IO_SIZE,
  LIMIT_MAX_IO_SIZE,
  MAX_PATHS,
  MIN_MAX_IO_SIZE,
  PATH_POLICIES,
  PROTOCOL_MAX_QUEUE_DEPTH,
  checkHeartbeat,
  checkInt,
  maxPendingWriteBytes,
  type PathPolicy,
} from './options.js';
import { Errno } from '../util/errno.js';

export type RequestKind = 'read' | 'write';

export type SessionState = 'CONNECTING' | 'CONNECTED' | 'DISCONNECTED' | 'CLOSED';
export type PathState = 'IDLE' | 'CONNECTING' | 'HANDSHAKE' | 'UP';

export type LinkEvent =
  | { type: 'CONNECTED' }
  | { type: 'DISCONNECTED'; reason: string }
  | { type: 'RECONNECTED' }
  | { type: 'CLOSED'; reason: string }
  | { type: 'PATH_UP'; path_index: number; remote: string }
  | { type: 'PATH_DOWN'; path_index: number; reason: string };

/**
 * Completion of a request. `err` is set when the transport failed the request (timeout,
 * disconnect, shutdown); otherwise `status` is the server's (0 or -errno) and `data` is the
 * read-type data (a view into received memory, owned by the callee from now on).
 */
export type ResponseCallback = (err: TransportError | null, status: number, data: Buffer | null) => void;

export interface ClientSessionOptions {
  /** `<client-host>@<server-host>` by convention. */
  session_name: string;
  /** One address per path (1..8). */
  addresses: Address[];
  /** Shared cluster secret (at least 16 bytes). */
  secret: Buffer;
  queue_depth?: number;
  max_io_size?: number;
  path_policy?: PathPolicy;
  heartbeat_interval_ms?: number;
  heartbeat_timeout_ms?: number;
  /** TCP connect plus handshake bound per attempt. */
  connect_timeout_ms?: number;
  /** A request not answered within this time fails with ETIMEDOUT. */
  request_timeout_ms?: number;
  /**
   * Requests wait this long for a path while the session has none, then fail ENOTCONN. 0:
   * they fail as soon as the last path is down (a caller with redundancy of its own, like an
   * RMR leg, gains nothing from waiting for this server to come back).
   */
  disconnect_timeout_ms?: number;
  /** open() fails when no path is up within this long (default: the larger of disconnect and connect timeouts). */
  open_timeout_ms?: number;
  reconnect_delay_ms?: number;
  reconnect_max_delay_ms?: number;
  /** Consecutive failed attempts while disconnected before the session closes; -1 = never. */
  max_reconnect_attempts?: number;
  /** Callers waiting for a permit beyond this many get EBUSY at once. */
  max_permit_waiters?: number;
}

export interface ClientPorts {
  net: Net;
  clock: Clock;
  random: Random;
  log?: Logger;
}

type Resolved = Required<Omit<ClientSessionOptions, 'addresses' | 'secret'>>;

function resolve(o: ClientSessionOptions): Resolved {
  const r: Resolved = {
    session_name: o.session_name,
    queue_depth: o.queue_depth ?? 128,
    max_io_size: o.max_io_size ?? DEFAULT_MAX_IO_SIZE,
    path_policy: o.path_policy ?? 'round-robin',
    heartbeat_interval_ms: o.heartbeat_interval_ms ?? DEFAULT_HEARTBEAT.heartbeat_interval_ms,
    heartbeat_timeout_ms: o.heartbeat_timeout_ms ?? DEFAULT_HEARTBEAT.heartbeat_timeout_ms,
    connect_timeout_ms: o.connect_timeout_ms ?? 5000,
    request_timeout_ms: o.request_timeout_ms ?? 30_000,
    disconnect_timeout_ms: o.disconnect_timeout_ms ?? 30_000,
    open_timeout_ms: o.open_timeout_ms ?? Math.max(o.disconnect_timeout_ms ?? 30_000, o.connect_timeout_ms ?? 5000),
    reconnect_delay_ms: o.reconnect_delay_ms ?? 200,
    reconnect_max_delay_ms: o.reconnect_max_delay_ms ?? 30_000,
    max_reconnect_attempts: o.max_reconnect_attempts ?? -1,
    max_permit_waiters: o.max_permit_waiters ?? 4096,
  };
  const name_bytes = Buffer.byteLength(r.session_name, 'utf8');
  if (name_bytes === 0 || name_bytes > 255 || /[\p{Cc}/]/u.test(r.session_name)) {
    throw new RangeError('session_name must be 1-255 bytes of printable utf-8 without "/"');
  }
  checkInt('queue_depth', r.queue_depth, 1, PROTOCOL_MAX_QUEUE_DEPTH);
  checkInt('max_io_size', r.max_io_size, MIN_MAX_IO_SIZE, LIMIT_MAX_IO_SIZE);
  if (!PATH_POLICIES.includes(r.path_policy)) throw new RangeError(`unknown path_policy ${String(r.path_policy)}`);
  checkHeartbeat(r);
  checkInt('connect_timeout_ms', r.connect_timeout_ms, 1, 3_600_000);
  checkInt('request_timeout_ms', r.request_timeout_ms, 1, 86_400_000);
  checkInt('disconnect_timeout_ms', r.disconnect_timeout_ms, 0, 86_400_000);
  checkInt('open_timeout_ms', r.open_timeout_ms, 1, 86_400_000);
  checkInt('reconnect_delay_ms', r.reconnect_delay_ms, 1, 3_600_000);
  checkInt('reconnect_max_delay_ms', r.reconnect_max_delay_ms, r.reconnect_delay_ms, 3_600_000);
  checkInt('max_reconnect_attempts', r.max_reconnect_attempts, -1, 2 ** 31);
  checkInt('max_permit_waiters', r.max_permit_waiters, 0, 1 << 20);
  return r;
}

/** A permit: the right to have one request in flight. Opaque outside this file. */
export interface Permit {
  readonly tag: number;
}

const enum SlotState {
  FREE,
  HELD, // permit taken, nothing sent
  QUEUED, // waiting for a path (never sent, or its path died)
  SENT,
}

class Slot implements Permit {
  readonly tag: number;
  state = SlotState.FREE;
  id = 0;
  flags = 0;
  user_hdr: Buffer | null = null;
  data: Buffer | null = null;
  read_len = 0;
  cb: ResponseCallback | null = null;
  path: ClientPath | null = null;
  deadline = 0;
  constructor(tag: number) {
    this.tag = tag;
  }
  clear(): void {
    this.user_hdr = null;
    this.data = null;
    this.cb = null;
    this.path = null;
  }
}

interface Waiter {
  cb: (err: TransportError | null, p: Permit | null) => void;
  deadline: number;
}

class ClientPath implements LinkOwner {
  readonly index: number;
  address: Address;
  state: PathState = 'IDLE';
  link: Link | null = null;
  retry_timer: TimerId | null = null;
  failures = 0;
  hello: Buffer | null = null;
  hello_sent_at = 0;
  /** Bumped on every attempt so callbacks of an abandoned attempt are ignored. */
  attempt = 0;
  readonly session: ClientSession;
  constructor(session: ClientSession, index: number, address: Address) {
    this.session = session;
    this.index = index;
    this.address = address;
  }
  onLinkFrame(link: Link, f: Readonly<FrameFields>, user_hdr: Buffer, data: Buffer): void {
    this.session.onPathFrame(this, link, f, data);
  }
  onLinkDown(link: Link, reason: string): void {
    this.session.onPathDown(this, link, reason);
  }
}

const HANDSHAKE_ALLOWED_1: ReadonlySet<number> = new Set([FrameType.CHALLENGE, FrameType.REJECT, FrameType.CLOSE]);
const HANDSHAKE_ALLOWED_2: ReadonlySet<number> = new Set([FrameType.WELCOME, FrameType.REJECT, FrameType.CLOSE]);
const UP_ALLOWED: ReadonlySet<number> = new Set([FrameType.RSP, FrameType.PING, FrameType.PONG, FrameType.CLOSE]);

export interface ClientSessionStats {
  requests_sent: number;
  requests_resent: number;
  responses: number;
  stale_responses: number;
  timeouts: number;
  path_failures: number;
  reconnects: number;
}

export class ClientSession {
  readonly name: string;
  private readonly o: Resolved;
  private readonly secret: Buffer;
  private readonly net: Net;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly log: Logger;
  private paths: ClientPath[];
  private up: ClientPath[] = [];
  private rr = 0;
  private _state: SessionState = 'CONNECTING';
  private listeners: ((ev: LinkEvent) => void)[] = [];
  /** Permits: allocated on the first successful handshake (queue depth is negotiated). */
  private slots: Slot[] = [];
  private free_tags: number[] = [];
  private waiters: Waiter[] = [];
  private pending: Slot[] = [];
  private next_id = 1;
  private settled = 1;
  private sweep_timer: TimerId | null = null;
  private disconnected_since = 0;
  private attempts_while_down = 0;
  /** The most recent path failure, for the reason of a failed open. */
  private last_error = 'none';
  private close_code: TransportErrorCode = 'ESHUTDOWN';
  private open_waiters: { resolve: () => void; reject: (e: TransportError) => void }[] = [];
  private open_timer: TimerId | null = null;
  private readonly incarnation: number;
  /** Negotiated limits (valid once CONNECTED at least once). */
  queue_depth = 0;
  max_io_size = 0;
  max_user_hdr = 0;
  server_instance = 0;
  readonly stats: ClientSessionStats = {
    requests_sent: 0,
    requests_resent: 0,
    responses: 0,
    stale_responses: 0,
    timeouts: 0,
    path_failures: 0,
    reconnects: 0,
  };

  constructor(options: ClientSessionOptions, ports: ClientPorts) {
    this.o = resolve(options);
    this.name = this.o.session_name;
    if (options.secret.length < MIN_SECRET_BYTES) throw new RangeError(`secret must be at least ${MIN_SECRET_BYTES} bytes`);
    this.secret = Buffer.from(options.secret);
    this.net = ports.net;
    this.clock = ports.clock;
    this.random = ports.random;
    this.log = ports.log ?? nullLogger;
    this.paths = this.makePaths(options.addresses);
    // 52 random bits: fits the u64 field as a safe integer.
    const b = this.random.bytes(8);
    this.incarnation = (b.readUInt32LE(0) & 0x1f_ffff) * 0x1_0000_0000 + b.readUInt32LE(4) + 1;
  }

  private makePaths(addresses: Address[]): ClientPath[] {
    if (addresses.length < 1 || addresses.length > MAX_PATHS) {
      throw new RangeError(`a session needs 1 to ${MAX_PATHS} path addresses, got ${addresses.length}`);
    }
    return addresses.map((a, i) => new ClientPath(this, i, a));
  }

  get state(): SessionState {
    return this._state;
  }

  /** States of the paths, for status views and tests. */
  pathStates(): { index: number; state: PathState; remote: string; rtt_ms: number; inflight: number }[] {
    return this.paths.map((p) => ({
      index: p.index,
      state: p.state,
      remote: `${p.address.host}:${p.address.port}`,
      rtt_ms: p.link?.rtt_ms ?? -1,
      inflight: p.link?.inflight ?? 0,
    }));
  }

  onLinkEvent(fn: (ev: LinkEvent) => void): () => void {
    this.listeners.push(fn);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== fn);
    };
  }

  private emit(ev: LinkEvent): void {
    for (const l of this.listeners) l(ev);
  }

  /** Connects every path; resolves on the first authenticated path. */
  open(): Promise<void> {
    if (this._state === 'CLOSED') return Promise.reject(new TransportError('ESHUTDOWN', 'session is closed'));
    if (this._state !== 'CONNECTING') return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.open_waiters.push({ resolve, reject }));
    if (this.open_timer === null && this.open_waiters.length === 1) {
      const bound = this.o.open_timeout_ms;
      this.open_timer = this.clock.setTimer(bound, () => {
        this.open_timer = null;
        if (this._state === 'CONNECTING') {
          this.shutdown('ETIMEDOUT', `no path could be established within ${bound} ms (last error: ${this.last_error})`);
        }
      });
      for (const path of this.paths) this.connectPath(path);
      this.armSweep();
    }
    return p;
  }

  // ---------------------------------------------------------------- state (gatekeeper)

  private setState(next: SessionState, reason: string): void {
    const prev = this._state;
    if (prev === next || prev === 'CLOSED') return;
    this._state = next;
    this.log.log('info', 'session state', { session: this.name, from: prev, to: next, reason });
    switch (next) {
      case 'CONNECTED':
        if (prev === 'CONNECTING') {
          if (this.open_timer !== null) this.clock.cancel(this.open_timer);
          this.open_timer = null;
          const ws = this.open_waiters;
          this.open_waiters = [];
          for (const w of ws) w.resolve();
          this.emit({ type: 'CONNECTED' });
        } else {
          this.stats.reconnects++;
          this.emit({ type: 'RECONNECTED' });
        }
        this.attempts_while_down = 0;
        break;
      case 'DISCONNECTED':
        this.disconnected_since = this.clock.now();
        this.attempts_while_down = 0;
        this.emit({ type: 'DISCONNECTED', reason });
        // Nothing waits for a path: what was in flight or queued fails now, not at the next sweep.
        if (this.o.disconnect_timeout_ms === 0) this.sweep();
        break;
      case 'CLOSED': {
        const ws = this.open_waiters;
        this.open_waiters = [];
        for (const w of ws) w.reject(new TransportError(this.close_code, reason));
        this.emit({ type: 'CLOSED', reason });
        break;
      }
      case 'CONNECTING':
        break;
    }
  }

  // ---------------------------------------------------------------- paths

  private connectPath(path: ClientPath): void {
    if (this._state === 'CLOSED' || path.state !== 'IDLE') return;
    path.state = 'CONNECTING';
    const attempt = ++path.attempt;
    this.net.connect(path.address, this.o.connect_timeout_ms, (err, stream) => {
      if (attempt !== path.attempt || this._state === 'CLOSED') {
        stream?.destroy();
        return;
      }
      if (err !== null || stream === null) {
        path.state = 'IDLE';
        this.pathAttemptFailed(path, err?.message ?? 'connect failed');
        return;
      }
      this.startHandshake(path, stream);
    });
  }

  private startHandshake(path: ClientPath, stream: NetStream): void {
    path.state = 'HANDSHAKE';
    const limits: DecoderLimits = { allowed: HANDSHAKE_ALLOWED_1, max_user_hdr: 0, max_data: 0 };
    const link = new Link(
      stream,
      this.clock,
      this.log,
      {
        heartbeat_interval_ms: this.o.heartbeat_interval_ms,
        heartbeat_timeout_ms: this.o.heartbeat_timeout_ms,
        max_pending_write_bytes: maxPendingWriteBytes(this.o.queue_depth, this.o.max_io_size, 16 * 1024),
        pause_reads_on_backpressure: false,
      },
      path,
      limits,
      `${this.name}#${path.index}`,
    );
    path.link = link;
    link.armDeadline(this.o.connect_timeout_ms, `handshake not completed within ${this.o.connect_timeout_ms} ms`);
    path.hello = encodeHello({
      version: PROTOCOL_VERSION,
      path_index: path.index,
      queue_depth: this.queue_depth || this.o.queue_depth,
      max_io_size: this.max_io_size || this.o.max_io_size,
      incarnation: this.incarnation,
      client_nonce: this.random.bytes(NONCE_BYTES),
      session_name: this.name,
    });
    path.hello_sent_at = this.clock.now();
    link.sendFrame(encodeFrameHead(FrameType.HELLO, 0, null, path.hello.length, 0, 0, 0, 0), path.hello);
  }

  /** A connection attempt or an established path failed: schedule the next attempt. */
  private pathAttemptFailed(path: ClientPath, reason: string): void {
    path.failures++;
    this.last_error = `path ${path.index}: ${reason}`;
    if (this._state === 'CLOSED') return;
    if (this.up.length === 0) {
      this.attempts_while_down++;
      const max = this.o.max_reconnect_attempts;
      if (max >= 0 && this.attempts_while_down > max * this.paths.length && this._state === 'DISCONNECTED') {
        this.shutdown('ENOTCONN', `reconnect attempts exhausted (${max} per path): ${reason}`);
        return;
      }
    }
    const base = Math.min(this.o.reconnect_max_delay_ms, this.o.reconnect_delay_ms * 2 ** Math.min(path.failures - 1, 20));
    const delay = Math.max(1, Math.round(base * (0.5 + this.random.float() / 2)));
    this.log.log('debug', 'path attempt failed', { session: this.name, path: path.index, reason, retry_ms: delay });
    path.retry_timer = this.clock.setTimer(delay, () => {
      path.retry_timer = null;
      this.connectPath(path);
    });
  }

  /** Frames of a path (handshake and data). */
  onPathFrame(path: ClientPath, link: Link, f: Readonly<FrameFields>, data: Buffer): void {
    if (path.link !== link) return;
    if (f.type === FrameType.RSP) {
      this.onResponse(path, link, f, data);
      return;
    }
    switch (f.type) {
      case FrameType.PING:
        return;
      case FrameType.CHALLENGE: {
        const c = decodeChallenge(data);
        if (!c.ok) return link.onProtocolError(c.reason);
        const hello = path.hello as Buffer;
        if (!proofMatches(serverProof(this.secret, hello, c.value.server_nonce), c.value.server_proof)) {
          this.log.log('warn', 'server failed authentication', { session: this.name, path: path.index, remote: link.stream.remote });
          return this.failHandshake(path, link, 'EAUTH', 'server failed authentication (wrong cluster secret?)');
        }
        link.sampleRtt(this.clock.now() - path.hello_sent_at);
        link.decoder.limits = { allowed: HANDSHAKE_ALLOWED_2, max_user_hdr: 0, max_data: 0 };
        const proof = clientProof(this.secret, hello, c.value.server_nonce);
        link.sendFrame(encodeFrameHead(FrameType.AUTH, 0, null, proof.length, 0, 0, 0, 0), proof);
        return;
      }
      case FrameType.WELCOME: {
        const w = decodeWelcome(data);
        if (!w.ok) return link.onProtocolError(w.reason);
        this.onWelcome(path, link, w.value.queue_depth, w.value.max_io_size, w.value.max_user_hdr, w.value.server_instance, w.value.resumed);
        return;
      }
      case FrameType.REJECT: {
        const r = decodeReject(data);
        if (!r.ok) return link.onProtocolError(r.reason);
        const code: TransportErrorCode = r.value.status === Errno.EKEYREJECTED ? 'EAUTH' : 'ECONNREFUSED';
        this.log.log('warn', 'server rejected path', { session: this.name, path: path.index, status: r.value.status, reason: r.value.reason });
        return this.failHandshake(path, link, code, `server rejected the session: ${r.value.reason}`);
      }
      default:
        link.onProtocolError(`unexpected frame type ${f.type}`);
    }
  }

  /**
   * Authentication and refusal are definitive for a session still opening: retrying with the
   * same secret cannot succeed, so open() fails at once with the reason.
   */
  private failHandshake(path: ClientPath, link: Link, code: TransportErrorCode, reason: string): void {
    if (this._state === 'CONNECTING') {
      this.shutdown(code, reason);
      return;
    }
    link.fail(`${code}: ${reason}`);
  }

  private onWelcome(path: ClientPath, link: Link, qd: number, max_io: number, max_hdr: number, instance: number, resumed: boolean): void {
    const want_qd = this.queue_depth || this.o.queue_depth;
    const want_io = this.max_io_size || this.o.max_io_size;
    if (qd < 1 || qd > want_qd || max_io < 1 || max_io > want_io || max_hdr > 1 << 16) {
      return link.onProtocolError(`server negotiated invalid limits (queue_depth ${qd}, max_io_size ${max_io})`);
    }
    if (this.queue_depth === 0) {
      this.queue_depth = qd;
      this.slots = Array.from({ length: qd }, (_, i) => new Slot(i));
      this.free_tags = [];
      for (let i = qd - 1; i >= 0; i--) this.free_tags.push(i);
    } else if (qd !== this.queue_depth) {
      // Permits are sized once; a restarted server with a smaller limit cannot honour them.
      this.log.log('error', 'server changed the queue depth; path refused', { session: this.name, was: this.queue_depth, now: qd });
      return link.fail(`server queue depth changed from ${this.queue_depth} to ${qd}`);
    }
    if (this.max_io_size !== 0 && max_io < this.max_io_size) {
      this.log.log('error', 'server lowered max_io_size; path refused', { session: this.name, was: this.max_io_size, now: max_io });
      return link.fail(`server max_io_size dropped from ${this.max_io_size} to ${max_io}`);
    }
    this.max_io_size = max_io;
    this.max_user_hdr = max_hdr;
    if (this.server_instance !== 0 && this.server_instance !== instance) {
      this.log.log('info', 'server restarted (new instance)', { session: this.name, resumed });
    }
    this.server_instance = instance;
    link.clearDeadline();
    link.decoder.limits = { allowed: UP_ALLOWED, max_user_hdr: 0, max_data: max_io };
    link.ping_aux = this.settled;
    link.startHeartbeat();
    path.state = 'UP';
    path.failures = 0;
    this.up.push(path);
    this.log.log('info', 'path up', { session: this.name, path: path.index, remote: link.stream.remote, resumed });
    this.emit({ type: 'PATH_UP', path_index: path.index, remote: link.stream.remote });
    this.setState('CONNECTED', `path ${path.index} up`);
    this.flushPending();
  }

  onPathDown(path: ClientPath, link: Link, reason: string): void {
    if (path.link !== link) return;
    this.detachPath(path, reason);
    if (this._state === 'CLOSED' || !this.paths.includes(path)) return;
    this.pathAttemptFailed(path, reason);
  }

  /** Takes a path out of service; its in-flight requests go back to the queue, oldest first. */
  private detachPath(path: ClientPath, reason: string): void {
    path.link = null;
    const was_up = path.state === 'UP';
    path.state = 'IDLE';
    if (!was_up) return;
    this.stats.path_failures++;
    this.up.splice(this.up.indexOf(path), 1);
    this.log.log('warn', 'path down', { session: this.name, path: path.index, reason });
    this.emit({ type: 'PATH_DOWN', path_index: path.index, reason });
    const moved: Slot[] = [];
    for (const s of this.slots) {
      if (s.state === SlotState.SENT && s.path === path) {
        s.state = SlotState.QUEUED;
        s.path = null;
        moved.push(s);
      }
    }
    moved.sort((a, b) => a.id - b.id);
    for (const s of moved) this.pending.push(s);
    if (this.up.length === 0) this.setState('DISCONNECTED', `last path down: ${reason}`);
    else this.flushPending();
  }

  // ---------------------------------------------------------------- permits

  /** Takes a free permit, or returns null (the no-wait mode). */
  tryGetPermit(): Permit | null {
    if (this._state === 'CLOSED') return null;
    const tag = this.free_tags.pop();
    if (tag === undefined) return null;
    const s = this.slots[tag] as Slot;
    s.state = SlotState.HELD;
    return s;
  }

  /** Takes a permit, waiting (bounded in count and by the request timeout) if none is free. */
  getPermit(cb: (err: TransportError | null, p: Permit | null) => void): void {
    const err = this.admissionError();
    if (err !== null) return cb(err, null);
    const p = this.tryGetPermit();
    if (p !== null) return cb(null, p);
    if (this.waiters.length >= this.o.max_permit_waiters) {
      return cb(new TransportError('EBUSY', `${this.waiters.length} callers already wait for a permit`), null);
    }
    this.waiters.push({ cb, deadline: this.clock.now() + this.o.request_timeout_ms });
  }

  getPermitAsync(): Promise<Permit> {
    return new Promise((resolve, reject) => this.getPermit((e, p) => (e !== null ? reject(e) : resolve(p as Permit))));
  }

  /** Returns a permit that was taken but not used for a request. */
  putPermit(p: Permit): void {
    const s = this.ownSlot(p);
    if (s.state !== SlotState.HELD) throw new Error(`putPermit: permit ${p.tag} is not held`);
    this.release(s);
  }

  private ownSlot(p: Permit): Slot {
    const s = this.slots[p.tag];
    if (s === undefined || s !== p) throw new Error('permit does not belong to this session');
    return s;
  }

  private release(s: Slot): void {
    s.state = SlotState.FREE;
    s.clear();
    const w = this.waiters.shift();
    if (w !== undefined) {
      s.state = SlotState.HELD;
      w.cb(null, s);
      return;
    }
    this.free_tags.push(s.tag);
  }

  /** Why new work is refused right now, or null. */
  private admissionError(): TransportError | null {
    if (this._state === 'CLOSED') return new TransportError('ESHUTDOWN', `session ${this.name} is closed`);
    if (this._state === 'CONNECTING' && this.queue_depth === 0) {
      return new TransportError('ENOTCONN', `session ${this.name} is not connected yet`);
    }
    if (this._state === 'DISCONNECTED' && this.clock.now() - this.disconnected_since >= this.o.disconnect_timeout_ms) {
      return new TransportError('ENOTCONN', `session ${this.name} has had no path for ${this.o.disconnect_timeout_ms} ms`);
    }
    return null;
  }

  // ---------------------------------------------------------------- requests

  /**
   * Sends a request on a held permit; the permit is released when `cb` is called.
   * read-type: the server answers with up to `read_len` bytes; `data` must be null.
   * write-type: `data` is the payload (sent as a view, not copied); `read_len` must be 0.
   * Throws TransportError(EINVAL) for arguments outside the negotiated limits.
   */
  send(p: Permit, kind: RequestKind, user_hdr: Buffer | null, data: Buffer | null, read_len: number, cb: ResponseCallback): void {
    const s = this.ownSlot(p);
    if (s.state !== SlotState.HELD) throw new Error(`send: permit ${p.tag} is not held`);
    const hl = user_hdr === null ? 0 : user_hdr.length;
    if (hl > this.max_user_hdr) {
      throw new TransportError('EINVAL', `user header ${hl} bytes > ${this.max_user_hdr}`);
    }
    if (kind === 'read') {
      if (data !== null) throw new TransportError('EINVAL', 'a read-type request carries no data');
      if (!Number.isInteger(read_len) || read_len < 0 || read_len > this.max_io_size) {
        throw new TransportError('EINVAL', `read length ${read_len} outside [0, ${this.max_io_size}]`);
      }
    } else {
      if (read_len !== 0) throw new TransportError('EINVAL', 'a write-type request reads nothing back');
      if (data !== null && data.length > this.max_io_size) {
        throw new TransportError('EINVAL', `payload ${data.length} bytes > max_io_size ${this.max_io_size}`);
      }
    }
    const err = this.admissionError();
    if (err !== null) {
      this.release(s);
      cb(err, 0, null);
      return;
    }
    s.id = this.next_id++;
    s.flags = kind === 'read' ? FLAG_READ : 0;
    s.user_hdr = user_hdr;
    s.data = data;
    s.read_len = kind === 'read' ? read_len : 0;
    s.cb = cb;
    s.deadline = this.clock.now() + this.o.request_timeout_ms;
    const path = this.pickPath();
    if (path === null) {
      s.state = SlotState.QUEUED;
      this.pending.push(s);
    } else {
      this.transmit(s, path);
    }
  }

  /** Convenience: waits for a permit, sends, resolves with status and data. */
  request(kind: RequestKind, user_hdr: Buffer | null, data: Buffer | null, read_len: number): Promise<{ status: number; data: Buffer | null }> {
    return new Promise((resolve, reject) => {
      this.getPermit((err, p) => {
        if (err !== null) return reject(err);
        try {
          this.send(p as Permit, kind, user_hdr, data, read_len, (e, status, d) => (e !== null ? reject(e) : resolve({ status, data: d })));
        } catch (e) {
          this.putPermit(p as Permit);
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    });
  }

  private pickPath(): ClientPath | null {
    const up = this.up;
    const n = up.length;
    if (n === 0) return null;
    if (n === 1) return up[0] as ClientPath;
    switch (this.o.path_policy) {
      case 'round-robin':
        this.rr = (this.rr + 1) % n;
        return up[this.rr] as ClientPath;
      case 'min-inflight': {
        let best = up[0] as ClientPath;
        for (let i = 1; i < n; i++) {
          const p = up[i] as ClientPath;
          if ((p.link as Link).inflight < (best.link as Link).inflight) best = p;
        }
        return best;
      }
      case 'min-latency': {
        let best = up[0] as ClientPath;
        for (let i = 1; i < n; i++) {
          const p = up[i] as ClientPath;
          if ((p.link as Link).rtt_ms < (best.link as Link).rtt_ms) best = p;
        }
        return best;
      }
    }
  }

  private transmit(s: Slot, path: ClientPath): void {
    const link = path.link as Link;
    s.state = SlotState.SENT;
    s.path = path;
    link.inflight++;
    this.stats.requests_sent++;
    const data = s.data;
    const head = encodeFrameHead(FrameType.REQ, s.flags, s.user_hdr, data === null ? 0 : data.length, s.tag, s.read_len, s.id, this.settled);
    link.sendFrame(head, data);
  }

  private flushPending(): void {
    while (this.pending.length > 0) {
      const path = this.pickPath();
      if (path === null) return;
      const s = this.pending.shift() as Slot;
      if (s.state !== SlotState.QUEUED) continue;
      this.stats.requests_resent++;
      this.transmit(s, path);
    }
  }

  private onResponse(path: ClientPath, link: Link, f: Readonly<FrameFields>, data: Buffer): void {
    const s = this.slots[f.tag];
    if (s === undefined) return link.onProtocolError(`response tag ${f.tag} >= queue depth ${this.queue_depth}`);
    if ((s.state !== SlotState.SENT && s.state !== SlotState.QUEUED) || s.id !== f.id) {
      // The answer to a request we already failed (timeout) or a duplicate after failover.
      this.stats.stale_responses++;
      return;
    }
    if (data.length > s.read_len) {
      return link.onProtocolError(`response of ${data.length} bytes for a ${s.read_len}-byte read`);
    }
    if (s.state === SlotState.SENT) (s.path?.link ?? link).inflight--;
    else {
      // A QUEUED slot is in `pending`; never splice(-1), which would drop another request.
      const i = this.pending.indexOf(s);
      if (i >= 0) this.pending.splice(i, 1);
    }
    this.stats.responses++;
    const cb = s.cb as ResponseCallback;
    const is_read = s.flags & FLAG_READ;
    this.release(s);
    cb(null, f.arg, is_read ? data : null);
  }

  // ---------------------------------------------------------------- timeouts

  private armSweep(): void {
    if (this.sweep_timer !== null || this._state === 'CLOSED') return;
    const every = Math.max(10, Math.min(1000, Math.floor(Math.min(this.o.request_timeout_ms, this.o.disconnect_timeout_ms || 1000) / 4)));
    this.sweep_timer = this.clock.setTimer(every, () => {
      this.sweep_timer = null;
      this.sweep();
      this.armSweep();
    });
  }

  /** Fails what has waited too long; recomputes the settled watermark. */
  private sweep(): void {
    const now = this.clock.now();
    const gave_up = this._state === 'DISCONNECTED' && now - this.disconnected_since >= this.o.disconnect_timeout_ms;
    let min_open = this.next_id;
    for (const s of this.slots) {
      if (s.state !== SlotState.SENT && s.state !== SlotState.QUEUED) continue;
      if (gave_up) {
        this.failSlot(s, new TransportError('ENOTCONN', `no path to ${this.name} for ${this.o.disconnect_timeout_ms} ms`));
      } else if (now >= s.deadline) {
        this.stats.timeouts++;
        this.failSlot(s, new TransportError('ETIMEDOUT', `no answer within ${this.o.request_timeout_ms} ms`));
      } else if (s.id < min_open) {
        min_open = s.id;
      }
    }
    this.settled = min_open;
    for (const p of this.up) (p.link as Link).ping_aux = min_open;
    while (this.waiters.length > 0) {
      const w = this.waiters[0] as Waiter;
      if (gave_up) {
        this.waiters.shift();
        w.cb(new TransportError('ENOTCONN', `no path to ${this.name} for ${this.o.disconnect_timeout_ms} ms`), null);
      } else if (now >= w.deadline) {
        this.waiters.shift();
        w.cb(new TransportError('ETIMEDOUT', `no permit within ${this.o.request_timeout_ms} ms`), null);
      } else break;
    }
  }

  private failSlot(s: Slot, err: TransportError): void {
    if (s.state === SlotState.SENT) {
      const l = s.path?.link;
      if (l) l.inflight--;
    } else {
      const i = this.pending.indexOf(s);
      if (i >= 0) this.pending.splice(i, 1);
    }
    const cb = s.cb as ResponseCallback;
    this.release(s);
    cb(err, 0, null);
  }

  // ---------------------------------------------------------------- admin

  /**
   * Drops every path and connects again at once, optionally to new addresses (the
   * reference's `reconnect path=ip:<addr>`). In-flight requests are re-sent after it.
   */
  reconnect(addresses?: Address[]): void {
    if (this._state === 'CLOSED') throw new TransportError('ESHUTDOWN', 'session is closed');
    const fresh = addresses === undefined ? null : this.makePaths(addresses);
    for (const p of this.paths) {
      p.attempt++;
      if (p.retry_timer !== null) this.clock.cancel(p.retry_timer);
      p.retry_timer = null;
      p.failures = 0;
      const l = p.link;
      if (l !== null) {
        this.detachPath(p, 'manual reconnect');
        l.close('manual reconnect');
      }
      p.state = 'IDLE';
    }
    if (fresh !== null) this.paths = fresh;
    for (const p of this.paths) this.connectPath(p);
  }

  /** Closes the session: every pending request and waiter fails with ESHUTDOWN. */
  close(reason = 'closed by owner'): void {
    this.shutdown('ESHUTDOWN', reason);
  }

  private shutdown(code: TransportErrorCode, reason: string): void {
    if (this._state === 'CLOSED') return;
    this.close_code = code;
    this.setState('CLOSED', reason);
    if (this.sweep_timer !== null) this.clock.cancel(this.sweep_timer);
    this.sweep_timer = null;
    if (this.open_timer !== null) this.clock.cancel(this.open_timer);
    this.open_timer = null;
    for (const p of this.paths) {
      p.attempt++;
      if (p.retry_timer !== null) this.clock.cancel(p.retry_timer);
      p.retry_timer = null;
      const l = p.link;
      p.link = null;
      p.state = 'IDLE';
      l?.close(reason);
    }
    this.up = [];
    const err = new TransportError(code === 'ETIMEDOUT' || code === 'ENOTCONN' ? code : 'ESHUTDOWN', reason);
    for (const s of this.slots) {
      if (s.state === SlotState.SENT || s.state === SlotState.QUEUED) {
        const cb = s.cb as ResponseCallback;
        s.state = SlotState.FREE;
        s.clear();
        cb(err, 0, null);
      }
    }
    this.pending = [];
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w.cb(err, null);
  }
}
