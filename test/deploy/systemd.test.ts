// The systemd units of deploy/systemd/ (issue 21, item 5): systemd-analyze verify accepts each
// of them without a warning (and rejects a broken copy, so the check can fail); ExecStart runs
// the `rmr` entry the npm package installs, with the Node options and environment `rmr up`
// gives its daemons; the daemon restarts after fail-stop (exit 70) but not after a bad
// configuration (exit 4); the hardening is there. The ExecStart command line, with the
// installed path swapped for this tree's build, really starts Node and resolves the unit's
// state directory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { DAEMON_MALLOC_TUNABLES, DAEMON_NODE_ARGS } from '../../src/cli/node-cluster.js';
import { envName } from '../../src/daemon/config.js';

const DIR = 'deploy/systemd';
const ANALYZE = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
const NO_ANALYZE = ANALYZE === undefined ? 'systemd-analyze is not installed (package systemd): the units are not verified here' : false;
/** Where `npm install -g` puts the package with the distribution's Node (npm's prefix /usr/local). */
const PREFIX = '/usr/local';
const NODE = '/usr/bin/node';

interface Unit {
  readonly file: string;
  /** section → key → values in order (a key may repeat, e.g. Environment=). */
  readonly sections: Map<string, Map<string, string[]>>;
}

function parseUnit(file: string): Unit {
  const sections = new Map<string, Map<string, string[]>>();
  let cur: Map<string, string[]> | undefined;
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec !== null) {
      cur = new Map();
      sections.set(sec[1] ?? '', cur);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(cur !== undefined && eq > 0, `${file}: a line outside a section or without '=': ${line}`);
    const k = line.slice(0, eq);
    cur.set(k, [...(cur.get(k) ?? []), line.slice(eq + 1)]);
  }
  return { file, sections };
}

function get(u: Unit, section: string, key: string): string[] {
  return u.sections.get(section)?.get(key) ?? [];
}

function one(u: Unit, section: string, key: string): string {
  const v = get(u, section, key);
  assert.equal(v.length, 1, `${u.file}: [${section}] ${key}= once (got ${JSON.stringify(v)})`);
  return v[0] ?? '';
}

function env(u: Unit): Map<string, string> {
  return new Map(get(u, 'Service', 'Environment').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]));
}

/**
 * systemd-analyze verify on `path` (a unit, or an instance name of a template next to it):
 * null when it passes, else why. verify exits 0 on an unknown key or a value it cannot parse
 * (it logs `…, ignoring` and goes on), so any line it prints about the unit is a failure too.
 */
function verify(path: string): string | null {
  assert.ok(ANALYZE !== undefined);
  const r = spawnSync(ANALYZE, ['verify', path], { encoding: 'utf8', timeout: 60_000 });
  const name = basename(path);
  const template = name.replace(/@[^.]+\./, '@.');
  const about = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes(name) || l.includes(template) || l.includes(name.replace(/@[^.]+\./, '@i.')));
  if (r.status !== 0) return `exit ${String(r.status)}: ${r.stderr.trim()}`;
  if (about.length > 0) return about.join('\n');
  return null;
}

/** The units, each copied to `dir` and named as systemd-analyze should load it (a template: an instance). */
function units(): { unit: Unit; name: string }[] {
  return readdirSync(DIR)
    .filter((f) => f.endsWith('.service'))
    .sort()
    .map((f) => ({ unit: parseUnit(join(DIR, f)), name: f.includes('@.') ? f.replace('@.', '@stg1.') : f }));
}

/**
 * systemd-analyze checks that ExecStart's program exists. Where this host's Node is not at the
 * distribution's path (a Node from a tarball or nvm), the copy runs this Node instead: the
 * rest of the unit is verified as shipped.
 */
function copyFor(dir: string, u: Unit, edit: (text: string) => string = (t) => t): void {
  let text = readFileSync(u.file, 'utf8');
  if (!existsSync(NODE)) text = text.replaceAll(`ExecStart=${NODE} `, `ExecStart=${process.execPath} `);
  writeFileSync(join(dir, basename(u.file)), edit(text));
}

test('deploy/systemd has the storage and client units and a template for several daemons per host', () => {
  const names = readdirSync(DIR).filter((f) => f.endsWith('.service')).sort();
  assert.deepEqual(names, ['rmr-client.service', 'rmr-storage.service', 'rmr@.service']);
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { files: string[] };
  assert.ok(pkg.files.includes('deploy/'), 'the npm package ships deploy/ (the units)');
});

test('systemd-analyze verify accepts every unit without a warning, and rejects broken copies', { skip: NO_ANALYZE }, (t) => {
  if (!existsSync(NODE)) t.diagnostic(`${NODE} is absent: the verified copies run ${process.execPath}`);
  for (const { unit, name } of units()) {
    const dir = mkdtempSync(join(tmpdir(), 'rmr-unit-'));
    try {
      copyFor(dir, unit);
      assert.equal(verify(join(dir, name)), null, `${unit.file} verifies cleanly`);
      // The check can fail: a program that does not exist (verify exits non-zero), a key
      // systemd does not know and a value it cannot parse (verify exits 0 and warns).
      copyFor(dir, unit, (s) => s.replace(/^ExecStart=\S+/m, 'ExecStart=/nonexistent/node'));
      assert.match(verify(join(dir, name)) ?? '', /nonexistent/, `${unit.file}: a missing program is caught`);
      copyFor(dir, unit, (s) => s.replace(/^NoNewPrivileges=yes$/m, 'NoNewPrivilegez=yes'));
      assert.match(verify(join(dir, name)) ?? '', /Unknown key/, `${unit.file}: a misspelt key is caught`);
      copyFor(dir, unit, (s) => s.replace(/^Restart=on-failure$/m, 'Restart=on-crash'));
      assert.match(verify(join(dir, name)) ?? '', /restart specifier/, `${unit.file}: a bad value is caught`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('ExecStart runs the installed rmr entry of the npm package with the Node options and environment rmr up gives its daemons', () => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { name: string; bin: { rmr: string } };
  const entry = `${PREFIX}/lib/node_modules/${pkg.name}/${pkg.bin.rmr}`;
  assert.ok(existsSync(pkg.bin.rmr), `the bin entry ${pkg.bin.rmr} is built`);
  for (const { unit } of units()) {
    const argv = one(unit, 'Service', 'ExecStart').split(/\s+/);
    const instance = unit.file.includes('@.') ? '%i' : basename(unit.file, '.service').replace(/^rmr-/, '');
    assert.deepEqual(argv, [NODE, ...DAEMON_NODE_ARGS, entry, 'daemon', '--config', `/etc/rmr/${instance}.yaml`], `${unit.file}: ExecStart`);
    const e = env(unit);
    assert.equal(e.get('GLIBC_TUNABLES'), DAEMON_MALLOC_TUNABLES, `${unit.file}: the malloc tunables of rmr up`);
    const storage = !unit.file.includes('client');
    if (storage) {
      const n = Number(e.get('UV_THREADPOOL_SIZE'));
      assert.ok(n >= 2 && n <= 4, `${unit.file}: a storage daemon's thread pool, 2..4 like rmr up's (got ${String(e.get('UV_THREADPOOL_SIZE'))})`);
    } else assert.equal(e.get('UV_THREADPOOL_SIZE'), undefined, `${unit.file}: a client keeps libuv's default`);
    // The state directory systemd makes (owned by User=, StateDirectoryMode) is the one the daemon uses.
    const stateDirs = one(unit, 'Service', 'StateDirectory').split(/\s+/);
    assert.equal(e.get(envName('state_dir')), `/var/lib/${stateDirs[0] ?? ''}`, `${unit.file}: ${envName('state_dir')} is the first StateDirectory`);
    assert.equal(one(unit, 'Service', 'StateDirectoryMode'), '0700', `${unit.file}: the daemon refuses a state directory others may write`);
    // No secret in the unit: it is world-readable (systemctl show).
    for (const k of e.keys()) assert.ok(!/TOKEN|SECRET|KEY|PSK/.test(k), `${unit.file}: ${k} does not belong in a unit's environment`);
  }
});

test('restart on fail-stop (exit 70) and other failures, not on a bad configuration (exit 4); the hardening a storage daemon can take', () => {
  for (const { unit } of units()) {
    assert.equal(one(unit, 'Service', 'Restart'), 'on-failure', unit.file);
    const prevent = get(unit, 'Service', 'RestartPreventExitStatus').flatMap((v) => v.split(/\s+/));
    assert.ok(!prevent.includes('70') && !prevent.includes('1'), `${unit.file}: exits 70 and 1 restart`);
    assert.ok(prevent.includes('4'), `${unit.file}: exit 4 (bad configuration) does not restart`);
    const user = one(unit, 'Service', 'User');
    assert.ok(user !== '' && user !== 'root' && user !== '0', `${unit.file}: a user of its own`);
    for (const [k, v] of [
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['RestrictSUIDSGID', 'yes'],
      ['CapabilityBoundingSet', ''],
      ['UMask', '0077'],
    ] as const) {
      assert.equal(one(unit, 'Service', k), v, `${unit.file}: ${k}=${v}`);
    }
    // Storage units must see block devices (stores on them); the client needs none.
    const privateDevices = get(unit, 'Service', 'PrivateDevices');
    if (unit.file.includes('client')) assert.deepEqual(privateDevices, ['yes'], unit.file);
    else assert.deepEqual(privateDevices, [], `${unit.file}: devices stay visible for block-device stores`);
  }
});

test("the unit's command line starts this tree's daemon: Node takes the options, and the state directory is the unit's", () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-unit-run-'));
  try {
    for (const { unit } of units()) {
      const argv = one(unit, 'Service', 'ExecStart').split(/\s+/);
      const cfg = join(dir, 'daemon.yaml');
      writeFileSync(cfg, 'name: n1\n');
      // The installed entry → this tree's build; the config → a temporary one; %i → an instance.
      const args = argv.slice(1).map((a) => (a.endsWith('/dist/src/cli/main.js') ? 'dist/src/cli/main.js' : a.startsWith('/etc/rmr/') ? cfg : a));
      const e = Object.fromEntries([...env(unit)].map(([k, v]) => [k, v.replaceAll('%i', 'stg1')]));
      const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RMR_')));
      const r = spawnSync(process.execPath, [...args, '--print-config'], { encoding: 'utf8', env: { ...clean, ...e }, timeout: 30_000 });
      assert.equal(r.status, 0, `${unit.file}: ${r.stderr}`);
      const plain = JSON.parse(r.stdout) as { state_dir: string };
      assert.equal(plain.state_dir, e[envName('state_dir')], unit.file);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
