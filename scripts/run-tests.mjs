// Runs every compiled test file with Node's built-in runner. Files are listed explicitly
// because `node --test <dir>` behaves differently on Node 20 and Node 22+.
// Usage: [TEST_EXCLUDE=a,b] node scripts/run-tests.mjs [substring-filter ...]
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
const filters = process.argv.slice(2);
// TEST_EXCLUDE: comma-separated substrings of files to leave out (CI's second Node version
// runs the in-process suites only; the multi-process ones ran under the first).
const exclude = (process.env.TEST_EXCLUDE ?? '').split(',').filter((s) => s !== '');
const chosen = (filters.length ? files.filter((f) => filters.some((s) => f.includes(s))) : files).filter((f) => !exclude.some((s) => f.includes(s)));
if (chosen.length === 0) {
  console.error(`no test files under ${root} match ${filters.join(' ')}`);
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...chosen], { stdio: 'inherit' });
process.exit(r.status ?? 1);
