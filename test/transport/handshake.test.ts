// Handshake codecs and proofs: round trips, rejection of malformed bodies, and the property
// that a proof made with another secret, label or nonce never verifies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import {
  clientProof,
  decodeChallenge,
  decodeHello,
  decodeReject,
  decodeWelcome,
  encodeChallenge,
  encodeHello,
  encodeReject,
  encodeWelcome,
  proofMatches,
  serverProof,
  PROTOCOL_VERSION,
} from '../../src/transport/handshake.js';

const helloArb = fc.record({
  version: fc.integer({ min: 0, max: 65535 }),
  path_index: fc.integer({ min: 0, max: 65535 }),
  queue_depth: fc.integer({ min: 0, max: 0xffffffff }),
  max_io_size: fc.integer({ min: 0, max: 0xffffffff }),
  incarnation: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  client_nonce: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a)),
  session_name: fc.stringMatching(/^[a-z0-9.@_-]{1,60}$/),
});

test('hello round-trips', () => {
  fc.assert(
    fc.property(helloArb, (h) => {
      const d = decodeHello(encodeHello(h));
      assert.ok(d.ok);
      assert.deepEqual({ ...d.value }, { ...h });
    }),
  );
});

test('truncated or garbage hello bodies are rejected with a reason', () => {
  const good = encodeHello({
    version: PROTOCOL_VERSION, path_index: 0, queue_depth: 32, max_io_size: 1 << 20, incarnation: 5,
    client_nonce: randomBytes(32), session_name: 'client@server',
  });
  for (let n = 0; n < good.length; n++) {
    const d = decodeHello(good.subarray(0, n));
    assert.equal(d.ok, false, `prefix of ${n} bytes`);
  }
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
      const d = decodeHello(Buffer.from(bytes));
      if (!d.ok) assert.ok(d.reason.length > 0);
    }),
    { numRuns: 2000 },
  );
  const bad_name = Buffer.from(good);
  bad_name[good.length - 1] = 0x0a; // newline in the name
  assert.match((decodeHello(bad_name) as { reason: string }).reason, /printable/);
});

test('challenge, welcome and reject round-trip and reject wrong lengths', () => {
  const c = { server_nonce: randomBytes(32), server_proof: randomBytes(32) };
  assert.deepEqual((decodeChallenge(encodeChallenge(c)) as { value: unknown }).value, c);
  assert.equal(decodeChallenge(randomBytes(63)).ok, false);
  const w = { queue_depth: 512, max_io_size: 4 << 20, max_user_hdr: 1024, resumed: true, server_instance: 2 ** 50 };
  assert.deepEqual((decodeWelcome(encodeWelcome(w)) as { value: unknown }).value, w);
  assert.equal(decodeWelcome(randomBytes(23)).ok, false);
  const r = { status: -129, reason: 'authentication failed' };
  assert.deepEqual((decodeReject(encodeReject(r)) as { value: unknown }).value, r);
  assert.equal(decodeReject(Buffer.from([1, 2, 3])).ok, false);
});

test('proofs verify only with the same secret, direction and transcript', () => {
  const secret = randomBytes(32);
  const hello = randomBytes(80);
  const nonce = randomBytes(32);
  const sp = serverProof(secret, hello, nonce);
  assert.ok(proofMatches(serverProof(secret, hello, nonce), sp));
  assert.ok(!proofMatches(clientProof(secret, hello, nonce), sp), 'a server proof is no client proof (no reflection)');
  assert.ok(!proofMatches(serverProof(randomBytes(32), hello, nonce), sp), 'another secret');
  assert.ok(!proofMatches(serverProof(secret, hello, randomBytes(32)), sp), 'another nonce');
  assert.ok(!proofMatches(sp.subarray(0, 31), sp), 'truncated proof');
});
