// The at-most-once answer cache is bounded for the whole server. The security review
// (finding 12): a client that never advances its settled watermark kept qd × max_io of read
// answers per session (512 MiB), across up to 1,024 sessions. Now the cache of all sessions
// together has a byte budget and a maximum age; an answer dropped early is answered ETIMEDOUT
// if its request comes again (it is never executed twice).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Env, SECRET } from '../util/transport-env.js';
import { RawClient } from '../util/raw-client.js';
import { hdr, pattern } from '../util/test-handler.js';
import { waitFor } from '../util/wait.js';
import { FLAG_READ, FrameType, encodeFrameHead } from '../../src/transport/frame.js';
import { Errno } from '../../src/util/errno.js';

const KIB64 = 64 * 1024;

test('a client that never settles cannot pin more than the cache budget, nor for longer than its age limit', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server, handler } = await env.server({ max_answer_cache_bytes: 4 * KIB64, answer_cache_max_age_ms: 1500, heartbeat_interval_ms: 10_000, heartbeat_timeout_ms: 20_000 });
  const raw = await RawClient.connect(port);
  t.after(() => raw.destroy());
  await raw.handshake('hoarder@server', SECRET);
  // 16 reads of 64 KiB, settled watermark 0 throughout.
  for (let i = 0; i < 16; i++) raw.send(encodeFrameHead(FrameType.REQ, FLAG_READ, hdr(i), 0, i, KIB64, i + 1, 0));
  for (let i = 0; i < 16; i++) await raw.waitFrame(FrameType.RSP);
  assert.ok(server.answerCacheBytes <= 4 * KIB64, `${server.answerCacheBytes} bytes cached`);
  assert.equal(server.stats.answers_evicted, 12);
  // The oldest answer was dropped: its retransmission gets ETIMEDOUT, and is not run again.
  raw.send(encodeFrameHead(FrameType.REQ, FLAG_READ, hdr(0), 0, 0, KIB64, 1, 0));
  const lost = await raw.waitFrame(FrameType.RSP);
  assert.equal(lost.f.arg | 0, Errno.ETIMEDOUT);
  assert.equal(lost.data.length, 0);
  // The newest is still there, answered from the cache.
  raw.send(encodeFrameHead(FrameType.REQ, FLAG_READ, hdr(15), 0, 15, KIB64, 16, 0));
  const kept = await raw.waitFrame(FrameType.RSP);
  assert.equal(kept.f.arg, 0);
  assert.deepEqual(kept.data, pattern(15, KIB64));
  assert.deepEqual(handler.duplicates(), [], 'nothing executed twice');
  await waitFor('cached answers leave at the age limit', () => server.answerCacheBytes === 0, 5000);
  assert.equal(server.stats.answers_evicted, 16);
});

test('settling releases cached answers from the budget', async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { port, server } = await env.server({ heartbeat_interval_ms: 10_000, heartbeat_timeout_ms: 20_000 });
  const raw = await RawClient.connect(port);
  t.after(() => raw.destroy());
  await raw.handshake('settler@server', SECRET);
  for (let i = 0; i < 8; i++) raw.send(encodeFrameHead(FrameType.REQ, FLAG_READ, hdr(i), 0, i, KIB64, i + 1, 0));
  for (let i = 0; i < 8; i++) await raw.waitFrame(FrameType.RSP);
  assert.equal(server.answerCacheBytes, 8 * KIB64);
  raw.send(encodeFrameHead(FrameType.PING, 0, null, 0, 0, 0, 1, 9));
  await waitFor('settled answers released', () => server.answerCacheBytes === 0);
  assert.equal(server.stats.answers_evicted, 0);
});
