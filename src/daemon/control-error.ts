// The one error type of the control plane: an errno-like code (the name a sysfs write would
// fail with) and a sentence for the operator. The control API turns it into an HTTP status
// and a JSON body; the CLI prints the sentence.

import { Errno, type ErrnoName } from '../util/errno.js';

/** Codes the control plane uses: the project's errno names plus two only directories need. */
export type ControlCode = ErrnoName | 'ENOTDIR' | 'EISDIR';

const EXTRA: Readonly<Record<'ENOTDIR' | 'EISDIR', number>> = { ENOTDIR: -20, EISDIR: -21 };

export function controlErrno(code: ControlCode): number {
  return code === 'ENOTDIR' || code === 'EISDIR' ? EXTRA[code] : Errno[code];
}

export class ControlError extends Error {
  override readonly name = 'ControlError';
  constructor(
    readonly code: ControlCode,
    message: string,
  ) {
    super(message);
  }
  get errno(): number {
    return controlErrno(this.code);
  }
}

/** HTTP status for a control error: what a client can do about it, not what broke inside. */
export function httpStatusOf(code: ControlCode): number {
  switch (code) {
    case 'EINVAL':
    case 'ENOTDIR':
    case 'EISDIR':
    case 'EBADMSG':
      return 400;
    case 'EKEYREJECTED':
      return 401;
    case 'EPERM':
      return 403;
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      return 404;
    case 'EACCES':
    case 'EOPNOTSUPP':
      return 405;
    case 'EBUSY':
    case 'EEXIST':
    case 'EROFS':
      return 409;
    case 'E2BIG':
    case 'EMSGSIZE':
      return 413;
    case 'EAGAIN':
    case 'ESHUTDOWN':
    case 'ENOTCONN':
      return 503;
    case 'ETIMEDOUT':
      return 504;
    default:
      return 500;
  }
}

/** Any thrown value as a ControlError; unexpected exceptions become EIO with their message. */
export function toControlError(e: unknown): ControlError {
  if (e instanceof ControlError) return e;
  if (e instanceof Error) return new ControlError('EIO', `internal error: ${e.message}`);
  return new ControlError('EIO', `internal error: ${String(e)}`);
}
