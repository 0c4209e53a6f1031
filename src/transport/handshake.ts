// Handshake messages and the mutual challenge-response authentication. Each path of a
// session authenticates on its own before any request is accepted:
//
//   client                                   server
//   HELLO {version, name, path, qd, io, incarnation, client_nonce}  ->
//                       <-  CHALLENGE {server_nonce, server_proof}
//   (client checks server_proof: the server knows the secret)
//   AUTH {client_proof}  ->
//                       <-  WELCOME {qd, max_io, max_user_hdr, server_instance, resumed}
//                            or REJECT {status, reason}
//
//   server_proof = HMAC-SHA256(secret, "rmr-transport server v1" | transcript)
//   client_proof = HMAC-SHA256(secret, "rmr-transport client v1" | transcript)
//   transcript   = HELLO body | server_nonce
//
// Distinct labels stop a proof being reflected back; both nonces in the transcript stop
// replay. This authenticates the peers, it does not protect the stream: use TLS for that.

import { createHmac, timingSafeEqual } from 'node:crypto';

export const PROTOCOL_MAGIC = 0x544d_524d; // "MRMT" little-endian on the wire
export const PROTOCOL_VERSION = 1;
export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
export const MAX_SESSION_NAME_BYTES = 255;
export const MAX_REASON_BYTES = 200;

//  HELLO body
//   0 u32 magic | 4 u16 version | 6 u16 path_index | 8 u32 queue_depth | 12 u32 max_io_size
//  16 u64 incarnation | 24 [32] client_nonce | 56 u16 name_len | 58 name (utf-8)
export interface Hello {
  version: number;
  path_index: number;
  queue_depth: number;
  max_io_size: number;
  incarnation: number;
  client_nonce: Buffer;
  session_name: string;
}
const HELLO_FIXED = 58;

//  CHALLENGE body: 0 [32] server_nonce | 32 [32] server_proof
export interface Challenge {
  server_nonce: Buffer;
  server_proof: Buffer;
}

//  AUTH body: 0 [32] client_proof
//  WELCOME body: 0 u32 queue_depth | 4 u32 max_io_size | 8 u32 max_user_hdr
//                12 u8 resumed | 13 pad[3] | 16 u64 server_instance
export interface Welcome {
  queue_depth: number;
  max_io_size: number;
  max_user_hdr: number;
  resumed: boolean;
  server_instance: number;
}
const WELCOME_BYTES = 24;

//  REJECT body: 0 i32 status | 4 u16 reason_len | 6 reason (utf-8)
export interface Reject {
  status: number;
  reason: string;
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

const TWO_32 = 0x1_0000_0000;

function writeU64(b: Buffer, off: number, v: number): void {
  b.writeUInt32LE(v % TWO_32, off);
  b.writeUInt32LE(Math.floor(v / TWO_32), off + 4);
}
function readU64(b: Buffer, off: number): number | null {
  const hi = b.readUInt32LE(off + 4);
  if (hi > 0x1f_ffff) return null;
  return b.readUInt32LE(off) + hi * TWO_32;
}

export function encodeHello(h: Hello): Buffer {
  const name = Buffer.from(h.session_name, 'utf8');
  if (name.length === 0 || name.length > MAX_SESSION_NAME_BYTES) throw new RangeError('session name length');
  if (h.client_nonce.length !== NONCE_BYTES) throw new RangeError('nonce length');
  const b = Buffer.alloc(HELLO_FIXED + name.length);
  b.writeUInt32LE(PROTOCOL_MAGIC, 0);
  b.writeUInt16LE(h.version, 4);
  b.writeUInt16LE(h.path_index, 6);
  b.writeUInt32LE(h.queue_depth, 8);
  b.writeUInt32LE(h.max_io_size, 12);
  writeU64(b, 16, h.incarnation);
  h.client_nonce.copy(b, 24);
  b.writeUInt16LE(name.length, 56);
  name.copy(b, HELLO_FIXED);
  return b;
}

export function decodeHello(b: Buffer): Decoded<Hello> {
  if (b.length < HELLO_FIXED) return { ok: false, reason: `hello too short (${b.length} bytes)` };
  if (b.readUInt32LE(0) !== PROTOCOL_MAGIC) return { ok: false, reason: 'bad protocol magic' };
  const name_len = b.readUInt16LE(56);
  if (name_len === 0 || name_len > MAX_SESSION_NAME_BYTES) return { ok: false, reason: `bad session name length ${name_len}` };
  if (b.length !== HELLO_FIXED + name_len) return { ok: false, reason: 'hello length mismatch' };
  const incarnation = readU64(b, 16);
  if (incarnation === null) return { ok: false, reason: 'incarnation out of range' };
  const name_bytes = b.subarray(HELLO_FIXED);
  const session_name = name_bytes.toString('utf8');
  // Reject names that do not survive a utf-8 round trip and control characters: the name
  // shows up in logs and in the control tree.
  if (!Buffer.from(session_name, 'utf8').equals(name_bytes) || /[\p{Cc}/]/u.test(session_name)) {
    return { ok: false, reason: 'session name is not printable utf-8' };
  }
  return {
    ok: true,
    value: {
      version: b.readUInt16LE(4),
      path_index: b.readUInt16LE(6),
      queue_depth: b.readUInt32LE(8),
      max_io_size: b.readUInt32LE(12),
      incarnation,
      client_nonce: Buffer.from(b.subarray(24, 24 + NONCE_BYTES)),
      session_name,
    },
  };
}

export function encodeChallenge(c: Challenge): Buffer {
  return Buffer.concat([c.server_nonce, c.server_proof]);
}

export function decodeChallenge(b: Buffer): Decoded<Challenge> {
  if (b.length !== NONCE_BYTES + PROOF_BYTES) return { ok: false, reason: `challenge length ${b.length}` };
  return {
    ok: true,
    value: {
      server_nonce: Buffer.from(b.subarray(0, NONCE_BYTES)),
      server_proof: Buffer.from(b.subarray(NONCE_BYTES)),
    },
  };
}

export function decodeAuth(b: Buffer): Decoded<Buffer> {
  if (b.length !== PROOF_BYTES) return { ok: false, reason: `auth length ${b.length}` };
  return { ok: true, value: Buffer.from(b) };
}

export function encodeWelcome(w: Welcome): Buffer {
  const b = Buffer.alloc(WELCOME_BYTES);
  b.writeUInt32LE(w.queue_depth, 0);
  b.writeUInt32LE(w.max_io_size, 4);
  b.writeUInt32LE(w.max_user_hdr, 8);
  b[12] = w.resumed ? 1 : 0;
  writeU64(b, 16, w.server_instance);
  return b;
}

export function decodeWelcome(b: Buffer): Decoded<Welcome> {
  if (b.length !== WELCOME_BYTES) return { ok: false, reason: `welcome length ${b.length}` };
  const server_instance = readU64(b, 16);
  if (server_instance === null) return { ok: false, reason: 'server instance out of range' };
  const resumed = b[12];
  if (resumed !== 0 && resumed !== 1) return { ok: false, reason: 'bad resumed flag' };
  return {
    ok: true,
    value: {
      queue_depth: b.readUInt32LE(0),
      max_io_size: b.readUInt32LE(4),
      max_user_hdr: b.readUInt32LE(8),
      resumed: resumed === 1,
      server_instance,
    },
  };
}

export function encodeReject(r: Reject): Buffer {
  const reason = Buffer.from(r.reason, 'utf8').subarray(0, MAX_REASON_BYTES);
  const b = Buffer.alloc(6 + reason.length);
  b.writeInt32LE(r.status, 0);
  b.writeUInt16LE(reason.length, 4);
  reason.copy(b, 6);
  return b;
}

export function decodeReject(b: Buffer): Decoded<Reject> {
  if (b.length < 6) return { ok: false, reason: 'reject too short' };
  const len = b.readUInt16LE(4);
  if (len > MAX_REASON_BYTES || b.length !== 6 + len) return { ok: false, reason: 'reject length mismatch' };
  return { ok: true, value: { status: b.readInt32LE(0), reason: b.subarray(6).toString('utf8') } };
}

const SERVER_LABEL = Buffer.from('rmr-transport server v1', 'utf8');
const CLIENT_LABEL = Buffer.from('rmr-transport client v1', 'utf8');

function proof(secret: Buffer, label: Buffer, hello_body: Buffer, server_nonce: Buffer): Buffer {
  return createHmac('sha256', secret).update(label).update(hello_body).update(server_nonce).digest();
}

export function serverProof(secret: Buffer, hello_body: Buffer, server_nonce: Buffer): Buffer {
  return proof(secret, SERVER_LABEL, hello_body, server_nonce);
}

export function clientProof(secret: Buffer, hello_body: Buffer, server_nonce: Buffer): Buffer {
  return proof(secret, CLIENT_LABEL, hello_body, server_nonce);
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofMatches(expected: Buffer, received: Buffer): boolean {
  return expected.length === received.length && timingSafeEqual(expected, received);
}

/**
 * The cluster secret must carry enough entropy to resist offline guessing: the server's
 * CHALLENGE holds HMAC(secret, attacker's HELLO | nonce) before the client proved anything,
 * so a low-entropy secret can be searched offline. 32 bytes (of random data, or its base64 or
 * hex text) leave nothing to search.
 */
export const MIN_SECRET_BYTES = 32;
