// One storage node of the NBD benchmark, in its own process, built from the library as
// test/util/brmr-cluster.ts builds one over loopback: a ServerPool with a file store made
// by its StoreManager, an RmrServerNode behind a TransportServer on real TCP, a sync pool
// to its peers, the background sync and the pool's tickers, on the NodeClock. A stand-in for
// `rmr daemon` with the storage role until that exists (bench/rmr-setup.ts hides which).
//
// Usage: node rmr-storage-node.js '<json config>'. Talks JSON lines:
//   out {"listening":PORT}                  the transport listens, the store is created
//   in  {"cmd":"peers","peers":[{"member_id":N,"port":P},...]}
//   out {"ready":true}                      the sync pool has joined every peer
//   in  {"cmd":"dirty_all"}                 the own map becomes fully dirty, as add_store
//                                           mode=replace leaves a new disk; resync starts
//   out {"resynced":true,"ms":T,"bytes":B}  the own map is clean again
//   in  {"cmd":"status"} -> out {"status":{...}}
import { createInterface } from 'node:readline';
import { ServerPool } from '../src/rmr/server-pool.js';
import { RmrServerNode } from '../src/rmr/server-node.js';
import { ClientPool } from '../src/rmr/client-pool.js';
import { SyncPoolSource } from '../src/rmr/sync-pool.js';
import { TransportLeg } from '../src/rmr/transport-leg.js';
import { BackgroundSync, type SyncOptions } from '../src/rmr/background-sync.js';
import { serverPoolTickers } from '../src/rmr/tickers.js';
import { ClientSession } from '../src/transport/client-session.js';
import { TransportServer } from '../src/transport/server.js';
import { NodeNet } from '../src/transport/node-net.js';
import { StoreManager } from '../src/brmr/server/store-manager.js';
import { NodeFileBackend, nodeFileOpener } from '../src/brmr/server/node-file-backend.js';
import { groupId } from '../src/util/jhash.js';
import { NodeClock, NodeRandom } from '../src/util/node-ports.js';
import type { Logger } from '../src/util/ports.js';

export interface StorageNodeConfig {
  pool: string;
  member_id: number;
  /** The store file (created, or pre-filled from byte 4096 on). */
  path: string;
  size_bytes: number;
  chunk_size: number;
  secret_hex: string;
  host: string;
  sync?: Partial<SyncOptions>;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as StorageNodeConfig;
const out = (m: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(m)}\n`);
const log: Logger = {
  log: (level, msg, fields) => {
    if (level === 'warn' || level === 'error') process.stderr.write(`[node${cfg.member_id}] ${level} ${msg} ${JSON.stringify(fields ?? {})}\n`);
  },
};
const clock = new NodeClock();
const random = new NodeRandom();
const secret = Buffer.from(cfg.secret_hex, 'hex');
const gid = groupId(cfg.pool);
const ports = (): { net: NodeNet; clock: NodeClock; random: NodeRandom } => ({ net: new NodeNet(), clock, random });

const pool = new ServerPool({ pool_name: cfg.pool, group_id: gid, member_id: cfg.member_id, chunk_size: cfg.chunk_size }, () => undefined);
const manager = new StoreManager({
  open: nodeFileOpener,
  random,
  wall_ms: () => Date.now(),
  serverPool: (name) => (name === cfg.pool ? pool : undefined),
  log,
  emit: () => undefined,
});
const [st, , why] = await new Promise<[number, unknown, string | null]>((resolve) => manager.createStore({ pool: cfg.pool, device: cfg.path, mapped_size: cfg.size_bytes }, (s, store, r) => resolve([s, store, r])));
if (st !== 0) {
  out({ error: `create_store: ${why ?? st}` });
  process.exit(1);
}
const rmr = new RmrServerNode(log);
rmr.addPool(pool);
const server = new TransportServer({ secret }, ports(), rmr);
const { port } = await server.listen({ host: cfg.host, port: 0 });
const tickers = serverPoolTickers(clock, pool, (s) => log.log('warn', 'metadata write failed', { status: s }));
let sync: BackgroundSync | null = null;
let dirty_since: number | null = null;
let watch: NodeJS.Timeout | null = null;

async function joinPeers(peers: { member_id: number; port: number }[]): Promise<void> {
  const sp = new ClientPool({ pool_name: cfg.pool, group_id: gid, chunk_size: cfg.chunk_size, mapped_size: cfg.size_bytes, max_io_size: 1 << 20, sync: true }, () => clock.now(), () => undefined);
  const src = new SyncPoolSource(sp);
  for (const p of peers) {
    if (p.member_id === cfg.member_id) continue;
    const s = new ClientSession({ session_name: `node${cfg.member_id}@node${p.member_id}`, addresses: [{ host: cfg.host, port: p.port }], secret }, ports());
    await s.open();
    const [x, r] = await new Promise<[number, string | null]>((resolve) => src.addPeer(s.name, new TransportLeg(s, gid, cfg.pool, cfg.chunk_size, true), (a, b) => resolve([a, b])));
    if (x !== 0) throw new Error(`sync pool join of node ${p.member_id}: ${r ?? x}`);
  }
  const err = pool.addClt(src);
  if (err !== null) throw new Error(`add_clt: ${err}`);
  sync = new BackgroundSync(pool, clock, cfg.sync ?? {}, () => undefined);
}

function status(): Record<string, unknown> {
  const backend = manager.store(cfg.pool)?.backend;
  const gates = backend instanceof NodeFileBackend ? { read: backend.read_gate?.stats ?? null, write: backend.write_gate?.stats ?? null } : null;
  return { state: pool.state, dirty_chunks: pool.ownMap()?.dirtyCount ?? -1, sync: sync?.progress() ?? null, stats: pool.stats, sync_io: gates };
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let m: { cmd?: string; peers?: { member_id: number; port: number }[] };
  try {
    m = JSON.parse(line) as typeof m;
  } catch {
    return out({ error: `bad command line ${line}` });
  }
  if (m.cmd === 'peers') {
    joinPeers(m.peers ?? []).then(
      () => out({ ready: true }),
      (e: unknown) => out({ error: String(e) }),
    );
  } else if (m.cmd === 'dirty_all') {
    const own = pool.ownMap();
    if (own === undefined) return out({ error: 'no own map' });
    own.setAll();
    dirty_since = performance.now();
    const bytes = cfg.size_bytes;
    if (watch !== null) clearInterval(watch);
    watch = setInterval(() => {
      if (dirty_since === null || !own.isEmpty()) return;
      out({ resynced: true, ms: performance.now() - dirty_since, bytes });
      dirty_since = null;
      if (watch !== null) clearInterval(watch);
      watch = null;
    }, 5);
    out({ dirty: own.dirtyCount });
  } else if (m.cmd === 'status') out({ status: status() });
  else out({ error: `unknown command ${m.cmd ?? ''}` });
});

process.on('SIGTERM', () => {
  for (const t of tickers) t.stop();
  sync?.close();
  process.exit(0);
});
out({ listening: port, pid: process.pid });
