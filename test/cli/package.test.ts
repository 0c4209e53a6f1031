// The release artifact (issue 22): `npm pack` yields a package whose `rmr` runs after `npm
// install -g <tarball>` into an empty prefix: `rmr --version` prints package.json's version,
// and the installed `rmr demo --nodes 1` serves a disk that qemu-io writes and reads back
// and its web dashboard with the bundled page.
// The tarball is packed from the tree `npm test` has just built (--ignore-scripts: prepack
// would build again).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOk } from '../util/nbd-checks.js';
import { within } from '../util/wait.js';

function run(cmd: string, args: string[], cwd: string, timeout_ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, timeout: timeout_ms, maxBuffer: 16 << 20 }, (e, stdout, stderr) => (e === null ? resolve(stdout) : reject(new Error(`${cmd} ${args.join(' ')}: ${e.message}\n${stderr}`))));
  });
}

test('npm pack + npm install -g into a fresh prefix: rmr --version, and a one-node demo serves NBD', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'rmr-pack-'));
  const version = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
  try {
    await run('npm', ['pack', '--ignore-scripts', '--pack-destination', tmp], process.cwd(), 120_000);
    const tarball = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball !== undefined, 'npm pack wrote a tarball');
    const prefix = join(tmp, 'prefix');
    await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(tmp, tarball)], tmp, 180_000);
    const rmrBin = join(prefix, 'bin', 'rmr');
    assert.ok(existsSync(rmrBin), 'the rmr command is installed');
    const installed = join(prefix, 'lib', 'node_modules', 'rmr-ts');
    assert.ok(!existsSync(join(installed, 'dist', 'test')) && !existsSync(join(installed, 'src')), 'only the built program ships (no tests, no sources)');
    assert.equal((await run(rmrBin, ['--version'], tmp, 10_000)).trim(), version);

    const base = 24000 + (process.pid % 1000) * 3;
    const dashPort = 19000 + (process.pid % 1000);
    const demo = spawn(rmrBin, ['demo', '--nodes', '1', '--data-dir', join(tmp, 'demo'), '--size', '16M', '--data-port', String(base), '--nbd-port', String(base + 2), '--dashboard-port', String(dashPort)], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    demo.stdout.on('data', (c: Buffer) => (out += c.toString()));
    demo.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((r) => demo.on('exit', (c) => r(c)));
    try {
      await within('the installed demo', new Promise<void>((resolve, reject) => {
        demo.stdout.on('data', () => (out.includes('RMR demo is up') ? resolve() : undefined));
        void exited.then((c) => reject(new Error(`demo exited ${String(c)}:\n${err}`)));
      }), 90_000);
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x71 0 1M', '-c', 'read -P 0x71 0 1M', `nbd://127.0.0.1:${base + 2}/disk0`]);
      // The dashboard's page ships in the package (built at pack time, not committed).
      const page = await fetch(`http://127.0.0.1:${dashPort}/`);
      assert.equal(page.status, 200, err);
      const js = await fetch(`http://127.0.0.1:${dashPort}/assets/app.js`);
      assert.equal(js.status, 200);
      assert.ok((await js.text()).length > 10_000, 'the bundled page script');
      demo.kill('SIGTERM');
      assert.equal(await within('demo exit', exited, 60_000), 0, err);
    } finally {
      if (demo.exitCode === null) demo.kill('SIGKILL');
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
