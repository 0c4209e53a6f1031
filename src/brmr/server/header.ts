// The BRMR store header (the reference's brmr_srv_blk_dev_meta, §3.10, §10.1): page 0 of
// every store. It says which pool and which member the store belongs to (by name and, unlike
// the reference, by UUID), where data and RMR metadata live, and the device parameters.
// Decoding validates everything: a corrupt or hostile page is an error value, never an
// exception.
//
//    0  magic            u64   "BRMRSTOR"
//    8  format_version   u32   1
//   12  header_bytes     u32   4096 (bytes the CRC covers, with the CRC)
//   16  pool_name_len    u16   1..63
//   18  reserved         u16   0
//   20  pool_name        [64]  UTF-8, zero padded
//   84  pool_uuid        [16]  all zero until the first map assigns one
//  100  store_uuid       [16]  new at create_store and at add_store mode=replace
//  116  member_id        u32   1..255 (the storage node's member id in the pool)
//  120  state            u32   bit 0 MAPPED (passed a map's parameter check), bit 1 NEED_SYNC,
//                              bit 2 BLANK (all zeroes since create_store, never written)
//  124  reserved         u32   0
//  128  mapped_size      u64   bytes of replicated data (device offset 0 = store byte 4096)
//  136  device_size      u64   bytes of the backing file or device when the header was written
//  144  data_offset      u64   4096
//  152  meta_offset      u64   data_offset + mapped_size: RMR's metadata region
//  160  meta_size        u64   bytes reserved for it
//  168  chunk_size       u32   the pool's chunk size (sizes the metadata region)
//  172  reserved         u32   0
//  176  timestamp_ms     u64   wall clock of the last header write (informational)
//  184  params           [32]  device parameters (params.ts)
//  216  zero             ...
// 4092  crc32c           u32   over bytes 0..4091

import { crc32c } from '../../util/crc32c.js';
import { PARAMS_BYTES, decodeParams, encodeParams, type DeviceParams } from '../params.js';

export const HEADER_BYTES = 4096;
export const DATA_OFFSET = 4096;
export const HEADER_MAGIC = Buffer.from('BRMRSTOR', 'latin1');
export const HEADER_VERSION = 1;
export const POOL_NAME_MAX = 63;
export const STATE_MAPPED = 1;
export const STATE_NEED_SYNC = 2;
/**
 * The data area reads as zeroes (create_store made the file) and nothing was written to it:
 * cleared, durably, before the first write. A create-mode join beside members as blank needs
 * no initial sync. An older version refuses a header with this bit (unknown state bits).
 */
export const STATE_BLANK = 4;
const STATE_KNOWN = STATE_MAPPED | STATE_NEED_SYNC | STATE_BLANK;
const CRC_AT = HEADER_BYTES - 4;
const PARAMS_AT = 184;
const ZERO_FROM = PARAMS_AT + PARAMS_BYTES;

export interface StoreHeader {
  pool_name: string;
  pool_uuid: Buffer;
  store_uuid: Buffer;
  member_id: number;
  state: number;
  mapped_size: number;
  device_size: number;
  data_offset: number;
  meta_offset: number;
  meta_size: number;
  chunk_size: number;
  timestamp_ms: number;
  params: DeviceParams;
}

const safeU64 = (b: Buffer, at: number): number | null => {
  const v = b.readBigUInt64LE(at);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(v);
};

/** Why `h` cannot be written (the same rules decode enforces), or null. */
export function checkHeader(h: StoreHeader): string | null {
  const name = Buffer.from(h.pool_name, 'utf8');
  if (name.length < 1 || name.length > POOL_NAME_MAX || name.includes(0)) return `pool name must be 1..${POOL_NAME_MAX} bytes without NUL`;
  if (h.pool_uuid.length !== 16 || h.store_uuid.length !== 16) return 'UUIDs are 16 bytes';
  if (h.store_uuid.every((x) => x === 0)) return 'the store UUID is all zero';
  if (!Number.isInteger(h.member_id) || h.member_id < 1 || h.member_id > 255) return `member id ${h.member_id} outside 1..255`;
  if ((h.state & ~STATE_KNOWN) !== 0) return `unknown state bits ${h.state}`;
  for (const k of ['mapped_size', 'device_size', 'data_offset', 'meta_offset', 'meta_size', 'timestamp_ms'] as const) {
    if (!Number.isSafeInteger(h[k]) || h[k] < 0) return `${k} ${h[k]} is not a non-negative safe integer`;
  }
  if (h.mapped_size <= 0 || h.mapped_size % 512 !== 0) return `mapped size ${h.mapped_size} is not a positive multiple of 512`;
  if (h.data_offset !== DATA_OFFSET) return `data offset ${h.data_offset} is not ${DATA_OFFSET}`;
  if (h.meta_offset !== h.data_offset + h.mapped_size) return 'metadata does not follow the data';
  if (h.meta_size <= 0 || h.meta_size % 4096 !== 0) return `metadata size ${h.meta_size} is not a positive multiple of 4096`;
  if (h.meta_offset + h.meta_size > h.device_size) return `data and metadata (${h.meta_offset + h.meta_size} bytes) exceed the device (${h.device_size})`;
  if (!Number.isInteger(h.chunk_size) || h.chunk_size < 4096 || h.chunk_size > 1 << 30 || (h.chunk_size & (h.chunk_size - 1)) !== 0) return `chunk size ${h.chunk_size}`;
  return null;
}

export function encodeHeader(h: StoreHeader): Buffer {
  const bad = checkHeader(h);
  if (bad !== null) throw new RangeError(`store header: ${bad}`);
  const b = Buffer.alloc(HEADER_BYTES);
  HEADER_MAGIC.copy(b, 0);
  b.writeUInt32LE(HEADER_VERSION, 8);
  b.writeUInt32LE(HEADER_BYTES, 12);
  const name = Buffer.from(h.pool_name, 'utf8');
  b.writeUInt16LE(name.length, 16);
  name.copy(b, 20);
  h.pool_uuid.copy(b, 84);
  h.store_uuid.copy(b, 100);
  b.writeUInt32LE(h.member_id, 116);
  b.writeUInt32LE(h.state, 120);
  b.writeBigUInt64LE(BigInt(h.mapped_size), 128);
  b.writeBigUInt64LE(BigInt(h.device_size), 136);
  b.writeBigUInt64LE(BigInt(h.data_offset), 144);
  b.writeBigUInt64LE(BigInt(h.meta_offset), 152);
  b.writeBigUInt64LE(BigInt(h.meta_size), 160);
  b.writeUInt32LE(h.chunk_size, 168);
  b.writeBigUInt64LE(BigInt(h.timestamp_ms), 176);
  encodeParams(h.params, b, PARAMS_AT);
  b.writeUInt32LE(crc32c(b.subarray(0, CRC_AT)), CRC_AT);
  return b;
}

/** Whether the page carries the header magic at all (valid or not). */
export function hasHeaderMagic(page: Buffer): boolean {
  return page.length >= HEADER_MAGIC.length && page.subarray(0, HEADER_MAGIC.length).equals(HEADER_MAGIC);
}

/** Decodes and validates page 0; a string says what is wrong with it. */
export function decodeHeader(page: Buffer): StoreHeader | string {
  if (page.length < HEADER_BYTES) return `header page of ${page.length} bytes`;
  if (!hasHeaderMagic(page)) return 'no BRMR header (magic missing)';
  if (page.readUInt32LE(CRC_AT) !== crc32c(page.subarray(0, CRC_AT))) return 'header checksum mismatch';
  const version = page.readUInt32LE(8);
  if (version !== HEADER_VERSION) return `header format version ${version} (this build reads ${HEADER_VERSION})`;
  if (page.readUInt32LE(12) !== HEADER_BYTES) return 'header length is not 4096';
  const name_len = page.readUInt16LE(16);
  if (name_len < 1 || name_len > POOL_NAME_MAX) return `pool name length ${name_len}`;
  if (page.readUInt16LE(18) !== 0 || page.readUInt32LE(124) !== 0 || page.readUInt32LE(172) !== 0) return 'reserved header fields are not zero';
  if (page.subarray(20 + name_len, 84).some((x) => x !== 0) || page.subarray(ZERO_FROM, CRC_AT).some((x) => x !== 0)) return 'header padding is not zero';
  const name_bytes = page.subarray(20, 20 + name_len);
  const pool_name = name_bytes.toString('utf8');
  if (!Buffer.from(pool_name, 'utf8').equals(name_bytes)) return 'pool name is not valid UTF-8';
  const u64 = [128, 136, 144, 152, 160, 176].map((at) => safeU64(page, at));
  if (u64.some((v) => v === null)) return 'a 64-bit header field exceeds 2^53';
  const [mapped_size, device_size, data_offset, meta_offset, meta_size, timestamp_ms] = u64 as number[];
  const params = decodeParams(page, PARAMS_AT);
  if (typeof params === 'string') return `device parameters: ${params}`;
  const h: StoreHeader = {
    pool_name,
    pool_uuid: Buffer.from(page.subarray(84, 100)),
    store_uuid: Buffer.from(page.subarray(100, 116)),
    member_id: page.readUInt32LE(116),
    state: page.readUInt32LE(120),
    mapped_size: mapped_size as number,
    device_size: device_size as number,
    data_offset: data_offset as number,
    meta_offset: meta_offset as number,
    meta_size: meta_size as number,
    chunk_size: page.readUInt32LE(168),
    timestamp_ms: timestamp_ms as number,
    params,
  };
  return checkHeader(h) ?? h;
}

/** 32 hex digits with dashes, the usual UUID text form. */
export function uuidText(u: Buffer): string {
  const h = u.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Parses the text form (dashes optional); null when it is not 16 bytes of hex. */
export function parseUuid(s: string): Buffer | null {
  const hex = s.replace(/-/g, '');
  return /^[0-9a-fA-F]{32}$/.test(hex) ? Buffer.from(hex, 'hex') : null;
}

/** A random (version 4) UUID from 16 random bytes. */
export function makeUuid(random16: Buffer): Buffer {
  if (random16.length !== 16) throw new RangeError('a UUID takes 16 random bytes');
  const u = Buffer.from(random16);
  u[6] = ((u[6] as number) & 0x0f) | 0x40;
  u[8] = ((u[8] as number) & 0x3f) | 0x80;
  return u;
}
