// Folder rules (ARCHITECTURE.md §4, §5): a rule follows the folder a file lives in. The sans-IO
// core (util, transport, rmr, brmr, nbd, sim) reaches sockets, files, timers, the clock and
// randomness only through the injected ports (src/util/ports.ts); the Node adapters live in
// src/node/, outside it. rmr/client never imports rmr/server; rmr/protocol imports neither; only
// the simulator imports src/sim/; only the Node side (src/node, src/cli and the node-*.ts files
// of daemon/ and dashboard/) imports src/node/. The daemon and the dashboard keep their Node I/O
// in their node-*.ts files, the rest of them is sans-IO like the core and tested in-process.
// The browser code (dashboard/web) imports nothing of Node. The full layer table and import
// circles: scripts/check-imports.mjs. test/lint/boundaries.test.ts proves each rule fires.
//
// In flat config the last block that sets a rule wins and options are not merged, so each block
// carries its files' whole no-restricted-imports, and no two blocks cover the same file.
const IO_MODULES = ['net', 'tls', 'fs', 'fs/promises', 'dgram', 'child_process', 'http', 'https', 'http2', 'timers', 'timers/promises', 'perf_hooks', 'worker_threads', 'os', 'process'];
const SANS_IO_PATHS = [
  ...IO_MODULES.flatMap((m) => [m, `node:${m}`]).map((name) => ({ name, message: 'the sans-IO core uses the injected ports (src/util/ports.ts); Node adapters live in src/node/' })),
  // Hashing and HMAC stay allowed (handshake, verify hashes, the simulator's trace hash).
  ...['crypto', 'node:crypto'].map((name) => ({
    name,
    importNames: ['randomBytes', 'randomUUID', 'randomInt', 'randomFill', 'randomFillSync', 'getRandomValues'],
    message: 'randomness comes from the Random port (src/util/ports.ts)',
  })),
];
const forbid = (dir, message) => ({ regex: `(^|/)${dir}/`, message });
const NO_SIM = forbid('sim', 'only the simulator imports src/sim/');
const NO_NODE = forbid('node', 'the sans-IO code reaches Node only through ports; src/node/ is wired in by the node-*.ts files and the CLI');
const NO_SERVER = forbid('server', 'rmr/client and rmr/protocol never import rmr/server');
const NO_CLIENT = forbid('client', 'rmr/protocol imports neither side');
// `performance` and `process` are allowed in sim/ only: sim/cli.ts reads its arguments and
// measures wall time for the seeds/s line; the runs themselves use the simulated clock.
const TIMERS = ['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate', 'crypto'];
const WALL_CLOCK = [
  { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: 'the clock is the Clock port: new Date(clock.wall_ms())' },
  { selector: "CallExpression[callee.name='Date']", message: 'the clock is the Clock port' },
];
const sansIo = (files, patterns, globals = [...TIMERS, 'performance', 'process'], ignores = []) => ({
  files,
  ...(ignores.length > 0 ? { ignores } : {}),
  rules: {
    'no-restricted-imports': ['error', { paths: SANS_IO_PATHS, patterns }],
    'no-restricted-globals': ['error', ...globals],
    'no-restricted-properties': ['error', { object: 'Math', property: 'random' }, { object: 'Date', property: 'now' }, { object: 'process', property: 'hrtime' }],
    'no-restricted-syntax': ['error', ...WALL_CLOCK],
  },
});

export const folderRules = [
  sansIo(['src/util/**/*.ts', 'src/transport/**/*.ts', 'src/nbd/**/*.ts', 'src/brmr/**/*.ts', 'src/rmr/server/**/*.ts'], [NO_SIM, NO_NODE]),
  sansIo(['src/rmr/client/**/*.ts'], [NO_SIM, NO_NODE, NO_SERVER]),
  sansIo(['src/rmr/protocol/**/*.ts'], [NO_SIM, NO_NODE, NO_SERVER, NO_CLIENT]),
  // sim/long.ts is a Node program around the simulator (worker threads on every core, a
  // fresh random first seed); the runs it starts are the sans-IO simulator itself.
  sansIo(['src/sim/**/*.ts'], [NO_NODE], TIMERS, ['src/sim/long.ts']),
  // daemon/ and dashboard/ (server side): sans-IO except their node-*.ts files. Unlike a
  // core folder, these are the layers that own the Node side, so the name marks the seam.
  sansIo(['src/daemon/**/*.ts', 'src/dashboard/*.ts'], [NO_SIM, NO_NODE], undefined, ['src/daemon/**/node-*.ts', 'src/dashboard/node-*.ts']),
  { files: ['src/node/**/*.ts', 'src/cli/**/*.ts', 'src/daemon/**/node-*.ts', 'src/dashboard/node-*.ts'], rules: { 'no-restricted-imports': ['error', { patterns: [NO_SIM] }] } },
  { files: ['src/sim/long.ts'], rules: { 'no-restricted-imports': ['error', { patterns: [NO_NODE] }] } },
  // The browser bundle: no Node module at all (its tsconfig has no Node types either); what it
  // shares with the server is src/dashboard/model.ts (check-imports holds it to that).
  {
    files: ['src/dashboard/web/**/*.ts', 'src/dashboard/web/**/*.tsx'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^node:', message: 'browser code: no Node modules' }, NO_SIM, NO_NODE], paths: IO_MODULES.map((name) => ({ name, message: 'browser code: no Node modules' })) }],
      'no-restricted-globals': ['error', 'process', 'Buffer', 'require'],
    },
  },
];
