// Status codes carried on the wire and in completions: negated Linux errno values, as the
// kernel RMR uses them, so an operator reading a log sees the familiar names.

export const Errno = {
  OK: 0,
  EPERM: -1,
  ENOENT: -2,
  EIO: -5,
  ENXIO: -6,
  E2BIG: -7,
  EAGAIN: -11,
  ENOMEM: -12,
  EACCES: -13,
  EBUSY: -16,
  EEXIST: -17,
  ENODEV: -19,
  EINVAL: -22,
  ENOSPC: -28,
  EROFS: -30,
  ELOOP: -40,
  EPROTO: -71,
  EOVERFLOW: -75,
  EBADMSG: -74,
  EMSGSIZE: -90,
  EOPNOTSUPP: -95,
  ECONNRESET: -104,
  ENOTCONN: -107,
  ESHUTDOWN: -108,
  ETIMEDOUT: -110,
  ECONNREFUSED: -111,
  /** A newer owner of the pool exists: this client is fenced (docs/ownership.md). */
  ESTALE: -116,
  /** The pool's quorum is lost (docs/ownership.md, not built yet). */
  EREMOTEIO: -121,
  ECANCELED: -125,
  EKEYREJECTED: -129,
} as const;

export type ErrnoName = keyof typeof Errno;

const names = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** "EIO" for -5; "errno -N" for values without a name. */
export function errnoName(status: number): string {
  return names.get(status) ?? `errno ${status}`;
}
