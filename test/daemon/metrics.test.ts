// Metrics exposition: parsed back with a strict text-format parser; label escaping,
// cumulative buckets, +Inf, _sum/_count, naming rules and the series bound.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MetricsRegistry, formatValue } from '../../src/daemon/metrics.js';
import { parseProm } from './prom-parse.js';

test('counters, gauges and histograms parse back with their values', () => {
  const r = new MetricsRegistry();
  const io = r.counter('rmr_client_io_total', 'IOs completed by a client pool.', ['pool', 'op']);
  const bytes = r.counter('rmr_client_io_bytes_total', 'Bytes moved.', ['pool']);
  const legs = r.gauge('rmr_client_legs', 'Legs per state.', ['pool', 'state']);
  const up = r.gauge('rmr_daemon_up', 'Always 1.');
  const lat = r.histogram('rmr_client_io_duration_seconds', 'IO latency.', ['pool'], [0.001, 0.01, 0.1]);
  io.inc({ pool: 'p1', op: 'write' });
  io.inc({ pool: 'p1', op: 'write' }, 2);
  io.inc({ pool: 'p1', op: 'read' });
  bytes.inc({ pool: 'p1' }, 4096);
  legs.set({ pool: 'p1', state: 'normal' }, 2);
  legs.dec({ pool: 'p1', state: 'normal' });
  up.set(undefined, 1);
  for (const v of [0.0005, 0.001, 0.005, 0.05, 3]) lat.observe({ pool: 'p1' }, v);
  const text = r.expose();
  const f = parseProm(text);
  const c = f.get('rmr_client_io_total');
  assert.equal(c?.type, 'counter');
  assert.equal(c?.help, 'IOs completed by a client pool.');
  assert.deepEqual(c?.samples, [
    { name: 'rmr_client_io_total', labels: { pool: 'p1', op: 'read' }, value: 1 },
    { name: 'rmr_client_io_total', labels: { pool: 'p1', op: 'write' }, value: 3 },
  ]);
  assert.equal(f.get('rmr_client_io_bytes_total')?.samples[0]?.value, 4096);
  assert.equal(f.get('rmr_client_legs')?.samples[0]?.value, 1);
  assert.deepEqual(f.get('rmr_daemon_up')?.samples, [{ name: 'rmr_daemon_up', labels: {}, value: 1 }]);
  const h = f.get('rmr_client_io_duration_seconds');
  assert.equal(h?.type, 'histogram');
  const buckets = h?.samples.filter((s) => s.name.endsWith('_bucket')).map((s) => [s.labels.le, s.value]);
  // Cumulative; a value equal to a bound falls into that bucket (le = less or equal).
  assert.deepEqual(buckets, [['0.001', 2], ['0.01', 3], ['0.1', 4], ['+Inf', 5]]);
  assert.equal(h?.samples.find((s) => s.name.endsWith('_count'))?.value, 5);
  assert.ok(Math.abs((h?.samples.find((s) => s.name.endsWith('_sum'))?.value ?? 0) - 3.0565) < 1e-9);
  assert.equal(f.get('rmr_metrics_series_dropped_total')?.samples[0]?.value, 0);
  // Families come sorted by name, each HELP then TYPE then samples.
  assert.deepEqual([...f.keys()], ['rmr_client_io_bytes_total', 'rmr_client_io_duration_seconds', 'rmr_client_io_total', 'rmr_client_legs', 'rmr_daemon_up', 'rmr_metrics_series_dropped_total']);
});

test('label values and help text are escaped and round-trip', () => {
  const r = new MetricsRegistry();
  const hostile = 'a"b\\c\nd}e,f="g"';
  r.counter('rmr_weird_total', 'Help with \\ backslash\nand newline.', ['pool']).inc({ pool: hostile });
  const text = r.expose();
  assert.ok(text.includes('rmr_weird_total{pool="a\\"b\\\\c\\nd}e,f=\\"g\\""} 1\n'), text);
  const f = parseProm(text);
  assert.equal(f.get('rmr_weird_total')?.samples[0]?.labels.pool, hostile);
  assert.equal(f.get('rmr_weird_total')?.help, 'Help with \\ backslash\nand newline.');
});

test('special values use the text-format spellings', () => {
  assert.equal(formatValue(Infinity), '+Inf');
  assert.equal(formatValue(-Infinity), '-Inf');
  assert.equal(formatValue(NaN), 'NaN');
  assert.equal(formatValue(0.25), '0.25');
  const r = new MetricsRegistry();
  r.gauge('rmr_eta_seconds', 'Sync ETA.').set(undefined, Infinity);
  assert.equal(parseProm(r.expose()).get('rmr_eta_seconds')?.samples[0]?.value, Infinity);
});

test('collect gauges are read at scrape time and forget vanished series', () => {
  const r = new MetricsRegistry();
  let dirty: [string, number][] = [['42', 10], ['43', 0]];
  r.gauge('rmr_server_dirty_chunks', 'Dirty chunks per member.', ['member_id'], () => dirty.map(([m, n]) => [{ member_id: m }, n] as const));
  assert.equal(parseProm(r.expose()).get('rmr_server_dirty_chunks')?.samples.length, 2);
  dirty = [['42', 3]];
  assert.deepEqual(parseProm(r.expose()).get('rmr_server_dirty_chunks')?.samples, [{ name: 'rmr_server_dirty_chunks', labels: { member_id: '42' }, value: 3 }]);
});

test('naming and label rules are enforced at registration', () => {
  const r = new MetricsRegistry();
  assert.throws(() => r.counter('rmr_io', 'x'), /end in _total/);
  assert.throws(() => r.gauge('io_bytes', 'x'), /must start with rmr_/);
  assert.throws(() => r.gauge('rmr-io', 'x'), /not a valid Prometheus name/);
  assert.throws(() => r.gauge('rmr_a', 'x', ['__x']), /not a valid label name/);
  assert.throws(() => r.gauge('rmr_a', 'x', ['a', 'a']), /given twice/);
  assert.throws(() => r.histogram('rmr_h', 'x', ['le']), /reserved/);
  assert.throws(() => r.histogram('rmr_h_count', 'x'), /suffix/);
  assert.throws(() => r.histogram('rmr_h', 'x', [], [1, 1]), /strictly increasing/);
  r.gauge('rmr_a', 'x', ['pool']);
  assert.throws(() => r.gauge('rmr_a', 'x'), /already registered/);
  const c = r.counter('rmr_c_total', 'x', ['pool']);
  assert.throws(() => c.inc({ pool: 'p', extra: 'y' }), /takes labels \{pool\}/);
  assert.throws(() => c.inc(), /takes labels \{pool\}/);
  assert.throws(() => c.inc({ pool: 'p' }, -1), /cannot go down/);
});

test('series beyond the bound are dropped and counted', () => {
  const r = new MetricsRegistry({ series_max: 3 });
  const c = r.counter('rmr_c_total', 'x', ['k']);
  for (let i = 0; i < 5; i++) c.inc({ k: String(i) });
  const f = parseProm(r.expose());
  assert.equal(f.get('rmr_c_total')?.samples.length, 3);
  assert.equal(f.get('rmr_metrics_series_dropped_total')?.samples[0]?.value, 2);
  c.remove({ k: '0' });
  c.inc({ k: '9' });
  assert.equal(parseProm(r.expose()).get('rmr_c_total')?.samples.length, 3);
});

test('the test parser itself rejects invalid expositions', () => {
  assert.throws(() => parseProm('rmr_x 1\n'), /before any HELP/);
  assert.throws(() => parseProm('# HELP rmr_x h\n# TYPE rmr_x counter\nrmr_x{a="b} 1\n'), /unterminated|bad/);
  assert.throws(() => parseProm('# HELP rmr_x h\n# TYPE rmr_x counter\nrmr_x one\n'), /bad value/);
  assert.throws(() => parseProm('# HELP rmr_x h\n# TYPE rmr_x counter\nrmr_y 1\n'), /outside its family/);
  assert.throws(() => parseProm('# HELP rmr_x h'), /newline/);
});

test('series handles (series_of) count into the same series as labelled calls and survive remove', () => {
  const r = new MetricsRegistry();
  const io = r.counter('rmr_leg_io_total', 'IOs.', ['leg']);
  const lat = r.histogram('rmr_leg_io_duration_seconds', 'Latency.', ['leg'], [0.001, 0.01]);
  assert.throws(() => io.series_of({ nope: 'x' }), /takes labels \{leg\}/);
  const a = io.series_of({ leg: 'a' });
  const h = lat.series_of({ leg: 'a' });
  // Nothing is exposed before the first use, as with labelled calls.
  assert.equal(parseProm(r.expose()).get('rmr_leg_io_total')?.samples.length ?? 0, 0);
  a.inc();
  a.inc(2);
  io.inc({ leg: 'a' });
  h.observe(0.005);
  assert.equal(io.get({ leg: 'a' }), 4);
  assert.throws(() => a.inc(-1), /cannot go down/);
  io.remove({ leg: 'a' });
  a.inc();
  assert.equal(io.get({ leg: 'a' }), 1);
  const f = parseProm(r.expose());
  assert.equal(f.get('rmr_leg_io_duration_seconds')?.samples.find((s) => s.name.endsWith('_count'))?.value, 1);
});
