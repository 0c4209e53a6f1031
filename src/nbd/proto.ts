// NBD wire constants and codecs (the fixed-newstyle protocol, structured replies, meta
// contexts). Every layout the server reads or writes is defined here once; all integers on
// the wire are big-endian (network byte order).

export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
/** 'IHAVEOPT': the server's second greeting word and the magic of every client option. */
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
/** Option reply magic 0x0003e889045565a9. */
export const REPLY_MAGIC_HI = 0x0003e889;
export const REPLY_MAGIC_LO = 0x045565a9;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const CLIENT_FLAGS_KNOWN = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

const REP_ERR = 0x80000000;
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERR + 1,
  ERR_POLICY: REP_ERR + 2,
  ERR_INVALID: REP_ERR + 3,
  ERR_PLATFORM: REP_ERR + 4,
  ERR_TLS_REQD: REP_ERR + 5,
  ERR_UNKNOWN: REP_ERR + 6,
  ERR_SHUTDOWN: REP_ERR + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERR + 8,
  ERR_TOO_BIG: REP_ERR + 9,
} as const;

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags (16 bits, sent with the export size). */
export const TFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;
export const REPLY_FLAG_DONE = 1 << 0;

/** NBD error values (positive, as on the wire). */
export const NbdErr = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** base:allocation extent flags. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

/** The spec's limit on any string (export names, context names, messages). */
export const MAX_STRING_BYTES = 4096;
export const BASE_ALLOCATION = 'base:allocation';

const TWO_32 = 0x1_0000_0000;

/** Reads a 64-bit big-endian unsigned value; values above 2^53 become Infinity (never valid). */
export function readU64(b: Buffer, at: number): number {
  const hi = b.readUInt32BE(at);
  const lo = b.readUInt32BE(at + 4);
  if (hi > 0x1fffff) return Infinity;
  return hi * TWO_32 + lo;
}

export function writeU64(b: Buffer, at: number, v: number): void {
  b.writeUInt32BE(Math.floor(v / TWO_32), at);
  b.writeUInt32BE(v % TWO_32 >>> 0, at + 4);
}

// ---- handshake ----

/**
 * Server greeting (18 bytes):
 *   0  'NBDMAGIC'         8 bytes
 *   8  'IHAVEOPT'         8 bytes
 *  16  handshake flags   u16 (FIXED_NEWSTYLE | NO_ZEROES)
 */
export function encodeGreeting(): Buffer {
  const b = Buffer.alloc(18);
  NBDMAGIC.copy(b, 0);
  b.writeUInt32BE(IHAVEOPT_HI, 8);
  b.writeUInt32BE(IHAVEOPT_LO, 12);
  b.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return b;
}

/**
 * Client option header (16 bytes), then `length` bytes of data:
 *   0  'IHAVEOPT'  8 bytes
 *   8  option     u32
 *  12  length     u32
 */
export const OPTION_HEADER_BYTES = 16;
export interface OptionHeader {
  magic_ok: boolean;
  option: number;
  length: number;
}
export function decodeOptionHeader(b: Buffer): OptionHeader {
  return {
    magic_ok: b.readUInt32BE(0) === IHAVEOPT_HI && b.readUInt32BE(4) === IHAVEOPT_LO,
    option: b.readUInt32BE(8),
    length: b.readUInt32BE(12),
  };
}

/**
 * Option reply (20 bytes), then `data`:
 *   0  magic 0x0003e889045565a9  8 bytes
 *   8  option                   u32
 *  12  reply type               u32
 *  16  length                   u32
 */
export function encodeOptionReply(option: number, type: number, data: Buffer | null): Buffer[] {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(REPLY_MAGIC_HI, 0);
  h.writeUInt32BE(REPLY_MAGIC_LO, 4);
  h.writeUInt32BE(option >>> 0, 8);
  h.writeUInt32BE(type >>> 0, 12);
  h.writeUInt32BE(data === null ? 0 : data.length, 16);
  return data === null || data.length === 0 ? [h] : [h, data];
}

/** An error reply carries a human-readable message (for the client's log). */
export function encodeOptionError(option: number, type: number, msg: string): Buffer[] {
  return encodeOptionReply(option, type, Buffer.from(msg.slice(0, 256), 'utf8'));
}

/** NBD_REP_SERVER: u32 name length, name, then the description. */
export function encodeRepServer(name: string, description: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.alloc(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

/** NBD_INFO_EXPORT: u16 type, u64 size, u16 transmission flags. */
export function encodeInfoExport(size: number, tflags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(Info.EXPORT, 0);
  writeU64(b, 2, size);
  b.writeUInt16BE(tflags, 10);
  return b;
}

/** NBD_INFO_NAME / NBD_INFO_DESCRIPTION: u16 type, string. */
export function encodeInfoString(type: number, s: string): Buffer {
  const v = Buffer.from(s, 'utf8');
  const b = Buffer.alloc(2 + v.length);
  b.writeUInt16BE(type, 0);
  v.copy(b, 2);
  return b;
}

/** NBD_INFO_BLOCK_SIZE: u16 type, u32 minimum, u32 preferred, u32 maximum. */
export function encodeInfoBlockSize(min: number, preferred: number, max: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(Info.BLOCK_SIZE, 0);
  b.writeUInt32BE(min, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(max, 10);
  return b;
}

/** NBD_REP_META_CONTEXT: u32 context id, name. */
export function encodeRepMetaContext(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(id, 0);
  n.copy(b, 4);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, then 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, tflags: number, no_zeroes: boolean): Buffer {
  const b = Buffer.alloc(no_zeroes ? 10 : 134);
  writeU64(b, 0, size);
  b.writeUInt16BE(tflags, 8);
  return b;
}

// ---- transmission ----

/**
 * Request (28 bytes), then `length` bytes of payload for WRITE:
 *   0  magic 0x25609513  u32
 *   4  command flags     u16
 *   6  type              u16
 *   8  cookie            8 bytes (opaque, echoed)
 *  16  offset            u64
 *  24  length            u32
 */
export const REQUEST_BYTES = 28;
export interface Request {
  magic_ok: boolean;
  flags: number;
  type: number;
  cookie_hi: number;
  cookie_lo: number;
  offset: number;
  length: number;
}
export function decodeRequest(b: Buffer, at = 0): Request {
  return {
    magic_ok: b.readUInt32BE(at) === REQUEST_MAGIC,
    flags: b.readUInt16BE(at + 4),
    type: b.readUInt16BE(at + 6),
    cookie_hi: b.readUInt32BE(at + 8),
    cookie_lo: b.readUInt32BE(at + 12),
    offset: readU64(b, at + 16),
    length: b.readUInt32BE(at + 24),
  };
}

export function encodeRequest(r: Omit<Request, 'magic_ok'>): Buffer {
  const b = Buffer.alloc(REQUEST_BYTES);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeUInt32BE(r.cookie_hi >>> 0, 8);
  b.writeUInt32BE(r.cookie_lo >>> 0, 12);
  writeU64(b, 16, r.offset);
  b.writeUInt32BE(r.length >>> 0, 24);
  return b;
}

/**
 * Simple reply (16 bytes), then read data when error is 0:
 *   0  magic 0x67446698  u32
 *   4  error             u32
 *   8  cookie            8 bytes
 */
export const SIMPLE_REPLY_BYTES = 16;
export function encodeSimpleReply(cookie_hi: number, cookie_lo: number, error: number): Buffer {
  const b = Buffer.alloc(SIMPLE_REPLY_BYTES);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeUInt32BE(cookie_hi, 8);
  b.writeUInt32BE(cookie_lo, 12);
  return b;
}

/**
 * Structured reply chunk header (20 bytes), then `length` bytes of payload:
 *   0  magic 0x668e33ef  u32
 *   4  flags (DONE)      u16
 *   6  type              u16
 *   8  cookie            8 bytes
 *  16  length            u32
 */
export const CHUNK_HEADER_BYTES = 20;
export function writeChunkHeader(b: Buffer, flags: number, type: number, cookie_hi: number, cookie_lo: number, length: number): void {
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeUInt32BE(cookie_hi, 8);
  b.writeUInt32BE(cookie_lo, 12);
  b.writeUInt32BE(length, 16);
}

/** OFFSET_DATA chunk head: header + u64 offset; the data follows as its own buffer. */
export function encodeOffsetDataHead(cookie_hi: number, cookie_lo: number, offset: number, data_bytes: number, done: boolean): Buffer {
  const b = Buffer.alloc(CHUNK_HEADER_BYTES + 8);
  writeChunkHeader(b, done ? REPLY_FLAG_DONE : 0, ReplyType.OFFSET_DATA, cookie_hi, cookie_lo, 8 + data_bytes);
  writeU64(b, CHUNK_HEADER_BYTES, offset);
  return b;
}

/** NONE chunk: the DONE marker of a reply whose other chunks went out already. */
export function encodeNoneChunk(cookie_hi: number, cookie_lo: number): Buffer {
  const b = Buffer.alloc(CHUNK_HEADER_BYTES);
  writeChunkHeader(b, REPLY_FLAG_DONE, ReplyType.NONE, cookie_hi, cookie_lo, 0);
  return b;
}

/**
 * ERROR chunk payload: u32 error, u16 message length, message;
 * ERROR_OFFSET adds u64 offset after the message.
 */
export function encodeErrorChunk(cookie_hi: number, cookie_lo: number, error: number, msg: string, offset: number | null): Buffer {
  const m = Buffer.from(msg.slice(0, 200), 'utf8');
  const payload = 6 + m.length + (offset === null ? 0 : 8);
  const b = Buffer.alloc(CHUNK_HEADER_BYTES + payload);
  writeChunkHeader(b, REPLY_FLAG_DONE, offset === null ? ReplyType.ERROR : ReplyType.ERROR_OFFSET, cookie_hi, cookie_lo, payload);
  b.writeUInt32BE(error, CHUNK_HEADER_BYTES);
  b.writeUInt16BE(m.length, CHUNK_HEADER_BYTES + 4);
  m.copy(b, CHUNK_HEADER_BYTES + 6);
  if (offset !== null) writeU64(b, CHUNK_HEADER_BYTES + 6 + m.length, offset);
  return b;
}

/** BLOCK_STATUS chunk: u32 context id, then (u32 length, u32 flags) per extent. */
export function encodeBlockStatusChunk(
  cookie_hi: number,
  cookie_lo: number,
  context_id: number,
  extents: readonly { length: number; flags: number }[],
  done: boolean,
): Buffer {
  const payload = 4 + 8 * extents.length;
  const b = Buffer.alloc(CHUNK_HEADER_BYTES + payload);
  writeChunkHeader(b, done ? REPLY_FLAG_DONE : 0, ReplyType.BLOCK_STATUS, cookie_hi, cookie_lo, payload);
  b.writeUInt32BE(context_id, CHUNK_HEADER_BYTES);
  let at = CHUNK_HEADER_BYTES + 4;
  for (const e of extents) {
    b.writeUInt32BE(e.length, at);
    b.writeUInt32BE(e.flags >>> 0, at + 4);
    at += 8;
  }
  return b;
}
