// Files a daemon owns, written and read so that another local user cannot steer them: the
// state directory must be the daemon user's and writable by nobody else; files in it are
// replaced by writing a new file created exclusively (O_EXCL, never through a symlink) and
// renaming it over the old name (rename replaces a planted symlink, it does not follow it);
// secret, token and key files must not be readable or writable by group or others.
//
// The security review (finding 3) found a 0777 state directory accepted and the pid written
// through a planted `rmr.pid` symlink into an unrelated file; (finding 7) 0644 secret, token
// and key files accepted silently.

import { closeSync, constants, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

export class UnsafePathError extends Error {
  override readonly name = 'UnsafePathError';
}

export function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

/** The effective uid, or null where there is none (not POSIX). */
export function euid(): number | null {
  return typeof process.geteuid === 'function' ? process.geteuid() : null;
}

/**
 * Makes `dir` (with `mode`, default 0700, parents too) if missing, then checks it: a
 * directory, owned by this process's user, not writable by group or others. `what` names
 * the setting in the message.
 */
export function ensurePrivateDir(dir: string, what: string, mode = 0o700): void {
  try {
    mkdirSync(dir, { recursive: true, mode });
  } catch (e) {
    throw new UnsafePathError(`${what} ${dir}: cannot create it: ${(e as Error).message}`);
  }
  checkOwnDir(dir, what);
}

/** The checks of ensurePrivateDir on an existing directory. */
export function checkOwnDir(dir: string, what: string): void {
  const st = statSync(dir);
  if (!st.isDirectory()) throw new UnsafePathError(`${what} ${dir} is not a directory`);
  const me = euid();
  if (me !== null && st.uid !== me) {
    throw new UnsafePathError(`${what} ${dir} belongs to uid ${st.uid}, not to this daemon's user (uid ${me}): another user could replace the files in it; give a directory of this user`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new UnsafePathError(`${what} ${dir} is writable by ${(st.mode & 0o002) !== 0 ? 'others' : 'its group'} (mode ${octal(st.mode)}): they could plant files or symlinks in it; chmod 700 ${dir}`);
  }
}

/**
 * Replaces `path` with `text` atomically: a temporary file in the same directory, created
 * exclusively and never through a symlink, written (and fsynced with `durable`), then
 * renamed over `path` (and the directory fsynced with `durable`).
 */
export function writeFileAtomic(path: string, text: string | Buffer, mode: number, durable: boolean): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      writeSync(fd, typeof text === 'string' ? Buffer.from(text, 'utf8') : text);
      if (durable) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed or gone
    }
    throw e;
  }
  if (durable) {
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  }
}

/** How a secret file readable by group or others is met: refused (default), or a warning. */
export type SecretModePolicy = 'strict' | 'warn';

/**
 * Reads a file holding a secret (cluster secret, token, private key, PSKs). Group or others
 * having any access to it is refused (`strict`) or reported through `warn`. The mode checked
 * is that of the file read (a symlink to it is followed: mounted secrets often are links).
 */
export function readSecretFile(path: string, what: string, policy: SecretModePolicy, warn: (msg: string) => void): Buffer {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UnsafePathError(`${what} ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const who = (st.mode & 0o007) !== 0 ? 'others' : 'its group';
      const msg = `${what} ${path} can be read or written by ${who} (mode ${octal(st.mode)}): chmod 600 ${path}`;
      if (policy === 'strict') throw new UnsafePathError(`${msg}, or set secret_file_modes: warn`);
      warn(msg);
    }
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}
