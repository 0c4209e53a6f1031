// The NBD settings of real daemons. `rmr up`, run under umask 000, brings up a storage and a
// client daemon whose cluster file asks for `tls: require` with a certificate directory
// (a relative path) and a socket group: nbdinfo over nbds:// gets in, plaintext nbdinfo is
// refused, `rmr status` lists the nbds:// URI, and the Unix socket is 0660 with that group
// (it was 0777 under umask 000). A daemon with a plaintext nbd.tcp off loopback refuses to
// start, with allow_insecure it starts and warns, and unreadable TLS files stop the start
// with a one-line reason.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { MAIN, rmr, rmrOk, until } from '../util/cli-cluster.js';
import { run, runOk } from '../util/nbd-checks.js';
import { TestCerts } from '../util/tls-certs.js';
import { within } from '../util/wait.js';

const BASE = 30000 + (process.pid % 1000) * 4;
const NBD_PORT = BASE + 2;
const HOST = '127.0.0.6';
let dir = '';
let cluster = '';
let clientCerts = '';
const certs = new TestCerts();
/**
 * A group other than the primary one when this user may use one (root: any group in
 * /etc/group; others: a supplementary group), so the chown really changes something.
 */
function otherGroup(): number {
  const own = process.getgid?.() ?? 0;
  if (process.getuid?.() === 0) {
    const gids = readFileSync('/etc/group', 'utf8').split('\n').map((l) => Number(l.split(':')[2])).filter((g) => Number.isInteger(g) && g !== own);
    if (gids.length > 0) return gids[0] as number;
  }
  return (process.getgroups?.() ?? []).find((g) => g !== own) ?? own;
}
const gid = otherGroup();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rmr-nbd-tls-'));
  const ca = certs.ca('cluster');
  const srv = certs.signed(ca, 'srv', HOST, { server: true, san: `IP:${HOST}` });
  certs.layout(join(dir, 'certs'), ca, 'server', srv);
  clientCerts = certs.layout(join(dir, 'client-certs'), ca, 'client', certs.signed(ca, 'cli', 'nbd-client', { server: false }));
  cluster = join(dir, 'cluster.yaml');
  writeFileSync(
    cluster,
    [
      'cluster: tls',
      'state_dir: state',
      'nodes:',
      `  - {name: stg1, addresses: [127.0.0.2], port: ${BASE}}`,
      `  - {name: cli, addresses: [${HOST}], port: ${BASE + 1}}`,
      'pools: [{name: p1, chunk_size: 128K, members: [{node: stg1, member_id: 1}]}]',
      'stores: [{node: stg1, pool: p1, path: stg1.img, size: 48M}]',
      'client:',
      '  node: cli',
      '  devices: [{name: disk0, pool: p1}]',
      `  nbd: {socket_dir: nbd, tcp: "${HOST}:${NBD_PORT}", tls: require, tls_certificates: certs, socket_group: "${gid}"}`,
      '',
    ].join('\n'),
  );
  // umask 000: what the socket mode must not depend on.
  const up = spawn('sh', ['-c', 'umask 000 && exec "$0" "$@"', process.execPath, MAIN, 'up', cluster, '--timeout', '60', '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  up.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await within('rmr up', new Promise<number | null>((r) => up.on('exit', (c) => r(c))), 90_000);
  assert.equal(code, 0, err);
});

after(async () => {
  await rmr(['down', cluster], 60_000);
  certs.remove();
  rmSync(dir, { recursive: true, force: true });
});

test('rmr up with client.nbd tls require: nbds:// works, plaintext is refused, status lists nbds://', async () => {
  const tlsUri = `nbds://${HOST}:${NBD_PORT}/disk0?tls-certificates=${clientCerts}`;
  const info = JSON.parse((await runOk('nbdinfo', ['--json', tlsUri])).stdout) as { TLS?: boolean; exports?: { 'export-size'?: number }[] };
  assert.equal(info.TLS, true);
  assert.equal(info.exports?.[0]?.['export-size'], 48 << 20);
  await runOk('qemu-io', ['--object', `tls-creds-x509,id=t0,endpoint=client,dir=${clientCerts}`, '--image-opts', '-c', 'write -P 0x2a 1M 64k', '-c', 'read -P 0x2a 1M 64k', `driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=${HOST},file.server.port=${NBD_PORT},file.export=disk0,file.tls-creds=t0`]);
  const plain = await run('nbdinfo', [`nbd://${HOST}:${NBD_PORT}/disk0`], 20_000);
  assert.notEqual(plain.code, 0, 'a plaintext client is refused');
  const st = JSON.parse(await rmrOk(['status', '--cluster', cluster, '--json'])) as { devices: { uris: string[] }[] };
  const uris = st.devices[0]?.uris ?? [];
  assert.ok(uris.includes(`nbds://${HOST}:${NBD_PORT}/disk0`), JSON.stringify(uris));
  assert.ok(!uris.some((u) => u.startsWith('nbd://')), 'no plaintext TCP URI is advertised');
  // The Unix socket offers TLS and plain (its mode is the access control).
  const sock = join(dir, 'nbd', 'disk0.sock');
  assert.equal((JSON.parse((await runOk('nbdinfo', ['--json', `nbd+unix:///disk0?socket=${sock}`])).stdout) as { TLS?: boolean }).TLS, false);
});

/**
 * The `-object` and `-blockdev` values of the QEMU example under `<!-- tested: NAME` in
 * docs/nbd.md, with the doc's host, port, paths and export replaced by this cluster's.
 */
function docQemuArgs(name: string, subst: [string, string][]): { objects: string[]; blockdev: string } {
  const doc = readFileSync(join(process.cwd(), 'docs', 'nbd.md'), 'utf8');
  const at = doc.indexOf(`<!-- tested: ${name} `);
  assert.ok(at >= 0, `docs/nbd.md has no example ${name}`);
  const block = /```sh\n([\s\S]*?)```/.exec(doc.slice(at));
  assert.ok(block !== null && block[1] !== undefined, `the example ${name} has a code block`);
  let text = block[1];
  for (const [from, to] of subst) text = text.split(from).join(to);
  const objects = [...text.matchAll(/-object (\S+)/g)].map((m) => m[1] as string);
  const blockdev = [...text.matchAll(/-blockdev (\S+)/g)].map((m) => m[1] as string);
  assert.equal(blockdev.length, 1, `one -blockdev in ${name}`);
  return { objects, blockdev: blockdev[0] as string };
}

test('the QEMU lines of docs/nbd.md (Unix socket; TCP with TLS) attach the disk: qemu-img info and a 32 MiB qemu-io write and read with the same arguments', async () => {
  const sock = join(dir, 'nbd', 'disk0.sock');
  const subst: [string, string][] = [
    ['/var/lib/rmr/nbd/disk0.sock', sock],
    ['/etc/rmr/nbd-client', clientCerts],
    ['compute1.example', HOST],
    ['10809', String(NBD_PORT)],
  ];
  for (const name of ['qemu-unix', 'qemu-tcp-tls']) {
    const q = docQemuArgs(name, subst);
    if (name === 'qemu-tcp-tls') assert.ok(q.objects.length === 1 && q.blockdev.includes('tls-creds='), 'the TCP example uses TLS (the daemon requires it)');
    const objs = q.objects.flatMap((o) => ['--object', o]);
    const info = await runOk('qemu-img', ['info', '--output=json', ...objs, '--image-opts', q.blockdev]);
    assert.equal((JSON.parse(info.stdout) as { 'virtual-size'?: number })['virtual-size'], 48 << 20, `${name}: qemu-img info`);
    const pat = name === 'qemu-unix' ? '0x3c' : '0xc3';
    const io = await runOk('qemu-io', [...objs, '--image-opts', '-c', `write -P ${pat} 8M 32M`, '-c', `read -P ${pat} 8M 32M`, q.blockdev], 120_000);
    assert.match(io.stdout, /read 33554432\/33554432 bytes at offset 8388608/, `${name}: qemu-io`);
    assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed/);
  }
});

test('the NBD Unix socket is 0660 with the configured group, even under umask 000', () => {
  const s = statSync(join(dir, 'nbd', 'disk0.sock'));
  assert.ok(s.isSocket());
  assert.equal((s.mode & 0o777).toString(8), '660');
  assert.equal(s.gid, gid);
});

/** `rmr daemon` with a client role and this nbd section; resolves with its exit code and stderr once it exits or is running. */
async function daemon(name: string, nbd: string): Promise<{ code: number | null; stderr: string; log: () => string; stop: () => Promise<void> }> {
  const d = join(dir, name);
  mkdirSync(d);
  const secret = join(d, 'secret');
  writeFileSync(secret, randomBytes(32).toString('base64'), { mode: 0o600 });
  const cfg = join(d, 'daemon.yaml');
  const logFile = join(d, 'daemon.log');
  writeFileSync(cfg, [`name: ${name}`, `state_dir: ${d}`, `secret_file: ${secret}`, `log: {file: ${logFile}, format: json}`, `data: {listen: "127.0.0.6:${BASE + 3}"}`, `nbd: ${nbd}`, 'roles: {client: {}}', ''].join('\n'));
  const p = spawn(process.execPath, [MAIN, 'daemon', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  const state = (): string => {
    try {
      return (JSON.parse(readFileSync(join(d, 'state.json'), 'utf8')) as { state: string }).state;
    } catch {
      return '';
    }
  };
  const code = await Promise.race([exited, until('the daemon running', () => Promise.resolve(state() === 'running' ? ('running' as const) : null), 20_000)]);
  return {
    code: code === 'running' ? null : code,
    stderr,
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    stop: async () => {
      if (p.exitCode === null) p.kill('SIGTERM');
      await within('daemon exit', exited, 20_000);
    },
  };
}

test('a daemon refuses plaintext NBD off loopback; allow_insecure starts it with a warning; bad TLS files stop the start', async () => {
  const refused = await daemon('open', `{tcp: "0.0.0.0:${BASE + 2}"}`);
  assert.equal(refused.code, 4);
  assert.equal(
    refused.stderr,
    `rmr: bad configuration: nbd.tcp: 0.0.0.0:${BASE + 2} is not a loopback address and NBD would be plaintext and unauthenticated: set nbd.tls: require (with nbd.tls_certificates or nbd.tls_psk_file), or nbd.allow_insecure: true\n`,
  );
  // A port of its own: binding 0.0.0.0 conflicts with any 127.0.0.x use of the same port.
  const insecure = await daemon('insecure', `{tcp: "0.0.0.0:${BASE + 1000}", allow_insecure: true}`);
  try {
    assert.equal(insecure.code, null, insecure.stderr);
    await until('the warning', () => Promise.resolve(/NBD served without required TLS on a non-loopback address \(nbd.allow_insecure\)/.test(insecure.log()) ? true : null), 10_000);
  } finally {
    await insecure.stop();
  }
  const empty = join(dir, 'empty-certs');
  mkdirSync(empty);
  const noFiles = await daemon('nofiles', `{tcp: "127.0.0.6:${BASE + 2}", tls: require, tls_certificates: ${empty}}`);
  assert.equal(noFiles.code, 1);
  assert.match(noFiles.stderr, /^rmr daemon: cannot start: cannot read nbd\.tls_certificates file .*empty-certs\/server-cert\.pem: ENOENT[^\n]*\n$/);
  const psk = join(dir, 'short.psk');
  writeFileSync(psk, 'alice:0011\n', { mode: 0o600 });
  const shortKey = await daemon('shortkey', `{tcp: "127.0.0.6:${BASE + 2}", tls: require, tls_psk_file: ${psk}}`);
  assert.equal(shortKey.code, 1);
  assert.match(shortKey.stderr, /^rmr daemon: cannot start: nbd TLS: .*short\.psk:1: the key of alice has 2 bytes; use 16\.\.256 random bytes \(psktool makes 32\)\n$/);
});
