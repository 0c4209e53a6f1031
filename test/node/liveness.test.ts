// Process liveness (src/node/liveness.ts): a zombie, a reused pid, a pid file from before a
// reboot and an exited process are not a running daemon; a live one is, and its pid file
// cannot be taken. The zombie is made deterministically: a child whose own parent never
// waits for it (`exec sleep` replaces the shell that started it), so nothing depends on how
// soon PID 1 reaps orphans.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { claimPidFile, formatPidFile, liveness, parsePidFile, parseProcStat, pidRunning, readProcStat, releasePidFile, selfIdentity, StateDirBusy } from '../../src/node/liveness.js';
import { waitFor, within } from '../util/wait.js';
import { nonReapingParent } from '../util/zombie.js';

test('parseProcStat counts fields from the last parenthesis (command names may hold spaces and parentheses)', () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  fields[0] = 'S';
  fields[19] = '123456';
  assert.deepEqual(parseProcStat(`4242 (a) (b c)) ${fields.join(' ')}`), { state: 'S', start_ticks: 123456 });
  assert.equal(parseProcStat('4242 (x'), null);
  assert.equal(parseProcStat('4242 (x) S 1 2'), null, 'too few fields');
  const self = readProcStat(process.pid);
  assert.ok(self !== null && self.state === 'R', `this process reads itself as running (${JSON.stringify(self)})`);
});

test('pid file: pid on the first line, identity on the second; files of 0.1.0 (pid only) still parse', () => {
  const id = { pid: 77, start_ticks: 991, boot_id: 'b-1' };
  assert.equal(formatPidFile(id), '77\nstart=991 boot=b-1\n');
  assert.deepEqual(parsePidFile(formatPidFile(id)), id);
  assert.deepEqual(parsePidFile('77\n'), { pid: 77, start_ticks: null, boot_id: null });
  for (const bad of ['', 'x\n', '-3\n', '0\n', '1e3x\n']) assert.equal(parsePidFile(bad), null, JSON.stringify(bad));
});

test('a SIGKILLed process whose parent never reaps it is a zombie: kill(pid, 0) succeeds, liveness says it is not running', async () => {
  const { parent, pid } = await nonReapingParent();
  try {
    const id = { pid, start_ticks: readProcStat(pid)?.start_ticks ?? null, boot_id: selfIdentity().boot_id };
    assert.equal(liveness(id).running, true);
    process.kill(pid, 'SIGKILL');
    await waitFor('the zombie', () => readProcStat(pid)?.state === 'Z', 10_000);
    assert.doesNotThrow(() => process.kill(pid, 0), 'the old rule (kill 0) would call it alive');
    const l = liveness(id);
    assert.equal(l.running, false);
    assert.equal(l.running ? '' : l.why, 'zombie');
    assert.equal(pidRunning(pid), false);
  } finally {
    parent.kill('SIGKILL');
  }
});

test('claimPidFile takes over a file naming a zombie, a reused pid, an exited process or another boot', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-liveness-'));
  const file = join(dir, 'rmr.pid');
  const me = selfIdentity();
  const { parent, pid } = await nonReapingParent();
  try {
    const zombie = { pid, start_ticks: readProcStat(pid)?.start_ticks ?? null, boot_id: me.boot_id };
    process.kill(pid, 'SIGKILL');
    await waitFor('the zombie', () => readProcStat(pid)?.state === 'Z', 10_000);
    // The parent is alive and unrelated: as if the dead daemon's pid went to another program.
    const reused = { pid: parent.pid as number, start_ticks: (readProcStat(parent.pid as number)?.start_ticks ?? 0) + 1, boot_id: me.boot_id };
    const exited = { pid: 4194304 + 1, start_ticks: 5, boot_id: me.boot_id }; // above pid_max: never a process
    const otherBoot = { pid: parent.pid as number, start_ticks: readProcStat(parent.pid as number)?.start_ticks ?? null, boot_id: 'not-this-boot' };
    for (const [name, holder, why] of [['zombie', zombie, /zombie/], ['reused', reused, /another process/], ['exited', exited, /has exited/], ['other boot', otherBoot, /before the last reboot/]] as const) {
      writeFileSync(file, formatPidFile(holder));
      const r = claimPidFile(file, me);
      assert.match(r.replaced ?? '', why, name);
      assert.deepEqual(parsePidFile(readFileSync(file, 'utf8')), me, `${name}: the file names this process now`);
      releasePidFile(file, me);
    }
  } finally {
    parent.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('claimPidFile refuses while the holder runs, naming its pid and start time; a file of 0.1.0 naming a live process counts as running', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-liveness-'));
  const file = join(dir, 'rmr.pid');
  const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
  try {
    await waitFor('sleep to start', () => readProcStat(sleeper.pid as number) !== null);
    const holder = { pid: sleeper.pid as number, start_ticks: readProcStat(sleeper.pid as number)?.start_ticks ?? null, boot_id: selfIdentity().boot_id };
    for (const text of [formatPidFile(holder), `${holder.pid}\n`]) {
      writeFileSync(file, text);
      assert.throws(() => claimPidFile(file), (e: unknown) => e instanceof StateDirBusy && e.holder.pid === holder.pid && new RegExp(`pid ${holder.pid} started at \\d{4}-\\d\\d-\\d\\dT.* is running`).test(e.message));
      assert.equal(readFileSync(file, 'utf8'), text, 'the holder keeps its file');
    }
  } finally {
    sleeper.kill('SIGKILL');
    await within('sleep exit', new Promise((r) => sleeper.once('exit', r)));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('claimPidFile never writes through a planted symlink; releasePidFile leaves a file that names another process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-liveness-'));
  try {
    const victim = join(dir, 'victim.txt');
    writeFileSync(victim, 'precious\n');
    const file = join(dir, 'rmr.pid');
    symlinkSync(victim, file);
    const me = selfIdentity();
    claimPidFile(file, me);
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the symlink target is untouched');
    assert.deepEqual(parsePidFile(readFileSync(file, 'utf8')), me);
    writeFileSync(file, formatPidFile({ pid: me.pid + 1, start_ticks: 1, boot_id: null }));
    releasePidFile(file, me);
    assert.equal(parsePidFile(readFileSync(file, 'utf8'))?.pid, me.pid + 1, 'not ours: left alone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
