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
