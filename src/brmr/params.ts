// Device parameters of a store (the reference's brmr_blk_dev_params, §10.4): what a block
// device on top of the pool may assume about every member. Stored in the store header and
// carried by GET_PARAMS / MAP; one fixed 32-byte layout, defined once here.
//
//   0  logical_block_size u32     smallest IO without read-modify-write (512 or 4096)
//   4  physical_block_size u32
//   8  max_io_bytes u32           largest single read/write the store takes
//  12  max_discard_bytes u32
//  16  max_write_zeroes_bytes u32
//  20  discard_granularity u32
//  24  cache_policy u32           bit 0 FUA supported, bit 1 volatile write cache
//  28  reserved u32 (0)

export const PARAMS_BYTES = 32;
export const CACHE_FUA = 1;
export const CACHE_WRITEBACK = 2;

export interface DeviceParams {
  logical_block_size: number;
  physical_block_size: number;
  max_io_bytes: number;
  max_discard_bytes: number;
  max_write_zeroes_bytes: number;
  discard_granularity: number;
  cache_policy: number;
}

const FIELDS = ['logical_block_size', 'physical_block_size', 'max_io_bytes', 'max_discard_bytes', 'max_write_zeroes_bytes', 'discard_granularity', 'cache_policy'] as const;

/** What a file or a block device without better knowledge offers. */
export function defaultParams(): DeviceParams {
  return {
    logical_block_size: 512,
    physical_block_size: 4096,
    max_io_bytes: 1 << 20,
    max_discard_bytes: 1 << 20,
    max_write_zeroes_bytes: 1 << 20,
    discard_granularity: 4096,
    cache_policy: CACHE_FUA | CACHE_WRITEBACK,
  };
}

const pow2 = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi && (n & (n - 1)) === 0;

/** Why these parameters cannot describe a device, or null. */
export function checkParams(p: DeviceParams): string | null {
  if (!pow2(p.logical_block_size, 512, 65536)) return `logical block size ${p.logical_block_size} is not a power of two in 512..65536`;
  if (!pow2(p.physical_block_size, p.logical_block_size, 65536)) return `physical block size ${p.physical_block_size} is not a power of two in ${p.logical_block_size}..65536`;
  if (p.max_io_bytes < p.logical_block_size || p.max_io_bytes % p.logical_block_size !== 0) return `max IO ${p.max_io_bytes} is not a multiple of the logical block size`;
  if (p.max_discard_bytes % p.logical_block_size !== 0 || p.max_write_zeroes_bytes % p.logical_block_size !== 0) return 'discard / write-zeroes limits are not multiples of the logical block size';
  if (p.discard_granularity !== 0 && !pow2(p.discard_granularity, p.logical_block_size, 1 << 30)) return `discard granularity ${p.discard_granularity} is not a power of two >= the logical block size`;
  if ((p.cache_policy & ~(CACHE_FUA | CACHE_WRITEBACK)) !== 0) return `unknown cache policy bits ${p.cache_policy}`;
  return null;
}

export function encodeParams(p: DeviceParams, out: Buffer, at: number): void {
  FIELDS.forEach((f, i) => out.writeUInt32LE(p[f] >>> 0, at + 4 * i));
  out.writeUInt32LE(0, at + 28);
}

/** Decodes and validates; a string says why the bytes are not parameters. */
export function decodeParams(b: Buffer, at: number): DeviceParams | string {
  if (at < 0 || at + PARAMS_BYTES > b.length) return 'parameters truncated';
  const p = {} as DeviceParams;
  FIELDS.forEach((f, i) => (p[f] = b.readUInt32LE(at + 4 * i)));
  if (b.readUInt32LE(at + 28) !== 0) return 'reserved parameter bytes are not zero';
  return checkParams(p) ?? p;
}

/**
 * The parameters a device over several members uses (reference §6.8): the largest block
 * sizes, the smallest limits, FUA only if every member has it, write-back if any has it.
 */
export function mergeParams(all: readonly DeviceParams[]): DeviceParams | string {
  const first = all[0];
  if (first === undefined) return 'no parameters to merge';
  const m: DeviceParams = { ...first };
  for (const p of all.slice(1)) {
    m.logical_block_size = Math.max(m.logical_block_size, p.logical_block_size);
    m.physical_block_size = Math.max(m.physical_block_size, p.physical_block_size);
    m.max_io_bytes = Math.min(m.max_io_bytes, p.max_io_bytes);
    m.max_discard_bytes = Math.min(m.max_discard_bytes, p.max_discard_bytes);
    m.max_write_zeroes_bytes = Math.min(m.max_write_zeroes_bytes, p.max_write_zeroes_bytes);
    m.discard_granularity = Math.max(m.discard_granularity, p.discard_granularity);
    m.cache_policy = (m.cache_policy & p.cache_policy & CACHE_FUA) | ((m.cache_policy | p.cache_policy) & CACHE_WRITEBACK);
  }
  // Limits of one member may not be multiples of another's block size: round down.
  const lbs = m.logical_block_size;
  m.max_io_bytes -= m.max_io_bytes % lbs;
  m.max_discard_bytes -= m.max_discard_bytes % lbs;
  m.max_write_zeroes_bytes -= m.max_write_zeroes_bytes % lbs;
  if (m.physical_block_size < lbs) m.physical_block_size = lbs;
  const bad = checkParams(m);
  return bad === null ? m : `members' parameters do not combine: ${bad}`;
}

export function sameParams(a: DeviceParams, b: DeviceParams): boolean {
  return FIELDS.every((f) => a[f] === b[f]);
}
