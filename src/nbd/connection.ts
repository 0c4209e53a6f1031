// One NBD client connection over a NetStream: the handshake, then transmission, with
// bounded in-flight work and both directions of backpressure. Knows exports only as
// BlockDevices; replies may go out in any order (NBD matches them by cookie).
//
//   phase          event                               next
//   client_flags   4 bytes of known flags              options
//   client_flags   unknown flags / not fixed newstyle  closed
//   options        option handled, continue            options
//   options        STARTTLS accepted (ACK sent)        tls
//   options        bytes queued behind STARTTLS        closed (they would bypass TLS)
//   tls            handshake done                      options (negotiation starts afresh)
//   tls            handshake failed / timed out, data  closed
//   options        GO / EXPORT_NAME of an export       transmission
//   options        ABORT, bad magic, limits, timeout   closed
//   transmission   request                             transmission
//   transmission   DISC or server shutdown             draining
//   transmission   bad magic, unskippable payload      closed
//   draining       last in-flight request answered     closed
//   any            stream closed by the peer           closed (late completions dropped)

import type { NetStream, ServerTls } from '../transport/net.js';
import type { Clock, Logger, TimerId } from '../util/ports.js';
import { Errno, errnoName } from '../util/errno.js';
import type { BlockDevice, Extent } from '../util/block-device.js';
import { ByteQueue } from './byte-queue.js';
import { allAllocated, checkRequest, clampExtents } from './commands.js';
import { nbdError } from './errno-map.js';
import type { ExportTable, NbdExport } from './export-info.js';
import { type Negotiated, type TlsMode, handleOption, newNegotiated } from './handshake.js';
import {
  BASE_ALLOCATION,
  CLIENT_FLAGS_KNOWN,
  Cmd,
  CmdFlag,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  NbdErr,
  OPTION_HEADER_BYTES,
  REQUEST_BYTES,
  type OptionHeader,
  type Request,
  decodeOptionHeader,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeGreeting,
  encodeNoneChunk,
  encodeOffsetDataHead,
  encodeSimpleReply,
} from './proto.js';

/** Write payloads from this size on are collected in place as they arrive (ByteQueue.reserve). */
const DIRECT_PAYLOAD_BYTES = 64 * 1024;
/**
 * Pieces of one split request at the device at once. Bounded so one 32 MiB request of a
 * kernel client fills at most 8 of an RMR device's queue slots (queue_depth 128, 4x that
 * waiting, then EBUSY): other requests interleave, and the pieces of every request the
 * byte budgets admit together stay far below the point where the device refuses.
 */
const PIECE_WINDOW = 8;

export interface ConnectionLimits {
  /** Requests handed to the device and not yet answered; reading pauses at this bound. */
  max_inflight_requests: number;
  /** Payload bytes (read lengths + write payloads) in flight; one request is always admitted. */
  max_inflight_bytes: number;
  /** Option data above this closes the connection (never allocated). */
  max_option_bytes: number;
  /** Options per connection before the handshake must have ended. */
  max_options: number;
  /** A refused write's payload up to this size is skipped; above it the connection closes. */
  max_skip_bytes: number;
  /** Handshake must be done within this (when a clock is given). */
  handshake_timeout_ms: number;
  /** How long a closing connection may take to flush its last replies. */
  linger_ms: number;
  /** A client that takes none of our replies for this long is dropped (when a clock is given). */
  reply_stall_timeout_ms: number;
  /** Extents per context in one block-status reply. */
  max_extents: number;
  /** An attached client with nothing in flight and no request for this long is closed; 0: never (when a clock is given). */
  idle_timeout_ms: number;
}

/**
 * Request bytes in flight over many connections together (a daemon's NBD server): a
 * connection takes a new request only while the total is under the limit (the security
 * review, finding 12: 1,024 connections x 64 MiB each). What can be pinned is then at most
 * the limit, plus per connection one request being admitted and one write payload arriving.
 */
export class InflightBudget {
  used = 0;
  private readonly waiting = new Set<() => void>();
  constructor(readonly limit: number) {}

  get open(): boolean {
    return this.used < this.limit;
  }

  add(n: number): void {
    this.used += n;
  }

  sub(n: number): void {
    this.used -= n;
    if (this.waiting.size === 0 || !this.open) return;
    const wake = [...this.waiting];
    this.waiting.clear();
    for (const w of wake) w();
  }

  /** `resume` is called once when the budget opens again. */
  wait(resume: () => void): void {
    this.waiting.add(resume);
  }

  forget(resume: () => void): void {
    this.waiting.delete(resume);
  }
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  max_inflight_requests: 128,
  max_inflight_bytes: 64 * 1024 * 1024,
  max_option_bytes: 64 * 1024,
  max_options: 4096,
  max_skip_bytes: 64 * 1024 * 1024,
  handshake_timeout_ms: 30_000,
  linger_ms: 5_000,
  reply_stall_timeout_ms: 120_000,
  max_extents: 16_384,
  idle_timeout_ms: 0,
};

export interface ConnectionDeps {
  table: ExportTable;
  limits: ConnectionLimits;
  logger: Logger;
  clock: Clock | null;
  onClosed: (c: NbdConnection) => void;
  /** The handshake is done: the client is attached to an export (NbdServer's pre-auth limits end here). */
  onAttached?: (c: NbdConnection) => void;
  /** TLS policy of this connection; `tls` is needed (and the stream's startTls) unless off. */
  tls_mode: TlsMode;
  tls: ServerTls | null;
  /** Shared with the other connections of the server (absent: only this connection's limits). */
  budget?: InflightBudget | null;
}

export type Phase = 'client_flags' | 'options' | 'tls' | 'transmission' | 'draining' | 'closed';

export class NbdConnection {
  phase: Phase = 'client_flags';
  /** Requests at the device (and bytes they carry); exposed for tests and metrics. */
  inflight = 0;
  inflight_bytes = 0;
  private readonly queue = new ByteQueue();
  private neg: Negotiated = newNegotiated(false);
  private exp: NbdExport | null = null;
  private option: OptionHeader | null = null;
  private options_seen = 0;
  /** A write whose payload is still arriving, or whose refused payload is being skipped. */
  private pending: Request | null = null;
  private pending_error = 0;
  private skip_left = 0;
  private write_blocked = false;
  private read_paused = false;
  private pumping = false;
  private pump_again = false;
  private timer: TimerId | null = null;
  private stall_timer: TimerId | null = null;
  private idle_timer: TimerId | null = null;
  private last_request_ms = 0;
  private readonly budgetOpened = (): void => this.guarded(() => this.resumeIfPossible());

  constructor(
    private readonly stream: NetStream,
    private readonly deps: ConnectionDeps,
  ) {
    stream.attach({
      onData: (chunk) => this.onData(chunk),
      readTarget: () => this.queue.target(),
      onDrain: () => this.onDrain(),
      onClose: (err) => this.onClose(err),
    });
    this.send([encodeGreeting()]);
    if (deps.clock !== null) {
      this.timer = deps.clock.setTimer(deps.limits.handshake_timeout_ms, () => {
        this.timer = null;
        if (this.phase === 'client_flags' || this.phase === 'options' || this.phase === 'tls') this.fail('handshake timed out');
      });
    }
  }

  get remote(): string {
    return this.stream.remote;
  }

  get exportName(): string | null {
    return this.exp?.name ?? null;
  }

  /** TLS is up on this connection. */
  get tls(): boolean {
    return this.neg.tls;
  }

  /** Server shutdown: no new requests; answer what is in flight, then close. */
  shutdown(): void {
    if (this.phase === 'client_flags' || this.phase === 'options' || this.phase === 'tls') this.fail('server shutting down', 'info');
    else if (this.phase === 'transmission') this.startDraining();
  }

  // ---- stream events ----

  private onData(chunk: Buffer): void {
    if (this.phase === 'closed' || this.phase === 'draining') return;
    // The stream promises none; a byte here would be clear text taken for protected.
    if (this.phase === 'tls') return void this.fail('data during the TLS handshake');
    this.queue.push(chunk);
    this.guarded(() => this.pump());
  }

  private onDrain(): void {
    this.write_blocked = false;
    this.cancelStallTimer();
    this.guarded(() => this.resumeIfPossible());
  }

  /** A bug in the parser must cost this connection, not the daemon (logged as an error). */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.deps.logger.log('error', 'nbd connection failed on an internal error', { remote: this.remote, err: e instanceof Error ? e.stack ?? e.message : String(e) });
      this.fail('internal error');
    }
  }

  private onClose(err: Error | null): void {
    const was = this.phase;
    // A wrong PSK, a bad certificate or junk instead of a ClientHello ends here.
    if (was === 'tls') this.deps.logger.log('warn', 'nbd TLS handshake failed', { remote: this.remote, err: err?.message.trim() ?? 'connection closed' });
    this.phase = 'closed';
    this.queue.clear();
    this.cancelTimers();
    if (was !== 'closed' && this.inflight > 0) {
      this.deps.logger.log('info', 'nbd client went away with requests in flight', { remote: this.remote, inflight: this.inflight });
    }
    if (err !== null && was !== 'closed') this.deps.logger.log('debug', 'nbd stream error', { remote: this.remote, err: err.message });
    this.deps.onClosed(this);
  }

  // ---- the parser loop: one owner of the control flow ----

  private pump(): void {
    if (this.pumping) {
      this.pump_again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pump_again = false;
        while (this.step());
      } while (this.pump_again);
    } finally {
      this.pumping = false;
    }
  }

  /** Consumes one unit of input; false when it must wait (bytes, drain, completions). */
  private step(): boolean {
    if (this.write_blocked) {
      this.pauseReading();
      return false;
    }
    switch (this.phase) {
      case 'client_flags':
        return this.stepClientFlags();
      case 'options':
        return this.stepOption();
      case 'tls':
        return false;
      case 'transmission':
        return this.stepRequest();
      case 'draining':
        this.queue.clear();
        return false;
      case 'closed':
        return false;
    }
  }

  private stepClientFlags(): boolean {
    if (this.queue.length < 4) return false;
    const flags = this.queue.take(4).readUInt32BE(0);
    if ((flags & ~CLIENT_FLAGS_KNOWN) !== 0) return this.fail(`unknown client flags 0x${flags.toString(16)}`);
    if ((flags & FLAG_FIXED_NEWSTYLE) === 0) return this.fail('client does not speak fixed newstyle');
    this.neg = newNegotiated((flags & FLAG_NO_ZEROES) !== 0);
    this.phase = 'options';
    return true;
  }

  private stepOption(): boolean {
    if (this.option === null) {
      if (this.queue.length < OPTION_HEADER_BYTES) return false;
      const h = decodeOptionHeader(this.queue.take(OPTION_HEADER_BYTES));
      if (!h.magic_ok) return this.fail('bad option magic');
      if (++this.options_seen > this.deps.limits.max_options) return this.fail('too many options');
      if (h.length > this.deps.limits.max_option_bytes) return this.fail(`option ${h.option} length ${h.length} over the limit`);
      this.option = h;
    }
    const opt = this.option;
    if (this.queue.length < opt.length) return false;
    this.option = null;
    const out = handleOption(this.neg, this.deps.table, opt.option, this.queue.take(opt.length), this.deps.tls_mode);
    if (out.kind === 'starttls') return this.startTls(out.replies);
    if (out.replies.length > 0) this.send(out.replies);
    if (out.kind === 'close') {
      this.deps.logger.log('info', 'nbd handshake ended', { remote: this.remote, reason: out.reason });
      this.endStream();
      return false;
    }
    if (out.kind === 'transmit') {
      this.exp = out.export;
      this.phase = 'transmission';
      this.cancelHandshakeTimer();
      this.armIdle();
      this.deps.onAttached?.(this);
      this.deps.logger.log('debug', 'nbd client attached', { remote: this.remote, export: out.export.name, structured: this.neg.structured });
    }
    return true;
  }

  /**
   * STARTTLS accepted: the client must wait for our ACK before its ClientHello, so bytes
   * already queued behind the option were sent blind. They are refused, never parsed after
   * the handshake: that is how STARTTLS command injection works (a man in the middle
   * appends clear-text commands the server would then take as protected).
   */
  private startTls(ack: Buffer[]): false {
    const tls = this.deps.tls;
    if (tls === null || this.stream.startTls === undefined) return this.fail('STARTTLS accepted without a TLS-capable stream (a server bug)');
    if (this.queue.length > 0) return this.fail(`${this.queue.length} bytes after STARTTLS ahead of the TLS handshake`);
    this.send(ack);
    this.phase = 'tls';
    this.stream.startTls(tls, (err) => this.guarded(() => this.tlsUp(err)));
    return false;
  }

  private tlsUp(err: Error | null): void {
    if (this.phase !== 'tls') return;
    if (err !== null) return void this.fail(`TLS handshake failed: ${err.message}`);
    // What was negotiated in clear could have been altered on the way: start afresh.
    this.neg = newNegotiated(this.neg.no_zeroes, true);
    this.phase = 'options';
    this.deps.logger.log('debug', 'nbd TLS established', { remote: this.remote });
    this.pump();
  }

  private stepRequest(): boolean {
    const exp = this.exp as NbdExport;
    const dev = exp.device;
    if (this.pending !== null) return this.stepPayload(exp, this.pending);
    if (!this.admissible()) {
      this.pauseReading();
      return false;
    }
    if (this.queue.length < REQUEST_BYTES) return false;
    const r = decodeRequest(this.queue.take(REQUEST_BYTES));
    if (!r.magic_ok) return this.fail('bad request magic');
    if (this.deps.clock !== null) this.last_request_ms = this.deps.clock.now();
    if (r.type === Cmd.DISC) {
      this.startDraining();
      return false;
    }
    const err = checkRequest(r, { device: dev, max_payload: exp.max_payload, structured: this.neg.structured, meta_count: this.neg.meta.length });
    if (r.type === Cmd.WRITE && r.length > 0) {
      if (err !== 0 && r.length > this.deps.limits.max_skip_bytes) return this.fail(`refused write payload of ${r.length} bytes is too large to skip`);
      this.pending = r;
      this.pending_error = err;
      this.skip_left = err !== 0 ? r.length : 0;
      return true;
    }
    if (err !== 0) this.replyError(r, err, 'request refused');
    else this.execute(exp, r);
    return true;
  }

  private stepPayload(exp: NbdExport, r: Request): boolean {
    if (this.pending_error !== 0) {
      this.skip_left -= this.queue.drop(this.skip_left);
      if (this.skip_left > 0) return false;
      this.pending = null;
      this.replyError(r, this.pending_error, 'write refused');
      return true;
    }
    if (this.queue.length < r.length) {
      // A large payload is collected where it is used: the rest is read straight into it.
      // Only once an eighth of it came, so a request header alone makes us allocate at
      // most 8 times what the client sent.
      if (r.length >= DIRECT_PAYLOAD_BYTES && !this.queue.reserved && this.queue.length * 8 >= r.length) this.queue.reserve(r.length);
      return false;
    }
    const data = this.queue.take(r.length);
    this.pending = null;
    this.write(exp, r, data);
    return true;
  }

  // ---- execution ----

  private execute(exp: NbdExport, r: Request): void {
    switch (r.type) {
      case Cmd.READ:
        return this.read(exp, r);
      case Cmd.WRITE:
        return this.replyOk(r); // zero-length write: nothing to do
      case Cmd.FLUSH:
        return this.flush(exp.device, r);
      case Cmd.TRIM:
      case Cmd.WRITE_ZEROES:
        return this.trimOrZero(exp, r);
      case Cmd.BLOCK_STATUS:
        return this.blockStatus(exp, r);
      default:
        return this.replyError(r, NbdErr.EINVAL, 'unknown command');
    }
  }

  /**
   * A read longer than the device takes at once (up to the advertised maximum, 32 MiB by
   * default, against an RMR pool's 1 MiB) is read in pieces; the reply still carries the
   * data as one run (one OFFSET_DATA chunk, so DF holds), the pieces written out in order
   * without being copied together. A failed piece fails the read at that piece's offset.
   */
  private read(exp: NbdExport, r: Request): void {
    if (r.length === 0) return this.replyRead(r, [], 0);
    const dev = exp.device;
    const parts: Buffer[] = [];
    this.begin(r.length);
    this.split(r.length, exp.piece_bytes, 'read', (at, n, i, done) =>
      dev.read(r.offset + at, n, (status, data) => {
        if (status === 0 && (data === null || data.length !== n)) {
          this.contractBroken('read data length');
          return done(Errno.EIO);
        }
        if (data !== null) parts[i] = data;
        done(status);
      }),
      (status, fail_at) => {
        if (!this.end(r.length)) return;
        if (status === 0) this.replyRead(r, parts, r.length);
        else this.replyError(r, nbdError(status), `read failed: ${errnoName(status)}`, r.offset + Math.max(0, fail_at));
        this.after();
      },
    );
  }

  /**
   * A write longer than the device takes at once goes in pieces (views of the payload, each
   * with the request's FUA); the reply waits for all of them and reports the first failure.
   * NBD promises no atomicity for a write, so a failed one leaves the range undefined, as a
   * failed write of a disk does.
   */
  private write(exp: NbdExport, r: Request, data: Buffer): void {
    const dev = exp.device;
    const fua = (r.flags & CmdFlag.FUA) !== 0;
    this.begin(data.length);
    this.split(data.length, exp.piece_bytes, 'write', (at, n, _i, done) => dev.write(r.offset + at, n === data.length ? data : data.subarray(at, at + n), { fua }, done), (status) => {
      if (!this.end(data.length)) return;
      this.replyStatus(r, status, 'write');
      this.after();
    });
  }

  /**
   * Runs `piece` over [0, length) in pieces of at most `max` bytes, PIECE_WINDOW at a time,
   * and calls `done` once every piece started has ended: with 0, or with the status and the
   * offset of the first piece that failed. After a failure, or once the client is gone, no
   * new piece starts (the reply is an error, or nobody would read it).
   */
  private split(
    length: number,
    max: number,
    what: string,
    piece: (at: number, n: number, index: number, done: (status: number) => void) => void,
    done: (status: number, fail_at: number) => void,
  ): void {
    const count = Math.ceil(length / max);
    let next = 0;
    let active = 0;
    let status = 0;
    let fail_at = -1;
    const launch = (): void => {
      while (active < PIECE_WINDOW && next < count && status === 0 && this.phase !== 'closed') {
        const i = next++;
        const at = i * max;
        active++;
        let settled = false;
        piece(at, Math.min(max, length - at), i, (s) => {
          if (settled) return this.contractBroken(what);
          settled = true;
          active--;
          if (s !== 0 && status === 0) {
            status = s;
            fail_at = at;
          }
          if (active === 0 && (next === count || status !== 0 || this.phase === 'closed')) return done(status, fail_at);
          launch();
        });
      }
    };
    launch();
  }

  private flush(dev: BlockDevice, r: Request): void {
    this.begin(0);
    let settled = false;
    dev.flush((status) => {
      if (settled) return this.contractBroken('flush');
      settled = true;
      if (!this.end(0)) return;
      this.replyStatus(r, status, 'flush');
      this.after();
    });
  }

  /** Trim and write-zeroes are split at the device's maximum IO size, pieces in order. */
  private trimOrZero(exp: NbdExport, r: Request): void {
    if (r.length === 0) return this.replyOk(r);
    const dev = exp.device;
    const piece_max = exp.piece_bytes;
    const trim = r.type === Cmd.TRIM;
    const fua = (r.flags & CmdFlag.FUA) !== 0;
    const zflags = { fua, no_hole: (r.flags & CmdFlag.NO_HOLE) !== 0, fast_zero: (r.flags & CmdFlag.FAST_ZERO) !== 0 };
    let at = r.offset;
    let left = r.length;
    this.begin(0);
    const next = (): void => {
      const n = Math.min(left, piece_max);
      let settled = false;
      const cb = (status: number): void => {
        if (settled) return this.contractBroken(trim ? 'trim' : 'write zeroes');
        settled = true;
        at += n;
        left -= n;
        if (status === 0 && left > 0 && this.phase !== 'closed') return next();
        if (!this.end(0)) return;
        this.replyStatus(r, status, trim ? 'trim' : 'write zeroes');
        this.after();
      };
      if (trim) dev.trim(at, n, { fua }, cb);
      else dev.writeZeroes(at, n, zflags, cb);
    };
    next();
  }

  private blockStatus(exp: NbdExport, r: Request): void {
    const dev = exp.device;
    const sel = this.neg.meta;
    const length = Math.min(r.length, exp.piece_bytes, dev.size_bytes - r.offset);
    const req_one = (r.flags & CmdFlag.REQ_ONE) !== 0;
    const results: (Extent[] | null)[] = sel.map(() => null);
    let failed = 0;
    let waiting = sel.length;
    const device_base = dev.metaContexts().includes(BASE_ALLOCATION);
    this.begin(0);
    const settle = (i: number, status: number, extents: readonly Extent[] | null): void => {
      if (status !== 0) failed ||= nbdError(status);
      else {
        const clamped = clampExtents(extents, length, req_one, this.deps.limits.max_extents);
        if (clamped === null) {
          this.contractBroken('block status extents');
          failed ||= NbdErr.EIO;
        }
        results[i] = clamped;
      }
      if (--waiting > 0) return;
      if (!this.end(0)) return;
      if (failed !== 0) this.replyError(r, failed, 'block status failed');
      else {
        const chunks = sel.map((m, k) => encodeBlockStatusChunk(r.cookie_hi, r.cookie_lo, m.id, results[k] as Extent[], k === sel.length - 1));
        this.send(chunks);
      }
      this.after();
    };
    sel.forEach((m, i) => {
      if (m.name === BASE_ALLOCATION && !device_base) return settle(i, 0, allAllocated(r.offset, length, dev.size_bytes));
      let settled = false;
      dev.blockStatus(m.name, r.offset, length, (status, extents) => {
        if (settled) return this.contractBroken('block status');
        settled = true;
        settle(i, status, extents);
      });
    });
  }

  // ---- replies ----

  private replyOk(r: Request): void {
    this.send([encodeSimpleReply(r.cookie_hi, r.cookie_lo, 0)]);
  }

  private replyStatus(r: Request, status: number, what: string): void {
    if (status === 0) this.replyOk(r);
    else this.replyError(r, nbdError(status), `${what} failed: ${errnoName(status)}`);
  }

  /** The read's data is `parts` in order, `length` bytes in all. */
  private replyRead(r: Request, parts: Buffer[], length: number): void {
    if (!this.neg.structured) this.send([encodeSimpleReply(r.cookie_hi, r.cookie_lo, 0), ...parts]);
    else if (length === 0) this.send([encodeNoneChunk(r.cookie_hi, r.cookie_lo)]);
    else this.send([encodeOffsetDataHead(r.cookie_hi, r.cookie_lo, r.offset, length, true), ...parts]);
  }

  /** Reads and block status need a structured error once negotiated; the rest use simple replies. */
  private replyError(r: Request, error: number, msg: string, offset: number | null = null): void {
    const structured = this.neg.structured && (r.type === Cmd.READ || r.type === Cmd.BLOCK_STATUS);
    if (structured) this.send([encodeErrorChunk(r.cookie_hi, r.cookie_lo, error, msg, offset)]);
    else this.send([encodeSimpleReply(r.cookie_hi, r.cookie_lo, error)]);
  }

  // ---- flow control ----

  private begin(bytes: number): void {
    this.inflight++;
    this.inflight_bytes += bytes;
    this.deps.budget?.add(bytes);
  }

  /** Accounts a completion; false when the client is gone and the answer must be dropped. */
  private end(bytes: number): boolean {
    this.inflight--;
    this.inflight_bytes -= bytes;
    this.deps.budget?.sub(bytes);
    if (this.phase === 'closed') return false;
    return true;
  }

  private after(): void {
    if (this.phase === 'draining') {
      if (this.inflight === 0) this.endStream();
      return;
    }
    this.resumeIfPossible();
  }

  private admissible(): boolean {
    const l = this.deps.limits;
    if (!(this.inflight < l.max_inflight_requests && (this.inflight === 0 || this.inflight_bytes < l.max_inflight_bytes))) return false;
    const b = this.deps.budget;
    if (b === undefined || b === null || b.open) return true;
    // Over the daemon's total: wait for another connection's completions.
    b.wait(this.budgetOpened);
    return false;
  }

  /**
   * The idle timeout: an attached client with nothing in flight that sent no request for
   * idle_timeout_ms is closed. The timer is armed for the whole period and re-armed for what
   * is left when requests came meanwhile.
   */
  private armIdle(): void {
    const clock = this.deps.clock;
    const idle = this.deps.limits.idle_timeout_ms;
    if (clock === null || idle <= 0) return;
    this.last_request_ms = clock.now();
    const check = (): void => {
      this.idle_timer = null;
      if (this.phase !== 'transmission') return;
      const left = this.last_request_ms + idle - clock.now();
      if (left > 0 || this.inflight > 0) {
        this.idle_timer = clock.setTimer(Math.max(left, 1000), check);
        return;
      }
      this.fail(`idle for ${idle} ms (nbd.idle_timeout_ms)`, 'info');
    };
    this.idle_timer = clock.setTimer(idle, check);
  }

  private pauseReading(): void {
    if (this.read_paused) return;
    this.read_paused = true;
    this.stream.pauseReading();
  }

  private resumeIfPossible(): void {
    if (this.phase === 'closed' || this.write_blocked) return;
    if (this.phase === 'transmission' && this.pending === null && !this.admissible()) return;
    if (this.read_paused) {
      this.read_paused = false;
      this.stream.resumeReading();
    }
    this.pump();
  }

  private send(chunks: Buffer[]): void {
    if (this.phase === 'closed') return;
    if (!this.stream.write(chunks)) {
      this.write_blocked = true;
      this.pauseReading();
      const clock = this.deps.clock;
      if (clock !== null && this.stall_timer === null) {
        this.stall_timer = clock.setTimer(this.deps.limits.reply_stall_timeout_ms, () => {
          this.stall_timer = null;
          if (this.write_blocked) this.fail('client stopped taking replies');
        });
      }
    }
  }

  private startDraining(): void {
    this.phase = 'draining';
    this.pending = null;
    this.queue.clear();
    this.pauseReading();
    if (this.inflight === 0) this.endStream();
  }

  private endStream(): void {
    this.phase = 'closed';
    this.queue.clear();
    this.cancelTimers();
    this.stream.end(this.deps.limits.linger_ms);
  }

  /** Protocol violation: log the reason and drop the connection. Returns false for step(). */
  private fail(reason: string, level: 'info' | 'warn' = 'warn'): false {
    if (this.phase === 'closed') return false;
    this.deps.logger.log(level, 'nbd connection closed', { remote: this.remote, reason });
    this.phase = 'closed';
    this.queue.clear();
    this.cancelTimers();
    this.stream.destroy();
    return false;
  }

  private contractBroken(what: string): void {
    this.deps.logger.log('error', 'block device broke its contract', { remote: this.remote, what });
  }

  private cancelTimers(): void {
    this.cancelHandshakeTimer();
    this.cancelStallTimer();
    if (this.idle_timer !== null && this.deps.clock !== null) this.deps.clock.cancel(this.idle_timer);
    this.idle_timer = null;
    this.deps.budget?.forget(this.budgetOpened);
  }

  private cancelHandshakeTimer(): void {
    if (this.timer !== null && this.deps.clock !== null) this.deps.clock.cancel(this.timer);
    this.timer = null;
  }

  private cancelStallTimer(): void {
    if (this.stall_timer !== null && this.deps.clock !== null) this.deps.clock.cancel(this.stall_timer);
    this.stall_timer = null;
  }
}
