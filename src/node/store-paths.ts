// Where a storage daemon may put a store: only under the directories (or at the exact device
// paths) its configuration lists, `roles.storage.store_dirs`, and not through a symlink
// unless `store_symlinks` allows it. The security review (finding 4): create_store and
// add_store mode=replace took any path, followed symlinks, and overwrote the start of
// whatever file was there, as the daemon's user; any control caller could destroy files.

import { lstatSync, realpathSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, sep } from 'node:path';

function real(p: string): string | null {
  try {
    return realpathSync(p);
  } catch {
    return null;
  }
}

/**
 * Why `device` may not hold a store under `dirs` (null: it may). Directories and device paths
 * of the allow-list are compared by their real paths; the store's directory is resolved, its
 * last component must not be a symlink unless `symlinks` (the open then uses O_NOFOLLOW, so
 * a symlink planted after this check fails too).
 */
export function storePathRefusal(device: string, dirs: readonly string[], symlinks: boolean): string | null {
  if (!isAbsolute(device)) return `device=${device}: give an absolute path`;
  const allowed = dirs.map(real).filter((d): d is string => d !== null);
  const hint = `roles.storage.store_dirs allows ${dirs.length === 0 ? 'nothing' : dirs.join(', ')}`;
  let st: ReturnType<typeof lstatSync> | undefined;
  try {
    st = lstatSync(device, { throwIfNoEntry: false });
  } catch (e) {
    return `device=${device}: ${(e as Error).message}`;
  }
  let resolved: string;
  if (st?.isSymbolicLink() === true) {
    if (!symlinks) return `device=${device} is a symlink (refused: set roles.storage.store_symlinks: true to allow them, e.g. for /dev/disk/by-id)`;
    const r = real(device);
    if (r === null) return `device=${device} is a dangling symlink`;
    resolved = r;
  } else {
    const parent = real(dirname(device));
    if (parent === null) return `device=${device}: its directory does not exist`;
    resolved = join(parent, basename(device));
  }
  for (const d of allowed) {
    if (resolved === d) return null;
    if (resolved.startsWith(d.endsWith(sep) ? d : `${d}${sep}`)) return null;
  }
  return `device=${device}${resolved !== device ? ` (${resolved})` : ''} is outside the store directories: ${hint}`;
}
