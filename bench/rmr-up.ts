// Starts the benchmark's RMR cluster (bench/rmr-setup.ts: `rmr daemon` processes brought up as
// `rmr up` does) and keeps it up until Ctrl-C, for profiling and poking at it by hand (fio,
// strace, perf, `rmr status --cluster DIR/cluster.yaml`). Prints the NBD URI and the pids.
// Usage: node dist/bench/rmr-up.js [--nodes N] [--size MiB] [--dir DIR] [--threadpool N] [--profile DIR] [--node-args '...']
// Without --dir the store files are pre-filled in a new temporary directory. Without
// --threadpool the storage daemons get rmr up's default UV_THREADPOOL_SIZE.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startRmr, storePath, STORE_DATA_OFFSET } from './rmr-setup.js';
import { prefill } from './prefill.js';

const { values: a } = parseArgs({ options: { nodes: { type: 'string' }, size: { type: 'string' }, dir: { type: 'string' }, threadpool: { type: 'string' }, profile: { type: 'string' }, 'node-args': { type: 'string' } } });
const dir = a.dir ?? mkdtempSync(join(tmpdir(), 'rmr-up-'));
const nodes = Number(a.nodes ?? 2);
const size_bytes = Number(a.size ?? 256) * 2 ** 20;
// As the benchmark does: written files, no holes.
if (a.dir === undefined) prefill(Array.from({ length: nodes }, (_, i) => storePath(dir, i + 1)), STORE_DATA_OFFSET, size_bytes);
// The daemons run in their own process groups: Ctrl-C stops them, also while they come up.
let stopCluster: (() => Promise<void>) | null = null;
const stop = (): void => {
  (stopCluster ?? ((): Promise<void> => Promise.resolve()))().then(
    () => {
      if (a.dir === undefined) rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    },
    () => process.exit(1),
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
const rmr = await startRmr({
  nodes,
  dir,
  size_bytes,
  say: (l) => void process.stderr.write(`${l}\n`),
  env: a.threadpool !== undefined ? { UV_THREADPOOL_SIZE: a.threadpool } : {},
  node_args: [...(a.profile !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${a.profile}`] : []), ...(a['node-args'] ?? '').split(' ').filter(Boolean)],
  onStop: (s) => (stopCluster = s),
});
console.log(JSON.stringify({ nbd_uri: rmr.nbd_uri, pids: rmr.pids, dir, initial_sync_ms: Math.round(rmr.initial_sync_ms) }));
// Every line on stdin prints the storage daemons' status (state, dirty chunks, sync, stats).
process.stdin.on('data', () => {
  rmr.status().then(
    (st) => console.log(JSON.stringify(st)),
    () => undefined,
  );
});
