// The NBD server (in this process, over memory devices) driven by real clients: nbdinfo,
// qemu-io, qemu-img, nbdcopy, fio and an ext4 file system through nbdfuse + loop, over TCP
// and a Unix socket. The same checks run against `nbdkit file` as a control, and against an
// export that corrupts reads to show they can fail.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/server.js';
import { MemBlockDevice } from '../../src/nbd/mem-device.js';
import { NodeNet } from '../../src/node/net.js';
import type { Listener } from '../../src/transport/net.js';
import { NodeClock } from '../../src/node/ports.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { waitFor } from '../util/wait.js';
import { FilterDevice } from '../util/filter-device.js';
import { checkAll, checkErrors, checkFio, checkInfo, checkList, checkQemuImg, readMap, runOk, tempDir } from '../util/nbd-checks.js';

const SIZE = 64 << 20;
const IMAGE = 32 << 20;
const FIO = 16 << 20;

const logger = new MemoryLogger();
const server = new NbdServer({ clock: new NodeClock({ unref: true }), logger });
const mem = new MemBlockDevice({ size_bytes: SIZE, allocation: true, dirty_context: 'rmr:dirty:1' });
const plain = new MemBlockDevice({ size_bytes: 8 << 20 });
let dir = '';
let tcp: Listener;
let unix: Listener;
let nbdkit: ChildProcess | null = null;
let nbdkitSock = '';

const tcpUri = (name: string): string => `nbd://127.0.0.1:${tcp.address.port}/${name}`;
const unixUri = (name: string): string => `nbd+unix:///${name}?socket=${unix.address.host}`;

before(async () => {
  dir = await tempDir('nbd-real-');
  server.addExport('mem', mem, 'memory export');
  server.addExport('plain', plain, 'no meta contexts of its own');
  server.addExport('ro', new MemBlockDevice({ size_bytes: 1 << 20, writable: false }), 'read-only');
  server.addExport('scratch', new MemBlockDevice({ size_bytes: SIZE }));
  server.addExport('corrupt', new FilterDevice(new MemBlockDevice({ size_bytes: SIZE }), { corrupt_reads: true }));
  const net = new NodeNet();
  tcp = await net.listen({ host: '127.0.0.1', port: 0 }, (s) => server.accept(s));
  unix = await net.listenUnix(join(dir, 'nbd.sock'), (s) => server.accept(s));

  const backing = join(dir, 'nbdkit.img');
  await writeFile(backing, Buffer.alloc(0));
  await runOk('truncate', ['-s', String(SIZE), backing]);
  nbdkitSock = join(dir, 'nbdkit.sock');
  nbdkit = spawn('nbdkit', ['-f', '-U', nbdkitSock, 'file', backing], { stdio: 'ignore' });
  await waitFor('nbdkit to start (its socket)', async () => (await stat(nbdkitSock).catch(() => null)) !== null, 10_000, 20);
});

after(async () => {
  nbdkit?.kill('SIGTERM');
  await tcp.close();
  await unix.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

test('nbdinfo sees size, flags, description and contexts; --list names every export', async () => {
  await checkInfo(tcpUri('mem'), {
    size_bytes: SIZE,
    writable: true,
    multi_conn: true,
    can_trim: true,
    can_zero: true,
    can_fast_zero: true,
    contexts: ['base:allocation', 'rmr:dirty:1'],
    description: 'memory export',
  });
  await checkInfo(tcpUri('ro'), { size_bytes: 1 << 20, writable: false, can_trim: false, can_zero: false });
  await checkInfo(unixUri('plain'), { size_bytes: 8 << 20, contexts: ['base:allocation'] });
  await checkList(tcpUri(''), ['mem', 'plain', 'ro', 'scratch', 'corrupt']);
});

test('a real client (libnbd via nbdsh) sees EINVAL, ENOSPC and EPERM where the spec says', async () => {
  await checkErrors(tcpUri('scratch'), { writable: true });
  await checkErrors(unixUri('ro'), { writable: false });
});

test('nbdinfo --map: device allocation, server-made allocation and a custom context', async () => {
  await new Promise<void>((resolve, reject) => mem.write(4 << 20, Buffer.alloc(128 * 1024, 7), { fua: false }, (s) => (s === 0 ? resolve() : reject(new Error(`write ${s}`)))));
  const alloc = await readMap(tcpUri('mem'), SIZE);
  const at = (ext: { offset: number; length: number; type: number }[], off: number): number => {
    const e = ext.find((x) => x.offset <= off && off < x.offset + x.length);
    assert.ok(e !== undefined, `no extent at ${off}`);
    return e.type;
  };
  assert.equal(at(alloc, 4 << 20), 0, 'written range is data');
  assert.equal(at(alloc, 40 << 20), 3, 'never-written range is hole,zero');
  const dirty = await readMap(unixUri('mem'), SIZE, 'rmr:dirty:1');
  assert.equal(at(dirty, (4 << 20) + 65536), 1, 'written pages are dirty');
  assert.equal(at(dirty, 50 << 20), 0);
  const server_made = await readMap(tcpUri('plain'), 8 << 20);
  assert.deepEqual(server_made, [{ offset: 0, length: 8 << 20, type: 0, description: 'data' }]);
});

test('data checks pass over TCP: qemu-io, qemu-img, nbdcopy, fio verify, ext4 via nbdfuse', async () => {
  await checkAll(tcpUri('mem'), { size_bytes: SIZE, image_bytes: IMAGE, fio_bytes: FIO, filesystem: true });
  assert.equal(logger.count((l) => l.level === 'error'), 0, 'no device contract errors');
});

test('data checks pass over a Unix socket', async () => {
  await checkAll(unixUri('scratch'), { size_bytes: SIZE, image_bytes: IMAGE, fio_bytes: FIO, filesystem: false });
});

test('control: the same checks pass against nbdkit file', async () => {
  const uri = `nbd+unix:///?socket=${nbdkitSock}`;
  await checkInfo(uri, { size_bytes: SIZE, writable: true });
  await checkErrors(uri, { writable: true });
  await checkAll(uri, { size_bytes: SIZE, image_bytes: IMAGE, fio_bytes: FIO, filesystem: true });
});

test('the data checks catch an export that corrupts reads', async () => {
  const d = await tempDir('nbd-corrupt-');
  try {
    await assert.rejects(checkQemuImg(tcpUri('corrupt'), 8 << 20, d), /data differs/);
    await assert.rejects(checkFio(tcpUri('corrupt'), 4 << 20, d), /fio: verify or IO error/);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});
