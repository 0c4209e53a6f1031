// A SIGKILLed daemon always restarts (issue 16): the killed daemon is left a zombie by a parent
// that never reaps it (as when `rmr up` has exited and PID 1 reaps late or never), and a new
// daemon on the same state directory starts, takes over the pid file and serves. A daemon
// that runs refuses a second one, naming the evidence.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { waitFor, within } from '../util/wait.js';
import { killToZombie, nonReapingParent } from '../util/zombie.js';
import { formatPidFile, parsePidFile, readProcStat, type ProcessIdentity } from '../../src/node/liveness.js';
import { stopDaemons, type LoadedCluster } from '../../src/cli/node-cluster.js';

const MAIN = join(process.cwd(), 'dist/src/cli/main.js');

function answers(sock: string): Promise<number | null> {
  return new Promise((resolve) => {
    const r = request({ socketPath: sock, path: '/v1/status', method: 'GET', timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        try {
          const d = (JSON.parse(body) as { daemon?: { state?: string; pid?: number } }).daemon;
          resolve(d?.state === 'running' && typeof d.pid === 'number' ? d.pid : null);
        } catch {
          resolve(null);
        }
      });
    });
    r.on('error', () => resolve(null));
    r.on('timeout', () => r.destroy());
    r.end();
  });
}

test('a SIGKILLed daemon left a zombie is restarted on its state directory; a running one refuses a second', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-restart-'));
  const sock = join(dir, 'control.sock');
  const cfg = join(dir, 'daemon.yaml');
  writeFileSync(cfg, `name: z1\nstate_dir: ${dir}\ncontrol:\n  socket: ${sock}\nlog:\n  file: ${join(dir, 'daemon.log')}\n  format: json\n`);
  const { parent, pid: first } = await nonReapingParent(`'${process.execPath}' '${MAIN}' daemon --config '${cfg}' 2>/dev/null`);
  let restarted: ChildProcess | null = null;
  try {
    let pid: number | null = null;
    await waitFor('the first daemon to answer', async () => (pid = await answers(sock)) !== null, 15_000, 50);
    assert.equal(pid, first);
    await killToZombie(first);
    assert.doesNotThrow(() => process.kill(first, 0), 'kill(pid, 0) still succeeds on it');
    assert.equal(parsePidFile(readFileSync(join(dir, 'rmr.pid'), 'utf8'))?.pid, first, 'its pid file is still there');

    const r = spawn(process.execPath, [MAIN, 'daemon', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
    restarted = r;
    let err = '';
    r.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const restartedExit = new Promise<number | null>((res) => r.on('exit', (c) => res(c)));
    await waitFor('the restarted daemon to answer', async () => (pid = await answers(sock)) === r.pid, 15_000, 50);
    assert.equal(parsePidFile(readFileSync(join(dir, 'rmr.pid'), 'utf8'))?.pid, r.pid);
    assert.equal(readProcStat(first)?.state, 'Z', 'the old daemon is still a zombie');
    const log = readFileSync(join(dir, 'daemon.log'), 'utf8');
    assert.match(log, new RegExp(`took over the pid file of a daemon that no longer runs.*pid ${first} has exited \\(a zombie`));

    // A third start while the restarted daemon runs: refused with the evidence, exit 1.
    const third = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [MAIN, 'daemon', '--config', cfg], { timeout: 15_000 }, (e, _o, stderr) => resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, stderr }));
    });
    assert.equal(third.code, 1, third.stderr);
    assert.match(third.stderr, new RegExp(`another daemon holds this state directory: pid ${r.pid} started at \\d{4}-.* is running .*stop it \\(kill ${r.pid}\\)`));
    assert.equal(await answers(sock), r.pid, 'the refused start left the running daemon alone');

    r.kill('SIGTERM');
    assert.equal(await within('restarted daemon exit', restartedExit, 15_000), 0, err);
  } finally {
    if (restarted !== null && restarted.exitCode === null) restarted.kill('SIGKILL');
    parent.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rmr down (stopDaemons) counts a zombie as stopped and never signals a pid now used by another program', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-stop-'));
  const { parent, pid: zombie } = await nonReapingParent();
  const other = spawn('sleep', ['300'], { stdio: 'ignore' });
  try {
    await killToZombie(zombie);
    await waitFor('sleep to start', () => readProcStat(other.pid as number) !== null);
    const files: Record<string, ProcessIdentity> = {
      a: { pid: zombie, start_ticks: null, boot_id: null },
      b: { pid: other.pid as number, start_ticks: (readProcStat(other.pid as number)?.start_ticks ?? 0) + 7, boot_id: null },
    };
    for (const [name, id] of Object.entries(files)) {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'rmr.pid'), formatPidFile(id));
    }
    const said: string[] = [];
    const lc = { state_dir: dir } as unknown as LoadedCluster;
    await within('stopDaemons', stopDaemons(lc, ['a', 'b'], (l) => said.push(l)), 5_000);
    assert.deepEqual(said, [], 'nothing to stop');
    const st = readProcStat(other.pid as number)?.state;
    assert.ok(st !== undefined && st !== 'Z', `the unrelated process was not signalled (state ${String(st)})`);
  } finally {
    other.kill('SIGKILL');
    parent.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
