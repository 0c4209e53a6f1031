// scripts/check-imports.mjs fails on a forbidden edge and on an import circle (type-only edges
// count), naming each, and passes on the repository itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const SCRIPT = join(ROOT, 'scripts/check-imports.mjs');

function check(root: string): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [SCRIPT, root], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'check-imports-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

test('a planted forbidden import and a planted circle of types both fail the check', () => {
  const dir = tree({
    'src/rmr/client/a.ts': "import { B } from '../server/b.js';\nexport const A = B;\n",
    'src/rmr/server/b.ts': 'export const B = 1;\n',
    'src/util/x.ts': "import type { Y } from './y.js';\nexport type X = Y | 1;\n",
    'src/util/y.ts': "import type { X } from './x.js';\nexport type Y = X | 2;\n",
    'src/transport/t.ts': "import { A } from '../rmr/client/a.js';\nexport const T = A;\n",
    'src/elsewhere/e.ts': 'export const E = 1;\n',
  });
  try {
    const r = check(dir);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /src\/rmr\/client\/a\.ts:1: src\/rmr\/client may not import src\/rmr\/server\/b\.ts/);
    assert.match(r.out, /src\/transport\/t\.ts:1: src\/transport may not import src\/rmr\/client\/a\.ts/);
    assert.match(r.out, /import circle: src\/util\/x\.ts <-> src\/util\/y\.ts/);
    assert.match(r.out, /src\/elsewhere\/e\.ts: not in any folder of the layer table/);
    assert.match(r.out, /4 problems/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the same tree without the planted problems passes', () => {
  const dir = tree({
    'src/rmr/client/a.ts': "import { P } from '../protocol/p.js';\nexport const A = P;\n",
    'src/rmr/protocol/p.ts': 'export const P = 1;\n',
    'src/rmr/server/b.ts': "import { A } from '../client/a.js';\nexport const B = A;\n",
    'src/util/x.ts': "import type { Y } from './y.js';\nexport type X = Y | 1;\n",
    'src/util/y.ts': 'export type Y = 2;\n',
  });
  try {
    const r = check(dir);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /layers and circles ok/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the repository itself passes', () => {
  const r = check(ROOT);
  assert.equal(r.status, 0, r.out);
});
