// One framed connection (a path, seen from either end): decoding, sending, heartbeats, RTT,
// and the bounds that kill a path whose peer stopped answering or stopped reading. Client
// paths and server connections both own a Link and add their protocol on top.
//
// Liveness: every heartbeat interval the link sends PING(seq); the peer answers PONG(seq).
// Because a PONG is produced only after the peer read every byte we sent before the PING,
// an answered PING proves the peer is alive *and* reading. No answer for longer than the
// heartbeat timeout while a PING is outstanding, or more than `max_pending_write_bytes`
// stuck in our send queue, declares the path dead: detection within timeout + interval.

import type { Clock, Logger, TimerId } from '../util/ports.js';
import { FrameDecoder, FrameType, encodeFrameHead, type DecoderLimits, type FrameFields, type FrameSink } from './frame.js';
import type { NetStream, StreamHandlers } from './net.js';

export interface LinkOptions {
  heartbeat_interval_ms: number;
  heartbeat_timeout_ms: number;
  /** Above this many queued bytes the peer is not reading: the link dies. */
  max_pending_write_bytes: number;
  /** Server side: stop reading requests while our responses are backed up. */
  pause_reads_on_backpressure: boolean;
}

export interface LinkOwner {
  /** Every frame except heartbeats (handled here). */
  onLinkFrame(link: Link, f: Readonly<FrameFields>, user_hdr: Buffer, data: Buffer): void;
  /** The link is gone (any cause). Called exactly once; the link is unusable afterwards. */
  onLinkDown(link: Link, reason: string): void;
}

const PING_RING = 64;

export class Link implements StreamHandlers, FrameSink {
  readonly stream: NetStream;
  readonly decoder: FrameDecoder;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly opts: LinkOptions;
  private readonly owner: LinkOwner;
  private down = false;
  private hb_timer: TimerId | null = null;
  private deadline_timer: TimerId | null = null;
  private ping_seq = 0;
  // Unanswered pings, oldest first (PONGs arrive in order): seq and send time.
  private readonly ping_seqs = new Float64Array(PING_RING);
  private readonly ping_times = new Float64Array(PING_RING);
  private ping_head = 0;
  private ping_count = 0;
  private last_answer_at = 0;
  private reads_paused = false;
  /** Smoothed round-trip time in ms (EWMA 1/8, as TCP's SRTT), -1 before any sample. */
  rtt_ms = -1;
  /** Value sent in the aux field of our PINGs (the client's settled watermark). */
  ping_aux = 0;
  /** Requests this side has sent and not yet seen answered (owner-maintained). */
  inflight = 0;
  /** Free-form label for logs. */
  readonly label: string;

  constructor(stream: NetStream, clock: Clock, log: Logger, opts: LinkOptions, owner: LinkOwner, limits: DecoderLimits, label: string) {
    this.stream = stream;
    this.clock = clock;
    this.log = log;
    this.opts = opts;
    this.owner = owner;
    this.label = label;
    this.decoder = new FrameDecoder(this, limits);
    stream.attach(this);
  }

  get isDown(): boolean {
    return this.down;
  }

  /** Kills the link if `fn` has not been called by then (handshake bound). */
  armDeadline(delay_ms: number, reason: string): void {
    this.clearDeadline();
    this.deadline_timer = this.clock.setTimer(delay_ms, () => {
      this.deadline_timer = null;
      this.fail(reason);
    });
  }

  clearDeadline(): void {
    if (this.deadline_timer !== null) {
      this.clock.cancel(this.deadline_timer);
      this.deadline_timer = null;
    }
  }

  startHeartbeat(): void {
    if (this.down || this.hb_timer !== null) return;
    this.last_answer_at = this.clock.now();
    this.hb_timer = this.clock.setTimer(this.opts.heartbeat_interval_ms, this.onHeartbeatTick);
  }

  /** Records a round-trip sample taken outside heartbeats (the handshake). */
  sampleRtt(ms: number): void {
    this.rtt_ms = this.rtt_ms < 0 ? ms : this.rtt_ms + (ms - this.rtt_ms) / 8;
  }

  private readonly onHeartbeatTick = (): void => {
    this.hb_timer = null;
    if (this.down) return;
    const now = this.clock.now();
    // Silence is measured from the last answer, not from the oldest ping: that bounds
    // detection by timeout + one interval after the peer went quiet.
    if (this.ping_count > 0 && now - this.last_answer_at > this.opts.heartbeat_timeout_ms) {
      this.fail(`no heartbeat answer for ${Math.round(now - this.last_answer_at)} ms`);
      return;
    }
    if (this.stream.pendingWriteBytes > this.opts.max_pending_write_bytes) {
      this.fail(`peer is not reading (${this.stream.pendingWriteBytes} bytes queued)`);
      return;
    }
    if (this.ping_count < PING_RING) {
      const seq = ++this.ping_seq;
      const slot = (this.ping_head + this.ping_count) % PING_RING;
      this.ping_seqs[slot] = seq;
      this.ping_times[slot] = now;
      this.ping_count++;
      this.sendFrame(encodeFrameHead(FrameType.PING, 0, null, 0, 0, 0, seq, this.ping_aux), null);
    }
    this.hb_timer = this.clock.setTimer(this.opts.heartbeat_interval_ms, this.onHeartbeatTick);
  };

  /** Sends a frame head (header + user header) and optional data view. */
  sendFrame(head: Buffer, data: Buffer | null): void {
    if (this.down) return;
    const ok = data === null || data.length === 0 ? this.stream.write([head]) : this.stream.write([head, data]);
    if (!ok && this.opts.pause_reads_on_backpressure && !this.reads_paused) {
      this.reads_paused = true;
      this.stream.pauseReading();
    }
  }

  /** Sends CLOSE with a reason, then closes gracefully. */
  close(reason: string): void {
    if (this.down) return;
    const r = Buffer.from(reason, 'utf8').subarray(0, 200);
    this.sendFrame(encodeFrameHead(FrameType.CLOSE, 0, null, r.length, 0, 0, 0, 0), r);
    this.shut(reason, true);
  }

  /** Sends a last frame (a handshake REJECT), then closes gracefully. */
  finish(head: Buffer, data: Buffer | null, reason: string): void {
    if (this.down) return;
    this.sendFrame(head, data);
    this.shut(reason, true);
  }

  /** Marks the link down, destroys the stream, tells the owner once. */
  fail(reason: string): void {
    this.shut(reason, false);
  }

  private shut(reason: string, graceful: boolean): void {
    if (this.down) return;
    this.down = true;
    this.decoder.stop();
    if (this.hb_timer !== null) this.clock.cancel(this.hb_timer);
    this.hb_timer = null;
    this.clearDeadline();
    if (graceful) this.stream.end(this.opts.heartbeat_timeout_ms);
    else this.stream.destroy();
    this.owner.onLinkDown(this, reason);
  }

  // --- StreamHandlers ---

  onData(chunk: Buffer): void {
    if (this.down) return;
    try {
      this.decoder.push(chunk);
    } catch (e) {
      // A bug must not take the process down with every other session: log it loudly and
      // drop this path only.
      this.log.log('error', 'internal error while handling a frame; closing path', {
        path: this.label,
        error: e instanceof Error ? (e.stack ?? e.message) : String(e),
      });
      this.fail('internal error');
    }
  }

  readTarget(): Buffer | null {
    return this.down ? null : this.decoder.readTarget();
  }

  onDrain(): void {
    if (this.reads_paused && !this.down) {
      this.reads_paused = false;
      this.stream.resumeReading();
    }
  }

  onClose(err: Error | null): void {
    this.fail(err === null ? 'connection closed by peer' : `connection error: ${err.message}`);
  }

  // --- FrameSink ---

  onFrame(f: Readonly<FrameFields>, user_hdr: Buffer, data: Buffer): void {
    switch (f.type) {
      case FrameType.PING:
        this.sendFrame(encodeFrameHead(FrameType.PONG, 0, null, 0, 0, 0, f.id, 0), null);
        this.owner.onLinkFrame(this, f, user_hdr, data);
        return;
      case FrameType.PONG:
        this.onPong(f.id);
        return;
      case FrameType.CLOSE:
        this.fail(`peer closed: ${data.toString('utf8').replace(/[^\x20-\x7e]/g, '?')}`);
        return;
      default:
        this.owner.onLinkFrame(this, f, user_hdr, data);
    }
  }

  onProtocolError(reason: string): void {
    this.log.log('warn', 'protocol error; closing path', { path: this.label, reason });
    this.fail(`protocol error: ${reason}`);
  }

  private onPong(seq: number): void {
    // Answers come in order; anything else is a confused peer, which we ignore rather than
    // trust (liveness then times out on its own).
    while (this.ping_count > 0) {
      const s = this.ping_seqs[this.ping_head] as number;
      if (s > seq) return;
      const sent = this.ping_times[this.ping_head] as number;
      this.ping_head = (this.ping_head + 1) % PING_RING;
      this.ping_count--;
      if (s === seq) {
        this.last_answer_at = this.clock.now();
        this.sampleRtt(this.last_answer_at - sent);
        return;
      }
    }
  }
}
