// Builds the dashboard's page into dist/web (the files `rmr dashboard` serves): type-checks
// the browser sources (their own tsconfig, with the DOM), bundles them with esbuild (Preact,
// uPlot and the CSS in one app.js and one app.css, minified) and copies index.html. Run by
// `npm run build`; the output is generated, never committed.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const src = 'src/dashboard/web';
const out = 'dist/web';
const tsc = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', join(src, 'tsconfig.json')], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { app: join(src, 'main.tsx') },
  outdir: out,
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  sourcemap: false,
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'eof',
  logLevel: 'warning',
});
copyFileSync(join(src, 'index.html'), join(out, 'index.html'));
