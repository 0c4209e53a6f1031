// Config validation: defaults, file/env/flag precedence, and for many bad inputs a message
// that names the path of the bad field. Also the cluster file of `rmr up`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveDaemonConfig, parseConfigText, envName, flagName, SETTINGS, configToPlain, isLoopbackHost, dataAuth, defaultStateRoot, type ConfigEnv } from '../../src/daemon/config.js';
import { formatDataPskLine, identifyByCertificate, identifyByPsk, parseDataPskFile } from '../../src/daemon/data-tls.js';
import { groupId, parsePskFile } from '../../src/daemon/nbd-tls.js';
import { validateClusterFile } from '../../src/daemon/cluster.js';
import { ConfigError, parseSize, formatSize, parseListen } from '../../src/daemon/validate.js';

const env: ConfigEnv = { hostname: 'stg1.example.com', state_root: '/var/lib/rmr', vars: {} };

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  assert.fail('expected a ConfigError');
}

test('no config at all gives working defaults derived from the host', () => {
  const c = resolveDaemonConfig(undefined, env);
  assert.equal(c.name, 'stg1');
  assert.equal(c.state_dir, '/var/lib/rmr/stg1');
  assert.equal(c.control.socket, '/var/lib/rmr/stg1/control.sock');
  assert.equal(c.control.tcp, null);
  assert.equal(c.log.level, 'info');
  assert.equal(c.log.format, 'human');
  assert.deepEqual(c.data.listen, { host: '0.0.0.0', port: 1234 });
  assert.deepEqual(c.roles, {});
  assert.equal(configToPlain(c).data !== undefined, true);
});

test('file < env < flag, and derived defaults follow the name', () => {
  const file = parseConfigText('name: n1\nlog:\n  level: warn\n  format: json\ncontrol:\n  max_body_bytes: 2048\ndata:\n  listen: 127.0.0.1:1234\nroles:\n  storage: {stores: []}\n', 'd.yaml');
  const c1 = resolveDaemonConfig(file, env);
  assert.equal(c1.name, 'n1');
  assert.equal(c1.control.socket, '/var/lib/rmr/n1/control.sock');
  assert.equal(c1.log.level, 'warn');
  assert.equal(c1.control.max_body_bytes, 2048);
  assert.deepEqual(c1.roles, { storage: { stores: [] } });
  const c2 = resolveDaemonConfig(file, { ...env, vars: { RMR_LOG_LEVEL: 'debug', RMR_CONTROL_MAX_BODY_BYTES: '4096' } });
  assert.equal(c2.log.level, 'debug');
  assert.equal(c2.control.max_body_bytes, 4096);
  const c3 = resolveDaemonConfig(file, { ...env, vars: { RMR_LOG_LEVEL: 'debug' } }, { 'log.level': 'error', 'control.socket': '/tmp/x.sock', 'data.listen': '[::1]:2000' });
  assert.equal(c3.log.level, 'error');
  assert.equal(c3.control.socket, '/tmp/x.sock');
  assert.deepEqual(c3.data.listen, { host: '::1', port: 2000 });
});

test('every setting has an env variable and a flag', () => {
  assert.equal(envName('control.max_body_bytes'), 'RMR_CONTROL_MAX_BODY_BYTES');
  assert.equal(flagName('control.max_body_bytes'), 'control-max-body-bytes');
  const flags = new Set(SETTINGS.map((s) => flagName(s.key)));
  assert.equal(flags.size, SETTINGS.length);
  for (const s of SETTINGS) assert.ok(s.help.length > 0, s.key);
});

test('bad daemon settings are named by their path, all of them at once', () => {
  const file = {
    name: 'bad name!',
    control: { sokcet: '/x', max_body_bytes: 10, tcp: 'localhost' },
    log: { level: 'loud' },
    events: { capacity: 'many' },
    extra: 1,
  };
  assert.deepEqual(problems(() => resolveDaemonConfig(file, env)), [
    'extra: unknown setting (known: name, state_dir, secret_file_modes, control, log, events, metrics, secret_file, data, nbd, resume, shutdown_timeout_ms, roles)',
    'control.sokcet: unknown setting (did you mean socket?) (known: socket, tcp, token_file, tls_cert, tls_key, allow_insecure, max_body_bytes, max_connections, max_unauthenticated, max_unauthenticated_per_address, handler_timeout_ms, max_followers)',
    "name: 'bad name!' is not a name of 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit",
    "control.tcp: 'localhost' is not host:port (IPv6 as [addr]:port, port 1..65535)",
    'control.max_body_bytes: must be an integer 1024..16777216, got 10',
    "log.level: must be one of debug, info, warn, error, got 'loud'",
    "events.capacity: must be an integer 1..1000000, got 'many'",
  ]);
});

test('env and flag values are checked and named by where they came from', () => {
  assert.deepEqual(problems(() => resolveDaemonConfig(undefined, { ...env, vars: { RMR_EVENTS_CAPACITY: '0' } })), ['RMR_EVENTS_CAPACITY: must be an integer 1..1000000, got 0']);
  assert.deepEqual(problems(() => resolveDaemonConfig(undefined, env, { 'data.listen': '1.2.3.4:99999' })), ["--data-listen: '1.2.3.4:99999' is not host:port (IPv6 as [addr]:port, port 1..65535)"]);
  assert.deepEqual(problems(() => resolveDaemonConfig(undefined, env, { colour: 'x' })), ['--colour: unknown flag']);
  assert.deepEqual(problems(() => resolveDaemonConfig({ control: { tcp: '127.0.0.1:9700' } }, env)), [
    'control.tcp: a TCP control listener needs control.token_file (bearer token); refusing an unauthenticated one',
  ]);
  assert.deepEqual(problems(() => resolveDaemonConfig([1, 2], env)), ['(top level): must be a mapping, got a list']);
  assert.deepEqual(problems(() => resolveDaemonConfig({ log: 'debug' }, env)), ["log: must be a mapping, got 'debug'"]);
});

test('YAML syntax errors and duplicate keys name file, line and column', () => {
  assert.deepEqual(problems(() => parseConfigText('a: 1\na: 2\n', 'd.yaml')), ['d.yaml:2:1: Map keys must be unique']);
  const p = problems(() => parseConfigText('a: [1\nb: 2', 'c.yaml'));
  assert.equal(p.length, 1);
  assert.match(p[0] ?? '', /^c\.yaml:\d+:\d+: /);
  assert.equal(parseConfigText('', 'e.yaml'), null);
  assert.deepEqual(parseConfigText('{"name": "j"}', 'c.json'), { name: 'j' });
});

// ---- cluster file ----

function goodCluster(): Record<string, unknown> {
  return {
    cluster: 'demo',
    nodes: [
      { name: 'stg1', addresses: ['127.0.0.2'], port: 1234 },
      { name: 'stg2', addresses: ['127.0.0.3'] },
      { name: 'cli1', addresses: ['127.0.0.4'], control_socket: '/tmp/rmr/cli1.sock' },
    ],
    pools: [{ name: 'pool1', chunk_size: '128K', members: [{ node: 'stg1', member_id: 42 }, { node: 'stg2', member_id: 43 }] }],
    stores: [
      { node: 'stg1', pool: 'pool1', path: '/tmp/rmr/stg1.img', size: '1G' },
      { node: 'stg2', pool: 'pool1', path: '/tmp/rmr/stg2.img', size: '2G' },
    ],
    client: { node: 'cli1', devices: [{ name: 'disk0', pool: 'pool1' }], nbd: { socket_dir: '/tmp/rmr/nbd', tcp: '127.0.0.1:10809' } },
  };
}

/** A deep copy of the good cluster with one edit. */
function edit(fn: (c: Record<string, unknown>) => void): unknown {
  const c = JSON.parse(JSON.stringify(goodCluster())) as Record<string, unknown>;
  fn(c);
  return c;
}

type Obj = Record<string, unknown>;
const at = (c: Obj, ...path: (string | number)[]): Obj => path.reduce<unknown>((o, k) => (o as Obj)[k], c) as Obj;

test('a good cluster file resolves with defaults filled in', () => {
  const c = validateClusterFile(goodCluster());
  assert.equal(c.nodes[1]?.port, 1234);
  assert.equal(c.nodes[0]?.control_socket, null);
  assert.equal(c.pools[0]?.chunk_size, 131072);
  assert.equal(c.pools[0]?.min_replicas, 1);
  assert.deepEqual(c.client?.devices, [{ name: 'disk0', pool: 'pool1', size: 1 << 30, export: 'disk0' }]);
  assert.deepEqual(c.client?.nbd.tcp, { host: '127.0.0.1', port: 10809 });
});

test('many bad cluster files, each with the path of the bad field', () => {
  const cases: [string, (c: Obj) => void, string[]][] = [
    ['member id out of range', (c) => (at(c, 'pools', 0, 'members', 1).member_id = 256), ['pools[0].members[1].member_id: must be an integer 1..255, got 256']],
    ['member id not a number', (c) => (at(c, 'pools', 0, 'members', 1).member_id = 'x'), ["pools[0].members[1].member_id: must be an integer 1..255, got 'x'"]],
    ['member id fractional', (c) => (at(c, 'pools', 0, 'members', 0).member_id = 4.5), ['pools[0].members[0].member_id: must be an integer 1..255, got 4.5']],
    ['duplicate member id', (c) => (at(c, 'pools', 0, 'members', 1).member_id = 42), ["pools[0].members[1].member_id: member_id '42' is already used by pools[0].members[0]"]],
    ['unknown member node', (c) => (at(c, 'pools', 0, 'members', 1).node = 'stg9'), [
      "pools[0].members[1].node: no node named 'stg9' (nodes: stg1, stg2, cli1)",
      'stores[1]: node stg2 is not a member of pool pool1 (add it under the pool\'s members)',
    ]],
    ['too many members', (c) => {
      const ms = at(c, 'pools', 0).members as Obj[];
      for (let i = 0; i < 3; i++) ms.push({ node: 'cli1', member_id: 50 + i });
    }, ['pools[0].members: has 5 entries, at most 4 are allowed']],
    ['chunk size not a power of two', (c) => (at(c, 'pools', 0).chunk_size = 12288), ['pools[0].chunk_size: 12288 is not a power of two']],
    ['chunk size too small', (c) => (at(c, 'pools', 0).chunk_size = '1K'), ['pools[0].chunk_size: 1K is below the minimum 4K']],
    ['chunk size garbage', (c) => (at(c, 'pools', 0).chunk_size = 'big'), ["pools[0].chunk_size: must be a size in bytes (e.g. 131072, 128K, 1G), got 'big'"]],
    ['duplicate node name', (c) => (at(c, 'nodes', 2).name = 'stg1'), [
      "nodes[2].name: name 'stg1' is already used by nodes[0]",
      "client.node: no node named 'cli1' (nodes: stg1, stg2)",
    ]],
    ['bad node name', (c) => (at(c, 'nodes', 0).name = 'stg 1'), [
      "nodes[0].name: 'stg 1' is not a node name of 1-64 characters [A-Za-z0-9_.-]",
      "pools[0].members[0].node: no node named 'stg1' (nodes: stg2, cli1)",
      "stores[0].node: no node named 'stg1' (nodes: stg2, cli1)",
    ]],
    ['port out of range', (c) => (at(c, 'nodes', 0).port = 70000), ['nodes[0].port: must be an integer 1..65535, got 70000']],
    ['no addresses', (c) => (at(c, 'nodes', 0).addresses = []), ['nodes[0].addresses: must not be empty']],
    ['four addresses', (c) => (at(c, 'nodes', 0).addresses = ['a', 'b', 'c', 'd']), ['nodes[0].addresses: has 4 entries, at most 3 are allowed']],
    ['same endpoint twice', (c) => (at(c, 'nodes', 1).addresses = ['127.0.0.2']), ["nodes[1].addresses[0]: address:port '127.0.0.2:1234' is already used by nodes[0].addresses[0]"]],
    ['typo in a node key', (c) => (at(c, 'nodes', 0).adresses = ['x']), ['nodes[0].adresses: unknown setting (did you mean addresses?) (known: name, addresses, port, control_socket, control_url)']],
    ['store on a non-member', (c) => (at(c, 'stores', 1).node = 'cli1'), [
      "stores[1]: node cli1 is not a member of pool pool1 (add it under the pool's members)",
      'pools[0].members[1]: node stg2 has no store for pool pool1 (add one under stores)',
    ]],
    ['store size not 4K aligned', (c) => (at(c, 'stores', 0).size = 4097), ['stores[0].size: 4097 is not a multiple of 4096']],
    ['store size below a chunk', (c) => (at(c, 'stores', 0).size = '64K'), ['stores[0].size: 64K is smaller than one chunk of pool pool1 (128K)']],
    ['store for an unknown pool', (c) => (at(c, 'stores', 0).pool = 'nope'), ["stores[0].pool: no pool named 'nope' (pools: pool1)"]],
    ['two stores of one node in one pool', (c) => (at(c, 'stores', 1).node = 'stg1'), [
      "stores[1]: node/pool 'stg1/pool1' is already used by stores[0]",
      'pools[0].members[1]: node stg2 has no store for pool pool1 (add one under stores)',
    ]],
    ['device larger than the smallest store', (c) => (at(c, 'client', 'devices', 0).size = '2G'), ['client.devices[0].size: 2G is larger than the smallest store of pool pool1 (1G)']],
    ['device for an unknown pool', (c) => (at(c, 'client', 'devices', 0).pool = 'p9'), ["client.devices[0].pool: no pool named 'p9' (pools: pool1)"]],
    ['client on an unknown node', (c) => (at(c, 'client').node = 'x'), ["client.node: no node named 'x' (nodes: stg1, stg2, cli1)"]],
    ['nbd tcp garbage', (c) => (at(c, 'client', 'nbd').tcp = 10809), ['client.nbd.tcp: must be host:port, got 10809']],
    ['min_replicas above members', (c) => (at(c, 'pools', 0).min_replicas = 3), ['pools[0].min_replicas: must be an integer 1..2, got 3']],
    ['no nodes', (c) => (c.nodes = []), [
      'nodes: must not be empty',
      "pools[0].members[0].node: no node named 'stg1' (nodes: none)",
      "pools[0].members[1].node: no node named 'stg2' (nodes: none)",
      "stores[0].node: no node named 'stg1' (nodes: none)",
      "stores[1].node: no node named 'stg2' (nodes: none)",
      "client.node: no node named 'cli1' (nodes: none)",
    ]],
    ['pools not a list', (c) => (c.pools = { name: 'p' }), [
      'pools: must be a list, got a mapping',
      "stores[0].pool: no pool named 'pool1' (pools: none)",
      "stores[1].pool: no pool named 'pool1' (pools: none)",
      "client.devices[0].pool: no pool named 'pool1' (pools: none)",
    ]],
  ];
  for (const [what, fn, expected] of cases) {
    assert.deepEqual(problems(() => validateClusterFile(edit(fn))), expected, what);
  }
});

test('sizes and listen addresses', () => {
  assert.equal(parseSize('128K'), 131072);
  assert.equal(parseSize('128KiB'), 131072);
  assert.equal(parseSize('1g'), 1 << 30);
  assert.equal(parseSize('64T'), 64 * 2 ** 40);
  assert.equal(parseSize('1.5G'), null);
  assert.equal(parseSize('-1'), null);
  assert.equal(parseSize('99999P'), null);
  assert.equal(formatSize(131072), '128K');
  assert.equal(formatSize(1000), '1000');
  assert.deepEqual(parseListen('[fe80::1]:80'), { host: 'fe80::1', port: 80 });
  assert.equal(parseListen('host:0'), null);
  assert.equal(parseListen('::1:80'), null);
});

test('nbd: TLS settings, the non-loopback rule and the socket mode', () => {
  const d = resolveDaemonConfig(undefined, env);
  assert.deepEqual(
    { tls: d.nbd.tls, certs: d.nbd.tls_certificates, psk: d.nbd.tls_psk_file, verify: d.nbd.tls_verify_peer, insecure: d.nbd.allow_insecure, mode: d.nbd.socket_mode, group: d.nbd.socket_group },
    { tls: 'off', certs: null, psk: null, verify: false, insecure: false, mode: 0o660, group: null },
  );
  assert.equal((configToPlain(d).nbd as Record<string, unknown>).socket_mode, '0660');
  const nbd = (n: Record<string, unknown>): unknown => ({ nbd: n });
  // Loopback needs nothing; off loopback, plaintext is refused unless allow_insecure.
  for (const tcp of ['127.0.0.1:10809', '127.0.0.5:10809', '[::1]:10809', 'localhost:10809']) assert.equal(resolveDaemonConfig(nbd({ tcp }), env).nbd.tcp?.port, 10809, tcp);
  assert.deepEqual(problems(() => resolveDaemonConfig(nbd({ tcp: '0.0.0.0:10809' }), env)), [
    'nbd.tcp: 0.0.0.0:10809 is not a loopback address and NBD would be plaintext and unauthenticated: set nbd.tls: require (with nbd.tls_certificates or nbd.tls_psk_file), or nbd.allow_insecure: true',
  ]);
  assert.deepEqual(problems(() => resolveDaemonConfig(nbd({ tcp: '10.1.2.3:10809', tls: 'on', tls_certificates: '/etc/rmr/nbd' }), env)), [
    'nbd.tcp: 10.1.2.3:10809 is not a loopback address and nbd.tls: on still serves clients that skip TLS: set nbd.tls: require (with nbd.tls_certificates or nbd.tls_psk_file), or nbd.allow_insecure: true',
  ]);
  assert.equal(resolveDaemonConfig(nbd({ tcp: '0.0.0.0:10809', allow_insecure: true }), env).nbd.allow_insecure, true);
  const c = resolveDaemonConfig(nbd({ tcp: '0.0.0.0:10809', tls: 'require', tls_certificates: '/etc/rmr/nbd', tls_verify_peer: true }), env);
  assert.deepEqual([c.nbd.tls, c.nbd.tls_certificates, c.nbd.tls_verify_peer], ['require', '/etc/rmr/nbd', true]);
  assert.equal(resolveDaemonConfig(undefined, { ...env, vars: { RMR_NBD_TLS: 'require', RMR_NBD_TLS_PSK_FILE: '/etc/rmr/nbd.psk', RMR_NBD_TCP: '[::]:10809' } }).nbd.tls_psk_file, '/etc/rmr/nbd.psk');
  assert.equal(resolveDaemonConfig(undefined, env, { 'nbd.socket_mode': '0600', 'nbd.socket_group': 'disk' }).nbd.socket_mode, 0o600);
  // Settings that do not go together, each a one-line message naming the setting.
  const cases: [Record<string, unknown>, string[]][] = [
    [{ tls: 'require' }, ['nbd.tls: require needs nbd.tls_certificates (a directory with server-cert.pem and server-key.pem) or nbd.tls_psk_file']],
    [{ tls: 'on', tls_certificates: '/c', tls_psk_file: '/p' }, ['nbd.tls_psk_file: give nbd.tls_certificates or nbd.tls_psk_file, not both']],
    [{ tls: 'require', tls_psk_file: '/p', tls_verify_peer: true }, ['nbd.tls_verify_peer: needs nbd.tls_certificates with ca-cert.pem (PSK clients are authenticated by their key)']],
    [{ tls_certificates: '/c' }, ['nbd.tls_certificates: is set but nbd.tls is off: set nbd.tls: require (or on), or remove it']],
    [{ tls_verify_peer: true }, ['nbd.tls_verify_peer: is true but nbd.tls is off']],
    [{ tls: 'yes' }, ["nbd.tls: must be one of off, on, require, got 'yes'"]],
    [{ socket_mode: 660 }, ['nbd.socket_mode: must be an octal mode in quotes, e.g. \'0660\', got the number 660 (quote it: YAML reads 0660 as decimal)']],
    [{ socket_mode: '0999' }, ['nbd.socket_mode: must be an octal mode in quotes, e.g. \'0660\', got "0999"']],
    [{ socket_group: 'no such group!' }, ["nbd.socket_group: 'no such group!' is not a group name or numeric gid"]],
  ];
  for (const [n, want] of cases) assert.deepEqual(problems(() => resolveDaemonConfig(nbd(n), env)), want, JSON.stringify(n));
  // From YAML, the quoted mode is read in octal.
  assert.equal(resolveDaemonConfig(parseConfigText("nbd:\n  socket_mode: '0640'\n  socket_group: 6\n", 'd.yaml'), env).nbd.socket_mode, 0o640);
});

test('cluster file: client.nbd TLS settings pass through and follow the daemon rules', () => {
  const c = validateClusterFile(edit((x) => Object.assign(at(x, 'client', 'nbd'), { tcp: '0.0.0.0:10809', tls: 'require', tls_psk_file: 'nbd.psk', socket_mode: '0600', socket_group: 'disk' })));
  assert.deepEqual([c.client?.nbd.tls, c.client?.nbd.tls_psk_file, c.client?.nbd.socket_mode, c.client?.nbd.socket_group], ['require', 'nbd.psk', 0o600, 'disk']);
  assert.deepEqual(problems(() => validateClusterFile(edit((x) => (at(x, 'client', 'nbd').tcp = '192.168.1.5:10809')))), [
    'client.nbd.tcp: 192.168.1.5:10809 is not a loopback address and NBD would be plaintext and unauthenticated: set client.nbd.tls: require (with client.nbd.tls_certificates or client.nbd.tls_psk_file), or client.nbd.allow_insecure: true',
  ]);
  assert.deepEqual(problems(() => validateClusterFile(edit((x) => (at(x, 'client', 'nbd').tls = 'require')))), [
    'client.nbd.tls: require needs client.nbd.tls_certificates (a directory with server-cert.pem and server-key.pem) or client.nbd.tls_psk_file',
  ]);
  assert.equal(validateClusterFile(edit((x) => Object.assign(at(x, 'client', 'nbd'), { tcp: '0.0.0.0:10809', allow_insecure: true }))).client?.nbd.allow_insecure, true);
});

test('cluster file: data_tls off is refused for a node that would listen off loopback, several loopback addresses included', () => {
  // Several addresses make `rmr up` write data.listen 0.0.0.0, which the daemon refuses in
  // plaintext: the cluster file passed and the daemon then failed to start.
  assert.equal(validateClusterFile(edit((x) => (x.data_tls = 'off'))).data_tls, 'off');
  assert.deepEqual(problems(() => validateClusterFile(edit((x) => { x.data_tls = 'off'; at(x, 'nodes', 0).addresses = ['127.0.0.2', '127.0.0.12']; }))), [
    'nodes[0].addresses: a node of 2 addresses listens on 0.0.0.0, not loopback, and data_tls is off (plaintext): use data_tls: psk (the default), data_tls: insecure, or one address',
  ]);
  assert.deepEqual(problems(() => validateClusterFile(edit((x) => { x.data_tls = 'off'; at(x, 'nodes', 1).addresses = ['10.0.0.3']; }))), [
    'nodes[1].addresses: 10.0.0.3 is not a loopback address and data_tls is off (plaintext): use data_tls: psk (the default), or data_tls: insecure',
  ]);
  assert.equal(validateClusterFile(edit((x) => { x.data_tls = 'insecure'; at(x, 'nodes', 0).addresses = ['127.0.0.2', '127.0.0.12']; })).data_tls, 'insecure');
});

test('isLoopbackHost: 127/8, ::1 and localhost only', () => {
  for (const h of ['127.0.0.1', '127.3.2.1', '::1', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1']) assert.equal(isLoopbackHost(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'example.com', '127.0.0.1.example.com', '::ffff:10.0.0.1']) assert.equal(isLoopbackHost(h), false, h);
});

test('PSK files in the psktool format; groups by name or gid', () => {
  const k = 'ab'.repeat(32);
  const m = parsePskFile(`alice:${k}\n\r\nbob:${'CD'.repeat(16)}\r\n`, 'keys.psk');
  assert.deepEqual([...m.keys()], ['alice', 'bob']);
  assert.equal(m.get('bob')?.length, 16);
  for (const [text, msg] of [
    ['', 'keys.psk: no identity:hexkey line'],
    [`# comment\nalice:${k}\n`, 'keys.psk:1: expected identity:hexkey'],
    [`alice:${k}\n:${k}\n`, 'keys.psk:2: expected identity:hexkey'],
    ['alice:abc\n', 'keys.psk:1: the key of alice is not an even number of hex digits'],
    ['alice:zz\n', 'keys.psk:1: the key of alice is not an even number of hex digits'],
    ['alice:0011\n', 'keys.psk:1: the key of alice has 2 bytes; use 16..256 random bytes (psktool makes 32)'],
    [`alice:${k}\nalice:${k}\n`, 'keys.psk:2: identity alice appears twice'],
    [`${'x'.repeat(129)}:${k}\n`, 'keys.psk:1: the identity is longer than 128 bytes'],
  ] as const) {
    assert.throws(() => parsePskFile(text, 'keys.psk'), (e: Error) => e.message === msg && !e.message.includes(k), msg);
  }
  const etc = 'root:x:0:\ndisk:x:6:alice\nrmr:x:998:\n';
  assert.equal(groupId('disk', etc), 6);
  assert.equal(groupId('1234', etc), 1234);
  assert.equal(groupId('nope', etc), null);
});

test('data plane: a storage listener off loopback needs TLS (or allow_insecure); TLS settings that go together', () => {
  const storage = (data: Record<string, unknown>): unknown => ({ data, roles: { storage: {} } });
  // The default listener is 0.0.0.0:1234: a storage daemon with no TLS refuses it (review finding 2).
  assert.deepEqual(problems(() => resolveDaemonConfig(storage({}), env)), [
    'data.listen: 0.0.0.0:1234 is not a loopback address and the data plane would be plaintext (an on-path attacker can inject writes): set data.tls_psk_file, or data.tls_cert, data.tls_key and data.tls_ca (docs/security.md), or data.allow_insecure: true',
  ]);
  // A client-only daemon opens no listener; loopback needs nothing; the explicit setting passes.
  assert.equal(resolveDaemonConfig({ roles: { client: {} } }, env).data.listen.host, '0.0.0.0');
  for (const listen of ['127.0.0.1:1234', '[::1]:1234']) assert.equal(resolveDaemonConfig(storage({ listen }), env).data.tls_psk_file, null);
  assert.equal(resolveDaemonConfig(storage({ allow_insecure: true }), env).data.allow_insecure, true);
  assert.equal(resolveDaemonConfig(storage({ tls_psk_file: '/etc/rmr/data.psk' }), env).data.tls_psk_file, '/etc/rmr/data.psk');
  assert.equal(resolveDaemonConfig(storage({ tls_cert: '/c', tls_key: '/k', tls_ca: '/ca' }), env).data.tls_ca, '/ca');
  assert.equal(dataAuth(resolveDaemonConfig(storage({ tls_cert: '/c', tls_key: '/k', tls_ca: '/ca' }), env).data), 'x509');
  assert.equal(dataAuth(resolveDaemonConfig(storage({ tls_cert: '/c', tls_key: '/k' }), env).data), 'x509-secret');
  assert.equal(dataAuth(resolveDaemonConfig(storage({ tls_psk_file: '/p' }), env).data), 'psk');
  const cases: [Record<string, unknown>, string[]][] = [
    [{ tls_cert: '/c', listen: '127.0.0.1:1' }, ['data.tls_key: transport TLS needs both data.tls_cert and data.tls_key']],
    [{ tls_ca: '/ca', listen: '127.0.0.1:1' }, ['data.tls_ca: needs data.tls_cert and data.tls_key (every node shows its own certificate)']],
    [{ tls_psk_file: '/p', tls_cert: '/c', tls_key: '/k' }, ['data.tls_psk_file: give data.tls_psk_file or certificates (data.tls_cert, data.tls_key, data.tls_ca), not both']],
  ];
  for (const [d, want] of cases) assert.deepEqual(problems(() => resolveDaemonConfig(storage(d), env)), want, JSON.stringify(d));
});

test('control over TCP off loopback needs HTTPS (or allow_insecure), and always a token file', () => {
  const control = (c: Record<string, unknown>): unknown => ({ control: c });
  assert.deepEqual(problems(() => resolveDaemonConfig(control({ tcp: '10.0.0.2:7000', token_file: '/t' }), env)), [
    'control.tcp: 10.0.0.2:7000 is not a loopback address and the control API would be plain HTTP (its all-powerful token in clear): set control.tls_cert and control.tls_key, or control.allow_insecure: true',
  ]);
  assert.deepEqual(problems(() => resolveDaemonConfig(control({ tcp: '127.0.0.1:7000' }), env)), ['control.tcp: a TCP control listener needs control.token_file (bearer token); refusing an unauthenticated one']);
  assert.equal(resolveDaemonConfig(control({ tcp: '10.0.0.2:7000', token_file: '/t', tls_cert: '/c', tls_key: '/k' }), env).control.tls_cert, '/c');
  assert.equal(resolveDaemonConfig(control({ tcp: '10.0.0.2:7000', token_file: '/t', allow_insecure: true }), env).control.allow_insecure, true);
  assert.equal(resolveDaemonConfig(control({ tcp: '127.0.0.1:7000', token_file: '/t' }), env).control.tls_cert, null);
  assert.deepEqual(problems(() => resolveDaemonConfig(control({ tls_key: '/k' }), env)), ['control.tls_cert: HTTPS needs both control.tls_cert and control.tls_key']);
});

test('the default state directory: /var/lib/rmr for root, the user\'s state directory otherwise, never /tmp', () => {
  assert.equal(defaultStateRoot(0, { XDG_RUNTIME_DIR: '/run/user/0', HOME: '/root' }), '/var/lib/rmr');
  assert.equal(defaultStateRoot(1000, { XDG_STATE_HOME: '/home/a/.state', HOME: '/home/a' }), '/home/a/.state/rmr');
  assert.equal(defaultStateRoot(1000, { HOME: '/home/a', XDG_RUNTIME_DIR: '/run/user/1000' }), '/home/a/.local/state/rmr');
  assert.equal(defaultStateRoot(1000, {}), '/var/lib/rmr');
  assert.equal(defaultStateRoot(1000, { HOME: '/' }), '/var/lib/rmr');
  assert.equal(defaultStateRoot(1000, { XDG_STATE_HOME: 'relative', HOME: '/home/a' }), '/home/a/.local/state/rmr');
  assert.equal(resolveDaemonConfig(undefined, { ...env, state_root: defaultStateRoot(0, {}) }).state_dir, '/var/lib/rmr/stg1');
});

test('data-plane PSK files: identity:hexkey:roles, 32-byte keys, roles named', () => {
  const k = 'ab'.repeat(32);
  const keys = parseDataPskFile(`# cluster keys\ncli1:${k}:client\nstg1:${k}:storage\n\nhc1:${k}:client,storage\n`, 'data.psk');
  assert.deepEqual([...keys].map(([id, e]) => [id, e.roles]), [['cli1', ['client']], ['stg1', ['storage']], ['hc1', ['client', 'storage']]]);
  assert.equal(formatDataPskLine('cli1', Buffer.alloc(32, 0xab), ['client']), `cli1:${k}:client\n`);
  const bad: [string, string][] = [
    [`cli1:${k}\n`, 'data.psk:1: expected identity:hexkey:roles (roles: client, storage or client,storage)'],
    [`cli1:${'ab'.repeat(16)}:client\n`, 'data.psk:1: the key of cli1 has 16 bytes; use 32..256 random bytes (openssl rand -hex 32)'],
    [`cli1:${k}:admin\n`, "data.psk:1: cli1: unknown role 'admin' (roles: client, storage)"],
    [`cli1:${k}:client\ncli1:${k}:client\n`, 'data.psk:2: identity cli1 appears twice'],
    [`bad id:${k}:client\n`, "data.psk:1: identity 'bad id' is not a node name [A-Za-z0-9_.-]"],
    ['', 'data.psk: no identity:hexkey:roles line'],
  ];
  for (const [text, msg] of bad) assert.throws(() => parseDataPskFile(text, 'data.psk'), (e: Error) => e.message === msg, text);
});

test('identities from certificates and PSKs: the CN and its OU roles, or the PSK line; anything else refused', () => {
  assert.deepEqual(identifyByCertificate({ kind: 'x509', subject: { CN: ['stg1'], OU: ['storage'] } }), { name: 'stg1', roles: ['storage'] });
  assert.deepEqual(identifyByCertificate({ kind: 'x509', subject: { CN: ['hc1'], OU: ['client', 'storage', 'ops'] } }), { name: 'hc1', roles: ['client', 'storage'] });
  assert.equal(identifyByCertificate({ kind: 'x509', subject: { CN: ['stg1'] } }), 'the certificate of stg1 names no role (OU=client and/or OU=storage)');
  assert.equal(identifyByCertificate({ kind: 'x509', subject: { OU: ['storage'] } }), "the certificate's CN (none) is not one node name");
  assert.equal(identifyByCertificate(null), 'the peer showed no certificate signed by data.tls_ca');
  assert.equal(identifyByCertificate({ kind: 'psk', identity: 'x' }), 'the peer showed no certificate signed by data.tls_ca');
  const byPsk = identifyByPsk(new Map([['cli1', { key: Buffer.alloc(32), roles: ['client'] }]]));
  assert.deepEqual(byPsk({ kind: 'psk', identity: 'cli1' }), { name: 'cli1', roles: ['client'] });
  assert.equal(byPsk({ kind: 'psk', identity: 'eve' }), 'unknown PSK identity eve');
  assert.equal(byPsk(null), 'the peer did not authenticate with a PSK');
});

test('NBD pre-auth limits: defaults 128 in all, 16 per address, a 10 s handshake; set by file, env or flag; bounds checked', () => {
  const c = resolveDaemonConfig(undefined, env);
  assert.equal(c.nbd.max_preauth_connections, 128);
  assert.equal(c.nbd.max_preauth_per_address, 16);
  assert.equal(c.nbd.handshake_timeout_ms, 10_000);
  const file = parseConfigText('nbd:\n  max_preauth_connections: 32\n  handshake_timeout_ms: 2000\n', 'd.yaml');
  const c2 = resolveDaemonConfig(file, { ...env, vars: { RMR_NBD_MAX_PREAUTH_PER_ADDRESS: '4' } });
  assert.deepEqual([c2.nbd.max_preauth_connections, c2.nbd.max_preauth_per_address, c2.nbd.handshake_timeout_ms], [32, 4, 2000]);
  assert.ok(problems(() => resolveDaemonConfig(parseConfigText('nbd:\n  max_preauth_per_address: 0\n', 'd.yaml'), env)).some((p) => p.startsWith('nbd.max_preauth_per_address')));
});

test('--print-config: read back as a file it gives the same configuration (secret_file_modes included); secrets appear only as file names', () => {
  const file = parseConfigText('name: n1\nsecret_file_modes: warn\nsecret_file: /etc/rmr/secret\ncontrol:\n  token_file: /etc/rmr/token\nnbd:\n  socket_mode: "0640"\n  max_preauth_per_address: 8\n', 'd.yaml');
  const c = resolveDaemonConfig(file, env);
  const printed = JSON.stringify(configToPlain(c));
  assert.match(printed, /"secret_file_modes":"warn"/);
  const again = resolveDaemonConfig(parseConfigText(printed, 'printed.json'), env);
  assert.deepEqual(configToPlain(again), configToPlain(c));
  assert.equal(again.secret_file_modes, 'warn');
  // Only the files' names: the daemon reads their contents at start, not while resolving.
  assert.ok(printed.includes('/etc/rmr/secret') && printed.includes('/etc/rmr/token'));
});
