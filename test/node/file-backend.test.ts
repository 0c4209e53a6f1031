// The file backend on a real file, with small IO on the event loop and with the thread pool
// only: writes, FUA writes and write-zeroes read back, completions never come from inside
// the call, ranges outside the file are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileBackend } from '../../src/node/file-backend.js';

async function withBackend(sync_io: boolean, fn: (b: NodeFileBackend) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'file-backend-'));
  const b = await NodeFileBackend.open(join(dir, 'store.img'), { create: true, size_bytes: 1 << 20 }, { sync_io });
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

for (const sync_io of [true, false]) {
  test(`${sync_io ? 'small IO on the event loop' : 'thread pool only'}: writes, FUA writes and write-zeroes read back; ranges outside the file are refused`, async () => {
    await withBackend(sync_io, async (b) => {
      let in_call = true;
      let from_inside: boolean | null = null;
      const done = new Promise<number>((r) =>
        b.write(0, Buffer.alloc(512, 1), false, (st) => {
          from_inside = in_call;
          r(st);
        }),
      );
      in_call = false;
      assert.equal(await done, 0);
      assert.equal(from_inside, false, 'never completed from inside the call');
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
      // IOs over 64 KiB always take the thread pool.
      const big = Buffer.alloc(1 << 19, 0x33);
      assert.equal(await io.write(b, 1 << 19, big, false), 0);
      assert.deepEqual((await io.read(b, 1 << 19, 1 << 19))[1], big);
      if (sync_io) assert.ok((b.read_gate?.stats.sync ?? 0) > 0 && (b.write_gate?.stats.sync ?? 0) > 0);
      else assert.equal(b.read_gate, null);
    });
  });
}
