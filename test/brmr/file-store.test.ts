// The file store: positional data and metadata IO at their offsets, zeroes for discards,
// bounds refused, and the metadata slots of RMR working on it across a reopen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../src/brmr/server/node-file-store.js';
import { PoolMdStore, emptySrvMd, type PoolMd } from '../../src/rmr/pool-md.js';
import { Errno } from '../../src/util/errno.js';

const cbp = <T>(f: (cb: (...a: T[]) => void) => void): Promise<T[]> => new Promise((resolve) => f((...a) => resolve(a)));

test('file store: data at 4096, metadata after it, zeroes for discards, bounds refused, survives reopen', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rmr-fs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'store.img');
  const layout = { data_offset: 4096, size_bytes: 1 << 20, meta_offset: 4096 + (1 << 20), meta_size_bytes: 64 * 1024 };
  const s = await FileStore.open(path, layout, true);
  assert.equal(statSync(path).size, layout.meta_offset + layout.meta_size_bytes);
  const data = Buffer.alloc(8192, 0xab);
  assert.deepEqual(await cbp<number>((cb) => s.write(0, data, true, cb)), [0]);
  const raw = readFileSync(path);
  assert.equal(raw[4095], 0, 'the header page is untouched');
  assert.equal(raw[4096], 0xab, 'device offset 0 is file byte 4096');
  const [st, back] = await cbp<number | Buffer | null>((cb) => s.read(0, 8192, cb));
  assert.equal(st, 0);
  assert.deepEqual(back, data);
  assert.deepEqual(await cbp<number>((cb) => s.discard(4096, 4096, cb)), [0]);
  const [, after] = await cbp<number | Buffer | null>((cb) => s.read(0, 8192, cb));
  assert.deepEqual(after, Buffer.concat([Buffer.alloc(4096, 0xab), Buffer.alloc(4096)]));
  assert.deepEqual(await cbp<number>((cb) => s.write(layout.size_bytes - 10, Buffer.alloc(20), false, cb)), [Errno.EINVAL]);
  assert.deepEqual(await cbp<number>((cb) => s.flush(cb)), [0]);
  // RMR metadata on the store, read back after a reopen.
  const md: PoolMd = {
    header: { pool_name: 'pool1', pool_uuid: Buffer.alloc(16, 5), group_id: 9, chunk_size: 131072, mapped_size: 1 << 20, queue_depth: 64, map_ver: 3 },
    srv_md: [{ ...emptySrvMd(), member_id: 1, srv_state: 'NORMAL', store_state: true }, emptySrvMd(), emptySrvMd(), emptySrvMd()],
  };
  assert.deepEqual(await cbp<number>((cb) => new PoolMdStore(s, 0).store(md, cb)), [0]);
  await s.close();
  assert.deepEqual(await cbp<number>((cb) => s.flush(cb)), [Errno.ENXIO], 'closed store refuses IO');
  const again = await FileStore.open(path, layout, false);
  const [ls, loaded] = await cbp<number | PoolMd | null>((cb) => new PoolMdStore(again, 0).load(cb as (s: number, m: PoolMd | null) => void));
  assert.equal(ls, 0);
  assert.equal((loaded as PoolMd).header.map_ver, 3);
  await again.close();
  await assert.rejects(FileStore.open(path, { ...layout, size_bytes: 1 << 30 }, false), /needs/);
});
