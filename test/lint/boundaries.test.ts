// The folder rules of eslint.boundaries.mjs fire: a core folder that reaches Node I/O, timers,
// the wall clock or Math.random, rmr/client reaching into rmr/server, rmr/protocol reaching into
// either side, and anything but the simulator importing src/sim/ are each an error, and the
// allowed imports beside them stay clean. Each case lints one snippet under a made-up path
// with ESLint's Linter (no type information needed: these rules are syntactic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ESLint, Linter } from 'eslint';
import tseslint from 'typescript-eslint';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
// A computed specifier: tsc does not try to resolve the .mjs, which lives outside the build.
const { folderRules } = (await import(pathToFileURL(join(ROOT, 'eslint.boundaries.mjs')).href)) as { folderRules: Linter.Config[] };

const linter = new Linter({ cwd: ROOT });
const config: Linter.Config[] = [{ files: ['**/*.ts', '**/*.tsx'], languageOptions: { parser: tseslint.parser } }, ...folderRules];

/** The rule ids reported for `code` as if it were the file `file` (relative to the repository). */
function rulesHit(file: string, code: string): string[] {
  const msgs = linter.verify(code, config, { filename: join(ROOT, file) });
  const fatal = msgs.find((m) => m.fatal === true);
  assert.equal(fatal, undefined, `${file}: parse error ${fatal?.message}`);
  return msgs.map((m) => m.ruleId ?? '?');
}
const fails = (file: string, code: string, rule: string): void => assert.ok(rulesHit(file, code).includes(rule), `${file}: \`${code}\` should break ${rule}`);
const clean = (file: string, code: string): void => assert.deepEqual(rulesHit(file, code), [], `${file}: \`${code}\` should be allowed`);

test('a core folder may not import Node I/O, nor src/node/', () => {
  fails('src/rmr/client/x.ts', "import net from 'node:net'; void net;", 'no-restricted-imports');
  fails('src/rmr/server/x.ts', "import { readFile } from 'fs/promises'; void readFile;", 'no-restricted-imports');
  fails('src/transport/x.ts', "import { createServer } from 'node:tls'; void createServer;", 'no-restricted-imports');
  fails('src/nbd/x.ts', "import { setTimeout as sleep } from 'node:timers/promises'; void sleep;", 'no-restricted-imports');
  fails('src/util/x.ts', "import { cpus } from 'node:os'; void cpus;", 'no-restricted-imports');
  fails('src/sim/x.ts', "import { spawn } from 'node:child_process'; void spawn;", 'no-restricted-imports');
  fails('src/brmr/server/x.ts', "import { randomBytes } from 'node:crypto'; void randomBytes;", 'no-restricted-imports');
  fails('src/transport/x.ts', "import { NodeNet } from '../node/net.js'; void NodeNet;", 'no-restricted-imports');
  // The name does not matter any more: a node-*.ts inside a core folder is core code.
  fails('src/rmr/server/node-store.ts', "import { openSync } from 'node:fs'; void openSync;", 'no-restricted-imports');
  clean('src/brmr/server/x.ts', "import { createHash } from 'node:crypto'; void createHash;");
  clean('src/rmr/client/x.ts', "import { ClientSession } from '../../transport/client-session.js'; void ClientSession;");
  clean('src/transport/x.ts', "import { TransportServer } from './server.js'; void TransportServer;");
});

test('a core folder may not use timers, the wall clock or Math.random', () => {
  fails('src/transport/x.ts', 'setTimeout(() => undefined, 1);', 'no-restricted-globals');
  fails('src/rmr/server/x.ts', 'const t = setInterval(() => undefined, 1); clearInterval(t);', 'no-restricted-globals');
  fails('src/util/x.ts', 'export const r = Math.random();', 'no-restricted-properties');
  fails('src/nbd/x.ts', 'export const t = Date.now();', 'no-restricted-properties');
  fails('src/brmr/client/x.ts', 'export const d = new Date();', 'no-restricted-syntax');
  fails('src/rmr/server/x.ts', 'export const t = performance.now();', 'no-restricted-globals');
  fails('src/sim/x.ts', 'setImmediate(() => undefined);', 'no-restricted-globals');
  clean('src/rmr/server/x.ts', 'export const d = (ms: number): string => new Date(ms).toISOString();');
  // The simulator's command line measures wall time for its seeds/s line.
  clean('src/sim/cli.ts', 'export const t = performance.now();');
});

test('rmr/client never imports rmr/server; rmr/protocol imports neither side', () => {
  fails('src/rmr/client/x.ts', "import { ServerPool } from '../server/server-pool.js'; void ServerPool;", 'no-restricted-imports');
  fails('src/rmr/client/x.ts', "import type { ServerPool } from '../server/server-pool.js'; export type P = ServerPool;", 'no-restricted-imports');
  fails('src/rmr/protocol/x.ts', "import { ClientPool } from '../client/client-pool.js'; void ClientPool;", 'no-restricted-imports');
  fails('src/rmr/protocol/x.ts', "import { ServerPool } from '../server/server-pool.js'; void ServerPool;", 'no-restricted-imports');
  clean('src/rmr/client/x.ts', "import { encodeIo } from '../protocol/msg.js'; void encodeIo;");
  clean('src/rmr/server/x.ts', "import { ClientPool } from '../client/client-pool.js'; void ClientPool;");
});

test('only the simulator imports src/sim/', () => {
  for (const file of ['src/daemon/x.ts', 'src/daemon/node-x.ts', 'src/node/x.ts', 'src/cli/x.ts', 'src/dashboard/x.ts', 'src/dashboard/node-x.ts', 'src/rmr/server/x.ts', 'src/brmr/server/x.ts']) {
    fails(file, "import { SimClock } from '../sim/sim-clock.js'; void SimClock;", 'no-restricted-imports');
  }
  clean('src/sim/x.ts', "import { SimClock } from './sim-clock.js'; void SimClock;");
});

test('daemon/ and dashboard/ keep Node I/O in their node-*.ts files; the browser code has none', () => {
  fails('src/daemon/x.ts', "import net from 'node:net'; void net;", 'no-restricted-imports');
  fails('src/daemon/x.ts', 'setTimeout(() => undefined, 1);', 'no-restricted-globals');
  fails('src/daemon/x.ts', "import { NodeNet } from '../node/net.js'; void NodeNet;", 'no-restricted-imports');
  fails('src/dashboard/x.ts', "import { createServer } from 'node:http'; void createServer;", 'no-restricted-imports');
  fails('src/dashboard/x.ts', 'export const t = Date.now();', 'no-restricted-properties');
  clean('src/daemon/node-x.ts', "import net from 'node:net'; import { NodeNet } from '../node/net.js'; void net; void NodeNet; setTimeout(() => undefined, 1);");
  clean('src/dashboard/node-x.ts', "import { createServer } from 'node:http'; void createServer; export const t = Date.now();");
  clean('src/cli/x.ts', "import { readFileSync } from 'node:fs'; import { daemonLiveness } from '../node/liveness.js'; void readFileSync; void daemonLiveness;");
  clean('src/node/x.ts', "import net from 'node:net'; void net; setTimeout(() => undefined, 1);");
  fails('src/dashboard/web/x.tsx', "import { readFileSync } from 'node:fs'; void readFileSync;", 'no-restricted-imports');
  fails('src/dashboard/web/x.tsx', "import { join } from 'node:path'; void join;", 'no-restricted-imports');
  fails('src/dashboard/web/x.tsx', 'export const b = Buffer.alloc(1);', 'no-restricted-globals');
  clean('src/dashboard/web/x.tsx', "import { useState } from 'preact/hooks'; void useState; export const t = Date.now(); export const v = <div>{t}</div>;");
});

test('eslint.config.js applies the folder rules to the real tree', async () => {
  // The rules above only count if the project's config spreads them in: ask ESLint what it
  // would apply to a core file and to an adapter.
  const eslint = new ESLint({ cwd: ROOT });
  const core = (await eslint.calculateConfigForFile(join(ROOT, 'src/rmr/client/client-pool.ts'))) as Linter.Config;
  const adapter = (await eslint.calculateConfigForFile(join(ROOT, 'src/node/net.ts'))) as Linter.Config;
  const paths = (c: Linter.Config): unknown => JSON.stringify(c.rules?.['no-restricted-imports'] ?? null);
  assert.match(String(paths(core)), /"node:net"/);
  assert.match(String(paths(core)), /server\//);
  assert.doesNotMatch(String(paths(adapter)), /"node:net"/);
  assert.ok(core.rules?.['no-restricted-globals'] !== undefined, 'timers are forbidden in the core');
});
