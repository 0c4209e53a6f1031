// Frame layout of the transport and its streaming decoder. Every byte from the network goes
// through FrameDecoder, which validates each header against the limits in force before it
// allocates or slices anything, and stops at the first violation with a reason.
//
// Frame = 32-byte header, then `hdr_len` bytes of user header, then `data_len` bytes of data.
// All integers little-endian.
//
//   0      1      2             4                     8
//   +------+------+-------------+---------------------+
//   | type | flags|   hdr_len   |      data_len       |
//   +------+------+-------------+---------------------+
//   |        tag (u32)          |     arg (i32)       |   8..16
//   +---------------------------+---------------------+
//   |                  id (u64)                       |  16..24
//   +-------------------------------------------------+
//   |                  aux (u64)                      |  24..32
//   +-------------------------------------------------+
//
//   type      meaning of the fields
//   HELLO..   handshake; body (data) is a control message (handshake.ts); tag=arg=id=aux=0
//   REQ       tag = permit index, id = request id, arg = read length (read-type) or 0,
//             aux = settled watermark: every request id below it has been answered
//   RSP       tag, id echo the request; arg = status (0 or -errno); data = read data
//   PING/PONG id = ping sequence number (PONG echoes it)
//   CLOSE     graceful goodbye; data = utf-8 reason

import { sameMemory } from '../util/bytes.js';

export const FRAME_HEADER_BYTES = 32;

export const FrameType = {
  HELLO: 1,
  CHALLENGE: 2,
  AUTH: 3,
  WELCOME: 4,
  REJECT: 5,
  REQ: 16,
  RSP: 17,
  PING: 18,
  PONG: 19,
  CLOSE: 20,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** REQ flag: the server answers with data (up to `arg` bytes). */
export const FLAG_READ = 0x01;

/** Control-message bodies are small; nothing larger is accepted before authentication. */
export const MAX_CONTROL_BYTES = 1024;
export const MAX_CLOSE_REASON_BYTES = 256;

const TWO_32 = 0x1_0000_0000;
/** High word limit keeping a u64 within Number.MAX_SAFE_INTEGER. */
const MAX_SAFE_HIGH = 0x1f_ffff;

export interface FrameFields {
  type: number;
  flags: number;
  tag: number;
  arg: number;
  id: number;
  aux: number;
}

// Byte stores and loads instead of Buffer.write/readUInt32LE: those carry argument checks
// that cost more than the header itself on the 4 KiB request path.
function put32(b: Buffer, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}
function put64(b: Buffer, o: number, v: number): void {
  if (v < TWO_32) {
    put32(b, o, v);
    put32(b, o + 4, 0);
  } else {
    put32(b, o, v % TWO_32);
    put32(b, o + 4, Math.floor(v / TWO_32));
  }
}
function get32(b: Buffer, o: number): number {
  return ((b[o] as number) | ((b[o + 1] as number) << 8) | ((b[o + 2] as number) << 16) | ((b[o + 3] as number) << 24)) >>> 0;
}

/** Writes a frame header at `off` of `buf`. `id` and `aux` must be safe non-negative integers. */
export function writeFrameHeader(
  buf: Buffer,
  off: number,
  type: number,
  flags: number,
  hdr_len: number,
  data_len: number,
  tag: number,
  arg: number,
  id: number,
  aux: number,
): void {
  buf[off] = type;
  buf[off + 1] = flags;
  buf[off + 2] = hdr_len;
  buf[off + 3] = hdr_len >>> 8;
  put32(buf, off + 4, data_len);
  put32(buf, off + 8, tag);
  put32(buf, off + 12, arg); // two's complement for negative statuses
  put64(buf, off + 16, id);
  put64(buf, off + 24, aux);
}

/**
 * A whole frame in one buffer: header, user header copied behind it. Data, if any, is sent
 * as a separate buffer (a view, never copied): see encodeFrame's callers.
 */
export function encodeFrameHead(
  type: number,
  flags: number,
  user_hdr: Buffer | null,
  data_len: number,
  tag: number,
  arg: number,
  id: number,
  aux: number,
): Buffer {
  const hl = user_hdr === null ? 0 : user_hdr.length;
  const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + hl);
  writeFrameHeader(buf, 0, type, flags, hl, data_len, tag, arg, id, aux);
  if (user_hdr !== null && hl > 0) user_hdr.copy(buf, FRAME_HEADER_BYTES);
  return buf;
}

/** Limits the decoder enforces; the owner tightens or widens them as the handshake proceeds. */
export interface DecoderLimits {
  /** Frame types accepted now; anything else is a protocol error. */
  allowed: ReadonlySet<number>;
  /** Largest user header of a REQ. */
  max_user_hdr: number;
  /** Largest data of a REQ (write payload) or RSP (read data). */
  max_data: number;
}

export interface FrameSink {
  /**
   * A complete frame. `user_hdr` and `data` are views into received memory, valid after the
   * call returns (they are never reused by the decoder). `f` is reused: copy what you keep.
   */
  onFrame(f: Readonly<FrameFields>, user_hdr: Buffer, data: Buffer): void;
  /** The stream is invalid; the decoder accepts nothing more. */
  onProtocolError(reason: string): void;
}

const EMPTY = Buffer.alloc(0);

/**
 * Streaming decoder. Whole frames inside one received chunk are passed on as views of that
 * chunk (no copy); a frame spanning chunks is assembled once into a buffer of exactly its
 * validated size.
 */
export class FrameDecoder {
  limits: DecoderLimits;
  private readonly sink: FrameSink;
  private readonly head = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  private head_fill = 0;
  private body: Buffer | null = null;
  private body_fill = 0;
  private hdr_len = 0;
  private readonly f: FrameFields = { type: 0, flags: 0, tag: 0, arg: 0, id: 0, aux: 0 };
  private stopped = false;
  /** Bytes received so far (for stats and tests). */
  bytes_in = 0;

  constructor(sink: FrameSink, limits: DecoderLimits) {
    this.sink = sink;
    this.limits = limits;
  }

  /** Stops decoding for good (the path is closing); later pushes are ignored. */
  stop(): void {
    this.stopped = true;
    this.body = null;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /**
   * The unfilled rest of the frame being assembled (null when none): the stream may read
   * the next bytes straight into it (StreamHandlers.readTarget). The decoder allocated that
   * buffer after validating the header, so nothing a peer sends widens it.
   */
  readTarget(): Buffer | null {
    return this.body === null ? null : this.body.subarray(this.body_fill);
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    this.bytes_in += chunk.length;
    let pos = 0;
    const n = chunk.length;
    while (pos < n && !this.stopped) {
      if (this.body !== null) {
        // Continue assembling a frame that spans chunks.
        const want = this.body.length - this.body_fill;
        const take = Math.min(want, n - pos);
        // A stream that read into readTarget() hands over bytes already in place.
        if (pos !== 0 || !sameMemory(chunk, this.body, this.body_fill)) chunk.copy(this.body, this.body_fill, pos, pos + take);
        this.body_fill += take;
        pos += take;
        if (this.body_fill === this.body.length) {
          const body = this.body;
          this.body = null;
          this.deliver(body);
        }
        continue;
      }
      // Fast path: a whole header sits in the chunk.
      let parsed: number;
      if (this.head_fill === 0 && n - pos >= FRAME_HEADER_BYTES) {
        parsed = this.parseHeader(chunk, pos);
        pos += FRAME_HEADER_BYTES;
      } else {
        const take = Math.min(FRAME_HEADER_BYTES - this.head_fill, n - pos);
        chunk.copy(this.head, this.head_fill, pos, pos + take);
        this.head_fill += take;
        pos += take;
        if (this.head_fill < FRAME_HEADER_BYTES) return;
        this.head_fill = 0;
        parsed = this.parseHeader(this.head, 0);
      }
      if (parsed < 0) return; // error already reported
      const body_len = parsed;
      if (body_len === 0) {
        this.deliver(EMPTY);
      } else if (n - pos >= body_len) {
        const body = chunk.subarray(pos, pos + body_len);
        pos += body_len;
        this.deliver(body);
      } else {
        this.body = Buffer.allocUnsafe(body_len);
        this.body_fill = 0;
      }
    }
  }

  private fail(reason: string): number {
    this.stopped = true;
    this.body = null;
    this.sink.onProtocolError(reason);
    return -1;
  }

  /** Validates a header; returns the body length or -1 after reporting the error. */
  private parseHeader(b: Buffer, o: number): number {
    const type = b[o] as number;
    const flags = b[o + 1] as number;
    const hdr_len = (b[o + 2] as number) | ((b[o + 3] as number) << 8);
    const data_len = get32(b, o + 4);
    const idh = get32(b, o + 20);
    const auxh = get32(b, o + 28);
    const lim = this.limits;
    if (!lim.allowed.has(type)) return this.fail(`unexpected frame type ${type}`);
    if (idh > MAX_SAFE_HIGH || auxh > MAX_SAFE_HIGH) return this.fail('64-bit field out of range');
    switch (type) {
      case FrameType.REQ:
        if ((flags & ~FLAG_READ) !== 0) return this.fail(`unknown request flags 0x${flags.toString(16)}`);
        if (hdr_len > lim.max_user_hdr) return this.fail(`user header ${hdr_len} > ${lim.max_user_hdr}`);
        if (data_len > lim.max_data) return this.fail(`request data ${data_len} > ${lim.max_data}`);
        break;
      case FrameType.RSP:
        if (flags !== 0 || hdr_len !== 0) return this.fail('malformed response header');
        if (data_len > lim.max_data) return this.fail(`response data ${data_len} > ${lim.max_data}`);
        break;
      case FrameType.PING:
      case FrameType.PONG:
        if (flags !== 0 || hdr_len !== 0 || data_len !== 0) return this.fail('malformed heartbeat');
        break;
      case FrameType.CLOSE:
        if (flags !== 0 || hdr_len !== 0 || data_len > MAX_CLOSE_REASON_BYTES) return this.fail('malformed close');
        break;
      default:
        // Handshake messages.
        if (flags !== 0 || hdr_len !== 0 || data_len > MAX_CONTROL_BYTES) return this.fail('malformed control frame');
    }
    const f = this.f;
    f.type = type;
    f.flags = flags;
    f.tag = get32(b, o + 8);
    f.arg = get32(b, o + 12) | 0;
    f.id = get32(b, o + 16) + idh * TWO_32;
    f.aux = get32(b, o + 24) + auxh * TWO_32;
    this.hdr_len = hdr_len;
    return hdr_len + data_len;
  }

  private deliver(body: Buffer): void {
    const hl = this.hdr_len;
    if (hl === 0) this.sink.onFrame(this.f, EMPTY, body);
    else this.sink.onFrame(this.f, body.subarray(0, hl), body.subarray(hl));
  }
}
