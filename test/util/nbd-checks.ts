// Checks of an NBD export with real clients (nbdinfo, qemu-io, qemu-img, nbdcopy, fio,
// nbdfuse + ext4). Each takes an NBD URI and throws with the tool's output when the export
// misbehaves, so the same checks run against the in-process server, nbdkit (the control) and
// later a replicated RMR pool export. Tools run asynchronously: the server under test may
// live in this very process.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/server.js';
import { NodeNet } from '../../src/node/net.js';
import { NodeClock } from '../../src/node/ports.js';
import type { BlockDevice } from '../../src/util/block-device.js';
import type { Logger } from '../../src/util/ports.js';
import { waitFor } from './wait.js';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a tool; kills it at the deadline. Output is capped so a runaway tool cannot eat memory. */
export function run(cmd: string, args: string[], timeout_ms = 60_000, env: NodeJS.ProcessEnv = {}, ids: { uid: number; gid: number } | null = null): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ''}`, ...env }, ...(ids ?? {}) });
    let stdout = '';
    let stderr = '';
    const cap = 1 << 20;
    child.stdout.on('data', (d: Buffer) => void (stdout.length < cap && (stdout += d.toString())));
    child.stderr.on('data', (d: Buffer) => void (stderr.length < cap && (stderr += d.toString())));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout_ms);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs a tool and throws unless it exits 0. */
export async function runOk(cmd: string, args: string[], timeout_ms = 60_000): Promise<RunResult> {
  const r = await run(cmd, args, timeout_ms);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (code ${r.code}, signal ${r.signal}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  return r;
}

function fail(what: string, detail: unknown): never {
  throw new Error(`${what}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
}

export async function tempDir(prefix = 'nbd-check-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export interface InfoExpect {
  size_bytes: number;
  writable?: boolean;
  multi_conn?: boolean;
  can_trim?: boolean;
  can_zero?: boolean;
  can_fast_zero?: boolean;
  /** Contexts that must be listed. */
  contexts?: string[];
  description?: string;
}

type Json = Record<string, unknown>;

/** nbdinfo --json: size, flags, contexts. Returns the export's JSON. */
export async function checkInfo(uri: string, expect: InfoExpect): Promise<Json> {
  const r = await runOk('nbdinfo', ['--json', uri], 20_000);
  const doc = JSON.parse(r.stdout) as { exports?: Json[]; structured?: boolean };
  const e = doc.exports?.[0];
  if (e === undefined) fail('nbdinfo: no export', r.stdout);
  if (e['export-size'] !== expect.size_bytes) fail('nbdinfo: size', { got: e['export-size'], want: expect.size_bytes });
  const flag = (name: string, want: boolean | undefined): void => {
    if (want !== undefined && e[name] !== want) fail(`nbdinfo: ${name}`, { got: e[name], want });
  };
  flag('is_read_only', expect.writable === undefined ? undefined : !expect.writable);
  flag('can_multi_conn', expect.multi_conn);
  flag('can_trim', expect.can_trim);
  flag('can_zero', expect.can_zero);
  flag('can_fast_zero', expect.can_fast_zero);
  flag('can_flush', true);
  flag('can_fua', true);
  if (expect.description !== undefined && e.description !== expect.description) fail('nbdinfo: description', e.description);
  const ctx = (e.contexts as string[] | undefined) ?? [];
  for (const c of expect.contexts ?? []) if (!ctx.includes(c)) fail(`nbdinfo: context ${c} not listed`, ctx);
  return e;
}

/** nbdinfo --list: every named export is there. `uri` names any export of the server. */
export async function checkList(uri: string, names: string[]): Promise<void> {
  const r = await runOk('nbdinfo', ['--list', '--json', uri], 20_000);
  const doc = JSON.parse(r.stdout) as { exports?: Json[] };
  const got = (doc.exports ?? []).map((e) => e['export-name']);
  for (const n of names) if (!got.includes(n)) fail(`nbdinfo --list: ${n} missing`, got);
}

export interface MapExtent {
  offset: number;
  length: number;
  type: number;
}

/** nbdinfo --map (base:allocation or `context`): the extents, checked to tile the export. */
export async function readMap(uri: string, size_bytes: number, context?: string): Promise<MapExtent[]> {
  const args = [context !== undefined ? `--map=${context}` : '--map', '--json', uri];
  const r = await runOk('nbdinfo', args, 30_000);
  const ext = JSON.parse(r.stdout) as MapExtent[];
  let at = 0;
  for (const e of ext) {
    if (e.offset !== at || e.length <= 0) fail('nbdinfo --map: extents do not tile the export', ext.slice(0, 10));
    at += e.length;
  }
  if (at !== size_bytes) fail('nbdinfo --map: extents do not cover the export', { covered: at, size_bytes });
  return ext;
}

/**
 * How qemu reaches an export it cannot name by URI (TLS): a `--object` (tls-creds-x509 or
 * tls-creds-psk) and block options naming it, e.g.
 * driver=raw,file.driver=nbd,file.server.type=inet,...,file.tls-creds=tls0.
 */
export interface QemuTarget {
  readonly object: string;
  readonly image_opts: string;
}

/** qemu-io / qemu-img arguments for a URI or a QemuTarget (`-f raw URI` or `--object O --image-opts OPTS`). */
function qemuOpen(t: string | QemuTarget): { pre: string[]; image: string } {
  return typeof t === 'string' ? { pre: ['-f', 'raw'], image: t } : { pre: ['--object', t.object, '--image-opts'], image: t.image_opts };
}

/** qemu-io: pattern write/read, discard, write-zeroes, all verified by reading back. */
export async function checkQemuIo(uri: string | QemuTarget, size_bytes: number): Promise<void> {
  const q = qemuOpen(uri);
  const base = Math.max(0, Math.min(size_bytes - 4 * 1048576, 8 * 1048576));
  const M = 1048576;
  const cmds = [
    `write -P 0xab ${base} 1M`,
    `read -P 0xab ${base} 1M`,
    `write -P 0x5c ${base + M} 64k`,
    `read -P 0x5c ${base + M} 64k`,
    `write -f -P 0x11 ${base + 2 * M} 4k`,
    `read -P 0x11 ${base + 2 * M} 4k`,
    `discard ${base} 64k`,
    `write -z ${base + 64 * 1024} 64k`,
    `read -P 0 ${base + 64 * 1024} 64k`,
    `write -z -u ${base + 128 * 1024} 128k`,
    `read -P 0 ${base + 128 * 1024} 128k`,
    `read -P 0xab ${base + 256 * 1024} 768k`,
    'flush',
  ];
  const args = [...q.pre];
  for (const c of cmds) args.push('-c', c);
  args.push(q.image);
  const r = await runOk('qemu-io', args, 30_000);
  // qemu-io exits 0 even when a pattern check fails; it says so on stdout.
  if (/Pattern verification failed|error|failed/i.test(r.stdout + r.stderr)) fail('qemu-io', r.stdout + r.stderr);
  // A fast zero may be refused (ENOTSUP: "not fast here"); if it is done, it must read as zeroes.
  const z = await run('qemu-io', [...q.pre, '-c', `write -P 0x77 ${base + 3 * M} 64k`, '-c', `write -z -u -n ${base + 3 * M} 64k`, q.image], 30_000);
  if (/not supported/i.test(z.stdout + z.stderr)) return;
  if (z.code !== 0 || /fail|error/i.test(z.stdout + z.stderr)) fail('qemu-io fast zero', z.stdout + z.stderr);
  const zr = await runOk('qemu-io', [...q.pre, '-c', `read -P 0 ${base + 3 * M} 64k`, q.image], 30_000);
  if (/Pattern verification failed|error|failed/i.test(zr.stdout + zr.stderr)) fail('qemu-io fast zero read back', zr.stdout + zr.stderr);
}

async function randomFile(path: string, bytes: number): Promise<Buffer> {
  const data = randomBytes(bytes);
  // Some zero runs, so converters that skip zeroes are exercised too.
  data.fill(0, bytes >> 2, (bytes >> 2) + 1048576);
  await writeFile(path, data);
  return data;
}

async function sameBytes(what: string, want: Buffer, path: string): Promise<void> {
  const got = await readFile(path);
  if (got.length < want.length) fail(`${what}: output shorter than input`, { got: got.length, want: want.length });
  if (!got.subarray(0, want.length).equals(want)) {
    let i = 0;
    while (got[i] === want[i]) i++;
    fail(`${what}: data differs`, { first_bad_byte: i });
  }
}

/** qemu-img convert of a random image into the export and back out; byte comparison. */
export async function checkQemuImg(uri: string | QemuTarget, image_bytes: number, dir: string): Promise<void> {
  const src = join(dir, 'qemu-in.img');
  const out = join(dir, 'qemu-out.img');
  const data = await randomFile(src, image_bytes);
  if (typeof uri === 'string') {
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri], 60_000);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out], 60_000);
  } else {
    await runOk('qemu-img', ['convert', '--object', uri.object, '-n', '-f', 'raw', '--target-image-opts', src, uri.image_opts], 60_000);
    await runOk('qemu-img', ['convert', '--object', uri.object, '--image-opts', '-O', 'raw', uri.image_opts, out], 60_000);
  }
  await sameBytes('qemu-img round trip', data, out);
  await rm(out, { force: true });
  await rm(src, { force: true });
}

/** nbdcopy of a random image into the export and back out (multi-conn when offered). */
export async function checkNbdcopy(uri: string, image_bytes: number, dir: string): Promise<void> {
  const src = join(dir, 'copy-in.img');
  const out = join(dir, 'copy-out.img');
  const data = await randomFile(src, image_bytes);
  await runOk('nbdcopy', [src, uri], 60_000);
  await runOk('nbdcopy', [uri, out], 60_000);
  await sameBytes('nbdcopy round trip', data, out);
  await rm(out, { force: true });
  await rm(src, { force: true });
}

export interface FioResult {
  read_bytes: number;
  write_bytes: number;
}

/**
 * fio's nbd engine, random read/write with crc32c verification of everything written. `env`
 * and `ids` for fio: libnbd in fio takes no file from the URI, so TLS certificates come from
 * $HOME/.pki/libnbd, which libnbd reads for users other than root (root: /etc/pki/libnbd).
 */
export async function checkFio(uri: string, io_bytes: number, dir: string, env: NodeJS.ProcessEnv = {}, ids: { uid: number; gid: number } | null = null): Promise<FioResult> {
  const out = join(dir, 'fio.json');
  const r = await run(
    'fio',
    [
      '--name=nbd-verify',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randrw',
      '--bs=4k',
      `--size=${io_bytes}`,
      '--iodepth=16',
      '--verify=crc32c',
      '--verify_fatal=1',
      // fio would otherwise leave its verify state file in the working directory.
      '--verify_state_save=0',
      '--output-format=json',
      `--output=${out}`,
    ],
    60_000,
    env,
    ids,
  );
  let doc: { jobs?: { error: number; read: { io_bytes: number }; write: { io_bytes: number } }[] };
  try {
    doc = JSON.parse(await readFile(out, 'utf8')) as typeof doc;
  } catch {
    fail('fio: no JSON output', r.stdout + r.stderr);
  }
  const job = doc.jobs?.[0];
  if (r.code !== 0 || job === undefined || job.error !== 0) fail('fio: verify or IO error', { code: r.code, error: job?.error, stderr: r.stderr.slice(-1500) });
  if (job.read.io_bytes <= 0 || job.write.io_bytes <= 0) fail('fio: no IO done', job);
  return { read_bytes: job.read.io_bytes, write_bytes: job.write.io_bytes };
}

function waitForFile(path: string, timeout_ms: number): Promise<void> {
  return waitFor(
    'nbdfuse to create its file',
    async () => {
      const s = await stat(path).catch(() => null);
      return s !== null && s.size > 0;
    },
    timeout_ms,
    20,
    () => path,
  );
}

/**
 * A real file system on the export: nbdfuse turns it into a file, a loop device into a block
 * device; mkfs.ext4, mount, write files, umount, then e2fsck -fn must find it clean and the
 * files must read back. Everything is undone in finally.
 */
export async function checkFilesystem(uri: string, dir: string): Promise<void> {
  const fuse = join(dir, 'fuse');
  const mnt = join(dir, 'mnt');
  const file = join(fuse, 'nbd');
  await mkdir(fuse, { recursive: true });
  await mkdir(mnt, { recursive: true });
  const nbdfuse = spawn('nbdfuse', [fuse, uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let fuseErr = '';
  nbdfuse.stderr.on('data', (d: Buffer) => void (fuseErr += d.toString()));
  const fuseExit = new Promise<void>((resolve) => nbdfuse.on('close', () => resolve()));
  let loop = '';
  let mounted = false;
  try {
    await waitForFile(file, 10_000);
    await runOk('mkfs.ext4', ['-q', '-F', file], 60_000);
    loop = (await runOk('losetup', ['-f', '--show', file])).stdout.trim();
    await runOk('mount', [loop, mnt]);
    mounted = true;
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 8; i++) {
      const b = randomBytes(64 * 1024 + i * 4096);
      files.set(`f${i}`, b);
      await writeFile(join(mnt, `f${i}`), b);
    }
    await runOk('sync', []);
    await runOk('umount', [mnt]);
    mounted = false;
    await runOk('losetup', ['-d', loop]);
    loop = '';
    const fsck = await run('e2fsck', ['-fn', file], 60_000);
    if (fsck.code !== 0) fail('e2fsck found problems', fsck.stdout + fsck.stderr);
    // Mount again (read-only) and compare the files: the data went through the server.
    loop = (await runOk('losetup', ['-f', '--show', '-r', file])).stdout.trim();
    await runOk('mount', ['-o', 'ro', loop, mnt]);
    mounted = true;
    for (const [name, want] of files) {
      const got = await readFile(join(mnt, name));
      if (!got.equals(want)) fail('file system: file content differs', name);
    }
  } finally {
    if (mounted) await run('umount', [mnt]);
    if (loop !== '') await run('losetup', ['-d', loop]);
    await run('umount', [fuse]);
    const t = setTimeout(() => nbdfuse.kill('SIGKILL'), 5_000);
    await fuseExit;
    clearTimeout(t);
    if (fuseErr !== '' && /error/i.test(fuseErr)) process.stderr.write(`nbdfuse: ${fuseErr}\n`);
  }
}

/**
 * Errors as a real client (libnbd, strict checks off so the requests reach the server) sees
 * them: read past the end is EINVAL, write past the end ENOSPC, a write to a read-only
 * export EPERM; afterwards the connection still works. Python inside nbdsh.
 */
export async function checkErrors(uri: string, o: { writable: boolean }): Promise<void> {
  const script = `
import errno, json, sys
h.set_strict_mode(0)
h.connect_uri(${JSON.stringify(uri)})
size = h.get_size()
out = {}
def code(f):
    try:
        f()
        return "ok"
    except nbd.Error as e:
        return e.errno  # the errno name, e.g. "EINVAL"
out["read_past_end"] = code(lambda: h.pread(512, size))
if ${o.writable ? 'True' : 'False'}:
    out["write_past_end"] = code(lambda: h.pwrite(b"x" * 512, size))
else:
    out["write_read_only"] = code(lambda: h.pwrite(b"x" * 512, 0))
out["read_after"] = code(lambda: h.pread(512, 0))
h.shutdown()
print(json.dumps(out))
`;
  const r = await runOk('nbdsh', ['-c', script], 20_000);
  const got = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, string>;
  const want: Record<string, string> = o.writable
    ? { read_past_end: 'EINVAL', write_past_end: 'ENOSPC', read_after: 'ok' }
    : { read_past_end: 'EINVAL', write_read_only: 'EPERM', read_after: 'ok' };
  for (const [k, v] of Object.entries(want)) if (got[k] !== v) fail(`nbdsh: ${k}`, { got, want });
}

/** Every data check in a row, for one export. */
export async function checkAll(uri: string, o: { size_bytes: number; image_bytes: number; fio_bytes: number; filesystem: boolean }): Promise<void> {
  const dir = await tempDir();
  try {
    await checkQemuIo(uri, o.size_bytes);
    await checkQemuImg(uri, o.image_bytes, dir);
    await checkNbdcopy(uri, o.image_bytes, dir);
    await checkFio(uri, o.fio_bytes, dir);
    if (o.filesystem) await checkFilesystem(uri, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** An in-process NBD server exporting one device over TCP on loopback and a Unix socket. */
export interface ServedExport {
  readonly server: NbdServer;
  tcpUri(): string;
  unixUri(): string;
  close(): Promise<void>;
}

/** Serves `device` as export `name`; the Unix socket is `dir`/nbd.sock. */
export async function serveExport(name: string, device: BlockDevice, description: string, dir: string, logger: Logger): Promise<ServedExport> {
  const server = new NbdServer({ clock: new NodeClock({ unref: true }), logger });
  server.addExport(name, device, description);
  const net = new NodeNet();
  const tcp = await net.listen({ host: '127.0.0.1', port: 0 }, (s) => server.accept(s));
  const unix = await net.listenUnix(join(dir, 'nbd.sock'), (s) => server.accept(s));
  return {
    server,
    tcpUri: () => `nbd://127.0.0.1:${tcp.address.port}/${name}`,
    unixUri: () => `nbd+unix:///${name}?socket=${unix.address.host}`,
    close: async () => {
      await tcp.close();
      await unix.close();
      await server.close();
    },
  };
}
