// Checks on one transmission request before the device sees it, and the small helpers that
// shape what the device returns into what the protocol allows. Pure functions: the
// connection decides what to do with the answers.

import type { BlockDevice, Extent } from '../util/block-device.js';
import { Cmd, CmdFlag, NbdErr, type Request } from './proto.js';

const ALLOWED_FLAGS = new Map<number, number>([
  [Cmd.READ, CmdFlag.FUA | CmdFlag.DF],
  [Cmd.WRITE, CmdFlag.FUA],
  [Cmd.DISC, 0xffff],
  [Cmd.FLUSH, CmdFlag.FUA],
  [Cmd.TRIM, CmdFlag.FUA],
  [Cmd.WRITE_ZEROES, CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO],
  [Cmd.BLOCK_STATUS, CmdFlag.REQ_ONE],
]);

export interface RequestContext {
  device: BlockDevice;
  /** The export's advertised maximum payload (NbdExport.max_payload). */
  max_payload: number;
  structured: boolean;
  meta_count: number;
}

/** 0 when the request may go to the device, else the NBD error to answer with. */
export function checkRequest(r: Request, ctx: RequestContext): number {
  const dev = ctx.device;
  const allowed = ALLOWED_FLAGS.get(r.type);
  if (allowed === undefined) return NbdErr.EINVAL;
  if ((r.flags & ~allowed) !== 0) return NbdErr.EINVAL;
  const end = r.offset + r.length;
  switch (r.type) {
    // Over the advertised maximum: the spec allows EINVAL (what older servers answer) or
    // EOVERFLOW (a hint that the length, not the range, is wrong). Reads get EOVERFLOW,
    // writes EINVAL; the payload of a refused write is skipped up to max_skip_bytes.
    case Cmd.READ:
      if (r.length > ctx.max_payload) return NbdErr.EOVERFLOW;
      return end > dev.size_bytes ? NbdErr.EINVAL : 0;
    case Cmd.WRITE:
      if (!dev.writable) return NbdErr.EPERM;
      if (r.length > ctx.max_payload) return NbdErr.EINVAL;
      return end > dev.size_bytes ? NbdErr.ENOSPC : 0;
    case Cmd.TRIM:
    case Cmd.WRITE_ZEROES: {
      if (!dev.writable) return NbdErr.EPERM;
      const trim = r.type === Cmd.TRIM;
      if (trim ? !dev.can_trim : !dev.can_zero) return NbdErr.EINVAL;
      if ((r.flags & CmdFlag.FAST_ZERO) !== 0 && !dev.can_fast_zero) return NbdErr.EINVAL;
      return end > dev.size_bytes ? NbdErr.ENOSPC : 0;
    }
    case Cmd.BLOCK_STATUS:
      if (!ctx.structured || ctx.meta_count === 0) return NbdErr.EINVAL;
      if (r.length === 0) return NbdErr.EINVAL;
      return end > dev.size_bytes ? NbdErr.EINVAL : 0;
    default:
      return 0;
  }
}

/**
 * The extents of one block-status answer, cut to the asked length (and to one extent for
 * REQ_ONE), or null when the device broke its contract (no extents, empty or non-integer
 * lengths): the client then gets EIO instead of a reply it would reject.
 */
export function clampExtents(extents: readonly Extent[] | null, length: number, req_one: boolean, max_count: number): Extent[] | null {
  if (extents === null || extents.length === 0) return null;
  const out: Extent[] = [];
  let left = length;
  for (const e of extents) {
    if (!Number.isInteger(e.length) || e.length <= 0 || !Number.isInteger(e.flags) || e.flags < 0 || e.flags > 0xffffffff) return null;
    const len = Math.min(e.length, left);
    out.push({ length: len, flags: e.flags });
    left -= len;
    if (left === 0 || req_one || out.length >= max_count) break;
  }
  return out;
}

/** Allocation status the server reports itself when the device has no `base:allocation`. */
export function allAllocated(offset: number, length: number, size: number): Extent[] {
  return [{ length: Math.min(length, size - offset), flags: 0 }];
}
