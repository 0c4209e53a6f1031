// Issue 19 item 7: a 15 TiB device end to end, through separate daemons and a real NBD client.
// Two storage daemons on sparse 15 TiB store files (ext4 allows 16 TiB minus 4 KiB per file),
// a client daemon exporting the pool; qemu-io writes 8 KiB across the 4 GiB, 2 TiB and 4 TiB
// boundaries and at the very end; one storage daemon is killed with SIGKILL, writes go on,
// `rmr up` brings it back, and its resync copies what it missed. Both store files then hold
// the same bytes at every range, read straight from the files.
//
// Also shows that a pool created on blank stores needs no initial sync: created the way the
// reference does it, member 2 starts fully dirty and copies 15 TiB of zeroes (about 9 days at
// the 20 MiB/s measured here).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, closeSync, readSync, rmSync, writeFileSync, ftruncateSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rmr, rmrOk, until } from '../util/cli-cluster.js';
import { runOk } from '../util/nbd-checks.js';

const TIB = 2 ** 40;
const SIZE = 15 * TIB;
const BASE = 24000 + (process.pid % 1000) * 8;
let dir = '';
let cluster = '';

interface Status {
  daemons: { name: string; pid: number | null }[];
  legs: { node: string; side: string; member_id: number; state: string; dirty_chunks: number | null }[];
}

const status = async (): Promise<Status> => JSON.parse(await rmrOk(['status', '--cluster', cluster, '--json'])) as Status;
const uri = (): string => `nbd+unix:///big?socket=${join(dir, 'nbd', 'big.sock')}`;

/** 8 KiB at each place that matters: the start, across 4 GiB, 2 TiB and 4 TiB, and the last 8 KiB. */
const RANGES = [0, 4 * 2 ** 30 - 4096, 2 * TIB - 4096, 4 * TIB - 4096, SIZE - 8192];

async function write(offset: number, byte: number): Promise<void> {
  await runOk('qemu-io', ['-f', 'raw', '-c', `write -P ${byte} ${offset} 8192`, uri()], 60_000);
}

/** The 8 KiB at `offset` of a store's data area (after its 4 KiB header), read from the file. */
function storeBytes(path: string, offset: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(8192);
    assert.equal(readSync(fd, b, 0, b.length, 4096 + offset), b.length);
    return b;
  } finally {
    closeSync(fd);
  }
}

before(async () => {
  // The first place whose file system holds a 15 TiB sparse file (tmpfs sizes and ext4 with
  // 1 KiB blocks do not): the temporary directory, else beside the checkout. None is an
  // error, not a skip: the test must run wherever the suite runs.
  const tried: string[] = [];
  for (const base of [tmpdir(), process.cwd()]) {
    const d = mkdtempSync(join(base, '.rmr-large-'));
    const probe = join(d, 'probe');
    try {
      const fd = openSync(probe, 'w');
      try {
        ftruncateSync(fd, SIZE + 256 * 2 ** 20);
      } finally {
        closeSync(fd);
        unlinkSync(probe);
      }
      dir = d;
      break;
    } catch (e) {
      tried.push(`${base}: ${(e as Error).message}`);
      rmSync(d, { recursive: true, force: true });
    }
  }
  if (dir === '') throw new Error(`no file system here holds a 15 TiB sparse file (${tried.join('; ')})`);
  cluster = join(dir, 'cluster.yaml');
  writeFileSync(
    cluster,
    [
      'cluster: big',
      'state_dir: state',
      'nodes:',
      `  - {name: stg1, addresses: [127.0.0.22], port: ${BASE + 1}}`,
      `  - {name: stg2, addresses: [127.0.0.23], port: ${BASE + 2}}`,
      `  - {name: cli, addresses: [127.0.0.25], port: ${BASE}}`,
      'pools:',
      '  - name: pb',
      '    chunk_size: 128K',
      '    members: [{node: stg1, member_id: 1}, {node: stg2, member_id: 2}]',
      'stores:',
      '  - {node: stg1, pool: pb, path: stg1.img, size: 15T}',
      '  - {node: stg2, pool: pb, path: stg2.img, size: 15T}',
      'client:',
      '  node: cli',
      '  devices: [{name: big, pool: pb}]',
      '  nbd: {socket_dir: nbd}',
      '',
    ].join('\n'),
  );
  await rmrOk(['up', cluster, '--timeout', '90', '--quiet'], 120_000);
});

after(async () => {
  if (cluster !== '') {
    await rmr(['down', cluster], 60_000);
    const s = await rmr(['status', '--cluster', cluster, '--json']);
    if (s.code === 0) for (const d of (JSON.parse(s.stdout) as Status).daemons) if (d.pid !== null) try { process.kill(d.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

test('a 15 TiB pool on blank stores: no initial sync; writes across 4 GiB, 2 TiB, 4 TiB and at the end survive a SIGKILL of a member and its resync', async () => {
  // Created on blank stores: every member clean at once (no 15 TiB copy of zeroes).
  const s0 = await status();
  const server = s0.legs.filter((l) => l.side === 'server');
  assert.deepEqual(server.map((l) => [l.member_id, l.state, l.dirty_chunks]), [[1, 'normal', 0], [2, 'normal', 0]]);

  for (const o of RANGES) await write(o, 0x11);
  const stg2 = s0.daemons.find((d) => d.name === 'stg2')?.pid;
  assert.ok(typeof stg2 === 'number');
  process.kill(stg2, 'SIGKILL');
  // Writes after the kill reach member 1 only; the client records what member 2 missed.
  const missed = [RANGES[1], RANGES[3], RANGES[4]] as number[];
  for (const o of missed) await write(o, 0x22);
  const during = await status();
  const leg2 = during.legs.find((l) => l.node === 'cli' && l.member_id === 2);
  assert.notEqual(leg2?.state, 'normal');
  // Across 4 GiB and 4 TiB two chunks each, the last 8 KiB one: five chunks, not the device.
  assert.equal(leg2?.dirty_chunks, 5);

  await rmrOk(['up', cluster, '--timeout', '90', '--quiet'], 120_000);
  await until(
    'member 2 back and resynced',
    async () => {
      const s = await status();
      const srv = s.legs.filter((l) => l.side === 'server');
      return srv.length === 2 && srv.every((l) => l.state === 'normal' && l.dirty_chunks === 0) ? s : null;
    },
    120_000,
    250,
  );
  for (const o of RANGES) {
    const want = Buffer.alloc(8192, missed.includes(o) ? 0x22 : 0x11);
    for (const f of ['stg1.img', 'stg2.img']) assert.ok(storeBytes(join(dir, f), o).equals(want), `${f} at ${o}`);
  }
  // And through the device: what a reader sees at the very end.
  const r = await runOk('qemu-io', ['-f', 'raw', '-c', `read -P 0x22 ${SIZE - 8192} 8192`, uri()], 60_000);
  assert.doesNotMatch(r.stdout, /Pattern verification failed/);
});
