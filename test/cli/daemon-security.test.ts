// The attacks of the security review against `rmr daemon` processes, each now failing to do
// harm (docs/security.md):
//   finding 3  a state directory others can write into (or another user's) is refused; pid and
//              state files planted as symlinks are never written through
//   finding 7  secret, token and key files readable by group or others are refused (or only
//              logged, with secret_file_modes: warn); secrets and tokens shorter than 32 too
//   finding 4  create_store on a text file, through a symlink, or outside store_dirs is refused
//   finding 5  2,000 refused handshakes do not flood the log (rate limit; rotation at max_bytes)
//   finding 13 an exception thrown in an IO callback stops the daemon with state.json failed,
//              exit 70, socket and pid file removed
//   finding 4/9 the control API over HTTPS with --ca-file and --token-file; --token warns
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify as toYaml } from 'yaml';
import { MAIN, rmr, until } from '../util/cli-cluster.js';
import { TestCerts } from '../util/tls-certs.js';
import { FrameType, encodeFrameHead } from '../../src/transport/frame.js';
import { encodeHello } from '../../src/transport/handshake.js';

let dir = '';
let certs: TestCerts;
const children = new Set<ChildProcess>();
/** A loopback address of this test run (other helpers' daemons use other ones). */
const IP = `127.31.${process.pid % 250}.${1 + (Math.floor(process.pid / 250) % 250)}`;
let nextPort = 20_000 + (process.pid % 20_000);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'rmr-sec-'));
  certs = new TestCerts();
});
after(() => {
  for (const c of children) c.kill('SIGKILL');
  certs.remove();
  rmSync(dir, { recursive: true, force: true });
});

interface Daemon {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly sock: string;
  readonly state: string;
  readonly log: string;
  readonly port: number;
  stderr: string;
}

/** Writes a config (merged over a plain one of `name`) and starts `rmr daemon`. */
function start(name: string, over: Record<string, unknown> = {}): Daemon {
  const state = (over.state_dir as string | undefined) ?? join(dir, name);
  mkdirSync(state, { recursive: true, mode: 0o700 });
  const port = nextPort++;
  const secret = join(dir, `${name}.secret`);
  if (!existsSync(secret)) writeFileSync(secret, randomBytes(32).toString('base64'), { mode: 0o600 });
  const cfg = { name, state_dir: state, secret_file: secret, log: { file: join(state, 'daemon.log'), format: 'json' }, data: { listen: `${IP}:${port}` }, ...over };
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, toYaml(cfg));
  const child = spawn(process.execPath, [MAIN, 'daemon', '--config', path], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  const d: Daemon = { child, exited: new Promise((r) => child.on('exit', (code) => { children.delete(child); r(code); })), sock: (over.control as { socket?: string } | undefined)?.socket ?? join(state, 'control.sock'), state, log: join(state, 'daemon.log'), port, stderr: '' };
  child.stderr?.on('data', (c: Buffer) => (d.stderr += c.toString()));
  return d;
}

async function running(d: Daemon): Promise<void> {
  await until('the daemon answers', async () => ((await rmr(['status', '--socket', d.sock])).code === 0 ? true : d.child.exitCode !== null ? Promise.reject(new Error(`exited ${d.child.exitCode}: ${d.stderr}`)) : null), 20_000);
}

async function stop(d: Daemon): Promise<number | null> {
  d.child.kill('SIGTERM');
  return d.exited;
}

test('a state directory writable by others or owned by another user is refused; planted symlinks are never written through', async () => {
  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  const d1 = start('open', { state_dir: open });
  assert.equal(await d1.exited, 1);
  assert.match(d1.stderr, /state_dir .*open is writable by others \(mode 0777\).*chmod 700/);
  const foreign = join(dir, 'foreign');
  mkdirSync(foreign, { mode: 0o700 });
  if (process.getuid?.() === 0) {
    chownSync(foreign, 65534, 65534);
    const d2 = start('foreign', { state_dir: foreign });
    assert.equal(await d2.exited, 1);
    assert.match(d2.stderr, /belongs to uid 65534, not to this daemon's user/);
  }
  // The review planted rmr.pid as a symlink to an unrelated file: the pid went into it.
  const planted = join(dir, 'planted');
  mkdirSync(planted, { mode: 0o700 });
  const victims = ['pid', 'state', 'statetmp', 'log'].map((v) => join(dir, `victim-${v}`));
  for (const v of victims) writeFileSync(v, `unrelated ${v}\n`);
  symlinkSync(victims[0] as string, join(planted, 'rmr.pid'));
  symlinkSync(victims[1] as string, join(planted, 'state.json'));
  symlinkSync(victims[2] as string, join(planted, 'state.json.tmp'));
  const d3 = start('planted', { state_dir: planted, log: { file: join(planted, 'daemon.log'), format: 'json' } });
  await running(d3);
  assert.equal(await stop(d3), 0);
  for (const v of victims) assert.equal(readFileSync(v, 'utf8'), `unrelated ${v}\n`, `${v} untouched`);
  assert.ok(lstatSync(join(planted, 'state.json')).isFile(), 'state.json replaced, not followed');
  assert.equal((JSON.parse(readFileSync(join(planted, 'state.json'), 'utf8')) as { state: string }).state, 'stopped');
  // A symlink as the log file is refused rather than appended through.
  const logdir = join(dir, 'logsym');
  mkdirSync(logdir, { mode: 0o700 });
  symlinkSync(victims[3] as string, join(logdir, 'daemon.log'));
  const d4 = start('logsym', { state_dir: logdir, log: { file: join(logdir, 'daemon.log') } });
  assert.equal(await d4.exited, 1);
  assert.match(d4.stderr, /cannot open log.file .*daemon.log/);
  assert.equal(readFileSync(victims[3] as string, 'utf8'), `unrelated ${victims[3] as string}\n`);
});

test('secret and token files readable by group or others, and short secrets or tokens, are refused; secret_file_modes: warn only logs', async () => {
  const loose = join(dir, 'loose.secret');
  writeFileSync(loose, randomBytes(32).toString('base64'), { mode: 0o644 });
  chmodSync(loose, 0o644);
  const d1 = start('loose', { secret_file: loose, roles: { storage: {} } });
  assert.equal(await d1.exited, 1);
  assert.match(d1.stderr, /secret_file .*loose.secret can be read or written by others \(mode 0644\): chmod 600 .*, or set secret_file_modes: warn/);
  const d2 = start('warned', { secret_file: loose, secret_file_modes: 'warn', roles: { storage: {} } });
  await running(d2);
  assert.equal(await stop(d2), 0);
  assert.match(readFileSync(d2.log, 'utf8'), /loose.secret can be read or written by others \(mode 0644\).*secret_file_modes: warn/);
  const short = join(dir, 'short.secret');
  writeFileSync(short, 'x'.repeat(31), { mode: 0o600 });
  const d3 = start('short', { secret_file: short, roles: { storage: {} } });
  assert.equal(await d3.exited, 1);
  assert.match(d3.stderr, /the secret has 31 bytes, it needs at least 32 random bytes/);
  const token = join(dir, 'loose.token');
  writeFileSync(token, randomBytes(32).toString('hex'), { mode: 0o640 });
  chmodSync(token, 0o640);
  const d4 = start('tok', { control: { tcp: `${IP}:${nextPort++}`, token_file: token } });
  assert.equal(await d4.exited, 1);
  assert.match(d4.stderr, /control.token_file .*loose.token can be read or written by its group \(mode 0640\)/);
  const shortTok = join(dir, 'short.token');
  writeFileSync(shortTok, 'abcdefghijklmnopqrstuvwxyz', { mode: 0o600 });
  const d5 = start('tok2', { control: { tcp: `${IP}:${nextPort++}`, token_file: shortTok } });
  assert.equal(await d5.exited, 1);
  assert.match(d5.stderr, /the token has 26 characters, it needs at least 32/);
});

test('stores: a text file, a symlink and a path outside store_dirs are refused; force=y overwrites', async () => {
  const stores = join(dir, 'stores');
  mkdirSync(stores, { mode: 0o700 });
  const d = start('stg', { roles: { storage: { store_dirs: [stores] } } });
  await running(d);
  const w = (path: string, value: string): Promise<{ code: number | null; stderr: string }> => rmr(['ctl', 'write', path, value, '--socket', d.sock]);
  assert.equal((await w('rmr-server/ctl/join_pool', 'poolname=p member_id=1')).code, 0);
  assert.equal((await w('rmr-server/ctl/join_pool', 'poolname=q member_id=1')).code, 0);
  // The review's 48-byte text file.
  const text = join(stores, 'notes.txt');
  const notes = 'operator notes: do not delete, 48 bytes of text\n';
  writeFileSync(text, notes);
  const r1 = await w('brmr-server/ctl/create_store', `device=${text} pool=p mapped_size=256`);
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /EEXIST: .*holds data that is not a BRMR store .*force=y/);
  assert.equal(readFileSync(text, 'utf8'), notes);
  // The same file reached through a symlink: refused for being a symlink.
  const outside = join(dir, 'outside.txt');
  writeFileSync(outside, notes);
  symlinkSync(outside, join(stores, 'link.img'));
  const r2 = await w('brmr-server/ctl/create_store', `device=${join(stores, 'link.img')} pool=p mapped_size=256`);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /EACCES: .*link.img is a symlink/);
  const r3 = await w('brmr-server/ctl/create_store', `device=${join(dir, 'elsewhere.img')} pool=p mapped_size=256`);
  assert.match(r3.stderr, /EACCES: .*elsewhere.img is outside the store directories: roles.storage.store_dirs allows/);
  const r4 = await w('brmr-server/ctl/add_store', `device=${join(stores, '..', 'elsewhere.img')} pool=p mode=replace pool_uuid=${'ab'.repeat(16)} mapped_size=256`);
  assert.match(r4.stderr, /EACCES: .*is outside the store directories/);
  assert.equal(readFileSync(outside, 'utf8'), notes);
  assert.equal(existsSync(join(dir, 'elsewhere.img')), false);
  // A new file in the store directory, and the text file with force=y.
  assert.equal((await w('brmr-server/ctl/create_store', `device=${join(stores, 'p.img')} pool=p mapped_size=256`)).code, 0);
  assert.equal((await w('brmr-server/ctl/create_store', `device=${text} pool=q mapped_size=256 force=y`)).code, 0);
  assert.equal(readFileSync(text).subarray(0, 8).toString('latin1'), 'BRMRSTOR');
  assert.equal(await stop(d), 0);
});

test('2,000 refused handshakes write a few lines and a count, not 378 KB; the log rotates at log.max_bytes', async () => {
  const d = start('flood', { data: { listen: `${IP}:${nextPort}` }, log: { file: join(dir, 'flood', 'daemon.log'), format: 'json', window_ms: 600_000 }, roles: { storage: { store_dirs: [dir] } } });
  await running(d);
  const before = statSync(d.log).size;
  const bad = (): Buffer => {
    const body = encodeHello({ version: 99, path_index: 0, queue_depth: 8, max_io_size: 1 << 20, incarnation: 1, client_nonce: randomBytes(32), session_name: 'flood@stg' });
    return Buffer.concat([encodeFrameHead(FrameType.HELLO, 0, null, body.length, 0, 0, 0, 0), body]);
  };
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const s = connect(d.port, IP);
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.on('data', () => undefined);
      s.on('connect', () => s.write(bad()));
      s.setTimeout(5000, () => s.destroy());
    });
  for (let i = 0; i < 2000; i += 8) await Promise.all(Array.from({ length: 8 }, one));
  const grew = statSync(d.log).size - before;
  assert.ok(grew < 20_000, `the log grew by ${grew} bytes`);
  // The count of the suppressed lines is written when their window ends (here: at exit).
  assert.equal(await stop(d), 0);
  const m = /"msg":"repeated log lines suppressed","field_msg":"handshake rejected","suppressed":(\d+)/.exec(readFileSync(d.log, 'utf8'));
  assert.equal(Number(m?.[1]), 2000 - 20, 'the count of the suppressed lines');
  // Rotation: a log pushed past max_bytes moves to daemon.log.1 and starts again.
  const r = start('rotate', { data: { listen: `${IP}:${nextPort}` }, log: { file: join(dir, 'rotate', 'daemon.log'), format: 'json', max_bytes: 2000, keep: 2, burst: 1000 }, roles: { storage: { store_dirs: [dir] } } });
  await running(r);
  for (let i = 0; i < 40; i += 8) await Promise.all(Array.from({ length: 8 }, () => new Promise<void>((resolve) => {
    const s = connect(r.port, IP);
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    // Read the answer: a paused socket never sees the server's end, so it never closes.
    s.on('data', () => undefined);
    s.on('connect', () => s.write(bad()));
    s.setTimeout(5000, () => s.destroy());
  })));
  assert.equal(await stop(r), 0);
  const files = readdirSync(join(dir, 'rotate')).filter((f) => f.startsWith('daemon.log')).sort();
  assert.deepEqual(files, ['daemon.log', 'daemon.log.1', 'daemon.log.2']);
  for (const f of files) assert.ok(statSync(join(dir, 'rotate', f)).size <= 2000 + 1000, `${f} is ${statSync(join(dir, 'rotate', f)).size} bytes`);
});

test('fail-stop: an exception thrown in an IO callback stops the daemon with state.json failed and exit 70', async () => {
  const stores = join(dir, 'fs-stores');
  mkdirSync(stores, { mode: 0o700 });
  const d = start('failstop', { roles: { storage: { fault_injection: true, store_dirs: [stores] } } });
  await running(d);
  const w = (path: string, value: string): Promise<{ code: number | null; stderr: string }> => rmr(['ctl', 'write', path, value, '--socket', d.sock]);
  assert.equal((await w('rmr-server/ctl/join_pool', 'poolname=p member_id=1')).code, 0);
  assert.equal((await w('brmr-server/ctl/create_store', `device=${join(stores, 'p.img')} pool=p mapped_size=256`)).code, 0);
  // The fault controller belongs to the device path, so it outlives the store's removal: the
  // header read of add_store is the IO whose completion path throws.
  assert.equal((await w('brmr-server/stores/p/fault_injection', 'panic=read')).code, 0);
  assert.equal((await w('brmr-server/stores/p/remove_store', '1')).code, 0);
  void w('brmr-server/ctl/add_store', `device=${join(stores, 'p.img')} pool=p`);
  assert.equal(await d.exited, 70);
  const st = JSON.parse(readFileSync(join(d.state, 'state.json'), 'utf8')) as { state: string; reason: string };
  assert.equal(st.state, 'failed');
  assert.match(st.reason, /^uncaught exception: fault injection: panic=read/);
  assert.equal(existsSync(d.sock), false, 'control socket removed');
  assert.equal(existsSync(join(d.state, 'rmr.pid')), false, 'pid file released');
  assert.match(readFileSync(d.log, 'utf8'), /"level":"error".*"msg":"internal error; stopping the daemon \(fail-stop/);
  // Restarted (as a service manager would), it comes back.
  const again = start('failstop', { roles: { storage: { fault_injection: true, store_dirs: [stores] } } });
  await running(again);
  assert.equal(await stop(again), 0);
});

test('control over HTTPS: the CLI checks the certificate with --ca-file and sends the token from --token-file; --token warns', async () => {
  const ca = certs.ca('ctl');
  const srv = certs.signed(ca, 'ctl-srv', 'ctl', { server: true, san: `IP:${IP}` });
  chmodSync(srv.key, 0o600);
  const token = join(dir, 'https.token');
  const tok = randomBytes(32).toString('hex');
  writeFileSync(token, tok, { mode: 0o600 });
  const port = nextPort++;
  const d = start('https', { control: { tcp: `${IP}:${port}`, token_file: token, tls_cert: srv.cert, tls_key: srv.key } });
  await running(d);
  const url = `https://${IP}:${port}`;
  const good = await rmr(['ctl', 'read', 'daemon/name', '--daemon', url, '--token-file', token, '--ca-file', ca.cert]);
  assert.deepEqual([good.code, good.stdout, good.stderr], [0, 'https\n', '']);
  const untrusted = await rmr(['ctl', 'read', 'daemon/name', '--daemon', url, '--token-file', token]);
  assert.equal(untrusted.code, 3);
  assert.match(untrusted.stderr, /certificate was not accepted.*--ca-file/);
  const plain = await rmr(['ctl', 'read', 'daemon/name', '--daemon', `http://${IP}:${port}`, '--token-file', token]);
  assert.notEqual(plain.code, 0);
  const argv = await rmr(['ctl', 'read', 'daemon/name', '--daemon', url, '--token', tok, '--ca-file', ca.cert]);
  assert.equal(argv.code, 0);
  assert.match(argv.stderr, /warning: --token puts the token where every local user can read it/);
  const wrong = await rmr(['ctl', 'read', 'daemon/name', '--daemon', url, '--token', `${tok}x`, '--ca-file', ca.cert]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /EKEYREJECTED/);
  assert.equal(await stop(d), 0);
});
