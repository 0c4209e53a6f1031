// The store header and the BRMR command codecs: round trips, every single-byte corruption of
// a header detected, hostile bytes give an error value and never an exception.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { HEADER_BYTES, decodeHeader, encodeHeader, hasHeaderMagic, makeUuid, parseUuid, uuidText, type StoreHeader } from '../../src/brmr/server/header.js';
import { BRMR_RSP_MAX, decodeAnswer, decodeRequest, encodeAnswer, encodeRequest, type BrmrRequest } from '../../src/brmr/msg.js';
import { CACHE_FUA, CACHE_WRITEBACK, defaultParams, mergeParams, type DeviceParams } from '../../src/brmr/params.js';

const pow2 = (lo: number, hi: number) => fc.integer({ min: lo, max: hi }).map((e) => 2 ** e);
const arbParams: fc.Arbitrary<DeviceParams> = fc
  .record({ lbs: pow2(9, 12), pbs_extra: fc.integer({ min: 0, max: 3 }), io_blocks: fc.integer({ min: 1, max: 2048 }), gran_extra: fc.integer({ min: 0, max: 8 }), cache: fc.integer({ min: 0, max: 3 }) })
  .map(({ lbs, pbs_extra, io_blocks, gran_extra, cache }) => ({
    logical_block_size: lbs,
    physical_block_size: lbs * 2 ** pbs_extra,
    max_io_bytes: lbs * io_blocks,
    max_discard_bytes: lbs * io_blocks,
    max_write_zeroes_bytes: lbs * io_blocks,
    discard_granularity: lbs * 2 ** gran_extra,
    cache_policy: cache,
  }));

const arbName = fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !s.includes('\0') && Buffer.byteLength(s) <= 63 && Buffer.from(s, 'utf8').toString('utf8') === s);
const arbUuid = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a));
const arbHeader: fc.Arbitrary<StoreHeader> = fc
  .record({
    pool_name: arbName,
    pool_uuid: arbUuid,
    store_uuid: arbUuid.filter((u) => u.some((x) => x !== 0)),
    member_id: fc.integer({ min: 1, max: 255 }),
    state: fc.integer({ min: 0, max: 3 }),
    mapped_blocks: fc.integer({ min: 1, max: 2 ** 40 }),
    meta_pages: fc.integer({ min: 1, max: 1 << 20 }),
    slack: fc.integer({ min: 0, max: 1 << 30 }),
    chunk_shift: fc.integer({ min: 12, max: 20 }),
    timestamp_ms: fc.integer({ min: 0, max: 2 ** 50 }),
    params: arbParams,
  })
  .map((r) => {
    const mapped_size = r.mapped_blocks * 512;
    const meta_size = r.meta_pages * 4096;
    return {
      pool_name: r.pool_name,
      pool_uuid: r.pool_uuid,
      store_uuid: r.store_uuid,
      member_id: r.member_id,
      state: r.state,
      mapped_size,
      device_size: 4096 + mapped_size + meta_size + r.slack,
      data_offset: 4096,
      meta_offset: 4096 + mapped_size,
      meta_size,
      chunk_size: 2 ** r.chunk_shift,
      timestamp_ms: r.timestamp_ms,
      params: r.params,
    };
  });

test('header: encode/decode round trip', () => {
  fc.assert(
    fc.property(arbHeader, (h) => {
      const page = encodeHeader(h);
      assert.equal(page.length, HEADER_BYTES);
      assert.ok(hasHeaderMagic(page));
      assert.deepEqual(decodeHeader(page), h);
    }),
    { numRuns: 300 },
  );
});

test('header: every single-byte corruption is detected', () => {
  fc.assert(
    fc.property(arbHeader, fc.integer({ min: 1, max: 255 }), (h, xor) => {
      const page = encodeHeader(h);
      for (let i = 0; i < HEADER_BYTES; i++) {
        const bad = Buffer.from(page);
        bad[i] = (bad[i] as number) ^ xor;
        const d = decodeHeader(bad);
        assert.equal(typeof d, 'string', `corruption at byte ${i} went unnoticed`);
      }
    }),
    { numRuns: 8 },
  );
});

test('header: hostile pages give reasons, never exceptions; short and empty pages are refused', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 4200 }), fc.boolean(), (bytes, magic) => {
      const b = Buffer.from(bytes);
      if (magic && b.length >= 8) Buffer.from('BRMRSTOR').copy(b, 0);
      assert.equal(typeof decodeHeader(b), 'string');
    }),
    { numRuns: 300 },
  );
  assert.match(decodeHeader(Buffer.alloc(4096)) as string, /magic/);
  // A header whose CRC is right but whose fields are not: still refused.
  const h = fc.sample(arbHeader, 1)[0] as StoreHeader;
  assert.throws(() => encodeHeader({ ...h, meta_offset: h.meta_offset + 512 }), /metadata/);
  assert.throws(() => encodeHeader({ ...h, pool_name: '' }), /pool name/);
});

test('UUID text form and random UUIDs', () => {
  const u = makeUuid(Buffer.alloc(16, 0xff));
  assert.equal(uuidText(u), 'ffffffff-ffff-4fff-bfff-ffffffffffff');
  assert.deepEqual(parseUuid(uuidText(u)), u);
  assert.equal(parseUuid('not-a-uuid'), null);
});

const arbReq: fc.Arbitrary<BrmrRequest> = fc.oneof(
  fc.constant<BrmrRequest>({ cmd: 'GET_PARAMS' }),
  fc.boolean().map((rollback): BrmrRequest => ({ cmd: 'UNMAP', rollback })),
  fc.record({ mapped_size: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), pool_uuid: arbUuid, params: arbParams }).map((m): BrmrRequest => ({ cmd: 'MAP', ...m })),
);

test('BRMR commands: requests and answers round trip; garbage is an error value', () => {
  fc.assert(fc.property(arbReq, (r) => assert.deepEqual(decodeRequest(encodeRequest(r)), r)), { numRuns: 200 });
  fc.assert(
    fc.property(arbParams, arbUuid, arbUuid, fc.boolean(), fc.integer({ min: 1, max: 255 }), fc.string({ maxLength: 60 }), (params, pu, su, mapped, member_id, reason) => {
      const info = { mapped, member_id, mapped_size: 1 << 20, device_size: 2 << 20, pool_uuid: pu, store_uuid: su, params };
      const a = { cmd: 'GET_PARAMS' as const, status: 0, reason, info };
      const b = encodeAnswer(a);
      assert.ok(b.length <= BRMR_RSP_MAX);
      assert.deepEqual(decodeAnswer(b, 'GET_PARAMS'), a);
      assert.deepEqual(decodeAnswer(encodeAnswer({ cmd: 'MAP', status: -22, reason, info: null }), 'MAP'), { cmd: 'MAP', status: -22, reason, info: null });
      assert.equal(typeof decodeAnswer(b, 'MAP'), 'string', 'an answer to another command is refused');
    }),
    { numRuns: 200 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const b = Buffer.from(bytes);
      const r = decodeRequest(b);
      if (typeof r !== 'string') assert.deepEqual(encodeRequest(r), b, 'only canonical requests decode');
      const a = decodeAnswer(b, 'GET_PARAMS');
      if (typeof a !== 'string') assert.deepEqual(encodeAnswer(a), b);
    }),
    { numRuns: 500 },
  );
  // Truncations of a valid MAP are refused.
  const map = encodeRequest({ cmd: 'MAP', mapped_size: 4096, pool_uuid: Buffer.alloc(16, 1), params: defaultParams() });
  for (let n = 0; n < map.length; n++) assert.equal(typeof decodeRequest(map.subarray(0, n)), 'string');
});

test('parameters merge: largest block sizes, smallest limits, FUA only if every member has it', () => {
  const a = { ...defaultParams(), logical_block_size: 512, physical_block_size: 4096, max_io_bytes: 1 << 20, cache_policy: CACHE_FUA };
  const b = { ...defaultParams(), logical_block_size: 4096, physical_block_size: 4096, max_io_bytes: 512 * 1000, cache_policy: CACHE_WRITEBACK };
  const m = mergeParams([a, b]);
  assert.ok(typeof m !== 'string');
  assert.equal(m.logical_block_size, 4096);
  assert.equal(m.max_io_bytes, 4096 * 125, 'rounded down to the merged block size');
  assert.equal(m.cache_policy, CACHE_WRITEBACK);
  assert.equal(typeof mergeParams([]), 'string');
});
