// The shipped Prometheus rules and Grafana dashboard against a real Prometheus (Debian's
// package) scraping a real cluster: `promtool check rules` and `promtool test rules` (every
// alert on made-up series); then four daemons with their control API on TCP (bearer token,
// as deploy/prometheus/prometheus.yml scrapes them) brought up by `rmr up` through their
// control URLs, Prometheus scraping them every second, fio writing, stg2 killed: the
// daemon-down and leg-not-normal alerts go pending, then firing (the rules' `for` shortened to
// seconds in a copy); and every query of deploy/grafana/rmr.json evaluates without error
// and returns series.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { MAIN, rmr, rmrOk, until } from '../util/cli-cluster.js';

const BASE = 12000 + (process.pid % 800) * 10;
const PROM_PORT = BASE + 9;
const NBD_PORT = BASE + 8;
const TOKEN = 'prometheus-scrape-token-0123456789';
const RULES = join(process.cwd(), 'deploy/prometheus/rules.yml');
const GRAFANA = join(process.cwd(), 'deploy/grafana/rmr.json');
const NODES = [
  { name: 'stg1', addr: '127.0.0.2', data: BASE, ctl: BASE + 4 },
  { name: 'stg2', addr: '127.0.0.3', data: BASE + 1, ctl: BASE + 5 },
  { name: 'stg3', addr: '127.0.0.4', data: BASE + 2, ctl: BASE + 6 },
  { name: 'cli', addr: '127.0.0.5', data: BASE + 3, ctl: BASE + 7 },
];

let dir = '';
const daemons = new Map<string, ChildProcess>();
let prom: ChildProcess | null = null;
let fio: ChildProcess | null = null;

function startDaemon(n: (typeof NODES)[number]): void {
  const state = join(dir, 'state', n.name);
  mkdirSync(state, { recursive: true, mode: 0o700 });
  const cfg = {
    name: n.name,
    state_dir: state,
    control: { socket: join(state, 'control.sock'), tcp: `${n.addr}:${n.ctl}`, token_file: join(dir, 'token') },
    log: { file: join(state, 'daemon.log'), format: 'json' },
    secret_file: join(dir, 'secret'),
    data: { listen: `${n.addr}:${n.data}` },
    ...(n.name === 'cli' ? { nbd: { socket_dir: join(dir, 'nbd'), tcp: `${n.addr}:${NBD_PORT}` } } : {}),
    roles: n.name === 'cli' ? { client: {} } : { storage: { store_dirs: [dir] } },
  };
  writeFileSync(join(state, 'daemon.yaml'), toYaml(cfg));
  daemons.set(n.name, spawn(process.execPath, [MAIN, 'daemon', '--config', join(state, 'daemon.yaml')], { stdio: 'ignore' }));
}

async function promApi(path: string): Promise<{ status: string; data: unknown; error?: string }> {
  const r = await fetch(`http://127.0.0.1:${PROM_PORT}${path}`);
  return (await r.json()) as { status: string; data: unknown; error?: string };
}

async function query(q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const r = await promApi(`/api/v1/query?query=${encodeURIComponent(q)}`);
  assert.equal(r.status, 'success', `${q}: ${r.error ?? ''}`);
  return (r.data as { result: { metric: Record<string, string>; value: [number, string] }[] }).result;
}

interface Alert {
  labels: Record<string, string>;
  state: string;
}

async function alerts(): Promise<Alert[]> {
  return ((await promApi('/api/v1/alerts')).data as { alerts: Alert[] }).alerts;
}

test('promtool: the rules are valid and every alert passes its unit test', () => {
  const c = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
  assert.equal(c.status, 0, `${c.stdout}${c.stderr}`);
  assert.match(c.stdout, /SUCCESS: 13 rules found/);
  const t = spawnSync('promtool', ['test', 'rules', 'rules.test.yml'], { encoding: 'utf8', cwd: join(process.cwd(), 'deploy/prometheus') });
  assert.equal(t.status, 0, `${t.stdout}${t.stderr}`);
  assert.match(t.stdout, /SUCCESS/);
});

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rmr-prom-'));
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'secret'), 'prometheus-test-cluster-secret-0123456789\n', { mode: 0o600 });
  for (const n of NODES) startDaemon(n);
  writeFileSync(
    join(dir, 'cluster.yaml'),
    toYaml({
      cluster: 'prom',
      state_dir: 'state',
      secret_file: 'secret',
      token_file: 'token',
      nodes: NODES.map((n) => ({ name: n.name, addresses: [n.addr], port: n.data, control_url: `http://${n.addr}:${n.ctl}` })),
      pools: [{ name: 'p', chunk_size: '128K', members: [1, 2, 3].map((i) => ({ node: `stg${i}`, member_id: i })) }],
      stores: [1, 2, 3].map((i) => ({ node: `stg${i}`, pool: 'p', path: `stg${i}.img`, size: '64M' })),
      client: { node: 'cli', devices: [{ name: 'disk0', pool: 'p' }], nbd: { socket_dir: 'nbd', tcp: `127.0.0.5:${NBD_PORT}` } },
    }),
  );
  // The daemons start on their own (as on real hosts); rmr up reaches them by URL and token.
  await until('daemons answer', async () => ((await rmr(['status', '--cluster', join(dir, 'cluster.yaml'), '--json'])).stdout.match(/"reachable": true/g)?.length === 4 ? true : null), 30_000, 200);
  await rmrOk(['up', join(dir, 'cluster.yaml'), '--timeout', '60', '--quiet'], 90_000);
  // Prometheus with the shipped rules, their `for` cut to seconds.
  writeFileSync(join(dir, 'rules.yml'), readFileSync(RULES, 'utf8').replace(/^(\s+for:) \S+$/gm, '$1 3s'));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    toYaml({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: [join(dir, 'rules.yml')],
      scrape_configs: [{ job_name: 'rmr', authorization: { type: 'Bearer', credentials_file: join(dir, 'token') }, static_configs: [{ targets: NODES.map((n) => `${n.addr}:${n.ctl}`) }] }],
    }),
  );
  prom = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${PROM_PORT}`, '--log.level=warn'], { stdio: 'ignore' });
  await until('prometheus ready', async () => ((await fetch(`http://127.0.0.1:${PROM_PORT}/-/ready`).catch(() => null))?.status === 200 ? true : null), 30_000, 200);
});

after(async () => {
  fio?.kill('SIGKILL');
  prom?.kill('SIGTERM');
  await rmr(['down', join(dir, 'cluster.yaml')], 60_000);
  for (const d of daemons.values()) if (d.exitCode === null && d.signalCode === null) d.kill('SIGTERM');
  await Promise.all([...daemons.values(), ...(prom === null ? [] : [prom])].map((p) => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', r)))));
  rmSync(dir, { recursive: true, force: true });
});

test('a real Prometheus scrapes the daemons; a killed member fires its alerts; every Grafana query returns series', async () => {
  await until('every daemon scraped', async () => {
    const up = await query('up{job="rmr"} == 1');
    return up.length === 4 ? true : null;
  }, 30_000, 250);
  // Client IO while a member dies: rates, latencies and leg errors get values.
  fio = spawn('fio', ['--name=w', '--ioengine=nbd', `--uri=nbd://127.0.0.5:${NBD_PORT}/disk0`, '--rw=randrw', '--bs=4k', '--iodepth=8', '--rate_iops=300', '--time_based', '--runtime=8', '--size=64M'], { stdio: 'ignore' });
  const fioDone = new Promise<number | null>((r) => fio?.on('exit', (c) => r(c)));
  await until('IO seen by Prometheus', async () => ((await query('sum(rate(rmr_device_io_total[5s])) > 50')).length > 0 ? true : null), 30_000, 250);
  const stg2 = NODES[1] as (typeof NODES)[number];
  daemons.get('stg2')?.kill('SIGKILL');
  const instance = `${stg2.addr}:${stg2.ctl}`;
  const seen = new Map<string, Set<string>>();
  await until('RmrDaemonDown and RmrLegNotNormal firing for stg2', async () => {
    for (const a of await alerts()) {
      const who = a.labels.alertname === 'RmrDaemonDown' ? a.labels.instance : a.labels.session;
      const key = `${a.labels.alertname ?? ''} ${who ?? ''}`;
      if (!seen.has(key)) seen.set(key, new Set());
      seen.get(key)?.add(a.state);
    }
    const down = seen.get(`RmrDaemonDown ${instance}`);
    const leg = [...seen.entries()].find(([k]) => /^RmrLegNotNormal \S+@stg2$/.test(k))?.[1];
    return down?.has('firing') === true && leg?.has('firing') === true ? true : null;
  }, 60_000, 250);
  assert.ok(seen.get(`RmrDaemonDown ${instance}`)?.has('pending'), 'the daemon-down alert was pending before it fired');
  assert.ok([...seen.keys()].every((k) => !k.startsWith('RmrDaemonDown') || k === `RmrDaemonDown ${instance}`), `only stg2 is down: ${[...seen.keys()].join(', ')}`);
  assert.equal(await fioDone, 0, 'fio ran through the member loss');
  // The Grafana dashboard: every query evaluates and returns series.
  const dash = JSON.parse(readFileSync(GRAFANA, 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
  const exprs = dash.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));
  assert.ok(exprs.length >= 25, `${exprs.length} queries`);
  const empty: string[] = [];
  for (const e of exprs) {
    const q = e.expr.replace(/\$__rate_interval/g, '30s').replace(/\$pool/g, '.*');
    if ((await query(q)).length === 0) empty.push(`${e.title}: ${q}`);
  }
  assert.deepEqual(empty, [], 'queries without series');
});
