// The compute client of the NBD benchmark, in its own process, built from the library as
// test/util/brmr-cluster.ts builds it over loopback: a ClientPool with one leg per storage
// node (a ClientSession and a TransportLeg each, add_sess create + enable), the BRMR device
// mapped on it, and an NbdServer exporting it on TCP, on the NodeClock. A stand-in for
// `rmr daemon` with the client role until that exists (bench/rmr-setup.ts hides which).
//
// Usage: node rmr-compute-client.js '<json config>'; prints {"ready":true,"nbd_port":N}.
import { ClientPool } from '../src/rmr/client-pool.js';
import { TransportLeg } from '../src/rmr/transport-leg.js';
import { followLinkEvents } from '../src/rmr/leg-links.js';
import { clientPoolTickers } from '../src/rmr/tickers.js';
import { ClientSession } from '../src/transport/client-session.js';
import { NodeNet } from '../src/transport/node-net.js';
import { mapDevice, type BrmrDevice } from '../src/brmr/client/device.js';
import { NbdServer } from '../src/nbd/server.js';
import { groupId } from '../src/util/jhash.js';
import { NodeClock, NodeRandom } from '../src/util/node-ports.js';
import type { Logger } from '../src/util/ports.js';

export interface ComputeClientConfig {
  pool: string;
  export_name: string;
  size_bytes: number;
  chunk_size: number;
  secret_hex: string;
  host: string;
  nodes: { member_id: number; port: number }[];
  queue_depth: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as ComputeClientConfig;
const out = (m: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(m)}\n`);
const log: Logger = {
  log: (level, msg, fields) => {
    if (level === 'warn' || level === 'error') process.stderr.write(`[client] ${level} ${msg} ${JSON.stringify(fields ?? {})}\n`);
  },
};
const clock = new NodeClock();
const random = new NodeRandom();
const secret = Buffer.from(cfg.secret_hex, 'hex');
const gid = groupId(cfg.pool);

try {
  const client = new ClientPool({ pool_name: cfg.pool, group_id: gid, chunk_size: cfg.chunk_size, mapped_size: cfg.size_bytes, max_io_size: 1 << 20 }, () => clock.now(), () => undefined);
  const tickers = clientPoolTickers(clock, client);
  for (const n of cfg.nodes) {
    const name = `client@node${n.member_id}`;
    const sess = new ClientSession({ session_name: name, addresses: [{ host: cfg.host, port: n.port }], secret }, { net: new NodeNet(), clock, random });
    await sess.open();
    const ch = new TransportLeg(sess, gid, cfg.pool, cfg.chunk_size, false);
    const leg = await new Promise<NonNullable<ReturnType<ClientPool['leg']>>>((resolve, reject) =>
      client.addSess(name, ch, 'create', cfg.queue_depth, (s, l, r) => (s === 0 && l !== null ? resolve(l) : reject(new Error(`add_sess node ${n.member_id}: ${r ?? s}`)))),
    );
    followLinkEvents(sess, client, leg, log);
    await new Promise<void>((resolve, reject) => client.enableLeg(leg, (s, r) => (s === 0 ? resolve() : reject(new Error(`enable node ${n.member_id}: ${r ?? s}`)))));
  }
  const device = await new Promise<BrmrDevice>((resolve, reject) =>
    mapDevice({ pool: client, size_sectors: cfg.size_bytes / 512, queue_depth: cfg.queue_depth, log }, (s, d, r) => (s === 0 && d !== null ? resolve(d) : reject(new Error(`map_device: ${r ?? s}`)))),
  );
  const nbd = new NbdServer({ clock, logger: log });
  nbd.addExport(cfg.export_name, device, `replicated over ${cfg.nodes.length} storage nodes`);
  const listener = await new NodeNet().listen({ host: cfg.host, port: 0 }, (s) => nbd.accept(s));
  process.on('SIGTERM', () => {
    for (const t of tickers) t.stop();
    process.exit(0);
  });
  out({ ready: true, nbd_port: listener.address.port, pid: process.pid });
} catch (e) {
  out({ error: e instanceof Error ? e.message : String(e) });
  process.exit(1);
}
