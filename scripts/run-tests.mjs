// Runs every compiled test file with Node's built-in runner. Files are listed explicitly
// because `node --test <dir>` behaves differently on Node 20 and Node 22+.
// Usage: [TEST_EXCLUDE=a,b] node scripts/run-tests.mjs [--full] [substring-filter ...]
// Files named *.full.test.ts (the long fault scenarios in test/faults/, and those that wait
// for work on other branches) run only with --full (`npm run test:faults`); every other
// file, including the fault suite's CI subset *.ci.test.ts, runs in plain `npm test`.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = 'dist/test';
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
};
walk(root);
const args = process.argv.slice(2);
const full = args.includes('--full');
const filters = args.filter((a) => a !== '--full');
// TEST_EXCLUDE: comma-separated substrings of files to leave out (CI's second Node version
// runs the in-process suites only; the multi-process ones ran under the first).
const exclude = (process.env.TEST_EXCLUDE ?? '').split(',').filter((s) => s !== '');
const runnable = (full ? files : files.filter((f) => !f.endsWith('.full.test.js'))).filter((f) => !exclude.some((s) => f.includes(s)));
const chosen = filters.length ? runnable.filter((f) => filters.some((s) => f.includes(s))) : runnable;
if (chosen.length === 0) {
  console.error(`no test files under ${root} match ${filters.join(' ')}${full ? '' : ' (*.full.test.js files need --full)'}`);
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...chosen], { stdio: 'inherit' });
process.exit(r.status ?? 1);
