// Both gatekeepers against the reference's transition tables (§4.1, §4.3), written out here
// independently as lists of legal moves, and the leg side effects under random sequences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ServerPoolStateMachine, type ServerPoolStateEvent } from '../../src/rmr/server/server-pool-state.js';
import { SERVER_POOL_STATES } from '../../src/rmr/protocol/pool-md.js';
import { LEG_STATES, LegGatekeeper, type LegState, type LegStateEvent, type LegStateHolder } from '../../src/rmr/client/leg-state.js';

test('server pool: exactly the reference transitions are legal, each emits one event', () => {
  const legal = new Set([
    'EMPTY>REGISTERED', 'NO_IO>REGISTERED',
    'REGISTERED>EMPTY', 'NO_IO>EMPTY',
    'REGISTERED>CREATED',
    'CREATED>NORMAL', 'NO_IO>NORMAL',
    'REGISTERED>NO_IO', 'CREATED>NO_IO', 'NORMAL>NO_IO',
  ]);
  for (const from of SERVER_POOL_STATES) {
    for (const to of SERVER_POOL_STATES) {
      const events: ServerPoolStateEvent[] = [];
      const sm = new ServerPoolStateMachine('p', (e) => events.push(e), from);
      const err = sm.change(to, 'test');
      if (from === to) {
        assert.equal(err, null);
        assert.equal(events.length, 0, 'same state: no event');
      } else if (legal.has(`${from}>${to}`)) {
        assert.equal(err, null, `${from} -> ${to}`);
        assert.equal(sm.state, to);
        assert.deepEqual(events, [{ kind: 'server_pool_state', pool: 'p', from, to, reason: 'test' }]);
      } else {
        assert.match(err ?? '', /illegal server pool transition/, `${from} -> ${to} must be refused`);
        assert.equal(sm.state, from);
        assert.equal(events.length, 0);
      }
    }
  }
  assert.equal(new ServerPoolStateMachine('p', () => undefined, 'NORMAL').ioAllowed, true);
  assert.equal(new ServerPoolStateMachine('p', () => undefined, 'NO_IO').ioAllowed, false);
});

function leg(member_id: number, state: LegState, sync = false, maintenance = false): LegStateHolder {
  return { member_id, sync, state, maintenance, was_last_authoritative: false };
}

test('legs: exactly the reference transitions are legal (non-sync, sync, maintenance)', () => {
  const nonSync = new Set([
    'CREATED>NORMAL', 'CREATED>RECONNECTING', 'CREATED>FAILED', 'CREATED>REMOVING',
    'NORMAL>FAILED', 'NORMAL>REMOVING',
    'FAILED>RECONNECTING', 'FAILED>REMOVING',
    'RECONNECTING>NORMAL', 'RECONNECTING>FAILED', 'RECONNECTING>REMOVING',
  ]);
  const maintenanceExtra = new Set(['NORMAL>RECONNECTING']);
  const maintenanceRefused = new Set(['CREATED>NORMAL', 'RECONNECTING>NORMAL']);
  const sync = new Set([
    'CREATED>NORMAL', 'CREATED>FAILED', 'CREATED>REMOVING',
    'NORMAL>FAILED', 'NORMAL>REMOVING',
    'FAILED>NORMAL', 'FAILED>REMOVING',
    'RECONNECTING>NORMAL', 'RECONNECTING>FAILED', 'RECONNECTING>REMOVING',
  ]);
  for (const mode of ['non-sync', 'maintenance', 'sync'] as const) {
    for (const from of LEG_STATES) {
      for (const to of LEG_STATES) {
        if (from === to) continue;
        const pool = { pool: 'p', normal_count: from === 'NORMAL' ? 1 : 0, map_ver: 1, legs: () => [l] };
        const l = leg(1, from, mode === 'sync', mode === 'maintenance');
        const gk = new LegGatekeeper(pool, () => undefined);
        const key = `${from}>${to}`;
        const expected =
          mode === 'sync' ? sync.has(key) : mode === 'maintenance' ? (nonSync.has(key) || maintenanceExtra.has(key)) && !maintenanceRefused.has(key) : nonSync.has(key);
        const err = gk.change(l, to, 'test');
        assert.equal(err === null, expected, `${mode}: ${key} ${err ?? ''}`);
        assert.equal(l.state, expected ? to : from);
      }
    }
  }
});

test('legs: counters and the authoritative flag stay consistent under random transitions', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.array(fc.record({ leg: fc.nat(), to: fc.constantFrom(...LEG_STATES), maint: fc.boolean() }), { maxLength: 60 }),
      (n, steps) => {
        const legs = Array.from({ length: n }, (_, i) => leg(i + 1, 'CREATED'));
        const pool = { pool: 'p', normal_count: 0, map_ver: 1, legs: () => legs };
        const events: LegStateEvent[] = [];
        const gk = new LegGatekeeper(pool, (e) => events.push(e));
        for (const s of steps) {
          const l = legs[s.leg % n] as LegStateHolder;
          const before_ver = pool.map_ver;
          const from = l.state;
          l.maintenance = s.maint;
          const ok = gk.change(l, s.to, 'random') === null;
          if (ok && from !== s.to && s.to === 'FAILED') assert.equal(pool.map_ver, before_ver + 1, 'entering FAILED bumps map_ver');
          else assert.equal(pool.map_ver, before_ver);
          // Invariants of §4.1.
          const normal = legs.filter((x) => x.state === 'NORMAL').length;
          assert.equal(pool.normal_count, normal);
          const auth = legs.filter((x) => x.was_last_authoritative);
          assert.ok(auth.length <= 1, 'at most one authoritative leg');
          if (auth.length === 1) assert.equal(normal, 0, 'never an authoritative leg beside a NORMAL one');
          for (const x of auth) assert.notEqual(x.state, 'REMOVING');
        }
        assert.equal(events.filter((e) => e.from !== e.to).length, events.length);
      },
    ),
    { numRuns: 500 },
  );
});

test('legs: the last NORMAL leg to fail becomes authoritative; a removal never does', () => {
  const legs = [leg(1, 'NORMAL'), leg(2, 'NORMAL')];
  const pool = { pool: 'p', normal_count: 2, map_ver: 5, legs: () => legs };
  const gk = new LegGatekeeper(pool, () => undefined);
  assert.equal(gk.change(legs[0] as LegStateHolder, 'FAILED', 'link down'), null);
  assert.equal(legs[0]?.was_last_authoritative, false);
  assert.equal(gk.change(legs[1] as LegStateHolder, 'FAILED', 'link down'), null);
  assert.equal(legs[1]?.was_last_authoritative, true);
  assert.equal(pool.map_ver, 7);
  const legs2 = [leg(1, 'NORMAL')];
  const pool2 = { pool: 'q', normal_count: 1, map_ver: 1, legs: () => legs2 };
  assert.equal(new LegGatekeeper(pool2, () => undefined).change(legs2[0] as LegStateHolder, 'REMOVING', 'del_sess'), null);
  assert.equal(legs2[0]?.was_last_authoritative, false);
});
