// Fuzzing the transport listener after the handshake (hostile.test.ts covers the bytes before
// it): authenticated raw clients send seeded mutations of valid frame streams (requests of
// both kinds, pings, pongs, goodbyes) on a few shared session names, so resumption,
// duplicate request ids and lying watermarks get exercised too; some cases mutate the
// handshake itself. Afterwards: no connection left, no internal error logged, no request
// executed twice, and a normal session still gets correct answers.
// Longer: RMR_FUZZ_SECONDS=60 (or npm run fuzz -- --seconds 60); replay: RMR_FUZZ_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Env, SECRET } from '../util/transport-env.js';
import { RawClient } from '../util/raw-client.js';
import { hdr, pattern } from '../util/test-handler.js';
import { waitFor, within } from '../util/wait.js';
import { fuzzBudget, mutate } from '../util/fuzz.js';
import { FLAG_READ, FrameType, encodeFrameHead } from '../../src/transport/frame.js';
import { PROTOCOL_VERSION, encodeHello } from '../../src/transport/handshake.js';
import { SeededRandom } from '../../src/util/seeded-random.js';

const budget = fuzzBudget(4000, 20261201);

/** A valid stream of post-handshake frames. */
function frames(rnd: SeededRandom, qd: number): Buffer {
  const out: Buffer[] = [];
  let id = 1 + rnd.int(4);
  const n = 1 + rnd.int(8);
  for (let i = 0; i < n; i++) {
    const tag = rnd.int(qd);
    switch (rnd.int(6)) {
      case 0:
      case 1: {
        const len = [0, 1, 512, 4096, 70_000][rnd.int(5)] as number;
        out.push(encodeFrameHead(FrameType.REQ, 0, hdr(rnd.int(256), rnd.int(3), rnd.int(8) === 0 ? 5 : 0), len, tag, 0, id++, rnd.int(id)), rnd.bytes(len));
        break;
      }
      case 2:
      case 3:
        out.push(encodeFrameHead(FrameType.REQ, FLAG_READ, hdr(rnd.int(256), rnd.int(3)), 0, tag, [1, 512, 4096, 1 << 20][rnd.int(4)] as number, id++, rnd.int(id)));
        break;
      case 4:
        out.push(encodeFrameHead(rnd.int(2) === 0 ? FrameType.PING : FrameType.PONG, 0, null, 0, 0, 0, rnd.int(100), rnd.int(id)));
        break;
      default: {
        const reason = Buffer.from('fuzz says bye');
        out.push(encodeFrameHead(FrameType.CLOSE, 0, null, reason.length, 0, 0, 0, 0), reason);
      }
    }
    // Sometimes the same request id again (a retry, or a replay).
    if (rnd.int(6) === 0) id = Math.max(1, id - 1 - rnd.int(3));
  }
  return Buffer.concat(out);
}

function helloFrame(rnd: SeededRandom, name: string): Buffer {
  const body = encodeHello({ version: PROTOCOL_VERSION, path_index: rnd.int(3), queue_depth: 1 + rnd.int(64), max_io_size: 1 << 20, incarnation: 1 + rnd.int(3), client_nonce: randomBytes(32), session_name: name });
  return Buffer.concat([encodeFrameHead(FrameType.HELLO, 0, null, body.length, 0, 0, 0, 0), body]);
}

test(`transport listener: mutated post-handshake frame streams for ${budget.ms} ms (seed ${budget.seed})`, async (t) => {
  const env = new Env();
  t.after(() => env.close());
  const { address, port, server, handler, log } = await env.server({ handshake_timeout_ms: 1000, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 1000 });
  // At-most-once holds per session and permit (docs/transport.md: one slot per tag): count
  // executions of each (session object, tag, id).
  const execs = new Map<string, number>();
  const sid = new WeakMap<object, number>();
  let sessions = 0;
  const inner = handler.onRequest.bind(handler);
  handler.onRequest = (req) => {
    let s = sid.get(req.session);
    if (s === undefined) sid.set(req.session, (s = ++sessions));
    const k = `${req.session.name}#${s} tag ${(req as unknown as { tag: number }).tag} id ${req.id}`;
    execs.set(k, (execs.get(k) ?? 0) + 1);
    inner(req);
  };
  const rnd = new SeededRandom(budget.seed);
  const end = performance.now() + budget.ms;
  let cases = 0;
  let authenticated = 0;
  const one = async (): Promise<void> => {
    const name = `fuzz${rnd.int(6)}@server`;
    const raw = await RawClient.connect(port);
    try {
      if (rnd.int(6) === 0) {
        raw.send(mutate(rnd, helloFrame(rnd, name)));
        if (rnd.int(2) === 0) raw.send(mutate(rnd, encodeFrameHead(FrameType.AUTH, 0, null, 32, 0, 0, 0, 0)));
      } else {
        try {
          await raw.handshake(name, SECRET, { incarnation: 1 + rnd.int(2) });
        } catch {
          return; // refused (e.g. the session is busy on another path): a valid outcome
        }
        authenticated++;
        const bytes = frames(rnd, 32);
        const r = rnd.int(10);
        raw.send(r < 2 ? bytes : r < 8 ? mutate(rnd, bytes) : Buffer.concat([bytes, mutate(rnd, frames(rnd, 32))]));
      }
      await raw.waitClosed(10 + rnd.int(40)).catch(() => undefined);
    } finally {
      raw.destroy();
    }
  };
  // The budget is time; on a loaded machine it may hold few cases, so the run goes on (up
  // to 60 s more) until it has reached what the checks below need to mean anything.
  const reached = (): boolean => authenticated > 50 && execs.size > 50 && server.stats.protocol_errors + log.count((l) => l.msg === 'protocol error; closing path') > 20;
  const hard_end = end + 60_000;
  const worker = async (): Promise<void> => {
    while (performance.now() < end || (!reached() && performance.now() < hard_end)) {
      cases++;
      await one();
    }
  };
  await within('fuzz run', Promise.all(Array.from({ length: 12 }, worker)), budget.ms + 120_000);
  await waitFor('every fuzzed connection closed', () => server.connectionCount === 0, 15_000);
  if (process.env.RMR_FUZZ_STATS !== undefined) {
    const reasons = new Map<string, number>();
    for (const l of log.lines) {
      const k = `${l.msg} ${String(l.fields.reason ?? '')}`.slice(0, 100);
      reasons.set(k, (reasons.get(k) ?? 0) + 1);
    }
    console.log(cases, authenticated, execs.size, [...reasons].sort((a, b) => b[1] - a[1]).slice(0, 30));
  }
  const internal = log.lines.filter((l) => l.level === 'error');
  assert.deepEqual(internal.slice(0, 3), [], 'no internal error while handling hostile frames');
  assert.deepEqual([...execs].filter(([, n]) => n > 1).slice(0, 5), [], 'no request executed twice on its permit');
  assert.ok(authenticated > 50, `${authenticated} of ${cases} cases got past the handshake`);
  assert.ok(server.stats.protocol_errors + log.count((l) => l.msg === 'protocol error; closing path') > 20, 'the mutations reached the protocol checks');
  assert.ok(execs.size > 50, `${execs.size} requests executed`);
  // A well-formed client is served correctly afterwards.
  const { session } = env.client([address]);
  await within('open after fuzz', session.open());
  const rd = await session.request('read', hdr(77), null, 8192);
  assert.deepEqual(rd.data, pattern(77, 8192));
  assert.equal((await session.request('write', hdr(1), Buffer.alloc(100_000, 7), 0)).status, 0);
});
