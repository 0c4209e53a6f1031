// The reference admin guide, step by step, with nothing but `rmr ctl` against three real
// daemons (two storage nodes, one compute client; reference §11.5): the two-node bring-up,
// a link failure and its recovery, a storage node crash recovered by add_store, and the
// graceful disassemble teardown (§9.10). Every step reads back the states it should have
// produced. The storage daemons run with `resume: false`, so after the crash the operator
// re-adds the store by hand as the guide does.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAIN, dataArea, firstDifference, rmr, until } from '../util/cli-cluster.js';
import { runOk } from '../util/nbd-checks.js';
import { TcpProxy } from '../util/tcp-proxy.js';

const SECTORS = 131072; // 64 MiB
const SIZE = SECTORS * 512;
const BASE = 25000 + (process.pid % 1000) * 4;
const NODES = { stg0: { ip: '127.0.0.6', port: BASE }, stg1: { ip: '127.0.0.7', port: BASE + 1 }, cli: { ip: '127.0.0.8', port: BASE + 2 } } as const;
type Node = keyof typeof NODES;
const NBD = `nbd://127.0.0.8:${BASE + 3}/brmr0`;
let dir = '';
let proxy: TcpProxy;
const procs = new Map<Node, ChildProcess>();

const sock = (n: Node): string => join(dir, n, 'control.sock');
const img = (n: Node): string => join(dir, `${n}.img`);

async function startDaemon(n: Node): Promise<void> {
  const cfg = join(dir, `${n}.yaml`);
  const role = n === 'cli' ? 'client' : 'storage';
  writeFileSync(
    cfg,
    [`name: ${n}`, `state_dir: ${join(dir, n)}`, `secret_file: ${join(dir, 'secret')}`, 'resume: false', `data: {listen: "${NODES[n].ip}:${NODES[n].port}", heartbeat_interval_ms: 200, heartbeat_timeout_ms: 1000}`, `nbd: {tcp: "127.0.0.8:${BASE + 3}"}`, `log: {file: ${join(dir, `${n}.log`)}}`, 'roles:', `  ${role}: ${role === 'storage' ? `{store_dirs: [${dir}]}` : '{}'}`, ''].join('\n'),
  );
  const p = spawn(process.execPath, [MAIN, 'daemon', '--config', cfg], { stdio: 'ignore' });
  procs.set(n, p);
  await until(`daemon ${n} running`, async () => ((await rmr(['ctl', 'read', 'daemon/state', '--socket', sock(n)])).stdout === 'running\n' ? true : null), 20_000, 50);
}

async function w(n: Node, path: string, value: string): Promise<string> {
  const r = await rmr(['ctl', 'write', path, ...value.split(' '), '--socket', sock(n)]);
  assert.equal(r.code, 0, `${n}: write ${path} ${value}: ${r.stderr}`);
  return r.stdout.trim();
}

async function r(n: Node, path: string): Promise<string> {
  const x = await rmr(['ctl', 'read', path, '--socket', sock(n)]);
  assert.equal(x.code, 0, `${n}: read ${path}: ${x.stderr}`);
  return x.stdout.trim();
}

const readsBack = (n: Node, path: string, want: RegExp, timeout_ms = 30_000): Promise<string> =>
  until(`${n}:${path} =~ ${String(want)}`, async () => {
    const x = await rmr(['ctl', 'read', path, '--socket', sock(n)]);
    return x.code === 0 && want.test(x.stdout) ? x.stdout.trim() : null;
  }, timeout_ms, 100);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rmr-guide-'));
  writeFileSync(join(dir, 'secret'), randomBytes(24).toString('hex'), { mode: 0o600 });
  // The client reaches the second storage node through a proxy the test can cut (a link failure).
  proxy = await new TcpProxy({ host: NODES.stg1.ip, port: NODES.stg1.port }).start();
  await Promise.all((['stg0', 'stg1', 'cli'] as const).map(startDaemon));
});

after(async () => {
  for (const p of procs.values()) p.kill('SIGKILL');
  await proxy?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('§11.5 bring-up: pools, stores, legs (the second joins dirty and syncs), sync pools, map_device', async () => {
  await w('cli', 'rmr-client/ctl/join_pool', 'poolname=ionos_pool chunk_size=131072');
  await w('stg0', 'rmr-server/ctl/join_pool', 'poolname=ionos_pool member_id=42');
  await w('stg1', 'rmr-server/ctl/join_pool', 'poolname=ionos_pool member_id=43');
  assert.equal(await r('stg0', 'rmr-server/pools/ionos_pool/state'), 'empty\nMaintenance mode: 0');
  // stg1's disk is one that existed before (zeroes, but not known blank): its member joins
  // dirty and syncs, as in the reference. Two blank stores would need no initial sync
  // (docs/rmr-core.md deviation 48; test/rmr/blank-create, test/cli/large-device).
  writeFileSync(img('stg1'), Buffer.alloc(0));
  truncateSync(img('stg1'), 1 << 20);
  for (const n of ['stg0', 'stg1'] as const) {
    await w(n, 'brmr-server/ctl/create_store', `device=${img(n)} pool=ionos_pool mapped_size=${SECTORS}`);
    assert.match(await r(n, 'rmr-server/pools/ionos_pool/state'), /^registered/);
    assert.equal(await r(n, 'brmr-server/stores/ionos_pool/state'), 'open unmapped');
    assert.equal(await r(n, 'brmr-server/stores/ionos_pool/mapped_size'), String(SECTORS));
  }
  await w('cli', 'rmr-client/pools/ionos_pool/add_sess', `sessname=psrv0@stg-rmr0 path=ip:${NODES.stg0.ip}:${NODES.stg0.port} mode=create`);
  assert.match(await r('cli', 'rmr-client/pools/ionos_pool/sessions/psrv0@stg-rmr0/state'), /^created/);
  await w('cli', 'rmr-client/pools/ionos_pool/sessions/psrv0@stg-rmr0/enable', '1');
  assert.equal(await r('cli', 'rmr-client/pools/ionos_pool/sessions/psrv0@stg-rmr0/state'), 'normal\nMaintenance mode: 0');
  assert.equal(await r('cli', 'rmr-client/pools/ionos_pool/sessions/psrv0@stg-rmr0/member_id'), '42');
  await w('cli', 'rmr-client/pools/ionos_pool/add_sess', `sessname=psrv1@stg-rmr1 path=ip:127.0.0.1:${proxy.port} mode=create`);
  await w('cli', 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1/enable', '1');
  assert.match(await r('cli', 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1/state'), /^normal/);
  // The second leg joined dirty: every chunk is dirty for member 43 until it syncs.
  assert.match(await r('stg1', 'rmr-server/pools/ionos_pool/map_summary'), /member 43: \[0 1 2 .*\.\.\.\] 512\/512 dirty/);
  // It holds no data yet: those chunks are unsynced too (map_unsynced), here and on its peer.
  for (const n of ['stg0', 'stg1'] as const) assert.match(await r(n, 'rmr-server/pools/ionos_pool/map_unsynced'), /^member 43: \[0 1 2 .*\.\.\.\] 512\/512 unsynced$/);
  assert.equal(await r('cli', 'rmr-client/sessions/psrv1@stg-rmr1/state'), 'connected');
  for (const [n, peer, name] of [['stg0', 'stg1', 'stg-rmr0@stg-rmr1'], ['stg1', 'stg0', 'stg-rmr1@stg-rmr0']] as const) {
    await w(n, 'rmr-client/ctl/join_pool', 'poolname=ionos_pool chunk_size=131072 sync=y');
    await w(n, 'rmr-client/pools/ionos_pool/add_sess', `sessname=${name} path=ip:${NODES[peer].ip}:${NODES[peer].port}`);
    await w(n, 'rmr-server/pools/ionos_pool/add_clt', 'ionos_pool');
    assert.equal(await r(n, 'rmr-server/pools/ionos_pool/clt'), 'ionos_pool');
  }
  await w('stg1', 'rmr-server/pools/ionos_pool/sync', 'start');
  await readsBack('stg1', 'rmr-server/pools/ionos_pool/map_summary', /member 43: \[\] 0\/512 dirty/);
  assert.equal(await r('stg1', 'rmr-server/pools/ionos_pool/map_unsynced'), '(none)');
  assert.equal(await readsBack('stg1', 'rmr-server/pools/ionos_pool/sync_state', /Stopped/), 'Stopped');
  // The client forgets its copy once the member reports itself clean (MAP_CHECK, §8.5).
  await readsBack('cli', 'rmr-client/pools/ionos_pool/map', /member 43: \[\] 0\/512 dirty/);
  assert.equal(await w('cli', 'brmr-client/ctl/map_device', `pool=ionos_pool size=${SECTORS}`), 'brmr0');
  assert.match(await r('cli', 'brmr-client/ctl/devices/brmr0/state'), /^ready/);
  assert.match(await r('stg0', 'brmr-server/stores/ionos_pool/state'), /^open mapped/);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', '-c', 'read -P 0x11 0 4M', NBD]);
});

test('link failure: the leg fails, writes go on and are dirty for the member, the heal resyncs them', async () => {
  proxy.refuse(true);
  proxy.cut();
  await readsBack('cli', 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1/state', /^failed/);
  assert.equal(await r('cli', 'rmr-client/sessions/psrv1@stg-rmr1/state'), 'disconnected');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 8M 2M', NBD]);
  assert.match(await r('cli', 'rmr-client/pools/ionos_pool/map'), /member 43: \[64 65 .*\] 16\/512 dirty/);
  assert.match(await r('stg0', 'rmr-server/pools/ionos_pool/map_summary'), /member 43: \[64 .*\] 16\/512 dirty/);
  // Missed writes are dirty, not unsynced: member 43 holds the rest of its data.
  assert.equal(await r('stg0', 'rmr-server/pools/ionos_pool/map_unsynced'), '(none)');
  assert.match(await r('cli', 'brmr-client/ctl/devices/brmr0/state'), /degraded/);
  // The peers still talk (only the client's link is cut): test_map shows what 43 does not know yet.
  assert.match(await w('stg0', 'rmr-server/pools/ionos_pool/test_map', '1'), /stg-rmr0@stg-rmr1: member 43: ours 16 dirty, theirs 0 dirty, 16 chunks differ \[64 65/);
  // The debug write marks chunks dirty and unsynced (here for the member away, whose
  // return resyncs them with the others).
  await w('stg0', 'rmr-server/pools/ionos_pool/map_unsynced', '2 100 43');
  assert.equal(await r('stg0', 'rmr-server/pools/ionos_pool/map_unsynced'), 'member 43: [100 101] 2/512 unsynced');
  assert.match(await r('stg0', 'rmr-server/pools/ionos_pool/map_summary'), /member 43: \[64 .*\] 18\/512 dirty/);
  proxy.refuse(false);
  await readsBack('cli', 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1/state', /^normal/);
  await readsBack('stg1', 'rmr-server/pools/ionos_pool/map_summary', /member 43: \[\] 0\/512 dirty/);
  await readsBack('cli', 'rmr-client/pools/ionos_pool/map', /member 43: \[\] 0\/512 dirty/);
  assert.equal(await w('cli', 'rmr-client/pools/ionos_pool/test_map', '1'), 'psrv0@stg-rmr0: same\npsrv1@stg-rmr1: same');
  assert.equal(await w('stg0', 'rmr-server/pools/ionos_pool/test_map', '1'), 'stg-rmr0@stg-rmr1: same');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x22 8M 2M', NBD]);
  // MAP_SET_VER through the client's map_version: every NORMAL member takes the version.
  const ver = Number(/Map ver: (\d+)/.exec(await r('cli', 'rmr-client/pools/ionos_pool/map_version'))?.[1]) + 5;
  await w('cli', 'rmr-client/pools/ionos_pool/map_version', String(ver));
  assert.equal(await r('cli', 'rmr-client/pools/ionos_pool/map_version'), `Map ver: ${ver}`);
  for (const n of ['stg0', 'stg1'] as const) assert.equal(await r(n, 'rmr-server/pools/ionos_pool/map_version'), `Map ver: ${ver}`);
});

test('maintenance mode (§9.5): enable 0 takes the leg out of IO, writes accumulate dirtiness, enable 1 brings it back and it resyncs', async () => {
  const leg = 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1';
  await w('cli', `${leg}/enable`, '0');
  assert.equal(await r('cli', `${leg}/state`), 'reconnecting\nMaintenance mode: 1');
  assert.equal(await readsBack('stg1', 'rmr-server/pools/ionos_pool/state', /Maintenance mode: 1/), 'no_io\nMaintenance mode: 1');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 20M 1M', NBD]);
  assert.match(await r('stg0', 'rmr-server/pools/ionos_pool/map_summary'), /member 43: \[160 .*\] 8\/512 dirty/);
  await w('cli', `${leg}/enable`, '1');
  await readsBack('cli', `${leg}/state`, /^normal\nMaintenance mode: 0/);
  await readsBack('stg1', 'rmr-server/pools/ionos_pool/map_summary', /member 43: \[\] 0\/512 dirty/);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x44 20M 1M', NBD]);
});

test('storage node crash: SIGKILL, writes go on; after the restart the operator re-adds the store (add_store) and the node resyncs', async () => {
  const p = procs.get('stg1');
  assert.ok(p !== undefined);
  const gone = new Promise((res) => p.on('exit', res));
  p.kill('SIGKILL');
  await gone;
  await readsBack('cli', 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1/state', /^failed/);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 16M 1M', NBD]);
  await startDaemon('stg1');
  // A restarted node knows nothing until the operator tells it (resume: false).
  const none = await rmr(['ctl', 'read', 'rmr-server/pools/ionos_pool/state', '--socket', sock('stg1')]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /ENOENT/);
  await w('stg1', 'rmr-server/ctl/join_pool', 'poolname=ionos_pool member_id=43');
  await w('stg1', 'brmr-server/ctl/add_store', `device=${img('stg1')} pool=ionos_pool`);
  assert.match(await r('stg1', 'brmr-server/stores/ionos_pool/state'), /^open mapped/, 'MAPPED comes back from the header');
  await w('stg1', 'rmr-client/ctl/join_pool', 'poolname=ionos_pool chunk_size=131072 sync=y');
  await w('stg1', 'rmr-client/pools/ionos_pool/add_sess', `sessname=stg-rmr1@stg-rmr0 path=ip:${NODES.stg0.ip}:${NODES.stg0.port}`);
  await w('stg1', 'rmr-server/pools/ionos_pool/add_clt', 'ionos_pool');
  // The client's session reconnects by itself; recovery spreads the map; the node resyncs.
  await readsBack('cli', 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1/state', /^normal/, 40_000);
  assert.match(await r('stg1', 'rmr-server/pools/ionos_pool/state'), /^normal/);
  await readsBack('stg1', 'rmr-server/pools/ionos_pool/map_summary', /member 43: \[\] 0\/512 dirty/);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x33 16M 1M', '-c', 'read -P 0x11 0 4M', NBD]);
});

test('graceful teardown, disassemble order (§9.10): every object goes, the stores hold the same bytes', async () => {
  await w('cli', 'brmr-client/ctl/devices/brmr0/unmap_device', '1');
  assert.equal((await rmr(['ctl', 'ls', 'brmr-client/ctl/devices', '--socket', sock('cli')])).stdout, '');
  await w('stg0', 'rmr-client/pools/ionos_pool/sessions/stg-rmr0@stg-rmr1/del_sess', 'mode=disassemble');
  await w('stg1', 'rmr-client/pools/ionos_pool/sessions/stg-rmr1@stg-rmr0/del_sess', 'mode=disassemble');
  await w('cli', 'rmr-client/pools/ionos_pool/sessions/psrv0@stg-rmr0/del_sess', 'mode=disassemble');
  await w('cli', 'rmr-client/pools/ionos_pool/sessions/psrv1@stg-rmr1/del_sess', 'mode=disassemble');
  for (const n of ['stg0', 'stg1'] as const) {
    await w(n, 'brmr-server/stores/ionos_pool/remove_store', '1');
    assert.equal(await r(n, 'rmr-server/pools/ionos_pool/state'), 'empty\nMaintenance mode: 0');
  }
  await w('cli', 'rmr-client/pools/ionos_pool/leave_pool', '1');
  for (const n of ['stg0', 'stg1'] as const) {
    await w(n, 'rmr-server/pools/ionos_pool/leave_pool', '1');
    await w(n, 'rmr-client/pools/ionos_pool/leave_pool', '1');
    assert.equal((await rmr(['ctl', 'ls', 'rmr-server/pools', '--socket', sock(n)])).stdout, '');
  }
  const d = firstDifference(dataArea(img('stg0'), SIZE), dataArea(img('stg1'), SIZE));
  assert.equal(d, -1, `the stores differ first at byte ${d}`);
});
