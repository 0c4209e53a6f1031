// The control tree: ls/read/write over static, dynamic and mounted directories, links,
// async and callback handlers, the errno of every failure, and the handler deadline.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ControlTree, dir, dynamicDir, file, roFile, kvFile, link, fromCallback, formatLs, splitPath, type TreeNode,
} from '../../src/daemon/control-tree.js';
import { ControlError, type ControlCode } from '../../src/daemon/control-error.js';
import { SimClock } from '../../src/sim/sim-clock.js';

async function rejectsWith(p: Promise<unknown>, code: ControlCode, message?: string | RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ControlError, `expected a ControlError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (typeof message === 'string') assert.equal(e.message, message);
    else if (message !== undefined) assert.match(e.message, message);
    return true;
  });
}

/** A miniature rmr-client: pools by name, each with sessions, join_pool creating pools. */
function miniClient(): { tree: ControlTree; pools: Map<string, { chunk_size: number; sessions: Map<string, string> }> } {
  const pools = new Map<string, { chunk_size: number; sessions: Map<string, string> }>();
  const tree = new ControlTree();
  const poolDir = (name: string): TreeNode | undefined => {
    const p = pools.get(name);
    if (p === undefined) return undefined;
    return dir({
      chunk_size: roFile(() => String(p.chunk_size)),
      map_version: file({ read: () => 'Map ver: 1', json: () => ({ map_ver: 1 }) }),
      leave_pool: file({
        write: (v) => {
          if (v !== '1') throw new ControlError('EINVAL', "write '1' to leave");
          if (p.sessions.size > 0) throw new ControlError('EBUSY', `pool ${name} still has sessions`);
          pools.delete(name);
        },
      }),
      sessions: dynamicDir(
        () => [...p.sessions.keys()],
        (s) => {
          const st = p.sessions.get(s);
          return st === undefined ? undefined : dir({ state: roFile(async () => Promise.resolve(st)), clt_sess: link(`rmr-client/sessions/${s}`) });
        },
      ),
    });
  };
  tree.mount('rmr-client/ctl/join_pool', kvFile(
    { poolname: { type: 'string', required: true }, chunk_size: { type: 'int', min: 4096 } } as const,
    (v) => {
      if (pools.has(v.poolname)) throw new ControlError('EEXIST', `pool ${v.poolname} exists`);
      pools.set(v.poolname, { chunk_size: v.chunk_size ?? 131072, sessions: new Map() });
      return v.poolname;
    },
    'create a client pool',
  ));
  tree.mount('rmr-client/pools', dynamicDir(() => [...pools.keys()].sort(), poolDir));
  tree.mount('rmr-client/sessions', dynamicDir(
    () => ['s1'],
    (s) => (s === 's1' ? dir({ state: roFile(() => fromCallback<string>((done) => setImmediate(() => done(null, 'connected')))) }) : undefined),
  ));
  return { tree, pools };
}

test('ls lists mounted, static and dynamic directories', async () => {
  const { tree, pools } = miniClient();
  assert.deepEqual((await tree.ls('/')).map((e) => e.name), ['rmr-client']);
  assert.deepEqual((await tree.ls('rmr-client')).map((e) => e.name), ['ctl', 'pools', 'sessions']);
  const ctl = await tree.ls('rmr-client/ctl/');
  assert.deepEqual(ctl, [{ name: 'join_pool', kind: 'file', readable: false, writable: true, help: 'create a client pool: poolname=<text> [chunk_size=<4096..n>]' }]);
  assert.deepEqual(await tree.ls('rmr-client/pools'), []);
  await tree.write('rmr-client/ctl/join_pool', 'poolname=p2');
  await tree.write('rmr-client/ctl/join_pool', 'poolname=p1 chunk_size=65536\n');
  assert.deepEqual((await tree.ls('rmr-client/pools')).map((e) => e.name), ['p1', 'p2']);
  pools.get('p1')?.sessions.set('s1', 'normal\nMaintenance mode: 0');
  const p1 = await tree.ls('//rmr-client//pools/p1');
  assert.equal(formatLs(p1), 'chunk_size\nleave_pool\nmap_version\nsessions/\n');
  assert.equal(formatLs(await tree.ls('rmr-client/pools/p1/sessions/s1')), 'clt_sess -> rmr-client/sessions/s1\nstate\n');
});

test('reads end in a newline, writes are trimmed, handlers may be async or callbacks', async () => {
  const { tree, pools } = miniClient();
  assert.equal(await tree.write('rmr-client/ctl/join_pool', 'poolname=p1 chunk_size=65536\n'), 'p1');
  assert.equal(await tree.read('rmr-client/pools/p1/chunk_size'), '65536\n');
  pools.get('p1')?.sessions.set('s1', 'normal\nMaintenance mode: 0');
  assert.equal(await tree.read('rmr-client/pools/p1/sessions/s1/state'), 'normal\nMaintenance mode: 0\n');
  assert.equal(await tree.read('rmr-client/pools/p1/sessions/s1/clt_sess/state'), 'connected\n');
  assert.deepEqual(await tree.readJson('rmr-client/pools/p1/map_version'), { map_ver: 1 });
  assert.deepEqual(await tree.readJson('rmr-client/pools/p1/chunk_size'), { value: '65536' });
  const j = await tree.readJson('rmr-client/pools');
  assert.deepEqual(j, { path: '/rmr-client/pools', entries: [{ name: 'p1', kind: 'dir', readable: true, writable: false }] });
  assert.equal(await tree.write('rmr-client/pools/p1/leave_pool', '1\n').catch((e: unknown) => String(e)), 'ControlError: pool p1 still has sessions');
  pools.get('p1')?.sessions.clear();
  await tree.write('rmr-client/pools/p1/leave_pool', ' 1 ');
  assert.equal(pools.size, 0);
  await rejectsWith(tree.read('rmr-client/pools/p1/chunk_size'), 'ENOENT', 'no such file or directory: rmr-client/pools/p1');
});

test('every misuse has its own code and message', async () => {
  const { tree } = miniClient();
  await tree.write('rmr-client/ctl/join_pool', 'poolname=p1');
  await rejectsWith(tree.read('nope'), 'ENOENT', 'no such file or directory: nope');
  await rejectsWith(tree.read('rmr-client/pools'), 'EISDIR', 'rmr-client/pools is a directory (use ls)');
  await rejectsWith(tree.read('/'), 'EISDIR', '/ is a directory (use ls)');
  await rejectsWith(tree.ls('rmr-client/pools/p1/chunk_size'), 'ENOTDIR');
  await rejectsWith(tree.read('rmr-client/pools/p1/chunk_size/x'), 'ENOTDIR');
  await rejectsWith(tree.read('rmr-client/ctl/join_pool'), 'EACCES', /^rmr-client\/ctl\/join_pool is write-only \(create a client pool/);
  await rejectsWith(tree.write('rmr-client/pools/p1/chunk_size', '1'), 'EACCES', 'rmr-client/pools/p1/chunk_size is read-only');
  await rejectsWith(tree.write('rmr-client/pools', '1'), 'EISDIR');
  await rejectsWith(tree.write('rmr-client/ctl/join_pool', 'poolname=p1'), 'EEXIST', 'pool p1 exists');
  await rejectsWith(tree.write('rmr-client/ctl/join_pool', 'poolname=p9 chunk_size=1'), 'EINVAL', 'chunk_size: 1 is below the minimum 4096');
  await rejectsWith(tree.write('rmr-client/ctl/join_pool', 'x'.repeat(5000)), 'E2BIG');
  await rejectsWith(tree.read('rmr-client/../etc/passwd'), 'EINVAL', "path component '..' is not allowed");
  await rejectsWith(tree.read('rmr-client/./pools'), 'EINVAL', "path component '.' is not allowed");
  await rejectsWith(tree.read('rmr-client/po\u0000ols'), 'EINVAL', "path component 'po\\u0000ols' has characters outside [A-Za-z0-9_.@:+,=-]");
  await rejectsWith(tree.read(`a/${'b'.repeat(300)}`), 'EINVAL', 'path component longer than 255 characters');
  await rejectsWith(tree.read('a/'.repeat(600)), 'EINVAL', 'path is longer than 1024 characters');
});

test('handler exceptions become EIO, never escape as other types', async () => {
  const tree = new ControlTree();
  tree.mount('x/throws', roFile(() => {
    throw new TypeError('boom');
  }));
  tree.mount('x/rejects', roFile(() => Promise.reject(new Error('async boom'))));
  tree.mount('x/callback', roFile(() => fromCallback<string>((done) => done(new ControlError('EAGAIN', 'try later')))));
  tree.mount('x/bad-list', dynamicDir(() => {
    throw new Error('list failed');
  }, () => undefined));
  await rejectsWith(tree.read('x/throws'), 'EIO', 'internal error: boom');
  await rejectsWith(tree.read('x/rejects'), 'EIO', 'internal error: async boom');
  await rejectsWith(tree.read('x/callback'), 'EAGAIN', 'try later');
  await rejectsWith(tree.ls('x/bad-list'), 'EIO', 'internal error: list failed');
});

test('mounting refuses overlaps; unmount removes', async () => {
  const tree = new ControlTree();
  tree.mount('daemon/name', roFile(() => 'n1'));
  assert.throws(() => tree.mount('daemon/name', roFile(() => 'n2')), (e: unknown) => e instanceof ControlError && e.code === 'EEXIST');
  assert.throws(() => tree.mount('daemon/name/sub', roFile(() => 'n2')), (e: unknown) => e instanceof ControlError && e.code === 'EEXIST');
  assert.throws(() => tree.mount('/', roFile(() => 'n2')), (e: unknown) => e instanceof ControlError && e.code === 'EINVAL');
  assert.equal(tree.unmount('daemon/name'), true);
  assert.equal(tree.unmount('daemon/name'), false);
  await rejectsWith(tree.read('daemon/name'), 'ENOENT');
});

test('link loops end with ELOOP', async () => {
  const tree = new ControlTree();
  tree.mount('a/l1', link('a/l2'));
  tree.mount('a/l2', link('a/l1'));
  await rejectsWith(tree.read('a/l1'), 'ELOOP');
});

test('a handler that never answers fails with ETIMEDOUT at the deadline', async () => {
  const clock = new SimClock();
  const tree = new ControlTree({ clock, handler_timeout_ms: 1000 });
  tree.mount('stuck', roFile(() => new Promise<string>(() => undefined)));
  tree.mount('fine', roFile(() => 'ok'));
  const p = tree.read('stuck');
  let settled = false;
  p.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setImmediate(r));
  clock.runUntil(999);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false);
  clock.runUntil(1000);
  await rejectsWith(p, 'ETIMEDOUT', 'stuck: no answer within 1000 ms');
  assert.equal(await tree.read('fine'), 'ok\n');
});

test('splitPath normalises slashes and accepts session and device names', () => {
  assert.deepEqual(splitPath('/rmr-client//pools/p1/sessions/psrv0@stg-rmr0/'), ['rmr-client', 'pools', 'p1', 'sessions', 'psrv0@stg-rmr0']);
  assert.deepEqual(splitPath(''), []);
});
