// Zombies on demand, whatever PID 1 does: a shell starts a command in the background, prints
// its pid and then execs `sleep`, so the command's parent is a process that never waits for
// it. Killed, the command stays a zombie until the parent is killed.

import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './wait.js';
import { readProcStat } from '../../src/node/liveness.js';

export async function nonReapingParent(command = 'sleep 300'): Promise<{ parent: ChildProcess; pid: number }> {
  const parent = spawn('sh', ['-c', `${command} & echo $!; exec sleep 600`], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  parent.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  await waitFor('the background pid', () => out.includes('\n'), 10_000);
  return { parent, pid: Number(out.trim()) };
}

/** SIGKILLs `pid` and waits until it is a zombie. */
export async function killToZombie(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await waitFor(`pid ${pid} to be a zombie`, () => readProcStat(pid)?.state === 'Z', 10_000);
}
