// An in-process pool for tests: one client pool and N storage-node server pools on simulated
// time, with memory disks, joined and enabled by hand (the command exchange arrives with the
// dispatcher), legs wired straight to the server pools through channels a test can cut.
// The channels take any Clock: test/util/brmr-cluster.ts runs them on the real one.
import assert from 'node:assert/strict';
import { ClientPool, type LegChannel } from '../../src/rmr/client/client-pool.js';
import { ServerPool, type PeerMapCommand, type PeerQuery, type SyncSource } from '../../src/rmr/server/server-pool.js';
import type { LegCommand, LegCommandCallback } from '../../src/rmr/protocol/leg-commands.js';
import { applyPeerMapCommand, executeLegCommand } from '../../src/rmr/server/execute-command.js';
import { BackgroundSync } from '../../src/rmr/server/background-sync.js';
import { IoOp, type IoMsgValue, type MapAddValue } from '../../src/rmr/protocol/msg.js';
import type { ReadCallback } from '../../src/rmr/server/io-store.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemDisk } from '../../src/sim/mem-disk.js';
import { Errno } from '../../src/util/errno.js';
import type { Clock } from '../../src/util/ports.js';

/** A leg's link: requests reach the server pool after a latency, unless the link is cut. */
export class DirectChannel implements LegChannel {
  cut = false;
  constructor(
    private readonly clock: Clock,
    private readonly server: ServerPool,
    private readonly latency_ms = 0.05,
  ) {}
  sendIo(msg: IoMsgValue, data: Buffer | null, cb: (status: number, data: Buffer | null) => void): void {
    if (this.cut) return void this.clock.setTimer(this.latency_ms, () => cb(Errno.ENOTCONN, null));
    this.clock.setTimer(this.latency_ms, () =>
      this.server.handleIo(msg, data ?? Buffer.alloc(0), false, (s, d) => {
        // An answer on a link cut meanwhile is lost.
        this.clock.setTimer(this.latency_ms, () => (this.cut ? cb(Errno.ENOTCONN, null) : cb(s, d)));
      }),
    );
  }
  sendMapAdd(msg: MapAddValue, cb: (status: number) => void): void {
    this.clock.setTimer(this.latency_ms, () => {
      if (this.cut) return cb(Errno.ENOTCONN);
      const st = this.server.mapAdd(msg);
      if (st !== 0) return cb(st);
      this.server.syncMaps((s) => this.clock.setTimer(this.latency_ms, () => cb(this.cut ? Errno.ENOTCONN : s)));
    });
  }
  isConnected(): boolean {
    return !this.cut;
  }
  command(cmd: LegCommand, cb: LegCommandCallback): void {
    if (this.cut) return void this.clock.setTimer(this.latency_ms, () => cb(Errno.ENOTCONN, 0, 'link cut'));
    this.clock.setTimer(this.latency_ms, () => executeLegCommand(this.server, cmd, false, (s, v, r, d) => this.clock.setTimer(this.latency_ms, () => cb(s, v, r, d))));
  }
}

/** A node's sync pool: reads from NORMAL peers in turn, refusals move on to the next one. */
export class PeerSource implements SyncSource {
  readonly max_io_size = 32 * 1024;
  cleared = 0;
  constructor(
    private readonly clock: Clock,
    private readonly self: ServerPool,
    private readonly peers: () => ServerPool[],
    private readonly reachable: (peer: ServerPool) => boolean,
  ) {}
  readPeer(offset: number, length: number, cb: ReadCallback): void {
    const list = this.peers().filter((p) => p !== this.self && this.reachable(p));
    const attempt = (i: number): void => {
      const p = list[i];
      if (p === undefined) return void this.clock.setTimer(0, () => cb(Errno.EIO, null));
      const msg: IoMsgValue = { offset, length, flags: IoOp.READ, map_ver: 0, prio: 0, member_id: p.member_id, failed_cnt: 0, failed_ids: Buffer.alloc(4), sync: 1, seq: 0, settled: 0 };
      p.handleIo(msg, Buffer.alloc(0), true, (s, d) => (s === 0 ? cb(0, d) : attempt(i + 1)));
    };
    attempt(0);
  }
  peerMapCheck(member_id: number, cb: (status: number, empty: boolean) => void): void {
    const r = this.peers().find((p) => p.member_id === member_id);
    if (r === undefined || !this.reachable(r)) return void this.clock.setTimer(0, () => cb(Errno.ENOTCONN, false));
    this.clock.setTimer(0.05, () => cb(0, r.mapCheck()));
  }
  peerCommand(receiver_member_id: number, cmd: PeerMapCommand, cb: (status: number) => void): void {
    const r = this.peers().find((p) => p.member_id === receiver_member_id);
    if (r === undefined || !this.reachable(r)) return void this.clock.setTimer(0, () => cb(Errno.ENOTCONN));
    this.clock.setTimer(0.05, () => cb(applyPeerMapCommand(r, cmd)));
  }
  peerQuery(member_id: number, q: PeerQuery, cb: (status: number, data: Buffer | null) => void): void {
    const r = this.peers().find((p) => p.member_id === member_id);
    if (r === undefined || !this.reachable(r)) return void this.clock.setTimer(0, () => cb(Errno.ENOTCONN, null));
    this.clock.setTimer(0.05, () => executeLegCommand(r, q, true, (s, _v, _r, d) => this.clock.setTimer(0.05, () => cb(s, s === 0 ? (d ?? null) : null))));
  }
  mapClear(first: number, count: number, member_id: number, map_ver: number): void {
    for (const p of this.peers()) {
      if (p !== this.self && this.reachable(p)) {
        this.cleared++;
        p.mapClear({ first_chunk: first, chunk_count: count, member_id, map_ver });
      }
    }
  }
}

export interface Cluster {
  clock: SimClock;
  random: SeededRandom;
  client: ClientPool;
  servers: ServerPool[];
  disks: MemDisk[];
  /** The members' metadata disks (pool_md, maps, the intent record). */
  metas: MemDisk[];
  channels: DirectChannel[];
  syncs: BackgroundSync[];
  write(offset: number, data: Buffer): number;
  read(offset: number, length: number): [number, Buffer | null];
}

export function makeCluster(rf: number, opts: { chunk_size?: number; size?: number; seed?: number; min_replicas?: number } = {}): Cluster {
  const chunk_size = opts.chunk_size ?? 64 * 1024;
  const size = opts.size ?? 32 * chunk_size;
  const clock = new SimClock();
  const random = new SeededRandom(opts.seed ?? 1);
  const servers: ServerPool[] = [];
  const disks: MemDisk[] = [];
  const metas: MemDisk[] = [];
  const channels: DirectChannel[] = [];
  const syncs: BackgroundSync[] = [];
  const client = new ClientPool({ pool_name: 'pool1', group_id: 1, chunk_size, mapped_size: size, max_io_size: 1 << 20, min_replicas: opts.min_replicas ?? 0 }, () => clock.now(), () => undefined);
  for (let i = 0; i < rf; i++) {
    const member = i + 1;
    const disk = new MemDisk(size, clock, random);
    const meta = new MemDisk(1 << 20, clock, random);
    disk.faults.latency_ms = 0.2;
    meta.faults.latency_ms = 0.2;
    const s = new ServerPool({ pool_name: 'pool1', group_id: 1, member_id: member, chunk_size, intent_extent_shift: 20, intent_max_extents: 64 }, () => undefined);
    assert.equal(s.register({ block: disk, meta, meta_base: 0, ioAllowed: () => true }, 'create', size), null);
    // The first leg added is the clean reference; later ones start fully dirty (§7.4) but
    // the disks are equally zeroed here, so all start clean.
    assert.equal(s.join({ sync: false, create: true, dirty: false, chunk_size, members: servers.map((x) => ({ id: x.member_id, dirty: false })) }), null);
    for (const other of servers) assert.equal(other.poolInfo(member, 'add', 'create', false), null);
    assert.equal(s.enable(true), null);
    servers.push(s);
    disks.push(disk);
    metas.push(meta);
    const ch = new DirectChannel(clock, s);
    channels.push(ch);
    const leg = client.addLeg(`client@node${member}`, member, ch);
    assert.equal(client.setLegState(leg, 'NORMAL', 'enable'), null);
  }
  assert.equal(client.open(), 0);
  servers.forEach((s, i) => {
    s.sync_source = new PeerSource(clock, s, () => servers, (p) => !(channels[i] as DirectChannel).cut && !(channels[servers.indexOf(p)] as DirectChannel).cut);
    syncs.push(new BackgroundSync(s, clock, { tick_ms: 5, max_bytes_per_s: 1e12, min_bytes_per_s: 1e9 }, () => undefined));
  });
  const wait = <T>(start: (cb: (v: T) => void) => void): T => {
    let got: { v: T } | null = null;
    start((v) => (got = { v }));
    clock.runUntilTrue('IO completion', () => got !== null, clock.now() + 60_000);
    return (got as unknown as { v: T }).v;
  };
  return {
    clock,
    random,
    client,
    servers,
    disks,
    metas,
    channels,
    syncs,
    write: (offset, data) => wait<number>((cb) => client.submit('write', offset, data.length, data, {}, (s) => cb(s))),
    read: (offset, length) => wait<[number, Buffer | null]>((cb) => client.submit('read', offset, length, null, {}, (s, d) => cb([s, d]))),
  };
}
