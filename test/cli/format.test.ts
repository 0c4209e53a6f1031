// What operators read: tables, `rmr status`, log lines.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatTable, formatStatus, formatDuration } from '../../src/cli/format.js';
import { formatLogLine } from '../../src/daemon/log-format.js';

test('tables align columns, right-align numbers and show missing cells as -', () => {
  const t = formatTable(['pool', 'member', 'state'], [
    ['ionos_pool', 42, 'normal'],
    ['p2', 7, null],
  ]);
  assert.equal(t, 'POOL        MEMBER  STATE\nionos_pool      42  normal\np2               7  -\n');
  assert.equal(formatTable(['a'], []), 'A\n');
  assert.equal(formatTable(['a', 'b'], [['x\ny', true]]), 'A    B\nx y  yes\n');
});

test('status shows the daemon, roles and a leg table', () => {
  const s = formatStatus({
    daemon: { name: 'stg1', state: 'running', pid: 12, uptime_seconds: 3725, version: '0.1.0', control_socket: '/run/rmr/stg1/control.sock', last_event_seq: 9 },
    roles: [
      {
        name: 'storage',
        state: 'running',
        status: {
          state: 'ok',
          legs: [
            { pool: 'p1', side: 'server', member_id: 42, session: null, state: 'normal', dirty_chunks: 0, total_chunks: 8192 },
            { pool: 'p1', side: 'client', member_id: 43, session: 'stg1@stg2', state: 'reconnecting', dirty_chunks: 17 },
          ],
        },
      },
    ],
  });
  assert.equal(
    s,
    'daemon stg1  running  pid 12  up 1h2m  version 0.1.0\n' +
      'control /run/rmr/stg1/control.sock  events 9\n' +
      '\n' +
      'ROLE     STATE    DETAIL\n' +
      'storage  running  ok\n' +
      '\n' +
      'POOL  SIDE    MEMBER  SESSION    STATE         DIRTY\n' +
      'p1    server      42  -          normal        0/8192\n' +
      'p1    client      43  stg1@stg2  reconnecting  17\n',
  );
  assert.match(formatStatus({ daemon: { name: 'x' }, roles: [] }), /no roles configured/);
  assert.match(formatStatus('garbage'), /^daemon \?/);
});

test('durations', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(61), '1m1s');
  assert.equal(formatDuration(90061), '1d1h');
});

test('log lines: JSON keeps fields, human quotes what needs it', () => {
  const rec = { time_ms: Date.UTC(2026, 0, 1), level: 'warn' as const, daemon: 'n1', msg: 'leg failed\nbadly', fields: { pool: 'p1', reason: 'no route', n: 3, msg: 'clash', skip: undefined } };
  const j = JSON.parse(formatLogLine(rec, 'json')) as Record<string, unknown>;
  assert.deepEqual(j, { time: '2026-01-01T00:00:00.000Z', level: 'warn', daemon: 'n1', msg: 'leg failed\nbadly', pool: 'p1', reason: 'no route', n: 3, field_msg: 'clash' });
  assert.equal(formatLogLine(rec, 'human'), '2026-01-01T00:00:00.000Z WARN  n1: leg failed | badly pool=p1 reason="no route" n=3 msg=clash\n');
});
