// An in-process pool on simulated time for the recovery and lifecycle tests: storage nodes
// (server pool, memory disks, sync source, background sync, periodic work) and a compute
// client, joined and enabled through the real commands (executeLegCommand), with the failures
// the tests need: a leg cut (the node notices as it does when its client's session drops), a
// client crash and restart (a new ClientPool assembling every member), a storage-node crash
// with power loss and a restart from its disks (add_store), extend, disk replacement.
//
// A crashed node's or client's objects may still hold callbacks; they reach nothing: its
// disks are seen through a gate closed at the crash, its channels are cut.
import assert from 'node:assert/strict';
import { ClientPool, type Leg, type LegChannel } from '../../src/rmr/client/client-pool.js';
import type { LegStateEvent } from '../../src/rmr/client/leg-state.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import type { LegCommand, LegCommandCallback } from '../../src/rmr/protocol/leg-commands.js';
import { executeLegCommand } from '../../src/rmr/server/execute-command.js';
import { BackgroundSync } from '../../src/rmr/server/background-sync.js';
import { Ticker } from '../../src/util/ticker.js';
import type { IoMsgValue, MapAddValue } from '../../src/rmr/protocol/msg.js';
import type { BlockStore, IoCallback, MetaStore, ReadCallback } from '../../src/rmr/server/io-store.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { MemDisk } from '../../src/sim/mem-disk.js';
import { Errno } from '../../src/util/errno.js';
import { PeerSource } from './inproc-cluster.js';

/** A disk as one life of a node sees it: after the gate closes, nothing goes through. */
export class GatedDisk implements BlockStore, MetaStore {
  open = true;
  /** A data write or write-zeroes came (a blank store stops being blank at its first). */
  written = false;
  constructor(readonly disk: MemDisk) {}
  get size_bytes(): number {
    return this.disk.size_bytes;
  }
  get meta_size_bytes(): number {
    return this.disk.meta_size_bytes;
  }
  read(o: number, l: number, cb: ReadCallback): void {
    if (this.open) this.disk.read(o, l, (s, d) => this.open && cb(s, d));
  }
  write(o: number, d: Buffer, fua: boolean, cb: IoCallback): void {
    this.written = true;
    if (this.open) this.disk.write(o, d, fua, (s) => this.open && cb(s));
  }
  discard(o: number, l: number, cb: IoCallback): void {
    if (this.open) this.disk.discard(o, l, (s) => this.open && cb(s));
  }
  writeZeroes(o: number, l: number, cb: IoCallback): void {
    this.written = true;
    if (this.open) this.disk.writeZeroes(o, l, (s) => this.open && cb(s));
  }
  flush(cb: IoCallback): void {
    if (this.open) this.disk.flush((s) => this.open && cb(s));
  }
  readMeta(o: number, l: number, cb: ReadCallback): void {
    if (this.open) this.disk.readMeta(o, l, (s, d) => this.open && cb(s, d));
  }
  writeMeta(o: number, d: Buffer, cb: IoCallback): void {
    if (this.open) this.disk.writeMeta(o, d, (s) => this.open && cb(s));
  }
}

export interface RNode {
  member_id: number;
  pool: ServerPool;
  data: MemDisk;
  meta: MemDisk;
  gates: GatedDisk[];
  source: PeerSource;
  sync: BackgroundSync;
  tickers: Ticker[];
  /** The process runs (false between a crash and its restart). */
  up: boolean;
  /** Still a member (false after del_sess delete). */
  in_pool: boolean;
  /** The pool UUID its store's header carries (as BRMR's; all zero: none assigned). */
  pool_uuid: Buffer;
}

/** A leg's link to a node: follows the node across restarts; a cut link answers ENOTCONN. */
export class NodeChannel implements LegChannel {
  cut = false;
  latency_ms = 0.05;
  constructor(
    private readonly c: RecoveryCluster,
    readonly node: RNode,
  ) {}
  private gone(): boolean {
    return this.cut || !this.node.up;
  }
  private later(fn: () => void): void {
    this.c.clock.setTimer(this.latency_ms, fn);
  }
  /**
   * As the transport's request timeout: with `request_timeout_ms` set, a request not answered
   * in time fails with ETIMEDOUT and its late answer is dropped (the node may still run it).
   */
  private timed<A extends unknown[]>(cb: (...a: A) => void, timeout: (cb: (...a: A) => void) => void): (...a: A) => void {
    const ms = this.c.request_timeout_ms;
    if (ms <= 0) return cb;
    let done = false;
    const t = this.c.clock.setTimer(ms, () => {
      done = true;
      timeout(cb);
    });
    return (...a: A) => {
      if (done) return;
      done = true;
      this.c.clock.cancel(t);
      cb(...a);
    };
  }
  sendIo(msg: IoMsgValue, data: Buffer | null, answer: (status: number, data: Buffer | null) => void): void {
    const cb = this.timed(answer, (f) => f(Errno.ETIMEDOUT, null));
    if (this.gone()) return this.later(() => cb(Errno.ENOTCONN, null));
    const pool = this.node.pool;
    this.later(() => {
      if (this.gone() || pool !== this.node.pool) return cb(Errno.ENOTCONN, null);
      pool.handleIo(msg, data ?? Buffer.alloc(0), false, (s, d) => this.later(() => (this.gone() || pool !== this.node.pool ? cb(Errno.ENOTCONN, null) : cb(s, d))));
    });
  }
  sendMapAdd(msg: MapAddValue, answer: (status: number) => void): void {
    const cb = this.timed(answer, (f) => f(Errno.ETIMEDOUT));
    const pool = this.node.pool;
    this.later(() => {
      if (this.gone() || pool !== this.node.pool) return cb(Errno.ENOTCONN);
      const st = pool.mapAdd(msg);
      if (st !== 0) return cb(st);
      pool.syncMaps((s) => this.later(() => cb(this.gone() ? Errno.ENOTCONN : s)));
    });
  }
  isConnected(): boolean {
    return !this.gone();
  }
  command(cmd: LegCommand, answer: LegCommandCallback): void {
    const cb = this.timed(answer, (f) => f(Errno.ETIMEDOUT, 0, 'request timed out'));
    this.c.onCommand?.(this.node.member_id, cmd);
    if (this.gone()) return this.later(() => cb(Errno.ENOTCONN, 0, 'link cut'));
    const pool = this.node.pool;
    this.later(() => {
      if (this.gone() || pool !== this.node.pool) return cb(Errno.ENOTCONN, 0, 'link cut');
      executeLegCommand(pool, cmd, false, (s, v, r, d) => this.later(() => (this.gone() ? cb(Errno.ENOTCONN, 0, 'link cut') : cb(s, v, r, d))));
    });
  }
}

export interface RecoveryClusterOptions {
  chunk_size?: number;
  /** Chunks of the device. */
  chunks?: number;
  seed?: number;
  /** Intent extent size (default: one chunk) and how many the record holds. */
  intent_extent_shift?: number;
  intent_max_extents?: number;
  /** The client's requests fail with ETIMEDOUT after this long (0: never), as over the transport. */
  request_timeout_ms?: number;
  /** The pool UUID of each node's store header (default: none assigned). */
  pool_uuids?: Readonly<Record<number, Buffer>>;
  /** Members whose stores start blank (all zeroes, never written: RegisteredStore.blank) until their first write. */
  blank_members?: readonly number[];
}

const POOL = 'rpool';
const GID = 7;

export class RecoveryCluster {
  readonly clock = new SimClock();
  readonly random: SeededRandom;
  readonly chunk_size: number;
  readonly size: number;
  readonly nodes: RNode[] = [];
  client!: ClientPool;
  channels = new Map<number, NodeChannel>();
  private client_tickers: Ticker[] = [];
  private readonly o: Required<Omit<RecoveryClusterOptions, 'pool_uuids' | 'blank_members'>>;
  private readonly blank_members: readonly number[];
  /** Sees every command the client sends, before it leaves (tests check preconditions). */
  onCommand: ((member_id: number, cmd: LegCommand) => void) | null = null;
  /** Every leg state change refused by the gatekeeper (a test expects none). */
  readonly refused: string[] = [];
  /** Every leg state change of the current and earlier clients, in order. */
  readonly leg_events: LegStateEvent[] = [];
  private readonly pool_uuids: Readonly<Record<number, Buffer>>;
  /** See RecoveryClusterOptions.request_timeout_ms; may be changed between steps. */
  request_timeout_ms: number;

  constructor(rf: number, o: RecoveryClusterOptions = {}) {
    this.chunk_size = o.chunk_size ?? 16 * 1024;
    this.size = (o.chunks ?? 32) * this.chunk_size;
    this.random = new SeededRandom(o.seed ?? 1);
    this.request_timeout_ms = o.request_timeout_ms ?? 0;
    this.pool_uuids = o.pool_uuids ?? {};
    this.blank_members = o.blank_members ?? [];
    this.o = { chunk_size: this.chunk_size, chunks: o.chunks ?? 32, seed: o.seed ?? 1, intent_extent_shift: o.intent_extent_shift ?? Math.log2(this.chunk_size), intent_max_extents: o.intent_max_extents ?? 64, request_timeout_ms: this.request_timeout_ms };
    for (let m = 1; m <= rf; m++) this.addNode(m);
    this.newClient();
    for (const n of this.nodes) {
      const leg = this.join(n, 'create');
      this.must('enable', (cb) => this.client.enableLeg(leg, cb));
    }
    assert.equal(this.client.open(), 0);
    this.until('initial sync', () => this.nodes.every((n) => n.pool.ownMap()?.isEmpty() === true), 30_000);
  }

  private newServerPool(n: RNode, mode: 'create' | 'add' | 'replace'): ServerPool {
    for (const g of n.gates) g.open = false;
    const data = new GatedDisk(n.data);
    const meta = new GatedDisk(n.meta);
    n.gates = [data, meta];
    const pool = new ServerPool({ pool_name: POOL, group_id: GID, member_id: n.member_id, chunk_size: this.chunk_size, intent_extent_shift: this.o.intent_extent_shift, intent_max_extents: this.o.intent_max_extents }, () => undefined);
    assert.equal(pool.register(this.registered(n, data, meta), mode, this.size), null);
    return pool;
  }

  /** The store as RMR sees it; its header's pool UUID is the node's `pool_uuid`, read each time. */
  private registered(n: RNode, data: GatedDisk, meta: GatedDisk): { block: GatedDisk; meta: GatedDisk; meta_base: number; ioAllowed: () => boolean; poolUuid: () => Buffer; blank: () => boolean } {
    return { block: data, meta, meta_base: 0, ioAllowed: () => true, poolUuid: () => n.pool_uuid, blank: () => this.blank_members.includes(n.member_id) && !data.written };
  }

  /** The node's sync source, background sync and periodic work for its current pool. */
  private wire(n: RNode): void {
    for (const t of n.tickers) t.stop();
    n.sync?.close();
    n.source = new PeerSource(this.clock, n.pool, () => this.nodes.filter((x) => x.up && x.in_pool).map((x) => x.pool), () => n.up);
    n.pool.sync_source = null;
    assert.equal(n.pool.addClt(n.source), null);
    n.sync = new BackgroundSync(n.pool, this.clock, { tick_ms: 5, max_bytes_per_s: 1e12, min_bytes_per_s: 1e9, retry_ms: 50 }, () => undefined);
    const pool = n.pool;
    n.tickers = [
      new Ticker(this.clock, 100, () => pool.checkPeerMaps()),
      new Ticker(this.clock, 100, () => pool.exchangeMetadata()),
      new Ticker(this.clock, 50, () => {
        if (pool.hasStore) pool.persistMetadata(() => undefined);
      }),
    ];
  }

  addNode(member_id: number): RNode {
    const data = new MemDisk(this.size, this.clock, this.random);
    const meta = new MemDisk(1 << 20, this.clock, this.random);
    data.faults.latency_ms = 0.2;
    meta.faults.latency_ms = 0.1;
    const n = { member_id, data, meta, gates: [], up: true, in_pool: true, tickers: [], pool_uuid: Buffer.from(this.pool_uuids[member_id] ?? Buffer.alloc(16)) } as unknown as RNode;
    n.pool = this.newServerPool(n, 'create');
    this.wire(n);
    this.nodes.push(n);
    return n;
  }

  node(member_id: number): RNode {
    const n = this.nodes.find((x) => x.member_id === member_id);
    assert.ok(n !== undefined, `node ${member_id}`);
    return n;
  }

  /** A new client process with no leg yet (restartClient joins every member). */
  newClient(): void {
    for (const t of this.client_tickers) t.stop();
    this.client = new ClientPool({ pool_name: POOL, group_id: GID, chunk_size: this.chunk_size, mapped_size: this.size, max_io_size: 1 << 20, map_clean_delay_ms: 0, on_refused: (r) => this.refused.push(r) }, () => this.clock.now(), (ev) => this.leg_events.push(ev));
    this.channels = new Map();
    const client = this.client;
    this.client_tickers = [new Ticker(this.clock, 50, () => client.recoveryTick())];
  }

  private channelTo(n: RNode): NodeChannel {
    const ch = new NodeChannel(this, n);
    this.channels.set(n.member_id, ch);
    return ch;
  }

  /** add_sess on the current client. */
  join(n: RNode, mode: 'create' | 'assemble'): Leg {
    let leg: Leg | null = null;
    this.must(`add_sess ${mode} ${n.member_id}`, (cb) =>
      this.client.addSess(`client@node${n.member_id}`, this.channelTo(n), mode, 128, (s, l, r) => {
        leg = l;
        cb(s, r);
      }),
    );
    return leg as unknown as Leg;
  }

  /** add_sess on the current client that may be refused: its status and reason. */
  tryJoin(n: RNode, mode: 'create' | 'assemble'): [number, string | null] {
    return this.call(`add_sess ${mode} ${n.member_id}`, (cb) => this.client.addSess(`client@node${n.member_id}`, this.channelTo(n), mode, 128, (s, _l, r) => cb(s, r)));
  }

  // ------------------------------------------------------------------ time

  run(ms: number): void {
    this.clock.runUntil(this.clock.now() + ms);
  }

  until(what: string, cond: () => boolean, within_ms = 30_000): void {
    this.clock.runUntilTrue(what, cond, this.clock.now() + within_ms);
  }

  /** Runs an operation with a (status, reason) callback to its end; asserts success. */
  must(what: string, op: (cb: (status: number, reason: string | null) => void) => void): void {
    const [s, r] = this.call(what, op);
    assert.equal(s, 0, `${what}: ${r ?? ''}`);
  }

  call(what: string, op: (cb: (status: number, reason: string | null) => void) => void): [number, string | null] {
    let got: [number, string | null] | null = null;
    op((s, r) => (got = [s, r]));
    this.until(what, () => got !== null, 60_000);
    return got as unknown as [number, string | null];
  }

  // ------------------------------------------------------------------ IO

  write(offset: number, data: Buffer, fua = false): number {
    return this.call('write', (cb) => this.client.submit('write', offset, data.length, data, { fua }, (s) => cb(s, null)))[0];
  }

  read(offset: number, length: number): [number, Buffer | null] {
    let got: [number, Buffer | null] | null = null;
    this.client.submit('read', offset, length, null, {}, (s, d) => (got = [s, d]));
    this.until('read', () => got !== null, 60_000);
    return got as unknown as [number, Buffer | null];
  }

  flush(): number {
    return this.call('flush', (cb) => this.client.submit('flush', 0, 0, null, {}, (s) => cb(s, null)))[0];
  }

  /** Writes a seeded pattern over random ranges (4 KiB .. 3 chunks); returns the bytes written. */
  writeStream(n: number, model: Buffer, tag = 1): void {
    for (let i = 0; i < n; i++) {
      const len = 4096 * (1 + this.random.int(Math.min(48, (3 * this.chunk_size) / 4096)));
      const off = 4096 * this.random.int((model.length - len) / 4096 + 1);
      const data = pattern(tag * 1000 + i, len);
      assert.equal(this.write(off, data), 0, `write ${i} at ${off}+${len}`);
      data.copy(model, off);
    }
  }

  // ------------------------------------------------------------------ failures

  /** The client's link to a node drops: the node leaves IO service (as RmrServerNode.clientGone). */
  cut(member_id: number): void {
    const ch = this.channels.get(member_id);
    assert.ok(ch !== undefined);
    ch.cut = true;
    const pool = this.node(member_id).pool;
    if (pool.state === 'NORMAL') pool.sm.change('NO_IO', 'client session lost (test cut)');
    const leg = this.client.leg(member_id);
    if (leg !== undefined && leg.state !== 'REMOVING') this.client.setLegState(leg, 'FAILED', 'link cut');
  }

  /** The link is back: the leg rejoins (as a RECONNECTED link event does). */
  heal(member_id: number): void {
    const ch = this.channels.get(member_id);
    assert.ok(ch !== undefined);
    ch.cut = false;
    const leg = this.client.leg(member_id);
    if (leg !== undefined && leg.state === 'FAILED') this.client.rejoinLeg(leg, () => undefined);
  }

  /** The compute client dies: its links go dark, the nodes notice. Its IO never completes. */
  crashClient(): void {
    for (const t of this.client_tickers) t.stop();
    this.client_tickers = [];
    for (const ch of this.channels.values()) ch.cut = true;
    for (const n of this.nodes) if (n.up && n.pool.state === 'NORMAL') n.pool.sm.change('NO_IO', 'client session lost (client crash)');
  }

  /** A new client process: add_sess mode=assemble for each member up; returns once NORMAL. */
  restartClient(members: number[] = this.nodes.filter((n) => n.in_pool).map((n) => n.member_id)): void {
    this.newClient();
    for (const id of members) this.join(this.node(id), 'assemble');
    assert.equal(this.client.open(), 0);
  }

  /** A storage node crashes; its unflushed writes are dropped or torn. */
  crashNode(member_id: number, mode: 'process' | 'drop' | 'tear' = 'drop'): void {
    const n = this.node(member_id);
    n.up = false;
    for (const g of n.gates) g.open = false;
    for (const t of n.tickers) t.stop();
    n.sync.close();
    n.data.crash(mode);
    n.meta.crash(mode);
    const leg = this.client.leg(member_id);
    if (leg !== undefined && leg.state !== 'REMOVING') this.client.setLegState(leg, 'FAILED', 'node crashed');
  }

  /** The node restarts: join_pool, add_store (metadata reloaded), sync pool; the leg rejoins. */
  restartNode(member_id: number, rejoin = true): void {
    const n = this.node(member_id);
    n.pool = this.newServerPool(n, 'add');
    let st = 1;
    n.pool.loadMetadata((s) => (st = s));
    this.until('add_store', () => st !== 1);
    assert.equal(st, 0);
    n.up = true;
    this.wire(n);
    const leg = this.client.leg(member_id);
    if (rejoin && leg !== undefined && leg.state === 'FAILED' && this.channels.get(member_id)?.cut !== true) this.client.rejoinLeg(leg, () => undefined);
  }

  /** extend: a new node with a fresh store joins the live pool. */
  extend(member_id: number): Leg {
    const n = this.addNode(member_id);
    let leg: Leg | null = null;
    this.must(`extend ${member_id}`, (cb) =>
      this.client.extend(`client@node${member_id}`, this.channelTo(n), 128, (s, l, r) => {
        leg = l;
        cb(s, r);
      }),
    );
    return leg as unknown as Leg;
  }

  /**
   * The node's disk is replaced by an empty one (remove_store, then add_store mode=replace):
   * its leg fails its IO, the recovery tick's store check brings it back.
   */
  replaceDisk(member_id: number): void {
    const n = this.node(member_id);
    this.until('no chunk sync in flight', () => (n.pool.ownMap()?.entryCount ?? 0) === 0);
    n.sync.close();
    // remove_store: the maps are persisted, the store leaves, its IO drains (StoreManager.takeDown).
    let st0 = 1;
    n.pool.persistMetadata((s) => (st0 = s));
    this.until('remove_store persisted', () => st0 !== 1);
    assert.equal(n.pool.unregister('remove_store'), null);
    this.run(10);
    n.data = new MemDisk(this.size, this.clock, this.random);
    n.meta = new MemDisk(1 << 20, this.clock, this.random);
    n.data.faults.latency_ms = 0.2;
    n.meta.faults.latency_ms = 0.1;
    for (const g of n.gates) g.open = false;
    const data = new GatedDisk(n.data);
    const meta = new GatedDisk(n.meta);
    n.gates = [data, meta];
    assert.equal(n.pool.register(this.registered(n, data, meta), 'replace', this.size), null);
    let st = 1;
    n.pool.persistMetadata((s) => (st = s));
    this.until('replace persisted', () => st !== 1);
    assert.equal(st, 0);
    this.wire(n);
  }

  // ------------------------------------------------------------------ checks

  members(): RNode[] {
    return this.nodes.filter((n) => n.in_pool);
  }

  /** Every leg NORMAL, every member synced, every map empty, data areas byte-identical. */
  settle(within_ms = 60_000): void {
    this.until('every leg NORMAL', () => [...this.client.legs()].every((l) => l.state === 'NORMAL') && this.members().every((n) => n.pool.state === 'NORMAL'), within_ms);
    this.until('every member synced', () => this.members().every((n) => n.pool.ownMap()?.isEmpty() === true), within_ms);
    this.until('every map empty', () => this.members().every((n) => [...n.pool.maps.values()].every((m) => m.isEmpty())), within_ms);
    this.until('the client maps clean', () => [...this.client.legs()].every((l) => this.client.maps.get(l.member_id)?.isEmpty() !== false), within_ms);
  }

  assertIdentical(model?: Buffer): void {
    const ref = this.members()[0]?.data.contents() as Buffer;
    for (const n of this.members()) {
      const d = n.data.contents();
      if (!d.equals(ref)) {
        let b = 0;
        while (d.subarray(b * 4096, (b + 1) * 4096).equals(ref.subarray(b * 4096, (b + 1) * 4096))) b++;
        assert.fail(`member ${n.member_id} differs from member ${this.members()[0]?.member_id} at block ${b}`);
      }
    }
    if (model !== undefined) assert.ok(ref.equals(model), 'members hold what was written');
  }

  close(): void {
    for (const t of this.client_tickers) t.stop();
    for (const n of this.nodes) {
      for (const t of n.tickers) t.stop();
      n.sync.close();
    }
  }
}

export function pattern(seed: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 31 + i * 7 + (i >> 8)) & 0xff;
  return b;
}
