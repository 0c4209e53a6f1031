// Checks src/'s import graph against the layer table of ARCHITECTURE.md §4: every relative import
// (value, type-only, export-from, dynamic) must go to an allowed folder, and no import circle may
// exist (type-only edges count: a circle of types is still one design knot, and ESLint's
// import/no-cycle ignores them). Exit 1 with file:line for each problem.
// usage: node scripts/check-imports.mjs [root]   (root: the repository, default .)
import ts from 'typescript';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';

const ROOT = process.argv[2] ?? '.';
// Folder -> folders it may import (besides itself). A file belongs to the most specific folder.
const ALLOWED = {
  'src/util': [],
  'src/transport': ['src/util'],
  'src/rmr/protocol': ['src/util'],
  'src/rmr/client': ['src/util', 'src/transport', 'src/rmr/protocol'],
  // The reference's rmr-server uses rmr-client sync pools; the reverse is forbidden.
  'src/rmr/server': ['src/util', 'src/transport', 'src/rmr/protocol', 'src/rmr/client'],
  'src/nbd': ['src/util', 'src/transport'],
  'src/brmr/client': ['src/util', 'src/rmr/protocol', 'src/rmr/client', 'src/brmr'],
  'src/brmr/server': ['src/util', 'src/rmr/protocol', 'src/rmr/server', 'src/brmr'],
  'src/brmr': ['src/util'],
  'src/sim': ['src/util', 'src/transport', 'src/rmr/protocol', 'src/rmr/client', 'src/rmr/server'],
  'src/node': ['src/util', 'src/transport', 'src/rmr/server', 'src/brmr'],
  'src/daemon': ['src/util', 'src/transport', 'src/rmr', 'src/nbd', 'src/brmr', 'src/node'],
  // The dashboard's Node side reads the daemons; its browser side (web/) shares only the model.
  'src/dashboard': ['src/util', 'src/daemon', 'src/node'],
  'src/dashboard/web': ['src/dashboard/model.ts'],
  'src/cli': ['src/util', 'src/daemon', 'src/node', 'src/dashboard'],
};
const inside = (f, k) => f === k || f.startsWith(k + '/');
const folderOf = (f) =>
  Object.keys(ALLOWED)
    .filter((k) => inside(f, k))
    .sort((a, b) => b.length - a.length)[0];
const walk = (d) =>
  readdirSync(join(ROOT, d), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(d, e.name)) : /\.tsx?$/.test(e.name) ? [join(d, e.name)] : [],
  );

const files = walk('src');
const edges = new Map();
const problems = [];
for (const f of files) {
  const text = readFileSync(join(ROOT, f), 'utf8');
  const out = [];
  const from_dir = folderOf(f);
  if (from_dir === undefined) problems.push(`${f}: not in any folder of the layer table`);
  for (const imp of ts.preProcessFile(text, true, true).importedFiles) {
    if (!imp.fileName.startsWith('.')) continue;
    const ts_path = normalize(join(dirname(f), imp.fileName)).replace(/\.js$/, '.ts');
    const to = !existsSync(join(ROOT, ts_path)) && existsSync(join(ROOT, ts_path + 'x')) ? ts_path + 'x' : ts_path;
    const line = text.slice(0, imp.pos).split('\n').length;
    out.push(to);
    if (from_dir !== undefined && folderOf(to) !== from_dir && !ALLOWED[from_dir].some((k) => inside(to, k))) {
      problems.push(`${f}:${line}: ${from_dir} may not import ${to}`);
    }
  }
  edges.set(f, out);
}

// Tarjan's strongly connected components: every component of more than one file is a circle.
let index = 0;
const idx = new Map();
const low = new Map();
const stack = [];
const on = new Set();
const strong = (v) => {
  idx.set(v, index);
  low.set(v, index);
  index++;
  stack.push(v);
  on.add(v);
  for (const w of edges.get(v) ?? []) {
    if (!edges.has(w)) continue;
    if (!idx.has(w)) {
      strong(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const c = [];
    let w;
    do {
      w = stack.pop();
      on.delete(w);
      c.push(w);
    } while (w !== v);
    if (c.length > 1 || (edges.get(v) ?? []).includes(v)) problems.push(`import circle: ${c.sort().join(' <-> ')}`);
  }
};
for (const f of files) if (!idx.has(f)) strong(f);

for (const p of problems) console.error(p);
const imports = [...edges.values()].reduce((n, e) => n + e.length, 0);
console.log(`${files.length} files, ${imports} imports: ${problems.length === 0 ? 'layers and circles ok' : `${problems.length} problems`}`);
process.exit(problems.length === 0 ? 0 : 1);
