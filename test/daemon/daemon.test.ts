// The daemon in-process: role plug-ins start in order and stop in reverse, a failed start
// rolls back, and the control API's routing (pure ControlApi.handle) answers every misuse
// with a JSON error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Daemon, type Role } from '../../src/daemon/daemon.js';
import { resolveDaemonConfig } from '../../src/daemon/config.js';
import { roFile, dynamicDir, dir } from '../../src/daemon/control-tree.js';
import { ControlApi, type ApiRequest, type ApiResponse } from '../../src/daemon/control-api.js';
import { EventLog } from '../../src/daemon/events.js';
import { MetricsRegistry } from '../../src/daemon/metrics.js';
import { ControlTree } from '../../src/daemon/control-tree.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { buildRoles } from '../../src/daemon/node-daemon.js';
import { ConfigError } from '../../src/daemon/validate.js';
import { parseProm } from './prom-parse.js';

const env = { hostname: 'h', state_root: '/tmp/none', vars: {} };

function fakeRole(name: string, log: string[], failStart = false): Role {
  return {
    name,
    mounts: () => ({ [`${name}/state`]: roFile(() => 'ok') }),
    start: () => {
      log.push(`start ${name}`);
      return failStart ? Promise.reject(new Error(`${name} cannot open its store`)) : Promise.resolve();
    },
    stop: () => {
      log.push(`stop ${name}`);
      return Promise.resolve();
    },
    status: () => ({ state: 'ok', legs: [{ pool: 'p1', side: 'client', member_id: 1, session: 's', state: 'normal' }] }),
  };
}

function daemon(roles: Role[]): Daemon {
  return new Daemon({ config: resolveDaemonConfig({ name: 'n1' }, env), logger: new MemoryLogger(), clock: new SimClock(), wall_ms: () => 1_700_000_000_000, roles, version: 't', pid: 1 });
}

test('roles start in order, stop in reverse; states are events', async () => {
  const log: string[] = [];
  const d = daemon([fakeRole('storage', log), fakeRole('client', log)]);
  await d.start();
  assert.equal(d.state, 'running');
  assert.equal(await d.tree.read('client/state'), 'ok\n');
  assert.equal(await d.tree.read('daemon/roles/storage/state'), 'running\n');
  assert.equal(await d.stop(), true);
  assert.deepEqual(log, ['start storage', 'start client', 'stop client', 'stop storage']);
  const kinds = d.events.since(0).events.map((e) => `${e.kind}:${e.subject}:${e.to ?? ''}`);
  assert.deepEqual(kinds, [
    'daemon:n1:starting', 'role:storage:starting', 'role:storage:running', 'role:client:starting', 'role:client:running', 'daemon:n1:running',
    'daemon:n1:stopping', 'role:client:stopping', 'role:client:stopped', 'role:storage:stopping', 'role:storage:stopped', 'daemon:n1:stopped',
  ]);
  const st = d.status() as { roles: { name: string; state: string }[] };
  assert.deepEqual(st.roles.map((r) => [r.name, r.state]), [['storage', 'stopped'], ['client', 'stopped']]);
});

test('a role that fails to start stops the ones before it and fails the daemon', async () => {
  const log: string[] = [];
  const d = daemon([fakeRole('a', log), fakeRole('b', log, true), fakeRole('c', log)]);
  await assert.rejects(d.start(), /role b failed to start: b cannot open its store/);
  assert.deepEqual(log, ['start a', 'start b', 'stop a']);
  assert.equal(d.state, 'failed');
  const failed = d.events.since(0).events.find((e) => e.subject === 'b' && e.to === 'failed');
  assert.deepEqual(failed?.detail, { reason: 'internal error: b cannot open its store' });
});

test('unknown roles in the config are named', () => {
  const c = resolveDaemonConfig({ data: { listen: '127.0.0.1:1234' }, roles: { storage: {}, client: null } }, env);
  assert.throws(() => buildRoles(c, {}), (e: unknown) => e instanceof ConfigError && e.problems[0] === 'roles.storage: unknown role (known: none in this build)');
  const roles = buildRoles(c, { storage: () => fakeRole('storage', []), client: () => fakeRole('client', []) });
  assert.deepEqual(roles.map((r) => r.name), ['storage', 'client']);
});

// ---- ControlApi routing ----

function api(token: string | null = null): { api: ControlApi; events: EventLog; clock: SimClock; metrics: MetricsRegistry } {
  const clock = new SimClock();
  const tree = new ControlTree();
  const pools = ['p1', 'p0'];
  tree.mount('rmr-client/pools', dynamicDir(() => pools, (n) => (pools.includes(n) ? dir({ chunk_size: roFile(() => '131072') }) : undefined)));
  tree.mount('rmr-client/sessions/s@h/state', roFile(() => 'connected'));
  const events = new EventLog({ daemon: 'n1', capacity: 100, wall_ms: () => 0 });
  const metrics = new MetricsRegistry();
  return { api: new ControlApi({ tree, events, metrics, status: () => ({ ok: true }), clock, token }), events, clock, metrics };
}

function req(method: string, url: string, body = '', headers: Record<string, string> = {}, via: 'unix' | 'tcp' = 'unix'): ApiRequest {
  return { method, url, headers, body: Buffer.from(body), via };
}

function body(r: ApiResponse): { status: number; text: string; headers: Readonly<Record<string, string>> } {
  assert.equal(r.kind, 'body');
  if (r.kind !== 'body') throw new Error('unreachable');
  return { status: r.status, text: r.body, headers: r.headers };
}

function errorOf(r: ApiResponse): [number, string, string] {
  const b = body(r);
  const j = JSON.parse(b.text) as { error: { code: string; message: string } };
  return [b.status, j.error.code, j.error.message];
}

test('tree routes: ls, read, JSON views, percent-encoded names', async () => {
  const { api: a } = api();
  assert.equal(body(await a.handle(req('GET', '/v1/tree/'))).text, 'rmr-client/\n');
  assert.equal(body(await a.handle(req('GET', '/v1/tree/rmr-client/pools'))).text, 'p1/\np0/\n');
  assert.equal(body(await a.handle(req('GET', '/v1/tree/rmr-client/pools/p1/chunk_size'))).text, '131072\n');
  assert.equal(body(await a.handle(req('GET', '/v1/tree/rmr-client/sessions/s%40h/state'))).text, 'connected\n');
  assert.deepEqual(JSON.parse(body(await a.handle(req('GET', '/v1/tree/rmr-client/pools/p1/chunk_size?json'))).text), { value: '131072' });
});

test('hostile and wrong requests get 4xx JSON errors', async () => {
  const { api: a } = api();
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/tree/rmr-client/../../etc/passwd'))), [400, 'EINVAL', "path component '..' is not allowed"]);
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/tree/rmr-client/%2e%2e/x'))), [400, 'EINVAL', "path component '..' is not allowed"]);
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/tree/a%2Fb'))), [400, 'EINVAL', "path component 'a/b' contains an encoded slash"]);
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/tree/%E0%A4%A'))), [400, 'EINVAL', "path component '%E0%A4%A' is not valid percent-encoding"]);
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/tree/nope'))), [404, 'ENOENT', 'no such file or directory: nope']);
  assert.deepEqual(errorOf(await a.handle(req('PUT', '/v1/tree/rmr-client/pools/p1/chunk_size', '1'))), [405, 'EACCES', 'rmr-client/pools/p1/chunk_size is read-only']);
  assert.deepEqual(errorOf(await a.handle(req('DELETE', '/v1/tree/x'))), [405, 'EOPNOTSUPP', 'method DELETE not allowed here (allowed: GET, PUT, POST)']);
  assert.deepEqual(errorOf(await a.handle(req('POST', '/v1/status'))), [405, 'EOPNOTSUPP', 'method POST not allowed here (allowed: GET)']);
  assert.deepEqual(errorOf(await a.handle(req('GET', '/etc/passwd'))), [404, 'ENOENT', 'no such endpoint: /etc/passwd (try /v1/tree/, /v1/status, /v1/events, /metrics)']);
  assert.deepEqual(errorOf(await a.handle(req('GET', 'http://evil/v1/status'))), [400, 'EINVAL', 'request target must be an absolute path']);
  assert.deepEqual(errorOf(await a.handle(req('GET', `/v1/tree/${'a'.repeat(3000)}`))), [400, 'EINVAL', 'request target longer than 2048 characters']);
  assert.deepEqual(errorOf(await a.handle(req('PUT', '/v1/tree/x', '{bad', { 'content-type': 'application/json' }))), [400, 'EINVAL', 'body is not valid JSON (send {"value": "..."} or a text/plain body)']);
  assert.deepEqual(errorOf(await a.handle(req('PUT', '/v1/tree/x', '[1]', { 'content-type': 'application/json' }))), [400, 'EINVAL', 'JSON body must be {"value": "<string>"}']);
  const bad = await a.handle({ method: 'PUT', url: '/v1/tree/x', headers: {}, body: Buffer.from([0xff, 0xfe]), via: 'unix' });
  assert.deepEqual(errorOf(bad), [400, 'EINVAL', 'body is not valid UTF-8']);
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/events?since=-1'))), [400, 'EINVAL', "query parameter since: '-1' is not a non-negative integer"]);
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/events?wait_ms=999999'))), [400, 'EINVAL', 'query parameter wait_ms: 999999 is outside 0..60000']);
});

test('TCP requests need the bearer token; unix requests do not', async () => {
  const { api: a } = api('0123456789abcdef-token');
  assert.equal(body(await a.handle(req('GET', '/v1/status'))).status, 200);
  const denied = await a.handle(req('GET', '/v1/status', '', {}, 'tcp'));
  assert.deepEqual(errorOf(denied), [401, 'EKEYREJECTED', 'missing or wrong bearer token (Authorization: Bearer <token>)']);
  assert.equal(body(denied).headers['www-authenticate'], 'Bearer');
  assert.equal(errorOf(await a.handle(req('GET', '/v1/status', '', { authorization: 'Bearer wrong' }, 'tcp')))[0], 401);
  assert.equal(body(await a.handle(req('GET', '/v1/status', '', { authorization: 'Bearer 0123456789abcdef-token' }, 'tcp'))).status, 200);
  const { api: none } = api(null);
  assert.equal(errorOf(await none.handle(req('GET', '/v1/status', '', { authorization: 'Bearer x' }, 'tcp')))[0], 401);
});

test('events: since, long poll woken by an event or the deadline, follow', async () => {
  const { api: a, events, clock, metrics } = api();
  events.emit({ kind: 'k', subject: 'a' });
  const r1 = body(await a.handle(req('GET', '/v1/events?since=0')));
  assert.equal(r1.text.split('\n').filter((l) => l !== '').length, 1);
  assert.equal(r1.headers['x-rmr-events-next'], '1');
  const waiting = a.handle(req('GET', '/v1/events?since=1&wait_ms=5000'));
  await new Promise((r) => setImmediate(r));
  events.emit({ kind: 'k', subject: 'b' });
  const r2 = body(await waiting);
  assert.equal((JSON.parse(r2.text) as { subject: string }).subject, 'b');
  const idle = a.handle(req('GET', '/v1/events?since=2&wait_ms=5000'));
  await new Promise((r) => setImmediate(r));
  clock.runUntil(5000);
  assert.equal(body(await idle).text, '');
  const f = await a.handle(req('GET', '/v1/events?since=1&follow=1'));
  assert.deepEqual(f.kind === 'follow' ? f.since : -1, 1);
  const prom = parseProm(metrics.expose());
  const ev = prom.get('rmr_control_requests_total')?.samples.find((s) => s.labels.route === 'events' && s.labels.code === '200');
  assert.equal(ev?.value, 4);
  a.close();
  assert.deepEqual(errorOf(await a.handle(req('GET', '/v1/status'))).slice(0, 2), [503, 'ESHUTDOWN']);
});
