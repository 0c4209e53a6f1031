// Device status (0 or a negative Linux errno, util/errno.ts) to the NBD error a client sees.
// NBD defines only a handful of errors; everything else becomes EIO, the one every client
// treats as "the IO failed", so a replication-level failure never looks like a bad request.

import { Errno } from '../util/errno.js';
import { NbdErr } from './proto.js';

const table = new Map<number, number>([
  [Errno.EPERM, NbdErr.EPERM],
  [Errno.EACCES, NbdErr.EPERM],
  [Errno.EROFS, NbdErr.EPERM],
  [Errno.EIO, NbdErr.EIO],
  [Errno.ENOMEM, NbdErr.ENOMEM],
  [Errno.EINVAL, NbdErr.EINVAL],
  [Errno.ENOSPC, NbdErr.ENOSPC],
  [Errno.EOVERFLOW, NbdErr.EOVERFLOW],
  [Errno.EMSGSIZE, NbdErr.EOVERFLOW],
  [Errno.EOPNOTSUPP, NbdErr.ENOTSUP],
  [Errno.ESHUTDOWN, NbdErr.ESHUTDOWN],
  // Explicit, not the default: a fenced pool (ESTALE) and a lost quorum (EREMOTEIO) are IO
  // errors to an NBD client, never a bad request (docs/ownership.md).
  [Errno.ESTALE, NbdErr.EIO],
  [Errno.EREMOTEIO, NbdErr.EIO],
]);

/** NBD error for a non-zero device status. */
export function nbdError(status: number): number {
  return table.get(status) ?? NbdErr.EIO;
}
