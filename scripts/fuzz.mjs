// Long fuzz runs of every listener: npm run fuzz -- [--seconds N] [--seed S] [name-filter...]
// Runs the compiled *fuzz*.test.js files one after another with RMR_FUZZ_SECONDS and
// RMR_FUZZ_SEED set (each fuzzer then runs for N seconds instead of its short npm test budget).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
let seconds = 60;
let seed = null;
const filters = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--seconds') seconds = Number(args[++i]);
  else if (args[i] === '--seed') seed = Number(args[++i]);
  else filters.push(args[i]);
}
if (!Number.isFinite(seconds) || seconds <= 0) {
  console.error('usage: npm run fuzz -- [--seconds N] [--seed S] [filter...]');
  process.exit(2);
}
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (/fuzz.*\.test\.js$/.test(name) && (filters.length === 0 || filters.some((f) => p.includes(f)))) files.push(p);
  }
};
walk('dist/test');
const env = { ...process.env, RMR_FUZZ_SECONDS: String(seconds), RMR_FUZZ_STATS: '1', ...(seed !== null ? { RMR_FUZZ_SEED: String(seed) } : {}) };
let failed = 0;
for (const f of files) {
  console.log(`--- ${f} (${seconds} s${seed !== null ? `, seed ${seed}` : ''})`);
  const r = spawnSync(process.execPath, ['--test', f], { stdio: 'inherit', env });
  if (r.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
