// Periodic pool work on the injected clock, and the shared session registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ticker } from '../../src/util/ticker.js';
import { serverPoolTickers, MD_SYNC_INTERVAL_MS } from '../../src/rmr/server/tickers.js';
import { SessionRegistry } from '../../src/rmr/client/session-registry.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemNetwork } from '../../src/sim/mem-net.js';
import { MemDisk } from '../../src/sim/mem-disk.js';

test('a ticker runs on the interval until stopped', () => {
  const clock = new SimClock();
  let n = 0;
  const t = new Ticker(clock, 100, () => n++);
  clock.runUntil(1050);
  assert.equal(n, 10);
  t.stop();
  clock.runUntil(5000);
  assert.equal(n, 10);
  assert.equal(clock.pending, 0);
});

test('the metadata ticker persists what changed, and costs no IO while nothing did', () => {
  const clock = new SimClock();
  const meta = new MemDisk(1 << 20, clock);
  const pool = new ServerPool({ pool_name: 'p', group_id: 1, member_id: 1, chunk_size: 65536 }, () => undefined);
  assert.equal(pool.register({ block: new MemDisk(1 << 20, clock), meta, meta_base: 0, ioAllowed: () => true }, 'create', 1 << 20), null);
  const errors: number[] = [];
  const ts = serverPoolTickers(clock, pool, (s) => errors.push(s));
  const before = meta.stats.writes;
  clock.runUntil(MD_SYNC_INTERVAL_MS + 10);
  assert.equal(meta.stats.writes - before, 3, 'pool_md, map image and directory the first time');
  clock.runUntil(MD_SYNC_INTERVAL_MS * 4 + 10);
  assert.equal(meta.stats.writes - before, 3, 'unchanged metadata is durable already: no writes, no flushes');
  pool.ownMap()?.setDirty(3, 2);
  clock.runUntil(MD_SYNC_INTERVAL_MS * 5 + 10);
  assert.equal(meta.stats.writes - before, 5, 'a changed map: image and directory, not the unchanged pool_md');
  assert.deepEqual(errors, []);
  for (const t of ts) t.stop();
});

test('one session per storage node, shared and reference counted', () => {
  const clock = new SimClock();
  const random = new SeededRandom(1);
  const net = new MemNetwork(clock, random);
  const reg = new SessionRegistry({ net: net.host('client'), clock, random }, { secret: Buffer.alloc(32, 1) });
  const a = reg.get('client@node1', [{ host: 'node1', port: 1234 }]);
  const b = reg.get('client@node1', [{ host: 'node1', port: 1234 }]);
  const c = reg.get('client@node2', [{ host: 'node2', port: 1234 }]);
  assert.equal(a, b);
  assert.notEqual(a, c);
  assert.equal(reg.size, 2);
  reg.put(a);
  assert.notEqual(a.state, 'CLOSED');
  reg.put(b);
  assert.equal(a.state, 'CLOSED');
  assert.equal(reg.size, 1);
  reg.put(c);
  assert.equal(reg.size, 0);
});
