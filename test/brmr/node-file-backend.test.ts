// The file backend on a real file: positional IO through the fs callbacks (writes, FUA
// writes, write-zeroes read back), and ranges outside the file refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileBackend } from '../../src/brmr/server/node-file-backend.js';

async function withBackend(fn: (b: NodeFileBackend) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'file-backend-'));
  const b = await NodeFileBackend.open(join(dir, 'store.img'), { create: true, size_bytes: 1 << 20 });
  try {
    await fn(b);
  } finally {
    await new Promise<void>((r) => b.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
}

const io = {
  write: (b: NodeFileBackend, pos: number, data: Buffer, fua: boolean) => new Promise<number>((r) => b.write(pos, data, fua, r)),
  read: (b: NodeFileBackend, pos: number, len: number) => new Promise<[number, Buffer | null]>((r) => b.read(pos, len, (s, d) => r([s, d]))),
  zero: (b: NodeFileBackend, pos: number, len: number) => new Promise<number>((r) => b.writeZeroes(pos, len, r)),
  flush: (b: NodeFileBackend) => new Promise<number>((r) => b.flush(r)),
};

test('writes, FUA writes and write-zeroes read back; ranges outside the file are refused', async () => {
  await withBackend(async (b) => {
    const a = Buffer.alloc(8192, 0xa5);
    assert.equal(await io.write(b, 4096, a, false), 0);
    assert.equal(await io.write(b, 65536, Buffer.alloc(3000, 0x5a), true), 0);
    assert.equal(await io.zero(b, 6144, 1024), 0);
    const [s, d] = await io.read(b, 4096, 8192);
    assert.equal(s, 0);
    const want = Buffer.from(a);
    want.fill(0, 2048, 3072);
    assert.deepEqual(d, want);
    assert.deepEqual((await io.read(b, 65536, 3000))[1], Buffer.alloc(3000, 0x5a));
    assert.deepEqual(await io.read(b, 0, 0), [0, Buffer.alloc(0)]);
    assert.equal((await io.read(b, (1 << 20) - 10, 11))[0] < 0, true);
    assert.equal((await io.write(b, -1, a, false)) < 0, true);
  });
});
