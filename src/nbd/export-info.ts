// What the server knows about an export, derived from its BlockDevice: transmission flags,
// block-size limits and the meta contexts it offers. Computed here once so the option phase
// and the transmission phase agree.

import type { BlockDevice } from '../util/block-device.js';
import { BASE_ALLOCATION, TFlag } from './proto.js';

export interface NbdExport {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  /** Largest READ/WRITE payload a client may use (NBD_INFO_BLOCK_SIZE's maximum). */
  readonly max_payload: number;
  /** Largest IO the device is given: longer requests are split into pieces of this size. */
  readonly piece_bytes: number;
}

/** Looks exports up by name ("" is the default export). */
export interface ExportTable {
  find(name: string): NbdExport | undefined;
  all(): readonly NbdExport[];
}

/**
 * The default largest payload of one request, whatever the device takes at once: 32 MiB is
 * what Linux's nbd driver may send in one request (its queue's max_hw_sectors is 65,536
 * sectors) and what nbdkit and qemu-nbd advertise, so a kernel client is never refused.
 */
export const DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
/** The bound of the setting: one request's payload is also pinned in memory while it runs. */
export const LIMIT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024;

/**
 * The payload limit an export advertises and the piece size its device gets. The advertised
 * maximum is the configured one rounded down to the device's minimum block size (the spec
 * wants a multiple of it) and never below the preferred size (the spec's SHOULD); requests
 * above the device's own maximum (an RMR pool's max IO, 1 MiB by default) are split.
 */
export function exportLimits(dev: BlockDevice, max_payload: number): { max_payload: number; piece_bytes: number } {
  const { minimum, preferred, maximum } = dev.block_sizes;
  const advertised = Math.max(preferred, max_payload - (max_payload % minimum));
  return { max_payload: advertised, piece_bytes: Math.min(maximum, advertised) };
}

export function transmissionFlags(dev: BlockDevice, structured: boolean): number {
  let f = TFlag.HAS_FLAGS | TFlag.SEND_FLUSH | TFlag.SEND_FUA;
  if (!dev.writable) f |= TFlag.READ_ONLY;
  if (dev.writable && dev.can_trim) f |= TFlag.SEND_TRIM;
  if (dev.writable && dev.can_zero) f |= TFlag.SEND_WRITE_ZEROES;
  if (dev.writable && dev.can_zero && dev.can_fast_zero) f |= TFlag.SEND_FAST_ZERO;
  if (dev.multi_conn) f |= TFlag.CAN_MULTI_CONN;
  // Reads always go out as one chunk, so "don't fragment" costs nothing to honour.
  if (structured) f |= TFlag.SEND_DF;
  return f;
}

/** Every meta context of an export, `base:allocation` first; a context's id is its index + 1. */
export function contextsOf(dev: BlockDevice): string[] {
  const out = [BASE_ALLOCATION];
  for (const c of dev.metaContexts()) if (c !== BASE_ALLOCATION && !out.includes(c)) out.push(c);
  return out;
}

/**
 * Contexts a query selects. Exact names always match. For LIST only (the spec leaves
 * wildcards to LIST), a query ending in ':' is a prefix: "base:" lists every base context,
 * "rmr:dirty:" every dirty map, "rmr:" the whole namespace.
 */
export function matchContexts(available: readonly string[], query: string, list: boolean): string[] {
  if (list && query.endsWith(':')) return available.filter((c) => c.startsWith(query));
  return available.includes(query) ? [query] : [];
}

/** Throws on a device whose limits the protocol cannot express (a programmer error). */
export function checkDevice(name: string, dev: BlockDevice): void {
  const { minimum, preferred, maximum } = dev.block_sizes;
  const pow2 = (v: number): boolean => Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
  if (!pow2(minimum) || minimum > 65536) throw new Error(`export ${name}: minimum block size ${minimum} must be a power of 2 <= 64 KiB`);
  if (!pow2(preferred) || preferred < minimum) throw new Error(`export ${name}: preferred block size ${preferred} must be a power of 2 >= minimum`);
  if (!Number.isInteger(maximum) || maximum < minimum || maximum % minimum !== 0 || maximum > 0xffffffff) {
    throw new Error(`export ${name}: maximum block size ${maximum} must be a multiple of the minimum`);
  }
  if (!Number.isSafeInteger(dev.size_bytes) || dev.size_bytes < 0) throw new Error(`export ${name}: bad size ${dev.size_bytes}`);
  if (Buffer.byteLength(name, 'utf8') > 4096) throw new Error('export name longer than 4096 bytes');
}
