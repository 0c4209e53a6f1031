// The lock of a file-backed store (issue 19, item 6): a regular file has no exclusive open
// (a block device has O_EXCL), so two daemons, or two add_store calls of one daemon, could
// open one store at once and write their own data and metadata over each other's. The lock
// is a file beside the store, created with O_EXCL, naming its holder (host, pid with its start
// time and boot id, and a token of the holding process). A lock whose holder is gone is taken
// over: same host and the holder is not running by the daemon's own liveness rule
// (liveness.ts: a zombie, a reused pid or a pid of an earlier boot is gone, as for the pid
// file: a SIGKILLed daemon that PID 1 has not reaped yet must be able to reopen its store),
// or the pid is this process's and the token is not (a restarted daemon that got the same
// pid, as pid 1 in a container). A holder on another host cannot be
// checked: the error names it and the operator removes the lock file if it is gone.

import { constants } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { liveness, selfIdentity } from './liveness.js';

/** Suffix of the lock file: `<store path>.lock`. */
export const STORE_LOCK_SUFFIX = '.lock';
/** Lock files larger than this are not a holder record (read at most this much). */
const LOCK_MAX_BYTES = 4096;

/** Identifies this process among incarnations that share a pid. */
const PROCESS_TOKEN = randomBytes(8).toString('hex');

interface Holder {
  host: string;
  pid: number;
  /** The holder's start time and boot (null in a record that lacks them). */
  start_ticks: number | null;
  boot_id: string | null;
  token: string;
  since: string;
}

function parseHolder(text: string): Holder | null {
  try {
    const v = JSON.parse(text) as Partial<Holder>;
    if (typeof v.host !== 'string' || typeof v.pid !== 'number' || !Number.isInteger(v.pid) || v.pid <= 0 || typeof v.token !== 'string') return null;
    const start_ticks = typeof v.start_ticks === 'number' && Number.isInteger(v.start_ticks) && v.start_ticks >= 0 ? v.start_ticks : null;
    const boot_id = typeof v.boot_id === 'string' ? v.boot_id : null;
    return { host: v.host, pid: v.pid, start_ticks, boot_id, token: v.token, since: typeof v.since === 'string' ? v.since : '?' };
  } catch {
    return null;
  }
}

/** Why the holder still holds the lock, or null when it is gone (the lock may be taken over). */
function liveHolder(h: Holder, lock_path: string): string | null {
  const me = hostname();
  const who = `pid ${h.pid} on host ${h.host} (since ${h.since}; lock file ${lock_path})`;
  if (h.host !== me) return `held by ${who}: that host cannot be checked from here; remove the lock file if that daemon is gone`;
  if (h.pid === process.pid) return h.token === PROCESS_TOKEN ? `held by this daemon (${who}): the store is open here already, in another pool or operation` : null;
  const l = liveness({ pid: h.pid, start_ticks: h.start_ticks, boot_id: h.boot_id });
  return l.running ? `held by ${who}: ${l.evidence}` : null;
}

export interface StoreLock {
  readonly path: string;
  release(): Promise<void>;
}

function lockError(message: string): Error {
  return Object.assign(new Error(message), { code: 'EBUSY' });
}

/**
 * Takes the lock of the store at `store_path` (one take-over of a stale lock at most), or
 * throws EBUSY naming the holder. `nofollow`: the lock file is never reached through a symlink.
 */
export async function lockStore(store_path: string, nofollow: boolean): Promise<StoreLock> {
  const lock_path = store_path + STORE_LOCK_SUFFIX;
  const self = selfIdentity();
  const record = `${JSON.stringify({ host: hostname(), pid: self.pid, start_ticks: self.start_ticks, boot_id: self.boot_id, token: PROCESS_TOKEN, since: new Date().toISOString() })}\n`;
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (nofollow ? constants.O_NOFOLLOW : 0);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(lock_path, flags, 0o600);
      try {
        await fh.writeFile(record);
        await fh.sync();
      } finally {
        await fh.close();
      }
      let released = false;
      return {
        path: lock_path,
        release: async () => {
          if (released) return;
          released = true;
          await unlink(lock_path).catch(() => undefined);
        },
      };
    } catch (e) {
      if ((e as { code?: string }).code !== 'EEXIST') throw e;
    }
    const text = (await readFile(lock_path, { encoding: 'utf8', flag: constants.O_RDONLY | (nofollow ? constants.O_NOFOLLOW : 0) }).catch(() => '')).slice(0, LOCK_MAX_BYTES);
    const holder = parseHolder(text);
    // An unreadable or foreign file is not taken over: it may be a holder mid-write.
    if (holder === null) throw lockError(`${store_path} is locked by ${lock_path}, which names no holder: remove it if no daemon has the store open`);
    const why = liveHolder(holder, lock_path);
    if (why !== null) throw lockError(`${store_path} is in use: its lock is ${why}`);
    // The holder is gone (crashed daemon): its lock is taken over.
    await unlink(lock_path).catch(() => undefined);
  }
  throw lockError(`${store_path}: its lock ${lock_path} was taken by another process meanwhile`);
}
