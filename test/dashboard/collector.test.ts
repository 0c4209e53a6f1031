// The dashboard's collector against daemons made of the real control API (ControlApi over a
// real ControlTree with map_picture/ directories, an EventLog and a MetricsRegistry), reached
// in-process: member health and its reason, whose record of a member's map is shown (own,
// a serving peer, the client), pictures fetched only when their version moves, counter rates
// and latency quantiles between ticks, events, and the checks on operator actions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ControlApi } from '../../src/daemon/control-api.js';
import { ControlTree, file, type JsonValue } from '../../src/daemon/control-tree.js';
import { EventLog } from '../../src/daemon/events.js';
import { MetricsRegistry } from '../../src/daemon/metrics.js';
import { mapPictureDir } from '../../src/daemon/map-picture.js';
import { DirtyMap } from '../../src/rmr/dirty-map.js';
import { NodeClock } from '../../src/util/node-ports.js';
import { Collector, checkAction, type ClusterLayout, type DaemonPort, type DaemonReply } from '../../src/dashboard/collector.js';

const CHUNKS = 4096;

class FakeDaemon {
  readonly tree = new ControlTree();
  readonly events: EventLog;
  readonly metrics = new MetricsRegistry();
  readonly maps = new Map<number, DirtyMap>([1, 2, 3].map((id) => [id, new DirtyMap(id, CHUNKS)]));
  readonly api: ControlApi;
  up = true;
  requests: string[] = [];
  writes: { path: string; value: string }[] = [];
  status: () => JsonValue;
  constructor(readonly name: string, side: 'server' | 'client', status: () => JsonValue) {
    this.status = status;
    this.events = new EventLog({ daemon: name, capacity: 100, wall_ms: () => Date.now() });
    this.api = new ControlApi({ tree: this.tree, events: this.events, metrics: this.metrics, status: () => this.status(), clock: new NodeClock({ unref: true }), token: null });
    const base = side === 'server' ? 'rmr-server/pools/p' : 'rmr-client/pools/p';
    this.tree.mount(`${base}/map_picture`, mapPictureDir(() => this.maps));
    for (const f of ['sync', 'sync_rate']) this.tree.mount(`rmr-server/pools/p/${f}`, file({ write: (v) => void this.writes.push({ path: f, value: v }) }));
    this.tree.mount('rmr-client/pools/p/verify', file({ read: () => '', json: () => ({ state: 'idle', chunks_done: 0, chunks_total: 0, differing: 0 }), write: (v) => void this.writes.push({ path: 'verify', value: v }) }));
  }
  port(): DaemonPort {
    return {
      name: this.name,
      request: async (method, path, body): Promise<DaemonReply> => {
        if (!this.up) throw new Error(`cannot reach ${this.name} (ECONNREFUSED)`);
        this.requests.push(`${method} ${path}`);
        const r = await this.api.handle({ method, url: path, headers: {}, body: Buffer.from(body ?? ''), via: 'unix' });
        if (r.kind !== 'body') throw new Error('no streams here');
        return { status: r.status, headers: r.headers, body: r.body };
      },
      local: () => (this.up ? null : { running: false, pid: null, evidence: 'pid 1 has exited' }),
    };
  }
}

function serverStatus(name: string, member: number, state: () => string, sync: () => JsonValue): () => JsonValue {
  return () => ({
    daemon: { name, pid: 1, state: 'running', started_at: '2026-01-01T00:00:00.000Z' },
    roles: [{ name: 'storage', state: 'running', status: { state: 'ok', legs: [{ pool: 'p', side: 'server', member_id: member, session: null, state: state(), dirty_chunks: 0, total_chunks: CHUNKS }], detail: { listen: `127.0.0.1:${1000 + member}`, pending: {}, sync: { p: sync() } } } }],
  });
}

function world(): { stg: FakeDaemon[]; cli: FakeDaemon; layout: ClusterLayout; legState: Map<number, string>; serverState: Map<number, string>; syncState: Map<number, string>; synced: Map<number, number> } {
  const synced = new Map([1, 2, 3].map((i) => [i, 0]));
  const serverState = new Map([1, 2, 3].map((i) => [i, 'normal']));
  const syncState = new Map([1, 2, 3].map((i) => [i, 'stopped']));
  const legState = new Map([1, 2, 3].map((i) => [i, 'normal']));
  const stg = [1, 2, 3].map((i) => new FakeDaemon(`stg${i}`, 'server', serverStatus(`stg${i}`, i, () => serverState.get(i) ?? '?', () => ({ state: syncState.get(i) ?? '?', dirty_chunks: 0, total_chunks: CHUNKS, synced_bytes: synced.get(i) ?? 0, bytes_per_s: 0, eta_s: null, rate_limit_bytes_per_s: 1 << 30, last_error: null }))));
  const cli = new FakeDaemon('cli', 'client', () => ({
    daemon: { name: 'cli', pid: 9, state: 'running', started_at: '2026-01-01T00:00:00.000Z' },
    roles: [{ name: 'client', state: 'running', status: { state: 'ok', legs: [1, 2, 3].map((i) => ({ pool: 'p', side: 'client', member_id: i, session: `cli@stg${i}`, state: legState.get(i) ?? '?', dirty_chunks: 0, total_chunks: CHUNKS })), detail: { devices: [{ name: 'disk0', pool: 'p', export: 'disk0', uris: ['nbd://127.0.0.1:1/disk0'], state: 'ready', degraded: legState.get(2) !== 'normal' }], pending: {} } } }],
  }));
  const layout: ClusterLayout = { cluster: 't', nodes: [...stg, cli].map((d) => d.port()), pools: [{ name: 'p', chunk_size: 131072, members: [1, 2, 3].map((i) => ({ node: `stg${i}`, member_id: i })) }], client_node: 'cli' };
  return { stg, cli, layout, legState, serverState, syncState, synced };
}

test('health, map sources and pictures follow a member that goes down and comes back', async () => {
  const w = world();
  let now = 1_000_000;
  const c = new Collector(w.layout, () => now, { interval_ms: 1000, history_points: 10 });
  const u1 = await c.tick();
  assert.deepEqual(u1.state.pools[0]?.members.map((m) => [m.member_id, m.health, m.map_seen_by]), [[1, 'normal', 'stg1'], [2, 'normal', 'stg2'], [3, 'normal', 'stg3']]);
  assert.equal(Object.keys(u1.pictures).length, 3, 'first tick: every picture');
  assert.equal(u1.state.health.problems.length, 0);
  assert.deepEqual(u1.state.devices.map((d) => [d.name, d.health]), [['disk0', 'normal']]);
  // Nothing changed: versions are read, no picture is.
  for (const d of w.stg) d.requests = [];
  now += 1000;
  const u2 = await c.tick();
  assert.deepEqual(Object.keys(u2.pictures), []);
  assert.ok(w.stg.every((d) => !d.requests.some((r) => /map_picture\/[0-9]/.test(r))), 'no picture read for unchanged maps');
  // stg2 dies; the client's leg fails; stg1 records what member 2 misses.
  w.stg[1]!.up = false;
  w.legState.set(2, 'failed');
  w.stg[0]!.maps.get(2)?.setDirty(100, 50);
  now += 1000;
  const u3 = await c.tick();
  const m2 = u3.state.pools[0]?.members[1];
  assert.equal(m2?.health, 'down');
  assert.match(m2?.reason ?? '', /daemon stg2 does not answer/);
  assert.equal(m2?.map_seen_by, 'stg1', 'a serving peer tells the map of a member that is down');
  assert.deepEqual(Object.keys(u3.pictures), ['p/2']);
  assert.equal(u3.pictures['p/2']?.dirty, 50);
  assert.equal(u3.state.health.daemons_down, 1);
  assert.match(u3.state.health.problems[0] ?? '', /daemon stg2/);
  assert.equal(u3.state.devices[0]?.health, 'degraded');
  // Every storage node down: the client's record is shown.
  w.stg[0]!.up = false;
  w.stg[2]!.up = false;
  w.cli.maps.get(2)?.setDirty(0, 10);
  now += 1000;
  const u4 = await c.tick();
  assert.equal(u4.state.pools[0]?.members[1]?.map_seen_by, 'cli');
  assert.equal(u4.pictures['p/2']?.dirty, 10);
  // Back, not serving yet (no_io): a peer still tells; then serving and syncing: its own map.
  for (const d of w.stg) d.up = true;
  w.serverState.set(2, 'no_io');
  now += 1000;
  const u5 = await c.tick();
  assert.equal(u5.state.pools[0]?.members[1]?.map_seen_by, 'stg1');
  assert.equal(u5.state.pools[0]?.members[1]?.health, 'degraded');
  assert.match(u5.state.pools[0]?.members[1]?.reason ?? '', /server pool no_io; client leg failed; 50 dirty chunks, sync stopped/);
  w.serverState.set(2, 'normal');
  w.legState.set(2, 'normal');
  w.syncState.set(2, 'running');
  w.stg[1]!.maps.get(2)?.setDirty(100, 40);
  now += 1000;
  const u6 = await c.tick();
  assert.equal(u6.state.pools[0]?.members[1]?.map_seen_by, 'stg2');
  assert.equal(u6.state.pools[0]?.members[1]?.health, 'syncing');
  assert.equal(u6.pictures['p/2']?.dirty, 40);
  assert.equal(u6.state.health.members.syncing, 1);
});

test('charts: counter rates and latency quantiles between two scrapes', async () => {
  const w = world();
  let now = 0;
  const ios = w.cli.metrics.counter('rmr_device_io_total', 'x', ['device', 'op']);
  const lat = w.cli.metrics.histogram('rmr_device_io_duration_seconds', 'x', ['device', 'op'], [0.001, 0.01, 0.1]);
  // Series exist from the first scrape on (as the daemons' collected counters do).
  ios.inc({ device: 'disk0', op: 'write' }, 0);
  ios.inc({ device: 'disk0', op: 'trim' }, 0);
  lat.observe({ device: 'disk0', op: 'write' }, 0.005);
  const c = new Collector(w.layout, () => now, { interval_ms: 1000, history_points: 3 });
  const u1 = await c.tick();
  assert.equal(u1.points.device_iops?.values.every((v) => v === null), true, 'no rate from one scrape');
  ios.inc({ device: 'disk0', op: 'write' }, 500);
  ios.inc({ device: 'disk0', op: 'trim' }, 7);
  for (let i = 0; i < 98; i++) lat.observe({ device: 'disk0', op: 'write' }, 0.005);
  lat.observe({ device: 'disk0', op: 'write' }, 0.05);
  lat.observe({ device: 'disk0', op: 'write' }, 0.05);
  w.synced.set(2, 8 << 20);
  now += 2000;
  const u2 = await c.tick();
  const iops = u2.points.device_iops;
  assert.deepEqual(iops?.labels, ['disk0/write']);
  assert.equal(iops?.values[0], 250, '500 writes in 2 s');
  const l = u2.points.device_latency;
  const p50 = l?.values[l.labels.indexOf('disk0/write p50')];
  const p99 = l?.values[l.labels.indexOf('disk0/write p99')];
  assert.ok(p50 !== null && p50 !== undefined && p50 > 0.001 && p50 <= 0.01, `p50 ${String(p50)} in the 1-10 ms bucket`);
  assert.ok(p99 !== null && p99 !== undefined && p99 > 0.01 && p99 <= 0.1, `p99 ${String(p99)} in the 10-100 ms bucket`);
  const s = u2.points.sync_bytes;
  assert.equal(s?.values[s.labels.indexOf('p stg2')], 4 << 20, 'resync bytes per second on its own chart (from the status)');
  assert.ok(w.stg.every((d) => !d.requests.some((r) => r.includes('/metrics'))), 'storage daemons are not asked for their metrics');
  // History is bounded.
  for (let i = 0; i < 5; i++) {
    now += 1000;
    await c.tick();
  }
  const snap = c.snapshot();
  assert.ok(snap.charts.every((ch) => ch.t.length === 3 && ch.values.every((v) => v.length === 3)));
});

test('events of every daemon reach the feed once, in time order', async () => {
  const w = world();
  const c = new Collector(w.layout, () => 0, { interval_ms: 1000, history_points: 3 });
  w.stg[0]!.events.emit({ kind: 'sync', subject: 'p', from: 'stopped', to: 'running' });
  const u1 = await c.tick();
  assert.deepEqual(u1.events.map((e) => [e.node, e.kind, e.subject]), [['stg1', 'sync', 'p']]);
  const u2 = await c.tick();
  assert.deepEqual(u2.events, [], 'not twice');
  w.cli.events.emit({ kind: 'device', subject: 'disk0', to: 'degraded' });
  const u3 = await c.tick();
  assert.equal(u3.events.length, 1);
  assert.equal(c.snapshot().events.length, 2);
});

test('actions: checked field by field, then the control-tree writes of rmr sync and rmr verify', async () => {
  const w = world();
  const c = new Collector(w.layout, () => 0, { interval_ms: 1000, history_points: 3 });
  await c.tick();
  for (const [bad, why] of [
    [null, /op must be/],
    [{ op: 'rm -rf', pool: 'p' }, /op must be/],
    [{ op: 'sync_start', pool: '../x' }, /pool/],
    [{ op: 'sync_start', pool: 'q', node: 'stg1' }, /no pool q/],
    [{ op: 'sync_start', pool: 'p', node: 'cli' }, /node/],
    [{ op: 'sync_start', pool: 'p', node: 'stg1', evil: 1 }, /unknown field/],
    [{ op: 'sync_rate', pool: 'p', node: 'stg1', bytes_per_s: 10 }, /bytes_per_s/],
    [{ op: 'sync_rate', pool: 'p', node: 'stg1', bytes_per_s: '100M' }, /bytes_per_s/],
    [{ op: 'verify_start', pool: 'p', source: 9 }, /source/],
    [{ op: 'verify_start', pool: 'p', node: 'stg1' }, /node: not for verify/],
  ] as const) {
    const r = checkAction(bad, w.layout);
    assert.equal(typeof r, 'string', JSON.stringify(bad));
    assert.match(r as string, why);
    const a = await c.act(bad);
    assert.equal(a.ok, false);
  }
  assert.deepEqual(w.stg.flatMap((d) => d.writes), [], 'nothing refused was written');
  assert.equal((await c.act({ op: 'sync_stop', pool: 'p', node: 'stg2' })).ok, true);
  assert.equal((await c.act({ op: 'sync_rate', pool: 'p', node: 'stg2', bytes_per_s: 8 << 20 })).ok, true);
  assert.equal((await c.act({ op: 'verify_start', pool: 'p', source: 1, bytes_per_s: 1 << 20 })).ok, true);
  assert.deepEqual(w.stg[1]?.writes, [{ path: 'sync', value: 'stop' }, { path: 'sync_rate', value: String(8 << 20) }]);
  assert.deepEqual(w.cli.writes, [{ path: 'verify', value: `start source=1 rate=${1 << 20}` }]);
  w.stg[2]!.up = false;
  const down = await c.act({ op: 'sync_start', pool: 'p', node: 'stg3' });
  assert.equal(down.ok, false);
  assert.match(down.error ?? '', /stg3: cannot reach/);
});
