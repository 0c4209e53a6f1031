// Codecs, the byte queue, request checks, extent clamping and the errno mapping: pure
// functions, tested without streams.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ByteQueue } from '../../src/nbd/byte-queue.js';
import { checkRequest, clampExtents } from '../../src/nbd/commands.js';
import { nbdError } from '../../src/nbd/errno-map.js';
import { contextsOf, exportLimits, matchContexts, transmissionFlags } from '../../src/nbd/export-info.js';
import { MemBlockDevice } from '../../src/nbd/mem-device.js';
import {
  Cmd,
  CmdFlag,
  NbdErr,
  REQUEST_BYTES,
  TFlag,
  decodeOptionHeader,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeRequest,
  encodeSimpleReply,
  readU64,
  writeU64,
} from '../../src/nbd/proto.js';
import { Errno } from '../../src/util/errno.js';

test('request codec round-trips every field, 64-bit offsets included', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      fc.integer({ min: 0, max: 0xffffffff }),
      (flags, type, cookie_hi, cookie_lo, offset, length) => {
        const b = encodeRequest({ flags, type, cookie_hi, cookie_lo, offset, length });
        assert.equal(b.length, REQUEST_BYTES);
        assert.deepEqual(decodeRequest(b), { magic_ok: true, flags, type, cookie_hi, cookie_lo, offset, length });
      },
    ),
  );
});

test('offsets beyond 2^53 decode as Infinity, never as a wrong small number', () => {
  const b = Buffer.alloc(8, 0xff);
  assert.equal(readU64(b, 0), Infinity);
  const c = Buffer.alloc(8);
  writeU64(c, 0, 2 ** 46 + 12345); // 64 TiB and change
  assert.equal(readU64(c, 0), 2 ** 46 + 12345);
});

test('greeting, option header, simple reply and export-name reply layouts', () => {
  const g = encodeGreeting();
  assert.equal(g.toString('latin1', 0, 16), 'NBDMAGICIHAVEOPT');
  assert.equal(g.readUInt16BE(16), 3);
  const h = Buffer.concat([Buffer.from('IHAVEOPT', 'latin1'), Buffer.from([0, 0, 0, 7, 0, 0, 1, 0])]);
  assert.deepEqual(decodeOptionHeader(h), { magic_ok: true, option: 7, length: 256 });
  assert.equal(decodeOptionHeader(Buffer.alloc(16)).magic_ok, false);
  const s = encodeSimpleReply(1, 2, 22);
  assert.deepEqual([s.readUInt32BE(0), s.readUInt32BE(4), s.readUInt32BE(8), s.readUInt32BE(12)], [0x67446698, 22, 1, 2]);
  assert.equal(encodeExportNameReply(4096, 1, false).length, 134);
  assert.equal(encodeExportNameReply(4096, 1, true).length, 10);
});

test('structured chunks: error with and without offset, block status', () => {
  const e = encodeErrorChunk(0, 9, NbdErr.EIO, 'bad', 4096);
  assert.equal(e.readUInt32BE(0), 0x668e33ef);
  assert.equal(e.readUInt16BE(4), 1); // DONE
  assert.equal(e.readUInt16BE(6), 0x8002);
  assert.equal(e.readUInt32BE(16), 4 + 2 + 3 + 8);
  assert.equal(e.readUInt32BE(20), 5);
  assert.equal(e.toString('utf8', 26, 29), 'bad');
  assert.equal(readU64(e, 29), 4096);
  assert.equal(encodeErrorChunk(0, 9, 5, 'x', null).readUInt16BE(6), 0x8001);
  const bs = encodeBlockStatusChunk(0, 1, 3, [{ length: 512, flags: 3 }, { length: 1024, flags: 0 }], false);
  assert.equal(bs.readUInt16BE(4), 0);
  assert.equal(bs.readUInt16BE(6), 5);
  assert.equal(bs.readUInt32BE(16), 4 + 16);
  assert.deepEqual([bs.readUInt32BE(20), bs.readUInt32BE(24), bs.readUInt32BE(28), bs.readUInt32BE(32), bs.readUInt32BE(36)], [3, 512, 3, 1024, 0]);
});

test('ByteQueue hands out exactly the bytes pushed, across any chunking', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 20 }), fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 30 }), (chunks, takes) => {
      const q = new ByteQueue();
      const all = Buffer.concat(chunks.map((c) => Buffer.from(c)));
      for (const c of chunks) q.push(Buffer.from(c));
      let at = 0;
      takes.forEach((n, i) => {
        const k = Math.min(n, q.length);
        if (i % 2 === 0) assert.deepEqual(q.take(k), all.subarray(at, at + k));
        else assert.equal(q.drop(n), k);
        at += k;
      });
      assert.equal(q.length, all.length - at);
    }),
  );
  assert.throws(() => new ByteQueue().take(1), /take/);
});

test('ByteQueue.reserve: a payload collected in place equals the bytes pushed; bytes after it queue behind', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 60 }), { minLength: 1, maxLength: 12 }),
      fc.integer({ min: 0, max: 200 }),
      fc.array(fc.boolean(), { maxLength: 30 }),
      (chunks, want, direct) => {
        const q = new ByteQueue();
        const all = Buffer.concat(chunks.map((c) => Buffer.from(c)));
        const n = Math.min(want, all.length);
        // Where the reservation's memory starts (its buffer and offset).
        let reserved: { buffer: ArrayBufferLike; offset: number } | null = null;
        for (const [i, c] of chunks.entries()) {
          // Reserve as the NBD parser does: once some of the payload came, before all of it.
          if (!q.reserved && q.length > 0 && q.length < n) {
            q.reserve(n);
            const t = q.target();
            assert.ok(t !== null, 'a reservation short of its bytes has a target');
            reserved = { buffer: t.buffer, offset: t.byteOffset - (n - t.length) };
          }
          const t = q.target();
          if (t !== null && direct[i] === true) {
            // A stream reading into the target: as many bytes as fit land in place.
            const k = Math.min(t.length, c.length);
            Buffer.from(c).copy(t, 0, 0, k);
            q.push(t.subarray(0, k));
            if (k < c.length) q.push(Buffer.from(c).subarray(k));
          } else q.push(Buffer.from(c));
        }
        assert.equal(q.length, all.length);
        const payload = q.take(n);
        assert.deepEqual(payload, all.subarray(0, n));
        // A reserved payload is handed over as the buffer it was collected in, not a copy.
        if (reserved !== null) {
          assert.ok(payload.buffer === reserved.buffer, 'the same memory');
          assert.equal(payload.byteOffset, reserved.offset);
        }
        assert.equal(q.reserved, false);
        assert.deepEqual(q.take(q.length), all.subarray(n));
      },
    ),
  );
  const q = new ByteQueue();
  q.push(Buffer.from('abc'));
  assert.throws(() => q.reserve(3), /reserve/, 'nothing to reserve: the bytes are all here');
  q.reserve(8);
  assert.throws(() => q.reserve(9), /reservation is open/);
  assert.throws(() => q.take(3), /reservation/);
  assert.throws(() => q.drop(1), /reservation/);
  assert.equal(q.target()?.length, 5);
  q.clear();
  assert.equal(q.reserved, false);
  assert.equal(q.length, 0);
});

const dev = new MemBlockDevice({ size_bytes: 1 << 20, block_sizes: { minimum: 512, preferred: 4096, maximum: 65536 } });
const ro = new MemBlockDevice({ size_bytes: 1 << 20, writable: false });
const req = (type: number, offset: number, length: number, flags = 0): ReturnType<typeof decodeRequest> => ({ magic_ok: true, flags, type, cookie_hi: 0, cookie_lo: 1, offset, length });
const ctx = { device: dev, max_payload: 65536, structured: true, meta_count: 1 };

test('export limits: the advertised maximum is the setting (a multiple of the minimum, at least the preferred size); the device gets pieces of its own maximum', () => {
  const d = (minimum: number, preferred: number, maximum: number): MemBlockDevice => new MemBlockDevice({ size_bytes: 1 << 30, block_sizes: { minimum, preferred, maximum } });
  assert.deepEqual(exportLimits(d(512, 4096, 1 << 20), 32 << 20), { max_payload: 32 << 20, piece_bytes: 1 << 20 }, 'an RMR pool of 1 MiB IOs behind the 32 MiB default');
  assert.deepEqual(exportLimits(d(4096, 4096, 64 << 20), 32 << 20), { max_payload: 32 << 20, piece_bytes: 32 << 20 }, 'a device taking more is never given more than advertised');
  assert.deepEqual(exportLimits(d(4096, 4096, 1 << 20), (1 << 20) + 1000), { max_payload: 1 << 20, piece_bytes: 1 << 20 }, 'rounded down to the minimum');
  assert.deepEqual(exportLimits(d(512, 65536, 1 << 20), 4096), { max_payload: 65536, piece_bytes: 65536 }, 'never below the preferred size');
});

test('request checks: range, size, flags, read-only, block status preconditions', () => {
  assert.equal(checkRequest(req(Cmd.READ, 0, 4096), ctx), 0);
  assert.equal(checkRequest(req(Cmd.READ, (1 << 20) - 512, 1024), ctx), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.READ, Infinity, 512), ctx), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.READ, 0, 65537), ctx), NbdErr.EOVERFLOW);
  assert.equal(checkRequest(req(Cmd.WRITE, 0, 65537), ctx), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.WRITE, (1 << 20) - 512, 1024), ctx), NbdErr.ENOSPC);
  assert.equal(checkRequest(req(Cmd.WRITE, 0, 512), { ...ctx, device: ro }), NbdErr.EPERM);
  assert.equal(checkRequest(req(Cmd.TRIM, 0, 1 << 20, CmdFlag.FUA), ctx), 0, 'trim is not bound by the IO size');
  assert.equal(checkRequest(req(Cmd.WRITE_ZEROES, 0, 512, CmdFlag.FAST_ZERO | CmdFlag.NO_HOLE), ctx), 0);
  assert.equal(checkRequest(req(Cmd.WRITE, 0, 512, CmdFlag.NO_HOLE), ctx), NbdErr.EINVAL, 'flag not valid for WRITE');
  assert.equal(checkRequest(req(99, 0, 0), ctx), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.CACHE, 0, 512), ctx), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.BLOCK_STATUS, 0, 512), { ...ctx, structured: false }), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.BLOCK_STATUS, 0, 512), { ...ctx, meta_count: 0 }), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.BLOCK_STATUS, 0, 0), ctx), NbdErr.EINVAL);
  assert.equal(checkRequest(req(Cmd.BLOCK_STATUS, 0, 1 << 20, CmdFlag.REQ_ONE), ctx), 0);
});

test('extents are cut to the request, REQ_ONE keeps one, broken answers are refused', () => {
  assert.deepEqual(clampExtents([{ length: 100, flags: 1 }, { length: 100, flags: 0 }], 150, false, 10), [{ length: 100, flags: 1 }, { length: 50, flags: 0 }]);
  assert.deepEqual(clampExtents([{ length: 100, flags: 1 }, { length: 100, flags: 0 }], 150, true, 10), [{ length: 100, flags: 1 }]);
  assert.equal(clampExtents([], 10, false, 10), null);
  assert.equal(clampExtents(null, 10, false, 10), null);
  assert.equal(clampExtents([{ length: 0, flags: 0 }], 10, false, 10), null);
  assert.equal(clampExtents([{ length: 1.5, flags: 0 }], 10, false, 10), null);
  assert.equal(clampExtents(Array.from({ length: 50 }, () => ({ length: 1, flags: 0 })), 100, false, 10)?.length, 10);
});

test('errno mapping: the NBD errors by name, everything else EIO', () => {
  assert.equal(nbdError(Errno.EPERM), NbdErr.EPERM);
  assert.equal(nbdError(Errno.EROFS), NbdErr.EPERM);
  assert.equal(nbdError(Errno.EIO), NbdErr.EIO);
  assert.equal(nbdError(Errno.ENOMEM), NbdErr.ENOMEM);
  assert.equal(nbdError(Errno.EINVAL), NbdErr.EINVAL);
  assert.equal(nbdError(Errno.ENOSPC), NbdErr.ENOSPC);
  assert.equal(nbdError(Errno.EOVERFLOW), NbdErr.EOVERFLOW);
  assert.equal(nbdError(Errno.EOPNOTSUPP), NbdErr.ENOTSUP);
  assert.equal(nbdError(Errno.ESHUTDOWN), NbdErr.ESHUTDOWN);
  assert.equal(nbdError(Errno.ETIMEDOUT), NbdErr.EIO);
  assert.equal(nbdError(Errno.ENOTCONN), NbdErr.EIO);
  assert.equal(nbdError(-9999), NbdErr.EIO);
});

test('transmission flags follow the device; contexts and queries', () => {
  const f = transmissionFlags(dev, true);
  for (const bit of [TFlag.HAS_FLAGS, TFlag.SEND_FLUSH, TFlag.SEND_FUA, TFlag.SEND_TRIM, TFlag.SEND_WRITE_ZEROES, TFlag.SEND_FAST_ZERO, TFlag.CAN_MULTI_CONN, TFlag.SEND_DF]) assert.ok(f & bit);
  assert.equal(f & TFlag.READ_ONLY, 0);
  const r = transmissionFlags(ro, false);
  assert.ok(r & TFlag.READ_ONLY);
  assert.equal(r & (TFlag.SEND_TRIM | TFlag.SEND_WRITE_ZEROES | TFlag.SEND_DF), 0);
  const d = new MemBlockDevice({ size_bytes: 4096, dirty_context: 'rmr:dirty:2', allocation: true });
  assert.deepEqual(contextsOf(d), ['base:allocation', 'rmr:dirty:2']);
  const all = ['base:allocation', 'rmr:dirty:1', 'rmr:dirty:2'];
  assert.deepEqual(matchContexts(all, 'base:', true), ['base:allocation']);
  assert.deepEqual(matchContexts(all, 'rmr:dirty:', true), ['rmr:dirty:1', 'rmr:dirty:2']);
  assert.deepEqual(matchContexts(all, 'rmr:', false), [], 'no wildcards in SET');
  assert.deepEqual(matchContexts(all, 'rmr:dirty:2', false), ['rmr:dirty:2']);
  assert.deepEqual(matchContexts(all, 'nope:x', true), []);
});
