// Typed transport errors: every failure a caller can see carries a code from this list and a
// one-line reason, so upper layers decide on codes and operators read reasons.

import { Errno } from '../util/errno.js';

export type TransportErrorCode =
  | 'ETIMEDOUT' // a request, permit wait or handshake exceeded its bound
  | 'ENOTCONN' // the session had no live path for longer than its disconnect timeout
  | 'ESHUTDOWN' // the session or server was closed by its owner
  | 'EAUTH' // authentication failed (either direction)
  | 'EPROTO' // the peer broke the protocol (malformed frame, bad version)
  | 'EBUSY' // no permit available and the caller asked not to wait, or the wait queue is full
  | 'EINVAL' // the caller passed something outside negotiated limits
  | 'ECONNREFUSED'; // the peer refused the session (rejected handshake)

const toErrno: Record<TransportErrorCode, number> = {
  ETIMEDOUT: Errno.ETIMEDOUT,
  ENOTCONN: Errno.ENOTCONN,
  ESHUTDOWN: Errno.ESHUTDOWN,
  EAUTH: Errno.EKEYREJECTED,
  EPROTO: Errno.EPROTO,
  EBUSY: Errno.EBUSY,
  EINVAL: Errno.EINVAL,
  ECONNREFUSED: Errno.ECONNREFUSED,
};

export class TransportError extends Error {
  readonly code: TransportErrorCode;
  constructor(code: TransportErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'TransportError';
    this.code = code;
  }
  /** The negative errno an upper layer reports for this failure. */
  get errno(): number {
    return toErrno[this.code];
  }
}
