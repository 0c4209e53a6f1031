// `rmr up` and `rmr down` as sequences of control-tree writes (the admin guide's bring-up,
// reference §11.5, and the teardown orders of §9.10), each step skipped when what it makes
// exists already, so both commands can be run again after a failure or on a running
// cluster. Pure over NodeCtl: the CLI gives real daemons, tests may give fakes.

import type { ClusterFile, ClusterPool } from '../daemon/cluster.js';

/** A daemon's control tree as `up`/`down` use it. */
export interface NodeCtl {
  readonly node: string;
  /** The file's text without the trailing newline, or null when the path does not exist. */
  read(path: string): Promise<string | null>;
  /** Writes; a refusal throws an Error whose message is the daemon's `CODE: message`. */
  write(path: string, value: string): Promise<string>;
}

export type Say = (line: string) => void;

/** A failed write whose daemon code is `code` (e.g. ENOENT). */
export function failedWith(e: unknown, code: string): boolean {
  return e instanceof Error && e.message.startsWith(`${code}:`);
}

function hostPath(host: string, port: number): string {
  return `path=ip:${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function nodeOf(cf: ClusterFile, name: string): ClusterFile['nodes'][number] {
  const n = cf.nodes.find((x) => x.name === name);
  if (n === undefined) throw new Error(`cluster file: no node ${name}`);
  return n;
}

function paths(cf: ClusterFile, node: string): string {
  const n = nodeOf(cf, node);
  return n.addresses.map((a) => hostPath(a, n.port)).join(' ');
}

/**
 * One write of the sequence. EEXIST means the object is there already (a daemon resuming
 * its objects may have made it since it was looked up): done, not a failure.
 */
async function step(ctl: NodeCtl, say: Say, path: string, value: string): Promise<string> {
  say(`${ctl.node}: ${path} ${value}`);
  try {
    return await ctl.write(path, value);
  } catch (e) {
    if (!failedWith(e, 'EEXIST')) throw e;
    say(`${ctl.node}: ${path}: exists already`);
    return '';
  }
}

/** The storage side of one pool on each member: server pool and store (created or re-added). */
async function upStorage(cf: ClusterFile, pool: ClusterPool, ctl: (node: string) => NodeCtl, say: Say): Promise<Set<string>> {
  const created = new Set<string>();
  for (const m of pool.members) {
    const n = ctl(m.node);
    const have = await n.read(`rmr-server/pools/${pool.name}/member_id`);
    if (have === null) await step(n, say, 'rmr-server/ctl/join_pool', `poolname=${pool.name} member_id=${m.member_id} chunk_size=${pool.chunk_size}`);
    else if (Number(have) !== m.member_id) throw new Error(`${m.node} holds pool ${pool.name} as member ${have}, the cluster file says ${m.member_id}`);
    const store = cf.stores.find((s) => s.node === m.node && s.pool === pool.name);
    if (store === undefined) throw new Error(`cluster file: no store of ${m.node} for pool ${pool.name}`);
    if ((await n.read(`brmr-server/stores/${pool.name}/state`)) !== null) continue;
    try {
      await step(n, say, 'brmr-server/ctl/add_store', `device=${store.path} pool=${pool.name}`);
    } catch (e) {
      // No store on that device yet (no file, or no BRMR header): this is a new member.
      if (!failedWith(e, 'ENOENT')) throw e;
      await step(n, say, 'brmr-server/ctl/create_store', `device=${store.path} pool=${pool.name} mapped_size=${store.size / 512}`);
      created.add(m.node);
    }
  }
  return created;
}

/**
 * The compute client's pool and legs: new members in create mode (then enabled), or in
 * extend mode when the pool is live already (§9.7); known members are assembled.
 */
async function upClientLegs(cf: ClusterFile, pool: ClusterPool, ctl: (node: string) => NodeCtl, created: Set<string>, live: boolean, say: Say): Promise<void> {
  const client = cf.client;
  if (client === null) return;
  const c = ctl(client.node);
  if ((await c.read(`rmr-client/pools/${pool.name}/chunk_size`)) === null) {
    await step(c, say, 'rmr-client/ctl/join_pool', `poolname=${pool.name} chunk_size=${pool.chunk_size}${pool.min_replicas > 1 ? ` min_replicas=${pool.min_replicas}` : ''}`);
  }
  for (const m of pool.members) {
    const sess = `${client.node}@${m.node}`;
    const base = `rmr-client/pools/${pool.name}/sessions/${sess}`;
    let state = await c.read(`${base}/state`);
    if (state === null) {
      const mode = created.has(m.node) ? (live ? 'extend' : 'create') : 'assemble';
      await step(c, say, `rmr-client/pools/${pool.name}/add_sess`, `sessname=${sess} ${paths(cf, m.node)} mode=${mode}`);
      state = await c.read(`${base}/state`);
    }
    if (state?.startsWith('created') === true) await step(c, say, `${base}/enable`, '1');
  }
}

/** Each member's sync pool to its peers, attached to its server pool (§7.1). */
async function upSyncPools(cf: ClusterFile, pool: ClusterPool, ctl: (node: string) => NodeCtl, say: Say): Promise<void> {
  for (const m of pool.members) {
    const n = ctl(m.node);
    if ((await n.read(`rmr-client/pools/${pool.name}/chunk_size`)) === null) {
      await step(n, say, 'rmr-client/ctl/join_pool', `poolname=${pool.name} chunk_size=${pool.chunk_size} sync=y`);
    }
    for (const peer of pool.members) {
      if (peer.node === m.node) continue;
      const sess = `${m.node}@${peer.node}`;
      if ((await n.read(`rmr-client/pools/${pool.name}/sessions/${sess}/state`)) !== null) continue;
      await step(n, say, `rmr-client/pools/${pool.name}/add_sess`, `sessname=${sess} ${paths(cf, peer.node)}`);
    }
    if ((await n.read(`rmr-server/pools/${pool.name}/clt`)) === '(none)') await step(n, say, `rmr-server/pools/${pool.name}/add_clt`, pool.name);
  }
}

async function upDevices(cf: ClusterFile, pool: ClusterPool, ctl: (node: string) => NodeCtl, say: Say): Promise<void> {
  const client = cf.client;
  if (client === null) return;
  const c = ctl(client.node);
  for (const d of client.devices) {
    if (d.pool !== pool.name) continue;
    if ((await c.read(`brmr-client/ctl/devices/${d.name}/state`)) !== null) continue;
    await step(c, say, 'brmr-client/ctl/map_device', `pool=${d.pool} size=${d.size / 512} name=${d.name} export=${d.export}`);
  }
}

/** Whether the client already serves the pool with at least one leg (a new member then extends it). */
async function clientPoolLive(cf: ClusterFile, pool: ClusterPool, ctl: (node: string) => NodeCtl): Promise<boolean> {
  if (cf.client === null) return false;
  const st = await ctl(cf.client.node).read(`rmr-client/pools/${pool.name}/status`);
  if (st === null) return false;
  const legs = (JSON.parse(st) as { legs?: unknown[] }).legs;
  return Array.isArray(legs) && legs.length > 0;
}

/** The whole bring-up, pool by pool: storage, then the client's legs and the sync pools (in the order extend needs when the pool is live), then the devices. */
export async function clusterUp(cf: ClusterFile, ctl: (node: string) => NodeCtl, say: Say): Promise<void> {
  for (const pool of cf.pools) {
    const created = await upStorage(cf, pool, ctl, say);
    if (await clientPoolLive(cf, pool, ctl)) {
      // Extend: the new members reach their peers (and the peers them) before they join.
      await upSyncPools(cf, pool, ctl, say);
      await upClientLegs(cf, pool, ctl, created, true, say);
    } else {
      await upClientLegs(cf, pool, ctl, created, false, say);
      await upSyncPools(cf, pool, ctl, say);
    }
    await upDevices(cf, pool, ctl, say);
  }
}

/**
 * Teardown in the documented order (§9.10): devices unmapped, sync sessions removed, the
 * client's legs removed (`disassemble` keeps every member's data and maps for a later
 * `up`; `delete` dissolves the pool), stores removed (or deleted: header and metadata
 * wiped), then the pools left. Steps whose object is gone are skipped.
 */
export async function clusterDown(cf: ClusterFile, ctl: (node: string) => NodeCtl, mode: 'disassemble' | 'delete', say: Say): Promise<void> {
  const client = cf.client;
  for (const pool of cf.pools) {
    if (client !== null) {
      const c = ctl(client.node);
      for (const d of client.devices) {
        if (d.pool === pool.name && (await c.read(`brmr-client/ctl/devices/${d.name}/state`)) !== null) await step(c, say, `brmr-client/ctl/devices/${d.name}/unmap_device`, '1');
      }
    }
    for (const m of pool.members) {
      const n = ctl(m.node);
      for (const peer of pool.members) {
        const sess = `${m.node}@${peer.node}`;
        if (peer.node !== m.node && (await n.read(`rmr-client/pools/${pool.name}/sessions/${sess}/state`)) !== null) {
          await step(n, say, `rmr-client/pools/${pool.name}/sessions/${sess}/del_sess`, 'mode=disassemble');
        }
      }
    }
    if (client !== null) {
      const c = ctl(client.node);
      for (const m of pool.members) {
        const sess = `${client.node}@${m.node}`;
        if ((await c.read(`rmr-client/pools/${pool.name}/sessions/${sess}/state`)) !== null) await step(c, say, `rmr-client/pools/${pool.name}/sessions/${sess}/del_sess`, `mode=${mode}`);
      }
    }
    for (const m of pool.members) {
      const n = ctl(m.node);
      if ((await n.read(`brmr-server/stores/${pool.name}/state`)) !== null) await step(n, say, `brmr-server/stores/${pool.name}/${mode === 'delete' ? 'delete_store' : 'remove_store'}`, '1');
    }
    if (client !== null) {
      const c = ctl(client.node);
      if ((await c.read(`rmr-client/pools/${pool.name}/chunk_size`)) !== null) await step(c, say, `rmr-client/pools/${pool.name}/leave_pool`, '1');
    }
    for (const m of pool.members) {
      const n = ctl(m.node);
      if ((await n.read(`rmr-server/pools/${pool.name}/member_id`)) !== null) await step(n, say, `rmr-server/pools/${pool.name}/leave_pool`, '1');
      if ((await n.read(`rmr-client/pools/${pool.name}/chunk_size`)) !== null) await step(n, say, `rmr-client/pools/${pool.name}/leave_pool`, '1');
    }
  }
}
