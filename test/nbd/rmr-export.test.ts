// The whole data path with real clients: an NBD export of a BRMR device over an RMR pool of
// two storage nodes with file stores, talking over the real transport on loopback. nbdinfo,
// qemu-io, qemu-img, nbdcopy, fio (crc32c verify) and an ext4 file system through nbdfuse
// drive it; after each, the two stores' data areas (from byte 4096 of each file) must be
// byte-identical. A leg cut and healed in between shows `rmr:dirty:<id>` in nbdinfo --map.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { MemoryLogger } from '../util/memory-logger.js';
import { makeBrmrCluster, type BrmrCluster } from '../util/brmr-cluster.js';
import { waitFor } from '../util/wait.js';
import { checkErrors, checkFilesystem, checkList, checkFio, checkInfo, checkNbdcopy, checkQemuImg, checkQemuIo, readMap, tempDir, serveExport, type ServedExport } from '../util/nbd-checks.js';

const SIZE = 64 << 20;
let cluster: BrmrCluster;
let served: ServedExport | undefined;
let dir = '';
const tcpUri = (): string => (served as ServedExport).tcpUri();
const unixUri = (): string => (served as ServedExport).unixUri();

/** The two members hold the same bytes (read from the store files themselves). */
async function identical(what: string): Promise<void> {
  await cluster.waitSynced();
  const a = cluster.dataArea(0);
  const b = cluster.dataArea(1);
  assert.equal(a.length, SIZE);
  if (!a.equals(b)) {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    assert.fail(`${what}: the stores differ first at device byte ${i}`);
  }
}

before(async () => {
  dir = await tempDir('rmr-export-');
  cluster = await makeBrmrCluster({ nodes: 2, backend: 'file', transport: 'direct', size_bytes: SIZE, chunk_size: 256 * 1024, queue_depth: 128 });
  await cluster.waitSynced();
  assert.ok(cluster.device !== null, 'the device is mapped');
  served = await serveExport('rmr', cluster.device, 'replicated over 2 storage nodes', dir, new MemoryLogger());
});

after(async () => {
  await served?.close();
  await cluster?.close();
  await rm(dir, { recursive: true, force: true });
});

test('nbdinfo: size, flags (multi-conn, trim, zero, FUA), both dirty contexts', async () => {
  await checkInfo(tcpUri(), { size_bytes: SIZE, writable: true, multi_conn: true, can_trim: true, can_zero: true, contexts: ['base:allocation', 'rmr:dirty:1', 'rmr:dirty:2'] });
  await checkErrors(tcpUri(), { writable: true });
  await checkList(tcpUri(), ['rmr']);
  const alloc = await readMap(unixUri(), SIZE);
  assert.ok(alloc.length >= 1, 'base:allocation answers for the whole export');
  const dirty = await readMap(unixUri(), SIZE, 'rmr:dirty:1');
  assert.ok(dirty.every((e) => e.type === 0), 'nothing dirty on a healthy pool');
});

test('qemu-io pattern write/read/discard/write-zeroes; members identical', async () => {
  await checkQemuIo(tcpUri(), SIZE);
  await identical('qemu-io');
});

test('qemu-img convert in and out of a random 64 MiB image; members identical', async () => {
  const d = await tempDir();
  try {
    await checkQemuImg(unixUri(), SIZE, d);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
  await identical('qemu-img');
});

test('nbdcopy in and out (multi-conn); members identical', async () => {
  const d = await tempDir();
  try {
    await checkNbdcopy(tcpUri(), 32 << 20, d);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
  await identical('nbdcopy');
});

test('fio randrw with crc32c verify reports no errors; members identical', async () => {
  const d = await tempDir();
  try {
    const r = await checkFio(tcpUri(), 16 << 20, d);
    assert.ok(r !== undefined);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
  await identical('fio');
});

test('ext4 through nbdfuse and a loop device: mkfs, files, e2fsck clean; members identical', async () => {
  const d = await tempDir();
  try {
    await checkFilesystem(unixUri(), d);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
  await identical('ext4');
});

test('a cut leg: writes go on, nbdinfo --map shows the chunks dirty for the missing member; after the heal they resync', async () => {
  const before_cut = await readMap(tcpUri(), SIZE, 'rmr:dirty:2');
  assert.ok(before_cut.every((e) => e.type === 0), 'nothing dirty while both members are in');
  cluster.cut(1);
  await checkQemuIo(tcpUri(), SIZE);
  const dirty = await readMap(tcpUri(), SIZE, 'rmr:dirty:2');
  assert.ok(dirty.some((e) => e.type === 1), 'the missed writes show as dirty for member 2');
  assert.ok((await readMap(tcpUri(), SIZE, 'rmr:dirty:1')).every((e) => e.type === 0), 'member 1 missed nothing');
  cluster.heal(1);
  // The recovery tick brings the leg back through a map spread; then the member resyncs.
  const dev = cluster.device;
  assert.ok(dev !== null);
  await waitFor('the device is no longer degraded', () => !dev.degraded, 20_000);
  await identical('after the heal and resync');
  // The client forgets its copy of the member's misses once the member reports itself clean
  // (MAP_CHECK on the recovery tick, after the clean delay): poll nbdinfo until then.
  await waitFor('rmr:dirty:2 to show no dirty chunk after the resync', async () => (await readMap(tcpUri(), SIZE, 'rmr:dirty:2')).every((e) => e.type === 0), 30_000, 200);
});
