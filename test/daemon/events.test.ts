// The event ring: numbering, since-queries, drop-oldest with a counter, subscribers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventLog, eventLine, formatEvent, type DaemonEvent } from '../../src/daemon/events.js';

function log(capacity: number): EventLog {
  let t = Date.UTC(2026, 0, 2, 3, 4, 5);
  return new EventLog({ daemon: 'n1', capacity, wall_ms: () => t++ });
}

test('events are numbered from 1 and carry daemon and time', () => {
  const l = log(4);
  const e = l.emit({ kind: 'pool_session', subject: 'p1/s1', from: 'created', to: 'normal' });
  assert.deepEqual(e, { seq: 1, time: '2026-01-02T03:04:05.000Z', daemon: 'n1', kind: 'pool_session', subject: 'p1/s1', from: 'created', to: 'normal' });
  assert.equal(l.last_seq, 1);
  assert.equal(formatEvent(e), '1 2026-01-02T03:04:05.000Z n1 pool_session p1/s1 created -> normal');
  assert.deepEqual(JSON.parse(eventLine(e)) as DaemonEvent, e);
  assert.ok(eventLine(e).endsWith('}\n'));
});

test('since returns what came after, oldest first, with a limit', () => {
  const l = log(10);
  for (let i = 0; i < 5; i++) l.emit({ kind: 'k', subject: `s${i}` });
  assert.deepEqual(l.since(0).events.map((e) => e.seq), [1, 2, 3, 4, 5]);
  assert.deepEqual(l.since(3).events.map((e) => e.seq), [4, 5]);
  const r = l.since(1, 2);
  assert.deepEqual(r.events.map((e) => e.seq), [2, 3]);
  assert.equal(r.next, 3);
  assert.equal(r.lost, 0);
  const none = l.since(5);
  assert.deepEqual(none, { events: [], lost: 0, next: 5, reset: false });
});

test('a full ring drops the oldest and says how many a reader lost', () => {
  const l = log(3);
  for (let i = 0; i < 7; i++) l.emit({ kind: 'k', subject: `s${i}` });
  assert.equal(l.dropped_total, 4);
  assert.equal(l.first_seq, 5);
  const r = l.since(0);
  assert.deepEqual(r.events.map((e) => e.seq), [5, 6, 7]);
  assert.equal(r.lost, 4);
  assert.equal(l.since(4).lost, 0);
  assert.equal(l.since(2).lost, 2);
});

test('a since beyond the newest event (an earlier daemon run) starts over', () => {
  const l = log(3);
  l.emit({ kind: 'k', subject: 'a' });
  const r = l.since(99);
  assert.equal(r.reset, true);
  assert.deepEqual(r.events.map((e) => e.seq), [1]);
});

test('subscribers see every event; one that throws does not stop the others', () => {
  const l = log(2);
  const seen: number[] = [];
  l.subscribe(() => {
    throw new Error('bad reader');
  });
  const unsub = l.subscribe((e) => seen.push(e.seq));
  l.emit({ kind: 'k', subject: 'a' });
  l.emit({ kind: 'k', subject: 'b' });
  unsub();
  l.emit({ kind: 'k', subject: 'c' });
  assert.deepEqual(seen, [1, 2]);
  assert.equal(l.subscriber_errors_total, 3);
  assert.equal(l.subscriber_count, 1);
});

test('capacity must be a positive integer', () => {
  assert.throws(() => log(0), /capacity 0/);
});
