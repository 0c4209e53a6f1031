// The cluster file of `rmr up`: which daemons exist (nodes), which stores each storage node
// holds, which pools replicate over which members, and which devices the client exports
// over NBD. Validation is complete before anything starts: every problem is listed with the
// path of the field, and the cross-references (a member naming a node, a store naming a
// pool) are checked, so a typo never leaves half a cluster running.

import { MAX_MEMBERS } from '../rmr/protocol/msg.js';
import { NAME_MAX } from '../rmr/protocol/layout.js';
import { Reader, formatSize, type ListenAddress } from './validate.js';
import { checkNbdSettings, isLoopbackHost, readSettingAs } from './config.js';
import type { TlsMode } from '../nbd/handshake.js';

export interface ClusterNode {
  readonly name: string;
  /** Data-plane addresses of this node (one transport path each). */
  readonly addresses: readonly string[];
  readonly port: number;
  /** Control socket of this node's daemon; default derived from its name by `rmr up`. */
  readonly control_socket: string | null;
  /** Control API over TCP (`https://host:port`, or http:// on loopback) for a daemon on another host (with token_file). */
  readonly control_url: string | null;
}

export interface ClusterStore {
  readonly node: string;
  readonly pool: string;
  /** File or block device. */
  readonly path: string;
  /** Mapped size in bytes. */
  readonly size: number;
}

export interface ClusterMember {
  readonly node: string;
  readonly member_id: number;
}

export interface ClusterPool {
  readonly name: string;
  readonly chunk_size: number;
  readonly members: readonly ClusterMember[];
  /** Refuse writes with fewer NORMAL members (ARCHITECTURE.md §2.10); 1 = the reference's behaviour. */
  readonly min_replicas: number;
}

export interface ClusterDevice {
  readonly name: string;
  readonly pool: string;
  /** Bytes; default the smallest store of the pool. */
  readonly size: number;
  /** NBD export name; default the device name. */
  readonly export: string;
}

export interface ClusterClient {
  readonly node: string;
  readonly devices: readonly ClusterDevice[];
  readonly nbd: {
    /** One Unix socket per device: `<socket_dir>/<export>.sock`; null = no Unix sockets. */
    readonly socket_dir: string | null;
    /** Optional TCP listener serving every export. */
    readonly tcp: ListenAddress | null;
    /** The client daemon's nbd.* TLS and socket settings, passed through (see config.ts). */
    readonly tls: TlsMode;
    readonly tls_certificates: string | null;
    readonly tls_psk_file: string | null;
    readonly tls_verify_peer: boolean;
    readonly allow_insecure: boolean;
    /** null: the daemon's default (0660). */
    readonly socket_mode: number | null;
    readonly socket_group: string | null;
  };
}

/** The client.nbd keys that are daemon nbd.* settings, passed through as they are. */
const NBD_PASSED = ['tls', 'tls_certificates', 'tls_psk_file', 'tls_verify_peer', 'allow_insecure', 'socket_mode', 'socket_group'] as const;

/**
 * The data plane of the daemons `rmr up` starts: per-node TLS-PSK identities (`psk`, the
 * default: a key per node generated into data_psk_file), or plaintext with the shared secret
 * only (`off`: every node address must be loopback; `insecure`: anywhere, with a warning).
 */
export type ClusterDataTls = 'psk' | 'off' | 'insecure';

export interface ClusterFile {
  readonly cluster: string;
  /** File with the transport's cluster secret (session authentication). */
  readonly secret_file: string | null;
  readonly data_tls: ClusterDataTls;
  /** The per-node keys (data.tls_psk_file of every daemon); default <state_dir>/data.psk. */
  readonly data_psk_file: string | null;
  /** CA certificate of the daemons' HTTPS control listeners (control_url https://). */
  readonly control_ca_file: string | null;
  /** Where `rmr up` keeps the daemons it starts itself (`<state_dir>/<node>/`); null: next to the file. */
  readonly state_dir: string | null;
  /** Bearer token for nodes reached by control_url. */
  readonly token_file: string | null;
  readonly nodes: readonly ClusterNode[];
  readonly stores: readonly ClusterStore[];
  readonly pools: readonly ClusterPool[];
  readonly client: ClusterClient | null;
}

const NODE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const POOL_NAME_RE = /^[A-Za-z0-9_.-]+$/;
const HOST_RE = /^(?:[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+)$/;
export const CHUNK_SIZE_MIN = 4096;
export const CHUNK_SIZE_MAX = 64 << 20;
const SIZE_MAX = 2 ** 53 - 4096;
export const MAX_PATHS = 3;

/** Reports entries whose key repeats an earlier entry's: `<entry>.<field>: ... already used by <first entry>`. */
function unique<T>(r: Reader, items: readonly T[], key: (t: T) => string | undefined, entryAt: (i: number) => string, field: string, what: string): void {
  const seen = new Map<string, number>();
  items.forEach((t, i) => {
    const k = key(t);
    if (k === undefined) return;
    const first = seen.get(k);
    if (first !== undefined) r.fail(field === '' ? entryAt(i) : `${entryAt(i)}.${field}`, `${what} '${k}' is already used by ${entryAt(first)}`);
    else seen.set(k, i);
  });
}

/** Validates a parsed cluster file; throws a ConfigError listing every problem. */
export function validateClusterFile(raw: unknown): ClusterFile {
  const r = new Reader();
  const top = r.object('', raw, ['cluster', 'secret_file', 'state_dir', 'token_file', 'data_tls', 'data_psk_file', 'control_ca_file', 'nodes', 'stores', 'pools', 'client']);
  if (top === undefined) {
    r.done();
    throw new Error('unreachable: Reader.done did not throw');
  }
  const cluster = top.cluster === undefined ? 'rmr' : (r.string('cluster', top.cluster, { pattern: NODE_NAME_RE, hint: 'a name [A-Za-z0-9_.-]' }) ?? 'rmr');
  const secret_file = top.secret_file === undefined || top.secret_file === null ? null : (r.string('secret_file', top.secret_file) ?? null);
  const state_dir = top.state_dir === undefined || top.state_dir === null ? null : (r.string('state_dir', top.state_dir) ?? null);
  const token_file = top.token_file === undefined || top.token_file === null ? null : (r.string('token_file', top.token_file) ?? null);
  const data_tls = top.data_tls === undefined ? 'psk' : (r.oneOf('data_tls', top.data_tls, ['psk', 'off', 'insecure'] as const) ?? 'psk');
  const data_psk_file = top.data_psk_file === undefined || top.data_psk_file === null ? null : (r.string('data_psk_file', top.data_psk_file) ?? null);
  const control_ca_file = top.control_ca_file === undefined || top.control_ca_file === null ? null : (r.string('control_ca_file', top.control_ca_file) ?? null);
  if (data_psk_file !== null && data_tls !== 'psk') r.fail('data_psk_file', `is set but data_tls is ${data_tls}`);

  // ---- nodes ----
  const nodes: ClusterNode[] = [];
  const nodeAt: string[] = [];
  /** Names of nodes, valid or not in other fields: references to them are not reported again. */
  const namedNodes: string[] = [];
  const rawNodes = r.list('nodes', top.nodes, 1, 64) ?? [];
  rawNodes.forEach((v, i) => {
    const at = `nodes[${i}]`;
    const o = r.object(at, v, ['name', 'addresses', 'port', 'control_socket', 'control_url']);
    if (o === undefined) return;
    const name = r.string(`${at}.name`, o.name, { pattern: NODE_NAME_RE, hint: 'a node name of 1-64 characters [A-Za-z0-9_.-]' });
    const addrs = r.list(`${at}.addresses`, o.addresses, 1, MAX_PATHS);
    const addresses: string[] = [];
    addrs?.forEach((a, j) => {
      const s = r.string(`${at}.addresses[${j}]`, a, { pattern: HOST_RE, hint: 'an IPv4/IPv6 address or host name', max_len: 253 });
      if (s !== undefined) addresses.push(s);
    });
    const port = o.port === undefined ? 1234 : r.int(`${at}.port`, o.port, 1, 65535);
    const control_socket = o.control_socket === undefined || o.control_socket === null ? null : r.string(`${at}.control_socket`, o.control_socket);
    const control_url = o.control_url === undefined || o.control_url === null ? null : r.string(`${at}.control_url`, o.control_url, { pattern: /^https?:\/\/[A-Za-z0-9.:[\]-]+(:[0-9]{1,5})?\/?$/, hint: 'https://host:port' });
    if (control_url !== null && control_url !== undefined && control_socket !== null) r.fail(`${at}.control_url`, 'give control_socket or control_url, not both');
    if (name !== undefined) namedNodes.push(name);
    if (name !== undefined && port !== undefined && addrs !== undefined && control_socket !== undefined && control_url !== undefined) {
      nodes.push({ name, addresses, port, control_socket, control_url });
      nodeAt.push(at);
    }
  });
  unique(r, nodes, (n) => n.name, (k) => nodeAt[k] ?? '?', 'name', 'name');
  unique(r, nodes, (n) => (n.control_socket ?? undefined), (k) => nodeAt[k] ?? '?', 'control_socket', 'socket');
  const endpoints: { ep: string; at: string }[] = [];
  nodes.forEach((n, k) => n.addresses.forEach((a, j) => endpoints.push({ ep: `${a}:${n.port}`, at: `${nodeAt[k] ?? '?'}.addresses[${j}]` })));
  unique(r, endpoints, (e) => e.ep, (k) => endpoints[k]?.at ?? '?', '', 'address:port');
  const nodeNames = [...new Set(namedNodes)];
  const nodeRef = (at: string, v: unknown): string | undefined => {
    const s = r.string(at, v);
    if (s === undefined) return undefined;
    if (!nodeNames.includes(s)) return r.fail(at, `no node named '${s}' (nodes: ${nodeNames.join(', ') || 'none'})`);
    return s;
  };

  // ---- pools ----
  const pools: ClusterPool[] = [];
  const poolAt: string[] = [];
  /** Every named pool (valid or not) → the nodes its member entries name. */
  const memberNodesOf = new Map<string, Set<string> | null>();
  const rawPools = top.pools === undefined ? [] : (r.list('pools', top.pools, 0, 256) ?? []);
  rawPools.forEach((v, i) => {
    const at = `pools[${i}]`;
    const o = r.object(at, v, ['name', 'chunk_size', 'members', 'min_replicas']);
    if (o === undefined) return;
    const name = r.string(`${at}.name`, o.name, { pattern: POOL_NAME_RE, hint: 'a pool name [A-Za-z0-9_.-]', max_len: NAME_MAX });
    const memberNodes = new Set<string>();
    const memberList = r.list(`${at}.members`, o.members, 1, MAX_MEMBERS);
    // An unreadable member list: membership is unknown, so stores are not blamed for it.
    if (name !== undefined) memberNodesOf.set(name, memberList === undefined ? null : memberNodes);
    let chunk_size = o.chunk_size === undefined ? 131072 : r.size(`${at}.chunk_size`, o.chunk_size, CHUNK_SIZE_MIN, CHUNK_SIZE_MAX);
    if (chunk_size !== undefined && (chunk_size & (chunk_size - 1)) !== 0) chunk_size = r.fail(`${at}.chunk_size`, `${chunk_size} is not a power of two`);
    const members: ClusterMember[] = [];
    const memberAt: string[] = [];
    (memberList ?? []).forEach((m, j) => {
      const mat = `${at}.members[${j}]`;
      const mo = r.object(mat, m, ['node', 'member_id']);
      if (mo === undefined) return;
      const node = nodeRef(`${mat}.node`, mo.node);
      if (node !== undefined) memberNodes.add(node);
      const member_id = r.int(`${mat}.member_id`, mo.member_id, 1, 255);
      if (node !== undefined && member_id !== undefined) {
        members.push({ node, member_id });
        memberAt.push(mat);
      }
    });
    unique(r, members, (m) => String(m.member_id), (k) => memberAt[k] ?? '?', 'member_id', 'member_id');
    unique(r, members, (m) => m.node, (k) => memberAt[k] ?? '?', 'node', 'node');
    const nmembers = Array.isArray(o.members) ? o.members.length : 0;
    const min_replicas = o.min_replicas === undefined ? 1 : r.int(`${at}.min_replicas`, o.min_replicas, 1, Math.max(1, Math.min(nmembers, MAX_MEMBERS)));
    if (name !== undefined && chunk_size !== undefined && min_replicas !== undefined) {
      pools.push({ name, chunk_size, members, min_replicas });
      poolAt.push(at);
    }
  });
  unique(r, pools, (p) => p.name, (k) => poolAt[k] ?? '?', 'name', 'name');
  const poolByName = new Map(pools.map((p) => [p.name, p]));
  const poolRef = (at: string, v: unknown): ClusterPool | undefined => {
    const s = r.string(at, v);
    if (s === undefined) return undefined;
    const p = poolByName.get(s);
    if (p === undefined && !memberNodesOf.has(s)) return r.fail(at, `no pool named '${s}' (pools: ${[...memberNodesOf.keys()].join(', ') || 'none'})`);
    return p;
  };

  // ---- stores ----
  const stores: ClusterStore[] = [];
  const storeAt: string[] = [];
  const rawStores = top.stores === undefined ? [] : (r.list('stores', top.stores, 0, 1024) ?? []);
  rawStores.forEach((v, i) => {
    const at = `stores[${i}]`;
    const o = r.object(at, v, ['node', 'pool', 'path', 'size']);
    if (o === undefined) return;
    const node = nodeRef(`${at}.node`, o.node);
    const pool = poolRef(`${at}.pool`, o.pool);
    const path = r.string(`${at}.path`, o.path);
    let size = r.size(`${at}.size`, o.size, 4096, SIZE_MAX);
    if (size !== undefined && size % 4096 !== 0) size = r.fail(`${at}.size`, `${size} is not a multiple of 4096`);
    if (size !== undefined && pool !== undefined && size < pool.chunk_size) size = r.fail(`${at}.size`, `${formatSize(size)} is smaller than one chunk of pool ${pool.name} (${formatSize(pool.chunk_size)})`);
    const memberNodes = pool === undefined ? null : memberNodesOf.get(pool.name);
    if (node !== undefined && pool !== undefined && memberNodes !== null && memberNodes?.has(node) !== true) {
      r.fail(at, `node ${node} is not a member of pool ${pool.name} (add it under the pool's members)`);
    }
    if (node !== undefined && pool !== undefined && path !== undefined && size !== undefined) {
      stores.push({ node, pool: pool.name, path, size });
      storeAt.push(at);
    }
  });
  unique(r, stores, (s) => `${s.node}/${s.pool}`, (k) => storeAt[k] ?? '?', '', 'node/pool');
  unique(r, stores, (s) => `${s.node}:${s.path}`, (k) => storeAt[k] ?? '?', 'path', 'node:path');
  pools.forEach((p, i) => {
    p.members.forEach((m, j) => {
      if (!stores.some((s) => s.node === m.node && s.pool === p.name) && rawStores.length === stores.length) {
        r.fail(`${poolAt[i] ?? '?'}.members[${j}]`, `node ${m.node} has no store for pool ${p.name} (add one under stores)`);
      }
    });
  });
  const smallestStore = (pool: string): number | undefined => {
    const sizes = stores.filter((s) => s.pool === pool).map((s) => s.size);
    return sizes.length === 0 ? undefined : Math.min(...sizes);
  };

  // ---- client ----
  let client: ClusterClient | null = null;
  if (top.client !== undefined && top.client !== null) {
    const o = r.object('client', top.client, ['node', 'devices', 'nbd']);
    if (o !== undefined) {
      const node = nodeRef('client.node', o.node);
      const devices: ClusterDevice[] = [];
      const deviceAt: string[] = [];
      (r.list('client.devices', o.devices ?? [], 0, 256) ?? []).forEach((v, i) => {
        const at = `client.devices[${i}]`;
        const d = r.object(at, v, ['name', 'pool', 'size', 'export']);
        if (d === undefined) return;
        const name = r.string(`${at}.name`, d.name, { pattern: POOL_NAME_RE, hint: 'a device name [A-Za-z0-9_.-]', max_len: 64 });
        const pool = poolRef(`${at}.pool`, d.pool);
        const cap = pool === undefined ? undefined : smallestStore(pool.name);
        let size = d.size === undefined ? cap : r.size(`${at}.size`, d.size, 4096, SIZE_MAX);
        if (size !== undefined && cap !== undefined && size > cap) {
          size = r.fail(`${at}.size`, `${formatSize(size)} is larger than the smallest store of pool ${pool?.name ?? '?'} (${formatSize(cap)})`);
        } else if (size !== undefined && size % 512 !== 0) size = r.fail(`${at}.size`, `${size} is not a multiple of 512`);
        const exp = d.export === undefined ? name : r.string(`${at}.export`, d.export, { pattern: POOL_NAME_RE, hint: 'an export name [A-Za-z0-9_.-]', max_len: 64 });
        if (pool !== undefined && d.size === undefined && cap === undefined && rawStores.length === stores.length) r.fail(`${at}.size`, `pool ${pool.name} has no store to take the size from; give size`);
        if (name !== undefined && pool !== undefined && size !== undefined && exp !== undefined) {
          devices.push({ name, pool: pool.name, size, export: exp });
          deviceAt.push(at);
        }
      });
      unique(r, devices, (d) => d.name, (k) => deviceAt[k] ?? '?', 'name', 'name');
      unique(r, devices, (d) => d.export, (k) => deviceAt[k] ?? '?', 'export', 'export');
      unique(r, devices, (d) => d.pool, (k) => deviceAt[k] ?? '?', 'pool', 'pool (one device per pool)');
      let socket_dir: string | null = null;
      let tcp: ListenAddress | null = null;
      const passed = new Map<string, unknown>();
      if (o.nbd !== undefined && o.nbd !== null) {
        const n = r.object('client.nbd', o.nbd, ['socket_dir', 'tcp', ...NBD_PASSED]);
        if (n !== undefined) {
          socket_dir = n.socket_dir === undefined || n.socket_dir === null ? null : (r.string('client.nbd.socket_dir', n.socket_dir) ?? null);
          tcp = n.tcp === undefined || n.tcp === null ? null : (r.listen('client.nbd.tcp', n.tcp) ?? null);
          if (n.socket_dir === undefined && n.tcp === undefined) r.fail('client.nbd', 'give socket_dir and/or tcp, or the devices are not reachable');
          for (const k of NBD_PASSED) if (n[k] !== undefined) passed.set(k, readSettingAs(r, `client.nbd.${k}`, `nbd.${k}`, n[k]));
        }
      }
      const nbd = {
        socket_dir,
        tcp,
        tls: (passed.get('tls') ?? 'off') as TlsMode,
        tls_certificates: (passed.get('tls_certificates') ?? null) as string | null,
        tls_psk_file: (passed.get('tls_psk_file') ?? null) as string | null,
        tls_verify_peer: passed.get('tls_verify_peer') === true,
        allow_insecure: passed.get('allow_insecure') === true,
        socket_mode: (passed.get('socket_mode') ?? null) as number | null,
        socket_group: (passed.get('socket_group') ?? null) as string | null,
      };
      // The client daemon would refuse these at start: refuse them before anything starts.
      checkNbdSettings(r, 'client.nbd.', (k) => nbd[k]);
      if (node !== undefined) client = { node, devices, nbd };
    }
  }
  if (token_file === null && nodes.some((n) => n.control_url !== null)) r.fail('token_file', 'nodes reached by control_url need the bearer token file');
  nodes.forEach((n, i) => {
    if (data_tls === 'off') {
      const off = n.addresses.find((a) => !isLoopbackHost(a));
      if (off !== undefined) r.fail(`${nodeAt[i] ?? '?'}.addresses`, `${off} is not a loopback address and data_tls is off (plaintext): use data_tls: psk (the default), or data_tls: insecure`);
      // A node of several addresses listens on 0.0.0.0 (one data.listen), which its daemon
      // refuses in plaintext: say so here, before anything starts.
      else if (n.addresses.length > 1) r.fail(`${nodeAt[i] ?? '?'}.addresses`, `a node of ${n.addresses.length} addresses listens on 0.0.0.0, not loopback, and data_tls is off (plaintext): use data_tls: psk (the default), data_tls: insecure, or one address`);
    }
  });
  r.done();
  return { cluster, secret_file, data_tls, data_psk_file, control_ca_file, state_dir, token_file, nodes, stores, pools, client };
}
