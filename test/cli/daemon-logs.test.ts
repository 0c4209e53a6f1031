// Log rotation: after logrotate moves daemon.log away, SIGHUP makes the daemon write to a new
// daemon.log; the moved file keeps what was written before.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor, within } from '../util/wait.js';

const MAIN = join(process.cwd(), 'dist/src/cli/main.js');

test('SIGHUP reopens the log file: lines after it go to the new file, the rotated one keeps the old lines', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-logs-'));
  const log = join(dir, 'daemon.log');
  const cfg = join(dir, 'daemon.yaml');
  writeFileSync(cfg, `name: l1\nstate_dir: ${dir}\ncontrol:\n  socket: ${join(dir, 'control.sock')}\nlog:\n  file: ${log}\n  format: json\n`);
  const d = spawn(process.execPath, [MAIN, 'daemon', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((r) => d.on('exit', (c) => r(c)));
  try {
    await waitFor('daemon ready in the log', () => existsSync(log) && readFileSync(log, 'utf8').includes('daemon ready'), 15_000, 20);
    renameSync(log, `${log}.1`);
    d.kill('SIGHUP');
    await waitFor('the new log file', () => existsSync(log) && readFileSync(log, 'utf8').includes('log file reopened'), 10_000, 20);
    d.kill('SIGTERM');
    assert.equal(await within('daemon exit', exited, 15_000), 0);
    const old = readFileSync(`${log}.1`, 'utf8');
    const now = readFileSync(log, 'utf8');
    assert.match(old, /daemon ready/);
    assert.doesNotMatch(old, /reopened|daemon exited/, 'nothing after the rotation went to the moved file');
    assert.match(now, /daemon exited/);
  } finally {
    if (d.exitCode === null) d.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
