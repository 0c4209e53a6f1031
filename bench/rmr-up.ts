// Starts the benchmark's RMR cluster (bench/rmr-setup.ts) and keeps it up until Ctrl-C, for
// profiling and poking at it by hand (fio, strace, perf). Prints the NBD URI and the pids.
// Usage: node dist/bench/rmr-up.js [--nodes N] [--size MiB] [--dir DIR] [--threadpool N] [--profile DIR]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startRmr } from './rmr-setup.js';

const { values: a } = parseArgs({ options: { nodes: { type: 'string' }, size: { type: 'string' }, dir: { type: 'string' }, threadpool: { type: 'string' }, profile: { type: 'string' } } });
const dir = a.dir ?? mkdtempSync(join(tmpdir(), 'rmr-up-'));
const rmr = await startRmr({
  nodes: Number(a.nodes ?? 2),
  dir,
  size_bytes: Number(a.size ?? 256) * 2 ** 20,
  env: { UV_THREADPOOL_SIZE: a.threadpool ?? '8' },
  node_args: a.profile !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${a.profile}`] : [],
});
console.log(JSON.stringify({ nbd_uri: rmr.nbd_uri, pids: rmr.pids, dir }));
const stop = (): void => {
  rmr.stop().then(
    () => {
      if (a.dir === undefined) rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    },
    () => process.exit(1),
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
