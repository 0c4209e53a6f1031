// The environment `rmr up` gives the daemons it starts: UV_THREADPOOL_SIZE for nodes with a
// store (core count clamped to 2..4) unless the environment or the caller sets it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DAEMON_MALLOC_TUNABLES, daemonEnv, loadCluster, storageThreadpoolSize } from '../../src/cli/node-cluster.js';

test('storage thread pool: the core count, at least 2, at most libuv default 4', () => {
  assert.deepEqual([1, 2, 3, 4, 64].map((c) => storageThreadpoolSize(c)), [2, 2, 3, 4, 4]);
});

test('daemonEnv: storage nodes get UV_THREADPOOL_SIZE unless it is set; the client does not; every daemon gets the malloc tunables unless set', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-env-'));
  try {
    const path = join(dir, 'cluster.yaml');
    writeFileSync(
      path,
      [
        'cluster: t',
        'nodes: [{name: s1, addresses: [127.0.0.1], port: 1301}, {name: c, addresses: [127.0.0.1], port: 1302}]',
        'pools: [{name: p, members: [{node: s1, member_id: 1}]}]',
        'stores: [{node: s1, pool: p, path: s1.img, size: 1M}]',
        'client: {node: c, devices: [{name: d, pool: p, export: d}], nbd: {socket_dir: nbd}}',
        '',
      ].join('\n'),
    );
    const lc = loadCluster(path);
    const [s1, c] = lc.file.nodes;
    assert.ok(s1 !== undefined && c !== undefined);
    const saved = process.env.UV_THREADPOOL_SIZE;
    const saved_tunables = process.env.GLIBC_TUNABLES;
    delete process.env.UV_THREADPOOL_SIZE;
    delete process.env.GLIBC_TUNABLES;
    try {
      assert.equal(daemonEnv(lc, s1).GLIBC_TUNABLES, DAEMON_MALLOC_TUNABLES);
      assert.equal(daemonEnv(lc, c).GLIBC_TUNABLES, DAEMON_MALLOC_TUNABLES);
      // Another key of the user's is kept and ours are added; a key of ours the user set is theirs.
      assert.equal(daemonEnv(lc, c, { GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, `glibc.malloc.arena_max=2:${DAEMON_MALLOC_TUNABLES}`);
      assert.equal(
        daemonEnv(lc, c, { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=1048576' }).GLIBC_TUNABLES,
        'glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=134217728',
      );
      assert.equal(daemonEnv(lc, s1).UV_THREADPOOL_SIZE, String(storageThreadpoolSize()));
      assert.equal(daemonEnv(lc, c).UV_THREADPOOL_SIZE, undefined);
      assert.equal(daemonEnv(lc, s1, { UV_THREADPOOL_SIZE: '7' }).UV_THREADPOOL_SIZE, '7');
      process.env.UV_THREADPOOL_SIZE = '5';
      assert.equal(daemonEnv(lc, s1).UV_THREADPOOL_SIZE, '5');
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
      if (saved_tunables === undefined) delete process.env.GLIBC_TUNABLES;
      else process.env.GLIBC_TUNABLES = saved_tunables;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('daemonEnv: no RMR_* variable of this process reaches a daemon (RMR_TOKEN is the CLI\'s secret); only the caller\'s extra passes one on', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-env-'));
  const saved = { ...process.env };
  try {
    const path = join(dir, 'cluster.yaml');
    writeFileSync(path, ['cluster: t', 'nodes: [{name: s1, addresses: [127.0.0.1], port: 1301}]', 'pools: [{name: p, members: [{node: s1, member_id: 1}]}]', 'stores: [{node: s1, pool: p, path: s1.img, size: 1M}]', ''].join('\n'));
    const lc = loadCluster(path);
    const [s1] = lc.file.nodes;
    assert.ok(s1 !== undefined);
    process.env.RMR_TOKEN = 'a-token-of-the-operator-0123456789abcdef';
    process.env.RMR_STATE_DIR = '/one/dir/for/every/daemon';
    process.env.RMR_LOG_LEVEL = 'debug';
    process.env.RMRX_NOT_OURS = 'kept';
    const e = daemonEnv(lc, s1);
    assert.deepEqual(Object.keys(e).filter((k) => k.startsWith('RMR_')), []);
    assert.equal(e.RMRX_NOT_OURS, 'kept', 'only the RMR_ prefix is stripped');
    assert.equal(e.PATH, process.env.PATH, 'the rest of the environment is kept');
    assert.equal(daemonEnv(lc, s1, { RMR_LOG_LEVEL: 'warn' }).RMR_LOG_LEVEL, 'warn', 'the caller may pass one explicitly');
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
    rmSync(dir, { recursive: true, force: true });
  }
});
