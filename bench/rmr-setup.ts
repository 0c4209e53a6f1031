// The benchmark's RMR cluster behind one function: N storage-node processes and one
// compute-client process exporting the device over NBD on TCP. Today the processes are the
// fixtures bench/rmr-storage-node.ts and bench/rmr-compute-client.ts (the library wired as
// test/util/brmr-cluster.ts wires it); when `rmr daemon` hosts the storage and client roles,
// only this file changes. The caller gets the NBD URI, every server pid (for CPU
// accounting), the store files, and control of resync.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonChild } from './child.js';
import type { StorageNodeConfig } from './rmr-storage-node.js';
import type { ComputeClientConfig } from './rmr-compute-client.js';
import type { SyncOptions } from '../src/rmr/background-sync.js';

/** Where a store's data area starts in its file (BRMR header before it). */
export const STORE_DATA_OFFSET = 4096;

export interface RmrSetupOptions {
  nodes: number;
  /** Directory of the store files (store<member_id>.img). */
  dir: string;
  size_bytes: number;
  chunk_size?: number;
  /** Extra node arguments of every server process (e.g. --cpu-prof). */
  node_args?: string[];
  /** Extra environment of every server process (e.g. UV_THREADPOOL_SIZE). */
  env?: NodeJS.ProcessEnv;
  /** Background sync settings of the storage nodes. */
  sync?: Partial<SyncOptions>;
  queue_depth?: number;
  initial_sync_timeout_ms?: number;
}

export interface RmrSetup {
  nbd_uri: string;
  /** Every server process: storage nodes first, then the compute client. */
  pids: number[];
  /** Store files, member 1 first; the device's bytes start at STORE_DATA_OFFSET. */
  dataFiles: string[];
  /** Makes member `member_id` fully dirty; resolves with the time its resync took. */
  resync(member_id: number, timeout_ms?: number): Promise<{ ms: number; bytes: number }>;
  /** Every storage node's state, dirty chunks and sync progress. */
  status(): Promise<Record<string, unknown>[]>;
  /**
   * How long the initial sync took: a new pool's members after the first start fully
   * dirty and copy the device from the first (startRmr waits for it).
   */
  initial_sync_ms: number;
  stop(): Promise<void>;
}

/** Path of member `member_id`'s store file in `dir`. */
export function storePath(dir: string, member_id: number): string {
  return join(dir, `store${member_id}.img`);
}

const here = (f: string): string => fileURLToPath(new URL(f, import.meta.url));

export async function startRmr(o: RmrSetupOptions): Promise<RmrSetup> {
  const pool = 'bench';
  const chunk_size = o.chunk_size ?? 128 * 1024;
  const secret_hex = randomBytes(32).toString('hex');
  const host = '127.0.0.1';
  const spawnOpts = { node_args: o.node_args ?? [], env: o.env ?? {} };
  const nodes: JsonChild[] = [];
  const children: JsonChild[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(children.map((c) => c.stop()));
  };
  try {
    const ids = Array.from({ length: o.nodes }, (_, i) => i + 1);
    for (const member_id of ids) {
      const c: StorageNodeConfig = { pool, member_id, path: storePath(o.dir, member_id), size_bytes: o.size_bytes, chunk_size, secret_hex, host, sync: o.sync };
      const child = new JsonChild(`node${member_id}`, here('./rmr-storage-node.js'), [JSON.stringify(c)], spawnOpts);
      nodes.push(child);
      children.push(child);
    }
    const peers: { member_id: number; port: number }[] = [];
    for (const [i, n] of nodes.entries()) {
      const m = await n.wait((x) => typeof x.listening === 'number' || typeof x.error === 'string');
      if (typeof m.error === 'string') throw new Error(`${n.name}: ${m.error}`);
      peers.push({ member_id: i + 1, port: m.listening as number });
    }
    for (const n of nodes) n.send({ cmd: 'peers', peers });
    for (const n of nodes) {
      const m = await n.wait((x) => x.ready === true || typeof x.error === 'string');
      if (typeof m.error === 'string') throw new Error(`${n.name}: ${m.error}`);
    }
    const cc: ComputeClientConfig = { pool, export_name: 'rmr', size_bytes: o.size_bytes, chunk_size, secret_hex, host, nodes: peers, queue_depth: o.queue_depth ?? 128 };
    const client = new JsonChild('client', here('./rmr-compute-client.js'), [JSON.stringify(cc)], spawnOpts);
    children.push(client);
    const m = await client.wait((x) => x.ready === true || typeof x.error === 'string');
    if (typeof m.error === 'string') throw new Error(`client: ${m.error}`);
    const status = async (): Promise<Record<string, unknown>[]> => {
      const out: Record<string, unknown>[] = [];
      for (const n of nodes) {
        n.send({ cmd: 'status' });
        out.push((await n.wait((x) => typeof x.status === 'object')).status as Record<string, unknown>);
      }
      return out;
    };
    // Every member but the first joined a pool that had members already: it starts fully
    // dirty and copies the device from them. Measurements start once all are clean.
    const t0 = performance.now();
    const deadline = Date.now() + (o.initial_sync_timeout_ms ?? 600_000);
    while ((await status()).some((x) => x.dirty_chunks !== 0 || x.state !== 'NORMAL')) {
      if (Date.now() > deadline) throw new Error('the initial sync did not finish');
      await new Promise((r) => setTimeout(r, 50));
    }
    const initial_sync_ms = performance.now() - t0;
    return {
      initial_sync_ms,
      nbd_uri: `nbd://${host}:${m.nbd_port as number}/rmr`,
      pids: children.map((c) => c.pid),
      dataFiles: ids.map((id) => storePath(o.dir, id)),
      resync: async (member_id, timeout_ms = 600_000) => {
        const n = nodes[member_id - 1];
        if (n === undefined) throw new Error(`no member ${member_id}`);
        n.send({ cmd: 'dirty_all' });
        await n.wait((x) => typeof x.dirty === 'number');
        const r = await n.wait((x) => x.resynced === true, timeout_ms);
        return { ms: r.ms as number, bytes: r.bytes as number };
      },
      status,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
