// Transport limits and defaults in one place, with the validation that turns a bad setting
// into a clear error at construction instead of a misbehaving session later.

export const PROTOCOL_MAX_QUEUE_DEPTH = 512;
export const DEFAULT_MAX_IO_SIZE = 1 << 20;
export const MIN_MAX_IO_SIZE = 4096;
/** Upper bound on what may be configured: at least 4 MiB is required, 64 MiB is plenty. */
export const LIMIT_MAX_IO_SIZE = 64 << 20;
export const DEFAULT_MAX_USER_HDR = 1024;
export const LIMIT_MAX_USER_HDR = 16 * 1024;
export const MAX_PATHS = 8;

export type PathPolicy = 'round-robin' | 'min-inflight' | 'min-latency';
export const PATH_POLICIES: readonly PathPolicy[] = ['round-robin', 'min-inflight', 'min-latency'];

export interface HeartbeatOptions {
  /** How often each side pings on every path. */
  heartbeat_interval_ms: number;
  /** A ping unanswered for this long declares the path dead. */
  heartbeat_timeout_ms: number;
}

export const DEFAULT_HEARTBEAT: HeartbeatOptions = {
  heartbeat_interval_ms: 1000,
  heartbeat_timeout_ms: 5000,
};

export function checkInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${v}`);
  }
  return v;
}

export function checkHeartbeat(h: HeartbeatOptions): void {
  checkInt('heartbeat_interval_ms', h.heartbeat_interval_ms, 1, 3_600_000);
  checkInt('heartbeat_timeout_ms', h.heartbeat_timeout_ms, 1, 3_600_000);
  if (h.heartbeat_timeout_ms < h.heartbeat_interval_ms) {
    throw new RangeError('heartbeat_timeout_ms must be at least heartbeat_interval_ms');
  }
}

/** Send-queue bound of a path: a full window of maximal responses plus slack. */
export function maxPendingWriteBytes(queue_depth: number, max_io_size: number, max_user_hdr: number): number {
  return queue_depth * (max_io_size + max_user_hdr + 64) + (4 << 20);
}
