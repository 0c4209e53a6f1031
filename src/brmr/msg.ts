// BRMR's commands over RMR's USER channel (reference §10.4): GET_PARAMS, MAP, UNMAP from the
// device (brmr-client) to each member's store (brmr-server). Every layout defined once here,
// encoded, decoded and bounds-checked; a malformed message is an error value.
//
// Request:
//    0  magic u32 0x51524d42 ("BMRQ")   4 version u8 (1)   5 cmd u8   6 flags u8   7 reserved u8 (0)
//       flags: UNMAP bit 0 ROLLBACK (undo a MAP of a first map that failed elsewhere); 0 otherwise
//    8  MAP only: mapped_size u64 | pool_uuid [16] | params [32]        (64 bytes in all)
// Answer:
//    0  magic u32 0xDEADF00D  4 version u8  5 cmd u8 (echo)  6 reserved u16
//    8  status i32 (0 or -errno: the store's verdict)  12 reason_len u16  14 reserved u16
//   16  GET_PARAMS with status 0: mapped u8 | pad [3] | member_id u32 | mapped_size u64 |
//       device_size u64 | pool_uuid [16] | store_uuid [16] | params [32]   (88 bytes)
//       then reason_len bytes of UTF-8 (why the store refused; at most 200)

import { PARAMS_BYTES, decodeParams, encodeParams, type DeviceParams } from './params.js';

export const BRMR_REQ_MAGIC = 0x51524d42;
export const BRMR_RSP_MAGIC = 0xdeadf00d;
export const BRMR_PROTO_VERSION = 1;
export const BrmrCmd = { MAP: 0, UNMAP: 2, GET_PARAMS: 3 } as const;
export type BrmrCmdName = keyof typeof BrmrCmd;
const NAME_OF = new Map<number, BrmrCmdName>(Object.entries(BrmrCmd).map(([k, v]) => [v, k as BrmrCmdName]));

const REQ_HDR = 8;
const MAP_BODY = 8 + 16 + PARAMS_BYTES;
const RSP_HDR = 16;
const PARAMS_RSP_BODY = 8 + 8 + 8 + 16 + 16 + PARAMS_BYTES;
export const REASON_MAX = 200;
/** The longest answer a store gives: what the client asks the USER channel for. */
export const BRMR_RSP_MAX = RSP_HDR + PARAMS_RSP_BODY + REASON_MAX;

export type BrmrRequest =
  | { cmd: 'GET_PARAMS' }
  | { cmd: 'UNMAP'; rollback: boolean }
  | { cmd: 'MAP'; mapped_size: number; pool_uuid: Buffer; params: DeviceParams };

export interface StoreParamsAnswer {
  mapped: boolean;
  member_id: number;
  mapped_size: number;
  device_size: number;
  pool_uuid: Buffer;
  store_uuid: Buffer;
  params: DeviceParams;
}

export interface BrmrAnswer {
  cmd: BrmrCmdName;
  status: number;
  reason: string;
  /** GET_PARAMS answers with status 0. */
  info: StoreParamsAnswer | null;
}

export function encodeRequest(r: BrmrRequest): Buffer {
  const b = Buffer.alloc(r.cmd === 'MAP' ? REQ_HDR + MAP_BODY : REQ_HDR);
  b.writeUInt32LE(BRMR_REQ_MAGIC, 0);
  b[4] = BRMR_PROTO_VERSION;
  b[5] = BrmrCmd[r.cmd];
  if (r.cmd === 'UNMAP' && r.rollback) b[6] = 1;
  if (r.cmd === 'MAP') {
    if (!Number.isSafeInteger(r.mapped_size) || r.mapped_size < 0 || r.pool_uuid.length !== 16) throw new RangeError('MAP: bad size or UUID');
    b.writeBigUInt64LE(BigInt(r.mapped_size), 8);
    r.pool_uuid.copy(b, 16);
    encodeParams(r.params, b, 32);
  }
  return b;
}

const u64 = (b: Buffer, at: number): number | null => {
  const v = b.readBigUInt64LE(at);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(v);
};

export function decodeRequest(b: Buffer): BrmrRequest | string {
  if (b.length < REQ_HDR) return `request of ${b.length} bytes`;
  if (b.readUInt32LE(0) !== BRMR_REQ_MAGIC) return 'not a BRMR request (magic)';
  if (b[4] !== BRMR_PROTO_VERSION) return `BRMR protocol version ${b[4]}`;
  const name = NAME_OF.get(b[5] as number);
  if (name === undefined) return `unknown BRMR command ${b[5]}`;
  const flags = b[6] as number;
  if (b[7] !== 0 || flags > (name === 'UNMAP' ? 1 : 0)) return 'reserved request bits are not zero';
  if (name !== 'MAP' && b.length !== REQ_HDR) return `${name} with ${b.length - REQ_HDR} extra bytes`;
  if (name === 'UNMAP') return { cmd: 'UNMAP', rollback: flags === 1 };
  if (name === 'GET_PARAMS') return { cmd: 'GET_PARAMS' };
  if (b.length !== REQ_HDR + MAP_BODY) return `MAP of ${b.length} bytes`;
  const mapped_size = u64(b, 8);
  if (mapped_size === null) return 'MAP: mapped size exceeds 2^53';
  const params = decodeParams(b, 32);
  if (typeof params === 'string') return `MAP: ${params}`;
  return { cmd: 'MAP', mapped_size, pool_uuid: Buffer.from(b.subarray(16, 32)), params };
}

export function encodeAnswer(a: BrmrAnswer): Buffer {
  const reason = Buffer.from(a.reason, 'utf8').subarray(0, REASON_MAX);
  const body = a.info !== null && a.status === 0 ? PARAMS_RSP_BODY : 0;
  const b = Buffer.alloc(RSP_HDR + body + reason.length);
  b.writeUInt32LE(BRMR_RSP_MAGIC, 0);
  b[4] = BRMR_PROTO_VERSION;
  b[5] = BrmrCmd[a.cmd];
  b.writeInt32LE(a.status, 8);
  b.writeUInt16LE(reason.length, 12);
  if (body > 0 && a.info !== null) {
    const i = a.info;
    b[16] = i.mapped ? 1 : 0;
    b.writeUInt32LE(i.member_id, 20);
    b.writeBigUInt64LE(BigInt(i.mapped_size), 24);
    b.writeBigUInt64LE(BigInt(i.device_size), 32);
    i.pool_uuid.copy(b, 40);
    i.store_uuid.copy(b, 56);
    encodeParams(i.params, b, 72);
  }
  reason.copy(b, RSP_HDR + body);
  return b;
}

/** Decodes a store's answer to `expect`; a string says why it is not one. */
export function decodeAnswer(b: Buffer, expect: BrmrCmdName): BrmrAnswer | string {
  if (b.length < RSP_HDR) return `answer of ${b.length} bytes`;
  if (b.readUInt32LE(0) !== BRMR_RSP_MAGIC) return 'not a BRMR answer (magic)';
  if (b[4] !== BRMR_PROTO_VERSION) return `BRMR protocol version ${b[4]}`;
  if (b[5] !== BrmrCmd[expect]) return `answer to command ${b[5]}, not ${expect}`;
  const status = b.readInt32LE(8);
  if (status > 0 || status < -4095) return `status ${status}`;
  const reason_len = b.readUInt16LE(12);
  if (reason_len > REASON_MAX) return `reason of ${reason_len} bytes`;
  const body = expect === 'GET_PARAMS' && status === 0 ? PARAMS_RSP_BODY : 0;
  if (b.length !== RSP_HDR + body + reason_len) return `answer of ${b.length} bytes, expected ${RSP_HDR + body + reason_len}`;
  const reason = b.subarray(RSP_HDR + body).toString('utf8');
  if (body === 0) return { cmd: expect, status, reason, info: null };
  if ((b[16] as number) > 1 || b.subarray(17, 20).some((x) => x !== 0)) return 'bad mapped flag';
  const mapped_size = u64(b, 24);
  const device_size = u64(b, 32);
  if (mapped_size === null || device_size === null) return 'a size exceeds 2^53';
  const params = decodeParams(b, 72);
  if (typeof params === 'string') return params;
  return {
    cmd: expect,
    status,
    reason,
    info: { mapped: b[16] === 1, member_id: b.readUInt32LE(20), mapped_size, device_size, pool_uuid: Buffer.from(b.subarray(40, 56)), store_uuid: Buffer.from(b.subarray(56, 72)), params },
  };
}
