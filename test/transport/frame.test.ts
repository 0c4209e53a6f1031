// Property tests of the framing: round trips through arbitrary chunking, and hostile bytes
// (random strings, mutations of valid streams) never crash the decoder and are rejected
// with a reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FLAG_READ,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameType,
  encodeFrameHead,
  type DecoderLimits,
  type FrameFields,
} from '../../src/transport/frame.js';

interface Got {
  f: FrameFields;
  user_hdr: Buffer;
  data: Buffer;
}

const ALL: ReadonlySet<number> = new Set(Object.values(FrameType));
const limits: DecoderLimits = { allowed: ALL, max_user_hdr: 256, max_data: 4096 };

function collect(chunks: Buffer[], lim: DecoderLimits = limits): { frames: Got[]; errors: string[] } {
  const frames: Got[] = [];
  const errors: string[] = [];
  const d = new FrameDecoder(
    {
      onFrame: (f, user_hdr, data) => frames.push({ f: { ...f }, user_hdr: Buffer.from(user_hdr), data: Buffer.from(data) }),
      onProtocolError: (r) => errors.push(r),
    },
    lim,
  );
  for (const c of chunks) d.push(c);
  return { frames, errors };
}

/** Splits a buffer at arbitrary cut points. */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

const reqArb = fc.record({
  read: fc.boolean(),
  tag: fc.integer({ min: 0, max: 511 }),
  id: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  aux: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  user_hdr: fc.uint8Array({ maxLength: 256 }),
  data: fc.uint8Array({ maxLength: 4096 }),
  read_len: fc.integer({ min: 0, max: 4096 }),
});

type Req = typeof reqArb extends fc.Arbitrary<infer T> ? T : never;
function encodeReq(r: Req): Buffer {
  const data = r.read ? Buffer.alloc(0) : Buffer.from(r.data);
  const head = encodeFrameHead(FrameType.REQ, r.read ? FLAG_READ : 0, Buffer.from(r.user_hdr), data.length, r.tag, r.read ? r.read_len : 0, r.id, r.aux);
  return Buffer.concat([head, data]);
}

test('request frames round-trip through any chunking', () => {
  fc.assert(
    fc.property(fc.array(reqArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (reqs, cuts) => {
      const stream = Buffer.concat(reqs.map(encodeReq));
      const { frames, errors } = collect(split(stream, cuts));
      assert.deepEqual(errors, []);
      assert.equal(frames.length, reqs.length);
      reqs.forEach((r, i) => {
        const g = frames[i] as Got;
        assert.equal(g.f.type, FrameType.REQ);
        assert.equal(g.f.flags, r.read ? FLAG_READ : 0);
        assert.equal(g.f.tag, r.tag);
        assert.equal(g.f.id, r.id);
        assert.equal(g.f.aux, r.aux);
        assert.equal(g.f.arg, r.read ? r.read_len : 0);
        assert.deepEqual(g.user_hdr, Buffer.from(r.user_hdr));
        assert.deepEqual(g.data, r.read ? Buffer.alloc(0) : Buffer.from(r.data));
      });
    }),
    { numRuns: 300 },
  );
});

test('responses carry negative status and data', () => {
  fc.assert(
    fc.property(fc.integer({ min: -4095, max: 0 }), fc.uint8Array({ maxLength: 4096 }), fc.nat(), (status, data, cut) => {
      const head = encodeFrameHead(FrameType.RSP, 0, null, data.length, 7, status, 42, 0);
      const { frames, errors } = collect(split(Buffer.concat([head, Buffer.from(data)]), [cut]));
      assert.deepEqual(errors, []);
      assert.equal(frames.length, 1);
      assert.equal(frames[0]?.f.arg, status);
      assert.deepEqual(frames[0]?.data, Buffer.from(data));
    }),
  );
});

test('a whole frame inside one chunk is delivered as a view, not a copy', () => {
  const payload = Buffer.alloc(1000, 0xab);
  const chunk = Buffer.concat([encodeFrameHead(FrameType.REQ, 0, null, payload.length, 1, 0, 1, 0), payload]);
  let seen: Buffer | null = null;
  const d = new FrameDecoder({ onFrame: (_f, _h, data) => (seen = data), onProtocolError: assert.fail }, limits);
  d.push(chunk);
  assert.ok(seen !== null);
  assert.equal((seen as Buffer).buffer, chunk.buffer, 'data shares memory with the received chunk');
});

test('readTarget: the rest of a spanning frame, read into in place, is delivered without a copy', () => {
  const lim: DecoderLimits = { allowed: ALL, max_user_hdr: 256, max_data: 1 << 20 };
  const hdr = Buffer.from('user header');
  const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 13) & 0xff));
  const wire = Buffer.concat([encodeFrameHead(FrameType.REQ, 0, hdr, payload.length, 3, 0, 9, 0), payload, encodeFrameHead(FrameType.PING, 0, null, 0, 0, 0, 5, 0)]);
  const got: { type: number; hdr: Buffer; data: Buffer }[] = [];
  const d = new FrameDecoder({ onFrame: (f, h, data) => got.push({ type: f.type, hdr: h, data }), onProtocolError: assert.fail }, lim);
  assert.equal(d.readTarget(), null, 'nothing is being assembled');
  const first = 1000;
  d.push(wire.subarray(0, first));
  let at = first;
  const target = d.readTarget();
  assert.ok(target !== null);
  const body_start = FRAME_HEADER_BYTES;
  const body = target.buffer;
  assert.equal(target.length, hdr.length + payload.length - (first - body_start));
  // A stream reads the next bytes straight into the target, in two reads, then the rest.
  for (const k of [100_000, target.length - 100_000]) {
    const t = d.readTarget();
    assert.ok(t !== null && t.length >= k);
    wire.copy(t, 0, at, at + k);
    d.push(t.subarray(0, k));
    at += k;
  }
  assert.equal(d.readTarget(), null);
  d.push(wire.subarray(at));
  assert.equal(got.length, 2);
  assert.deepEqual(got[0]?.hdr, hdr);
  assert.deepEqual(got[0]?.data, payload);
  assert.equal(got[0]?.data.buffer, body, 'the payload is the buffer the bytes were read into');
  assert.equal(got[1]?.type, FrameType.PING);
});

test('random bytes never crash the decoder; anything rejected comes with a reason', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 10 }), (chunks) => {
      const { frames, errors } = collect(chunks.map((c) => Buffer.from(c)));
      assert.ok(errors.length <= 1, 'the decoder stops at the first error');
      for (const e of errors) assert.ok(e.length > 0);
      for (const fr of frames) {
        assert.ok(ALL.has(fr.f.type));
        assert.ok(fr.user_hdr.length <= limits.max_user_hdr);
        assert.ok(fr.data.length <= limits.max_data + 1024);
      }
    }),
    { numRuns: 2000 },
  );
});

test('mutations of valid streams are either decoded within limits or rejected', () => {
  fc.assert(
    fc.property(
      fc.array(reqArb, { minLength: 1, maxLength: 4 }),
      fc.array(fc.record({ at: fc.nat(), val: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 }),
      (reqs, muts) => {
        const stream = Buffer.concat(reqs.map(encodeReq));
        for (const m of muts) stream[m.at % stream.length] = m.val;
        const { frames, errors } = collect([stream]);
        assert.ok(errors.length <= 1);
        for (const fr of frames) {
          if (fr.f.type === FrameType.REQ) {
            assert.ok(fr.user_hdr.length <= 256 && fr.data.length <= 4096);
            assert.equal(fr.f.flags & ~FLAG_READ, 0);
          }
          assert.ok(Number.isSafeInteger(fr.f.id) && Number.isSafeInteger(fr.f.aux));
        }
      },
    ),
    { numRuns: 1000 },
  );
});

test('each limit is enforced with a specific reason', () => {
  const cases: [string, Buffer, RegExp][] = [
    ['unknown type', encodeFrameHead(99, 0, null, 0, 0, 0, 0, 0), /unexpected frame type 99/],
    ['oversized user header', encodeFrameHead(FrameType.REQ, 0, Buffer.alloc(257), 0, 0, 0, 1, 0), /user header 257 > 256/],
    ['oversized data', encodeFrameHead(FrameType.REQ, 0, null, 4097, 0, 0, 1, 0), /request data 4097 > 4096/],
    ['unknown flags', encodeFrameHead(FrameType.REQ, 0x80, null, 0, 0, 0, 1, 0), /unknown request flags/],
    ['heartbeat with body', encodeFrameHead(FrameType.PING, 0, null, 5, 0, 0, 1, 0), /malformed heartbeat/],
    ['huge control frame', encodeFrameHead(FrameType.HELLO, 0, null, 1 << 30, 0, 0, 0, 0), /malformed control frame/],
  ];
  for (const [name, buf, re] of cases) {
    const { frames, errors } = collect([buf]);
    assert.equal(frames.length, 0, name);
    assert.equal(errors.length, 1, name);
    assert.match(errors[0] as string, re, name);
  }
  // A u64 beyond 2^53 is refused rather than rounded.
  const b = encodeFrameHead(FrameType.REQ, 0, null, 0, 0, 0, 1, 0);
  b.writeUInt32LE(0xffffffff, 20);
  assert.match(collect([b]).errors[0] as string, /64-bit field out of range/);
  // A frame type not allowed in the current phase (e.g. a request before authentication).
  const pre: DecoderLimits = { allowed: new Set([FrameType.HELLO]), max_user_hdr: 0, max_data: 0 };
  assert.match(collect([encodeFrameHead(FrameType.REQ, 0, null, 0, 0, 0, 1, 0)], pre).errors[0] as string, /unexpected frame type 16/);
  assert.equal(FRAME_HEADER_BYTES, 32);
});

test('nothing is allocated for a declared length before the header is validated', () => {
  // A header announcing 4 GiB - 1 of data is rejected at the header: no allocation of that size.
  const b = encodeFrameHead(FrameType.RSP, 0, null, 0xffffffff, 0, 0, 1, 0);
  const before = process.memoryUsage().arrayBuffers;
  const { errors } = collect([b]);
  assert.equal(errors.length, 1);
  assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
});
