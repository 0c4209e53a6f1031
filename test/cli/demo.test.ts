// The README's first command: `rmr demo` starts a local 3-node cluster with no
// configuration, prints how to use it once it is NORMAL, serves the disk over NBD
// (checked with nbdinfo and qemu-io), lists its daemons and URIs in `rmr status --json`,
// and stops every daemon on SIGTERM with exit code 0. It runs under umask 000 with RMR_*
// variables in its environment (issue 21, findings 8 and 9): cluster.yaml, each daemon.yaml
// and stderr.log are still 0600, and no daemon inherits an RMR_* variable (RMR_TOKEN is the
// CLI's secret; /proc/<pid>/environ is readable by the daemon's user).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAIN, rmrOk } from '../util/cli-cluster.js';
import { runOk } from '../util/nbd-checks.js';
import { within } from '../util/wait.js';
import { pidRunning } from '../../src/node/liveness.js';

test('rmr demo: NORMAL 3-node cluster, NBD disk usable, status lists daemons and URIs, SIGTERM stops it all', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-demo-'));
  const base = 23000 + (process.pid % 1000) * 5;
  const nbdPort = base + 4;
  const dashPort = 20000 + (process.pid % 1000);
  const canary = `rmr-test-canary-${process.pid}-0123456789abcdef`;
  // umask 000: what the file modes must not depend on (under it they were 0666).
  const demo = spawn(
    'sh',
    ['-c', 'umask 000 && exec "$0" "$@"', process.execPath, MAIN, 'demo', '--data-dir', dir, '--size', '64M', '--data-port', String(base), '--nbd-port', String(nbdPort), '--dashboard-port', String(dashPort)],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RMR_TOKEN: canary, RMR_LOG_LEVEL: 'error' } },
  );
  let out = '';
  let err = '';
  demo.stdout.on('data', (c: Buffer) => (out += c.toString()));
  demo.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => demo.on('exit', (c) => r(c)));
  let pids: number[] = [];
  try {
    await within('the demo banner', new Promise<void>((resolve, reject) => {
      const check = (): void => (out.includes('RMR demo is up') ? resolve() : undefined);
      demo.stdout.on('data', check);
      void exited.then((c) => reject(new Error(`demo exited ${String(c)} before it was up:\n${err}`)));
    }), 90_000);
    const uri = `nbd://127.0.0.1:${nbdPort}/disk0`;
    assert.ok(out.includes(uri), `the banner names ${uri}:\n${out}`);
    assert.match(out, /nbdinfo nbd:\/\//);
    assert.match(out, /status --data-dir/);
    // The web dashboard runs beside the demo, its URL in the banner.
    assert.ok(out.includes(`http://127.0.0.1:${dashPort}/   (the web dashboard)`), out);
    const page = await fetch(`http://127.0.0.1:${dashPort}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<title>RMR dashboard<\/title>/);
    const info = await runOk('nbdinfo', [uri]);
    assert.match(info.stdout, /export-size: 67108864/);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1M 1M', '-c', 'read -P 0x3c 1M 1M', uri]);
    const s = JSON.parse(await rmrOk(['status', '--data-dir', dir, '--json'])) as {
      daemons: { name: string; pid: number; roles: string[]; data_address: string | null; reachable: boolean }[];
      devices: { name: string; uris: string[] }[];
      legs: { node: string; state: string }[];
    };
    assert.deepEqual(s.daemons.map((d) => [d.name, d.roles.join(','), d.reachable]), [['stg1', 'storage', true], ['stg2', 'storage', true], ['stg3', 'storage', true], ['client', 'client', true]]);
    assert.deepEqual(s.daemons.slice(0, 3).map((d) => d.data_address), [0, 1, 2].map((i) => `127.0.0.1:${base + i}`));
    pids = s.daemons.map((d) => d.pid);
    assert.ok(pids.every((p) => Number.isInteger(p) && p > 0 && pidRunning(p)));
    assert.deepEqual(s.devices.map((d) => d.name), ['disk0']);
    assert.ok(s.devices[0]?.uris.some((u) => u === uri) && s.devices[0].uris.some((u) => u.startsWith('nbd+unix:///disk0?socket=')));
    assert.ok(s.legs.filter((l) => l.node === 'client').every((l) => l.state === 'normal'));
    // No daemon inherited an RMR_* variable of the demo's environment (daemonEnv).
    for (const p of pids) {
      const environ = readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
      assert.deepEqual(environ.filter((kv) => kv.startsWith('RMR_')), [], `pid ${p}: no RMR_* variable`);
      assert.ok(!environ.some((kv) => kv.includes(canary)), `pid ${p}: the token is not in its environment`);
    }
    // Files that name secrets and logs: 0600 under umask 000.
    const modeOf = (f: string): string => (statSync(f).mode & 0o777).toString(8);
    assert.equal(modeOf(join(dir, 'cluster.yaml')), '600', 'the demo\'s cluster.yaml');
    const found = (name: string, d = dir): string[] =>
      readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? found(name, join(d, e.name)) : e.name === name ? [join(d, e.name)] : []));
    const logs = found('stderr.log');
    const configs = found('daemon.yaml');
    assert.equal(logs.length, 4, `a stderr.log per daemon: ${logs.join(' ')}`);
    assert.equal(configs.length, 4, `a daemon.yaml per daemon: ${configs.join(' ')}`);
    for (const f of [...logs, ...configs]) assert.equal(modeOf(f), '600', f);
    demo.kill('SIGTERM');
    assert.equal(await within('demo exit', exited, 60_000), 0, err);
    assert.deepEqual(pids.filter(pidRunning), [], 'no daemon outlives the demo');
    // Running it again reuses the data: every daemon resumes, the client re-assembles.
    const again = spawn(process.execPath, [MAIN, 'demo', '--data-dir', dir, '--size', '64M', '--data-port', String(base), '--nbd-port', String(nbdPort), '--dashboard-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out2 = '';
    let err2 = '';
    again.stdout.on('data', (c: Buffer) => (out2 += c.toString()));
    again.stderr.on('data', (c: Buffer) => (err2 += c.toString()));
    const exited2 = new Promise<number | null>((r) => again.on('exit', (c) => r(c)));
    try {
      await within('the second demo banner', new Promise<void>((resolve, reject) => {
        again.stdout.on('data', () => (out2.includes('RMR demo is up') ? resolve() : undefined));
        void exited2.then((c) => reject(new Error(`second demo exited ${String(c)} before it was up:\n${err2}`)));
      }), 90_000);
      assert.doesNotMatch(err2, /create_store/, 'the stores are re-added, not created again');
      await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x3c 1M 1M', uri]);
      const s2 = JSON.parse(await rmrOk(['status', '--data-dir', dir, '--json'])) as { daemons: { pid: number }[] };
      pids = s2.daemons.map((d) => d.pid);
      again.kill('SIGTERM');
      assert.equal(await within('second demo exit', exited2, 60_000), 0, err2);
    } finally {
      if (again.exitCode === null) again.kill('SIGKILL');
    }
  } finally {
    if (demo.exitCode === null) demo.kill('SIGKILL');
    for (const p of pids) {
      // EPERM (a reused pid of someone else's) must not hide the test's own failure.
      try {
        if (pidRunning(p)) process.kill(p, 'SIGKILL');
      } catch {
        /* not ours any more */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
