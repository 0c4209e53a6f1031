// Issue 19 item 6: a file-backed store is never open twice. A regular file has no exclusive
// open (a block device has O_EXCL): on main, a second store manager (a second daemon, or a
// second pool of one daemon) opened the same file and both wrote it. Now a lock file beside
// the store names its holder; a holder that is gone (crashed daemon) is taken over.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { StoreManager } from '../../src/brmr/server/store-manager.js';
import { nodeFileOpener } from '../../src/node/file-backend.js';
import { NodeRandom } from '../../src/node/ports.js';
import { Errno } from '../../src/util/errno.js';
import { readProcStat } from '../../src/node/liveness.js';
import { killToZombie, nonReapingParent } from '../util/zombie.js';

const CHUNK = 64 * 1024;
const SIZE = 16 * CHUNK;
const POOL = 'lock1';

function manager(): StoreManager {
  const pool = new ServerPool({ pool_name: POOL, group_id: 7, member_id: 1, chunk_size: CHUNK }, () => undefined);
  return new StoreManager({ open: nodeFileOpener, random: new NodeRandom(), wall_ms: () => Date.now(), serverPool: (n) => (n === POOL ? pool : undefined) });
}

const add = (m: StoreManager, device: string) => new Promise<[number, string | null]>((r) => m.addStore({ pool: POOL, device }, (s, _st, why) => r([s, why])));
const remove = (m: StoreManager) => new Promise<[number, string | null]>((r) => m.removeStore(POOL, (s, why) => r([s, why])));

function tmp(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'brmr-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a store file open in one store manager is refused to a second (EBUSY, naming the holder) until the first removes it', async (t) => {
  const path = join(tmp(t), 's.img');
  const a = manager();
  const [cs, cwhy] = await new Promise<[number, string | null]>((r) => a.createStore({ pool: POOL, device: path, mapped_size: SIZE }, (s, _st, why) => r([s, why])));
  assert.equal(cs, 0, cwhy ?? '');
  assert.ok(existsSync(`${path}.lock`), 'the lock file is there while the store is open');
  const b = manager();
  const [s1, why1] = await add(b, path);
  assert.equal(s1, Errno.EBUSY, 'a second opener of the file is refused');
  assert.match(why1 ?? '', new RegExp(`in use: .*pid ${process.pid} on host `));
  assert.deepEqual(await remove(a), [0, null]);
  assert.equal(existsSync(`${path}.lock`), false, 'remove_store releases the lock');
  assert.deepEqual(await add(b, path), [0, null]);
  assert.deepEqual(await remove(b), [0, null]);
});

test("a lock held by another running process is refused naming its pid; once that process is gone (a crashed daemon) it is taken over; another host's lock is refused", async (t) => {
  const dir = tmp(t);
  const path = join(dir, 's.img');
  const a = manager();
  const [cs] = await new Promise<[number, string | null]>((r) => a.createStore({ pool: POOL, device: path, mapped_size: SIZE }, (s, _st, why) => r([s, why])));
  assert.equal(cs, 0);
  assert.deepEqual(await remove(a), [0, null]);
  // Another daemon holds it: a live process on this host.
  const other = spawn(process.execPath, ['-e', 'setInterval(() => undefined, 1000)'], { stdio: 'ignore' });
  t.after(() => other.kill('SIGKILL'));
  const pid = other.pid as number;
  writeFileSync(`${path}.lock`, JSON.stringify({ host: hostname(), pid, token: 'other', since: 'then' }));
  const [s1, why1] = await add(a, path);
  assert.equal(s1, Errno.EBUSY);
  assert.match(why1 ?? '', new RegExp(`pid ${pid} on host `));
  // It crashes: its lock is stale and taken over.
  other.kill('SIGKILL');
  await once(other, 'exit');
  assert.deepEqual(await add(a, path), [0, null]);
  assert.deepEqual(await remove(a), [0, null]);
  // A holder on another host cannot be checked: refused, naming it.
  writeFileSync(`${path}.lock`, JSON.stringify({ host: 'elsewhere.example', pid: 1234, token: 'x', since: 'then' }));
  const [s2, why2] = await add(a, path);
  assert.equal(s2, Errno.EBUSY);
  assert.match(why2 ?? '', /pid 1234 on host elsewhere\.example.*remove the lock file/);
});

test('a lock whose holder was SIGKILLed but not yet reaped (a zombie), or whose pid now belongs to another process, is taken over', async (t) => {
  // The store lock once judged its holder with kill(pid, 0), which says "alive" for a
  // zombie: where PID 1 reaps late, a SIGKILLed daemon could not reopen its store (issue 16's
  // bug again). It uses the pid file's liveness rule now.
  const dir = tmp(t);
  const path = join(dir, 's.img');
  const a = manager();
  const [cs] = await new Promise<[number, string | null]>((r) => a.createStore({ pool: POOL, device: path, mapped_size: SIZE }, (s, _st, why) => r([s, why])));
  assert.equal(cs, 0);
  assert.deepEqual(await remove(a), [0, null]);
  const { parent, pid } = await nonReapingParent();
  t.after(() => parent.kill('SIGKILL'));
  const start_ticks = readProcStat(pid)?.start_ticks ?? null;
  assert.notEqual(start_ticks, null);
  writeFileSync(`${path}.lock`, JSON.stringify({ host: hostname(), pid, start_ticks, boot_id: null, token: 'other', since: 'then' }));
  const [s1] = await add(a, path);
  assert.equal(s1, Errno.EBUSY, 'a running holder keeps its lock');
  await killToZombie(pid);
  assert.deepEqual(await add(a, path), [0, null], 'a zombie holder is gone');
  assert.deepEqual(await remove(a), [0, null]);
  // A live process whose start time is not the holder's: the pid was reused.
  writeFileSync(`${path}.lock`, JSON.stringify({ host: hostname(), pid: process.ppid, start_ticks: 1, boot_id: null, token: 'other', since: 'then' }));
  assert.deepEqual(await add(a, path), [0, null], 'a reused pid is not the holder');
  assert.deepEqual(await remove(a), [0, null]);
});
