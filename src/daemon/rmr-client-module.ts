// rmr-client in the daemon (reference §11.1): client pools, IO pools of the compute client
// and sync pools of a storage node, their legs over transport sessions shared per storage
// node (§2.3), and the `rmr-client/` control tree. Both roles use it (one object per
// daemon, see RoleContext.shared).
//
// A client pool is sized by its members: `join_pool` names it and its chunk size; the first
// `add_sess` reads the member's pool_md (MD_SEND) to learn the mapped size, which every
// later member must match. Legs follow their session's link events (a lost session fails
// the leg, a reconnect rejoins it) and each IO pool runs its recovery tick.

import { ClientPool, type Leg, type LegChannel } from '../rmr/client/client-pool.js';
import { IO_OP_MASK, type IoMsgValue, type MapAddValue } from '../rmr/protocol/msg.js';
import type { LegCommand, LegCommandCallback } from '../rmr/protocol/leg-commands.js';
import type { Counter, CounterSeries, Histogram, HistogramSeries } from './metrics.js';
import type { Clock } from '../util/ports.js';
import { TransportLeg } from '../rmr/client/transport-leg.js';
import { SyncPoolSource } from '../rmr/server/sync-pool.js';
import { followLinkEvents, linkMark } from '../rmr/client/leg-links.js';
import { clientPoolTickers } from '../rmr/client/tickers.js';
import type { Ticker } from '../util/ticker.js';
import { decodePoolMd, checkChunkSize } from '../rmr/protocol/pool-md.js';
import type { LegStateEvent } from '../rmr/client/leg-state.js';
import { SessionRegistry } from '../rmr/client/session-registry.js';
import type { ClientSession } from '../transport/client-session.js';
import type { Address } from '../transport/net.js';
import { groupId } from '../util/jhash.js';
import { errnoName } from '../util/errno.js';
import { ControlError, type ControlCode } from './control-error.js';
import { mapSummaryText } from './map-text.js';
import { mapPictureDir } from './map-picture.js';
import { compareMaps, formatDifferences, readNodeMaps, testMapPages, type MapTestResult } from '../rmr/client/map-compare.js';
import type { DirtyMap } from '../rmr/protocol/dirty-map.js';
import type { UserSend } from '../brmr/client/device.js';
import { dir, dynamicDir, file, kvFile, link, roFile, type JsonValue, type TreeNode } from './control-tree.js';
import { parseInteger, parseIntegers, parseKv, parseWord } from './kv.js';
import type { RoleContext, RolePorts } from './daemon.js';
import type { ObjectBook } from './objects.js';

export const DEFAULT_CHUNK_SIZE = 131072;
export const DEFAULT_DATA_PORT = 1234;
/** Legs per session name are one per pool; this bounds the paths a session may have. */
const MAX_SESSION_PATHS = 3;
const POOL_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const SESS_NAME_RE = /^[A-Za-z0-9_.@:+,=-]{1,128}$/;
/** An add_sess whose node does not answer fails after this (the control deadline is longer). */
const OPEN_TIMEOUT_MS = 10_000;
/** Legs a pool's sessions queue at most (the reference's pool queue_depth). */
const LEG_QUEUE_DEPTH = 128;
/** Largest chunk-sync read of a sync pool sized before any peer answered (the transport default). */
const DEFAULT_SYNC_IO_SIZE = 1 << 20;

/** A control-plane failure from an RMR status code. */
export function statusError(status: number, what: string): ControlError {
  const name = errnoName(status);
  const code = (/^E[A-Z0-9]+$/.test(name) ? name : 'EIO') as ControlCode;
  return new ControlError(code, what);
}

/** Runs a callback-style RMR call; a non-zero status rejects with a ControlError. */
export function rmrCall(what: string, fn: (done: (status: number, reason?: string | null) => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    fn((status, reason) => (status === 0 ? resolve() : reject(statusError(status, `${what}: ${reason ?? errnoName(status)}`))));
  });
}

/**
 * `path=` of add_sess: `ip:<v4>[:port]`, `ip:[<v6>][:port]`, `ip:<v6>` (port 1234 unless
 * given). The reference's `<src>,<dst>` form and RDMA `gid:` addresses are refused.
 */
export function parseSessPath(text: string): { host: string; port: number } {
  const bad = (why: string): never => {
    throw new ControlError('EINVAL', `path=${text}: ${why}`);
  };
  if (text.includes(',')) bad('source addresses are not supported (give the destination only)');
  if (text.startsWith('gid:')) bad('RDMA gid addresses are not supported; use ip:<address>');
  if (!text.startsWith('ip:')) bad('expected ip:<address>[:port]');
  const rest = text.slice(3);
  let host: string;
  let port = DEFAULT_DATA_PORT;
  const v6 = /^\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?$/.exec(rest);
  const v4 = /^([0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9][A-Za-z0-9.-]{0,252})(?::([0-9]{1,5}))?$/.exec(rest);
  if (v6 !== null) {
    host = v6[1] as string;
    if (v6[2] !== undefined) port = Number(v6[2]);
  } else if (v4 !== null) {
    host = v4[1] as string;
    if (v4[2] !== undefined) port = Number(v4[2]);
  } else if (/^[0-9A-Fa-f:]+$/.test(rest) && rest.includes(':')) {
    host = rest;
  } else {
    return bad('not an address');
  }
  if (port < 1 || port > 65535) bad(`port ${port} outside 1..65535`);
  return { host, port };
}

const OP_NAMES = ['read', 'write', 'discard', 'syncreq', 'write_zeroes', 'flush', 'md_read', 'md_write'];

/** One op's metric series of a MeteredLeg. */
interface LegOpSeries {
  readonly moves_data: boolean;
  readonly hist: HistogramSeries;
  readonly ios: CounterSeries;
  readonly bytes: CounterSeries;
  readonly errors: CounterSeries;
}

/**
 * A leg's channel that times each IO (latency histogram per pool, leg and op) and counts
 * IOs, bytes and failures: what one member costs the client, as /metrics shows it.
 */
class MeteredLeg implements LegChannel {
  /** Per op, its series resolved once: this runs on every IO of every leg. */
  private readonly ops: LegOpSeries[];
  constructor(
    private readonly inner: TransportLeg,
    pool: string,
    leg: string,
    private readonly clock: Clock,
    m: { hist: Histogram; ios: Counter; bytes: Counter; errors: Counter },
  ) {
    this.ops = OP_NAMES.map((op) => {
      const l = { pool, leg, op };
      return { moves_data: op === 'read' || op === 'write', hist: m.hist.series_of(l), ios: m.ios.series_of(l), bytes: m.bytes.series_of(l), errors: m.errors.series_of(l) };
    });
  }
  sendIo(msg: IoMsgValue, data: Buffer | null, cb: (status: number, data: Buffer | null) => void): void {
    const t0 = this.clock.now();
    const o = this.ops[Math.min(msg.flags & IO_OP_MASK, OP_NAMES.length - 1)];
    this.inner.sendIo(msg, data, (status, d) => {
      if (o !== undefined) {
        o.hist.observe((this.clock.now() - t0) / 1000);
        o.ios.inc();
        if (status === 0) o.bytes.inc(o.moves_data ? msg.length : 0);
        else o.errors.inc();
      }
      cb(status, d);
    });
  }
  sendMapAdd(msg: MapAddValue, cb: (status: number) => void): void {
    this.inner.sendMapAdd(msg, cb);
  }
  command(cmd: LegCommand, cb: LegCommandCallback): void {
    this.inner.command(cmd, cb);
  }
  isConnected(): boolean {
    return this.inner.isConnected();
  }
}

interface SessionLeg {
  readonly sessname: string;
  readonly paths: readonly string[];
  readonly session: ClientSession;
  readonly leg: Leg;
  readonly unfollow: () => void;
}

/** One client pool: the reference's rmr_clt_pool with its sysfs directory. */
export class ClientPoolEntry {
  readonly name: string;
  readonly chunk_size: number;
  readonly sync: boolean;
  readonly min_replicas: number;
  /** Created by the first add_sess (the size comes from the member). */
  pool: ClientPool | null = null;
  source: SyncPoolSource | null = null;
  tickers: Ticker[] = [];
  readonly legs = new Map<string, SessionLeg>();
  /** Control operations on a pool run one at a time (the reference holds a mutex). */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(name: string, chunk_size: number, sync: boolean, min_replicas: number) {
    this.name = name;
    this.chunk_size = chunk_size;
    this.sync = sync;
    this.min_replicas = min_replicas;
  }

  serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  legByMember(member_id: number): SessionLeg | undefined {
    for (const l of this.legs.values()) if (l.leg.member_id === member_id) return l;
    return undefined;
  }
}

export class RmrClientModule {
  /** IO pools and sync pools have separate name spaces (a storage node may host both). */
  readonly io_pools = new Map<string, ClientPoolEntry>();
  readonly sync_pools = new Map<string, ClientPoolEntry>();
  private readonly ctx: RoleContext;
  private readonly ports: RolePorts;
  private readonly book: ObjectBook;
  private readonly sessions: SessionRegistry;
  /** Sessions by name with their users, for `sessions/<sessname>/`. */
  private readonly session_users = new Map<string, { session: ClientSession; users: number }>();
  /** Roles that enabled this module: IO pools need the client role, sync pools the storage role. */
  io_enabled = false;
  sync_enabled = false;
  /**
   * Runs before a new member joins a live IO pool (add_sess mode=extend), with a way to send
   * it USER commands: the device layer maps its store (client-module.ts). Null: nothing.
   */
  beforeExtend: ((pool: string, send: UserSend) => Promise<void>) | null = null;

  constructor(ctx: RoleContext) {
    if (ctx.ports === null) throw new Error('rmr-client needs IO ports');
    this.ctx = ctx;
    this.ports = ctx.ports;
    this.book = ctx.objects();
    const c = ctx.config.data;
    this.sessions = new SessionRegistry(
      { net: this.ports.net, clock: ctx.clock, random: this.ports.random, log: ctx.logger },
      {
        secret: this.ports.secret ?? Buffer.alloc(0),
        heartbeat_interval_ms: c.heartbeat_interval_ms,
        heartbeat_timeout_ms: c.heartbeat_timeout_ms,
        // A leg whose session lost its last path is FAILED at once and its writes are
        // recorded as missed on the other members; holding its requests for a reconnect
        // only held the application's IO (a SIGKILLed member stalled every write in flight
        // for 10 s). They fail now and are never sent again.
        disconnect_timeout_ms: 0,
        open_timeout_ms: OPEN_TIMEOUT_MS,
        reconnect_delay_ms: 200,
        reconnect_max_delay_ms: 2000,
      },
    );
    const m = ctx.metrics;
    this.legMetrics = {
      hist: m.histogram('rmr_leg_io_duration_seconds', 'Latency of IO to one member (leg) of an IO pool.', ['pool', 'leg', 'op']),
      ios: m.counter('rmr_leg_io_total', 'IOs sent to one member (leg).', ['pool', 'leg', 'op']),
      bytes: m.counter('rmr_leg_io_bytes_total', 'Bytes read from or written to one member (leg).', ['pool', 'leg', 'op']),
      errors: m.counter('rmr_leg_io_errors_total', 'IOs one member (leg) failed.', ['pool', 'leg', 'op']),
    };
    this.registerMetrics();
  }

  private pools(sync: boolean): Map<string, ClientPoolEntry> {
    return sync ? this.sync_pools : this.io_pools;
  }

  /** Either kind of pool by name (IO first); the tree shows both under pools/. */
  entry(name: string): ClientPoolEntry | undefined {
    return this.io_pools.get(name) ?? this.sync_pools.get(name);
  }

  // ------------------------------------------------------------------ operations

  async joinPool(name: string, sync: boolean, chunk_size: number, min_replicas: number, persist = true): Promise<ClientPoolEntry> {
    if (!POOL_NAME_RE.test(name)) throw new ControlError('EINVAL', `poolname=${name}: 1-64 characters [A-Za-z0-9_.-]`);
    if (sync && !this.sync_enabled) throw new ControlError('EOPNOTSUPP', 'sync pools belong to storage nodes: this daemon has no storage role');
    if (!sync && !this.io_enabled) throw new ControlError('EOPNOTSUPP', 'IO pools belong to compute clients: this daemon has no client role');
    const bad = checkChunkSize(chunk_size);
    if (bad !== null) throw new ControlError('EINVAL', bad);
    const pools = this.pools(sync);
    if (pools.has(name)) throw new ControlError('EEXIST', `${sync ? 'sync' : 'IO'} pool ${name} exists`);
    const e = new ClientPoolEntry(name, chunk_size, sync, min_replicas);
    pools.set(name, e);
    this.ctx.events.emit({ kind: 'client_pool', subject: name, to: 'joined', detail: { sync, chunk_size } });
    if (persist) await this.book.put({ kind: 'client_pool', pool: name, chunk_size, sync, min_replicas });
    return e;
  }

  /**
   * add_sess: opens (or shares) the session, learns the pool's size from the member, joins
   * it. `persist` false when the daemon resumes a leg it already recorded.
   */
  addSess(e: ClientPoolEntry, sessname: string, paths: readonly string[], mode: 'create' | 'assemble' | 'extend' | null, persist = true): Promise<Leg> {
    return e.serial(async () => {
      if (!SESS_NAME_RE.test(sessname)) throw new ControlError('EINVAL', `sessname=${sessname}: 1-128 characters [A-Za-z0-9_.@:+,=-]`);
      if (e.legs.has(sessname)) throw new ControlError('EEXIST', `pool ${e.name} has a session ${sessname}`);
      if (paths.length === 0) throw new ControlError('EINVAL', 'add_sess needs path=ip:<address>');
      if (paths.length > MAX_SESSION_PATHS) throw new ControlError('EINVAL', `at most ${MAX_SESSION_PATHS} paths`);
      if (e.sync !== (mode === null)) throw new ControlError('EINVAL', e.sync ? 'sync pools take no mode=' : 'mode=create, mode=assemble or mode=extend is required');
      if (mode === 'extend' && e.pool === null) throw new ControlError('EINVAL', `mode=extend adds a member to a live pool; pool ${e.name} has no members yet (mode=create)`);
      if (this.ports.secret === null) throw new ControlError('EINVAL', 'this daemon has no cluster secret: set secret_file');
      const tls = this.ports.tls;
      const addresses: Address[] = paths.map((p) => ({ ...parseSessPath(p), ...(tls !== null ? { tls } : {}) }));
      const session = this.sessions.get(sessname, addresses);
      this.useSession(session);
      try {
        await session.open().catch((err: unknown) => {
          throw new ControlError('ENOTCONN', `session ${sessname} to ${paths.join(',')}: ${err instanceof Error ? err.message : String(err)}`);
        });
        // Taken before the join: a link lost before the leg follows it fails the leg then.
        const mark = linkMark(session);
        const gid = groupId(e.name);
        const channel = new TransportLeg(session, gid, e.name, e.chunk_size, e.sync);
        const md = await new Promise<Buffer>((resolve, reject) =>
          channel.command({ kind: 'md_read' }, (status, _v, reason, data) =>
            status === 0 && data !== null && data !== undefined ? resolve(data) : reject(statusError(status === 0 ? -74 : status, `reading pool ${e.name}'s metadata from ${sessname}: ${reason ?? errnoName(status)}`)),
          ),
        );
        const pmd = decodePoolMd(md);
        if (typeof pmd === 'string') throw new ControlError('EBADMSG', `pool metadata from ${sessname}: ${pmd}`);
        const h = pmd.header;
        if (h.mapped_size === 0) throw new ControlError('ENODEV', `member ${sessname} of pool ${e.name} has no store yet (create_store or add_store there first)`);
        if (h.chunk_size !== e.chunk_size) throw new ControlError('EINVAL', `member ${sessname} uses chunk_size ${h.chunk_size}, this pool ${e.chunk_size}`);
        if (e.pool === null) {
          e.pool = this.makePool(e, h.mapped_size, session.max_io_size);
        } else if (e.pool.mapped_size !== h.mapped_size) {
          throw new ControlError('EINVAL', `member ${sessname} stores ${h.mapped_size} bytes, the pool has ${e.pool.mapped_size}`);
        }
        const pool = e.pool;
        let leg: Leg;
        if (e.sync) {
          const src = e.source as SyncPoolSource;
          await rmrCall(`sync join of ${sessname}`, (done) => src.addPeer(sessname, channel, done));
          const found = [...pool.legs()].find((l) => l.name === sessname);
          if (found === undefined) throw new ControlError('EIO', `sync leg ${sessname} vanished after its join`);
          leg = found;
        } else {
          if (mode === 'extend' && this.beforeExtend !== null) {
            await this.beforeExtend(e.name, (bytes, rsp_len, cb) => channel.command({ kind: 'user', bytes, rsp_len }, (status, _v, _r, data) => cb(status, data ?? null)));
          }
          const metered = new MeteredLeg(channel, e.name, sessname, this.ctx.clock, this.legMetrics);
          leg = await new Promise<Leg>((resolve, reject) => {
            const done = (status: number, l: Leg | null, reason: string | null): void => (status === 0 && l !== null ? resolve(l) : reject(statusError(status, `add_sess ${sessname}: ${reason ?? errnoName(status)}`)));
            if (mode === 'extend') pool.extend(sessname, metered, LEG_QUEUE_DEPTH, done);
            else pool.addSess(sessname, metered, mode, LEG_QUEUE_DEPTH, done);
          });
        }
        const unfollow = followLinkEvents(session, pool, leg, this.ctx.logger, mark);
        e.legs.set(sessname, { sessname, paths, session, leg, unfollow });
        if (persist) await this.book.put({ kind: 'session', pool: e.name, sessname, paths, sync: e.sync });
        return leg;
      } catch (err) {
        this.dropSession(session);
        throw err;
      }
    });
  }

  private makePool(e: ClientPoolEntry, mapped_size: number, max_io_size: number): ClientPool {
    const emit = (ev: LegStateEvent): void => {
      const l = [...(e.pool?.legs() ?? [])].find((x) => x.member_id === ev.member_id);
      this.ctx.events.emit({ kind: 'pool_session', subject: `${e.name}/${l?.name ?? `member${ev.member_id}`}`, from: ev.from.toLowerCase(), to: ev.to.toLowerCase(), detail: { member_id: ev.member_id, reason: ev.reason, map_ver: ev.map_ver, sync: e.sync } });
    };
    const pool = new ClientPool(
      {
        pool_name: e.name,
        group_id: groupId(e.name),
        chunk_size: e.chunk_size,
        mapped_size,
        max_io_size: Math.max(4096, max_io_size),
        sync: e.sync,
        min_replicas: e.min_replicas,
        // An IO failed although legs answered (a FLUSH that is not durable, an IO below
        // min_replicas, issue 19): the upper layer sees EIO only, so the why goes here.
        on_io_failure: (f) => {
          this.ctx.logger.log('error', 'io_failure', { pool: f.pool, op: f.op, cause: f.cause, reason: f.reason });
          this.ctx.events.emit({ kind: 'io_failure', subject: e.name, to: f.cause, detail: { op: f.op, status: errnoName(f.status), reason: f.reason } });
        },
      },
      () => this.ctx.clock.now(),
      emit,
    );
    if (e.sync) e.source = new SyncPoolSource(pool);
    else e.tickers = clientPoolTickers(this.ctx.clock, pool);
    return pool;
  }

  private useSession(s: ClientSession): void {
    const u = this.session_users.get(s.name);
    if (u !== undefined && u.session === s) u.users++;
    else this.session_users.set(s.name, { session: s, users: 1 });
  }

  private dropSession(s: ClientSession): void {
    const u = this.session_users.get(s.name);
    if (u !== undefined && u.session === s && --u.users === 0) this.session_users.delete(s.name);
    this.sessions.put(s);
  }

  /** Forgets a leg after del_sess (or leave_pool): its session reference goes. */
  private dropLeg(e: ClientPoolEntry, sl: SessionLeg): void {
    sl.unfollow();
    e.legs.delete(sl.sessname);
    this.dropSession(sl.session);
  }

  delSess(e: ClientPoolEntry, sessname: string, mode: 'delete' | 'disassemble', force = false): Promise<void> {
    return e.serial(async () => {
      const sl = e.legs.get(sessname);
      if (sl === undefined || e.pool === null) throw new ControlError('ENOENT', `pool ${e.name} has no session ${sessname}`);
      const pool = e.pool;
      // A sync leg holds no maps (§9.6: only "exclude" and "free" apply): it just goes.
      if (e.sync) (e.source as SyncPoolSource).removePeer(sl.leg.member_id);
      else await rmrCall(`del_sess ${sessname}`, (done) => pool.delSess(sl.leg.member_id, mode, done, force ? { force: true } : {}));
      this.dropLeg(e, sl);
      await this.book.remove((r) => r.kind === 'session' && r.pool === e.name && r.sessname === sessname && r.sync === e.sync);
    });
  }

  /** enable=1: a CREATED leg is enabled (create mode), a leg in maintenance leaves it (§9.5). */
  enableLeg(e: ClientPoolEntry, sl: SessionLeg): Promise<void> {
    return e.serial(async () => {
      const pool = e.pool as ClientPool;
      if (sl.leg.state === 'CREATED' || sl.leg.maintenance) return rmrCall(`enable ${sl.sessname}`, (done) => pool.enableLeg(sl.leg, done));
      throw new ControlError('EINVAL', `session ${sl.sessname} is ${sl.leg.state.toLowerCase()}, not created or in maintenance`);
    });
  }

  /** trust_data=1: the member's maps were lost; the operator names its data the newest (issue 19 item 3). */
  trustData(e: ClientPoolEntry, sl: SessionLeg): Promise<void> {
    return e.serial(async () => {
      if (e.sync) throw new ControlError('EINVAL', 'sync pools keep no maps');
      const pool = e.pool as ClientPool;
      this.ctx.logger.log('warn', 'trust_data', { pool: e.name, member_id: sl.leg.member_id, session: sl.sessname });
      return rmrCall(`trust_data ${sl.sessname}`, (done) => pool.trustData(sl.leg, done));
    });
  }

  /** enable=0: maintenance mode (§9.5): the leg leaves IO service, dirtiness accumulates. */
  enterMaintenance(e: ClientPoolEntry, sl: SessionLeg): Promise<void> {
    return e.serial(async () => {
      if (e.sync) throw new ControlError('EINVAL', 'sync pools have no maintenance mode');
      const pool = e.pool as ClientPool;
      return rmrCall(`maintenance on ${sl.sessname}`, (done) => pool.maintenance(sl.leg.member_id, true, done));
    });
  }

  /** leave_pool: refused while a device uses it; the remaining legs are sent LEAVE. */
  leavePool(e: ClientPoolEntry): Promise<void> {
    return e.serial(async () => {
      const pool = e.pool;
      if (pool !== null && pool.inUse && !e.sync) throw new ControlError('EBUSY', `pool ${e.name} is in use (unmap its device first)`);
      if (pool !== null && e.sync && e.source !== null && this.syncPoolInUse(e.name)) throw new ControlError('EBUSY', `sync pool ${e.name} is attached to the server pool (remove_clt first)`);
      for (const sl of [...e.legs.values()]) {
        if (pool !== null) await new Promise<void>((resolve) => sl.leg.channel.command({ kind: 'leave', member_id: sl.leg.member_id, delete: false }, () => resolve()));
        this.dropLeg(e, sl);
      }
      this.closePool(e);
      this.pools(e.sync).delete(e.name);
      this.ctx.events.emit({ kind: 'client_pool', subject: e.name, to: 'left', detail: { sync: e.sync } });
      await this.book.remove((r) => (r.kind === 'client_pool' || r.kind === 'session') && r.pool === e.name && r.sync === e.sync);
    });
  }

  /** Set by the storage role: whether its server pool holds this sync pool (add_clt). */
  syncPoolInUse: (name: string) => boolean = () => false;
  /** Set by the storage role: the mapped size of this node's server pool of that name (0: none). */
  localMappedSize: (name: string) => number = () => 0;

  /**
   * The sync pool `name` as its server pool's SyncSource (add_clt). A sync pool whose peers
   * are not reachable yet is sized from this node's own store, so it can be attached now
   * and gain its legs later.
   */
  syncSource(name: string): SyncPoolSource {
    const e = this.sync_pools.get(name);
    if (e === undefined) throw new ControlError('ENOENT', `no sync pool ${name} (rmr-client join_pool poolname=${name} sync=y first)`);
    if (e.pool === null) {
      const size = this.localMappedSize(name);
      if (size === 0) throw new ControlError('ENODEV', `sync pool ${name} has no peers and this node has no store for it yet`);
      e.pool = this.makePool(e, size, DEFAULT_SYNC_IO_SIZE);
    }
    return e.source as SyncPoolSource;
  }

  private closePool(e: ClientPoolEntry): void {
    for (const t of e.tickers) t.stop();
    e.tickers = [];
  }

  /** Daemon shutdown: legs and sessions go, nothing is sent (members keep their state). */
  shutdown(sync: boolean): void {
    for (const e of this.pools(sync).values()) {
      for (const sl of [...e.legs.values()]) this.dropLeg(e, sl);
      this.closePool(e);
    }
    this.pools(sync).clear();
  }

  /** The `verify` file's writes: `start [key=value ...]` or `stop`. */
  private verifyControl(e: ClientPoolEntry, pool: ClientPool, v: string): Promise<void> {
    const [word = '', ...rest] = v.split(/\s+/);
    if (word === 'stop') {
      pool.verifyStop();
      return Promise.resolve();
    }
    if (word !== 'start') throw new ControlError('EINVAL', `expected start [source=<member>] [first_chunk=N] [chunk_count=N] [rate=<bytes/s>] or stop, got '${word}'`);
    const o = parseKv(
      { source: { type: 'int', min: 1, max: 255 }, first_chunk: { type: 'int', min: 0 }, chunk_count: { type: 'int', min: 1 }, rate: { type: 'int', min: 1 << 16, max: 2 ** 40 } },
      rest.join(' '),
    );
    const clock = this.ctx.clock;
    return rmrCall(`verify of pool ${e.name}`, (done) =>
      pool.verifyStart(
        {
          ...(o.source !== undefined ? { source: o.source } : {}),
          ...(o.first_chunk !== undefined ? { first_chunk: o.first_chunk } : {}),
          ...(o.chunk_count !== undefined ? { chunk_count: o.chunk_count } : {}),
          ...(o.rate !== undefined ? { pace: { setTimer: (ms: number, fn: () => void) => clock.setTimer(ms, fn), bytes_per_s: o.rate } } : {}),
        },
        done,
      ),
    );
  }

  /**
   * test_map: `ours` against the maps of every leg of `e` that can answer (not created,
   * failed or removing), one line per leg and difference.
   */
  async testMap(e: ClientPoolEntry, ours: ReadonlyMap<number, DirtyMap<unknown>>): Promise<string> {
    const pool = e.pool;
    if (pool === null) throw new ControlError('ENODEV', `pool ${e.name} has no members yet`);
    const lines: string[] = [];
    for (const sl of e.legs.values()) {
      const st = sl.leg.state;
      if (st === 'CREATED' || st === 'FAILED' || st === 'REMOVING') {
        lines.push(`${sl.sessname}: skipped (${st.toLowerCase()})`);
        continue;
      }
      const command = (cmd: Parameters<typeof sl.leg.channel.command>[0], cb: Parameters<typeof sl.leg.channel.command>[1]): void => sl.leg.channel.command(cmd, cb);
      // MAP_TEST first: page checksums, no pages on the wire; the maps are read only for the
      // detail of a difference.
      const tested = await new Promise<MapTestResult | null>((resolve, reject) =>
        testMapPages(command, ours, (status, r) => (status === 0 ? resolve(r) : reject(statusError(status, `MAP_TEST to ${sl.sessname}: ${errnoName(status)}`)))),
      );
      if (tested !== null && tested.pages.length === 0 && tested.extra_maps.length === 0) {
        lines.push(formatDifferences(sl.sessname, []));
        continue;
      }
      const theirs = await new Promise<Map<number, DirtyMap>>((resolve, reject) =>
        readNodeMaps(command, pool.no_of_chunks, (status, maps) => (status === 0 && maps !== null ? resolve(maps) : reject(statusError(status, `reading the maps of ${sl.sessname}: ${errnoName(status)}`)))),
      );
      lines.push(formatDifferences(sl.sessname, compareMaps(ours, theirs)));
    }
    return lines.length === 0 ? 'no legs' : lines.join('\n');
  }

  // ------------------------------------------------------------------ tree

  tree(): TreeNode {
    return dir({
      ctl: dir({
        join_pool: kvFile(
          { poolname: { type: 'string', required: true, max_len: 64 }, sync: { type: 'bool' }, chunk_size: { type: 'int', min: 4096, max: 1 << 30 }, min_replicas: { type: 'int', min: 0, max: 4 } },
          async (v) => {
            await this.joinPool(v.poolname, v.sync ?? false, v.chunk_size ?? DEFAULT_CHUNK_SIZE, v.min_replicas ?? 0);
          },
          'create a client pool (sync=y on storage nodes)',
        ),
      }),
      pools: dynamicDir(
        () => [...new Set([...this.io_pools.keys(), ...this.sync_pools.keys()])].sort(),
        (name) => {
          const e = this.entry(name);
          return e === undefined ? undefined : this.poolTree(e);
        },
      ),
      sessions: dynamicDir(
        () => [...this.session_users.keys()].sort(),
        (name) => {
          const u = this.session_users.get(name);
          return u === undefined ? undefined : this.sessionTree(u.session);
        },
      ),
    });
  }

  private poolTree(e: ClientPoolEntry): TreeNode {
    const need = (): ClientPool => {
      if (e.pool === null) throw new ControlError('ENODEV', `pool ${e.name} has no members yet (add_sess first)`);
      return e.pool;
    };
    return dir({
      add_sess: kvFile(
        { sessname: { type: 'string', required: true, max_len: 128 }, path: { type: 'list', required: true, repeat: MAX_SESSION_PATHS }, mode: { type: 'enum', values: ['create', 'assemble', 'extend'] as const } },
        async (v) => {
          await this.addSess(e, v.sessname, v.path, v.mode ?? null);
        },
        'add a leg',
      ),
      leave_pool: file({ write: async (v) => (parseWord(v, ['1']), this.leavePool(e)), help: '1: delete the pool' }),
      pool_enable: file({
        write: (v) => {
          parseWord(v, ['1']);
          const p = need();
          return rmrCall('pool_enable', (done) => p.tryEnable(done));
        },
        help: '1: run recovery (try_enable) now',
      }),
      chunk_size: roFile(() => String(e.chunk_size)),
      map_version: file({
        read: () => `Map ver: ${e.pool?.map_ver ?? 1}`,
        write: (v) => {
          const p = need();
          const ver = parseInteger('map version', v.trim(), 1);
          return rmrCall('map_version', (done) => p.setMapVersion(ver, (status, reason) => done(status, reason)));
        },
        help: 'read: the pool\'s map version; write <n>: raise it to n here and on every NORMAL member (MAP_SET_VER; never lowered)',
      }),
      mapped_size: roFile(() => String(e.pool?.mapped_size ?? 0), 'bytes (learned from the members)'),
      map_picture: mapPictureDir(() => e.pool?.maps ?? new Map()),
      map: file({
        read: () => mapSummaryText(need().maps),
        write: (v) => {
          const p = need();
          const [count, first, member] = parseIntegers(v, ['a (chunk count)', 'b (first chunk)', 'member_id'], 0, Number.MAX_SAFE_INTEGER) as [number, number, number];
          const m = p.maps.get(member);
          if (m === undefined) throw new ControlError('ENOENT', `pool ${e.name} has no member ${member}`);
          if (count < 1 || first + count > p.no_of_chunks) throw new ControlError('EINVAL', `chunks ${first}+${count} outside 0..${p.no_of_chunks}`);
          m.setDirty(first, count);
        },
        help: 'read: dirty chunks per member; write "<a> <b> <member_id>": mark chunks b..b+a-1 dirty (debug)',
      }),
      verify: file({
        read: () => JSON.stringify(need().verifyProgress()),
        json: () => ({ ...need().verifyProgress() }),
        write: (v) => this.verifyControl(e, need(), v),
        help: 'start [source=<member>] [first_chunk=N] [chunk_count=N] [rate=<bytes/s>] | stop: online verify (hashes over the sync pools); reads the progress',
      }),
      verify_report: file({
        read: () => verifyReportText(need()),
        json: () => (need().verifyReport() as unknown as JsonValue) ?? null,
        help: 'the last verify: chunks compared, skipped, differing (now dirty for the members that disagreed)',
      }),
      test_map: file({
        write: async (v) => {
          parseWord(v, ['1']);
          const p = need();
          const text = await this.testMap(e, p.maps);
          this.ctx.logger.log('info', 'test_map', { pool: e.name, result: text });
          return text;
        },
        help: '1: compare the client maps (or, on a storage node, its own maps) against every member reachable; answers the differences',
      }),
      min_replicas: roFile(() => String(e.min_replicas)),
      status: file({ read: () => JSON.stringify(this.poolJson(e)), json: () => this.poolJson(e) }),
      stats: dir({
        read_retries: file({
          read: () => String(e.pool?.stats.read_retries ?? 0),
          write: (v) => {
            parseWord(v, ['0', '1']);
            if (e.pool !== null) e.pool.stats.read_retries = 0;
          },
        }),
      }),
      sessions: dynamicDir(
        () => [...e.legs.keys()].sort(),
        (name) => {
          const sl = e.legs.get(name);
          return sl === undefined ? undefined : this.legTree(e, sl);
        },
      ),
    });
  }

  private legTree(e: ClientPoolEntry, sl: SessionLeg): TreeNode {
    return dir({
      enable: file({
        write: (v) => (parseWord(v, ['0', '1']) === '1' ? this.enableLeg(e, sl) : this.enterMaintenance(e, sl)),
        help: '1: enable a created leg or leave maintenance; 0: enter maintenance',
      }),
      del_sess: kvFile({ mode: { type: 'enum', required: true, values: ['delete', 'disassemble'] as const }, force: { type: 'bool' } }, (v) => this.delSess(e, sl.sessname, v.mode, v.force ?? false), 'remove the leg (delete is refused while the member holds the only clean copy of a chunk, unless force=y)'),
      trust_data: file({
        write: (v) => (parseWord(v, ['1']), this.trustData(e, sl)),
        help: "1: this member's maps were lost and no member serves: take its data as the newest (every other member resyncs every chunk from it). See docs/operations.md",
      }),
      state: roFile(() => `${sl.leg.state.toLowerCase()}\nMaintenance mode: ${sl.leg.maintenance ? 1 : 0}${sl.leg.maps_lost ? '\nMaps lost: 1' : ''}`),
      member_id: roFile(() => String(sl.leg.member_id)),
      check_map: file({
        write: (v) => {
          parseWord(v, ['1']);
          return new Promise<string>((resolve, reject) =>
            sl.leg.channel.command({ kind: 'map_check' }, (status, value, reason) => (status === 0 ? resolve(value === 1 ? 'clean' : 'dirty') : reject(statusError(status, `map_check: ${reason ?? errnoName(status)}`)))),
          );
        },
        help: '1: send MAP_CHECK now (answers clean or dirty)',
      }),
      clt_sess: link(`rmr-client/sessions/${sl.sessname}`),
    });
  }

  private sessionTree(s: ClientSession): TreeNode {
    return dir({
      state: roFile(() => (s.state === 'CONNECTED' ? 'connected' : 'disconnected')),
      reconnect: kvFile({ path: { type: 'list', repeat: MAX_SESSION_PATHS } }, (v) => {
        const tls = this.ports.tls;
        const addrs = v.path.length === 0 ? undefined : v.path.map((p) => ({ ...parseSessPath(p), ...(tls !== null ? { tls } : {}) }));
        s.reconnect(addrs);
      }, 'drop and re-establish the session (optionally to new addresses)'),
    });
  }

  poolJson(e: ClientPoolEntry): JsonValue {
    const p = e.pool;
    return {
      name: e.name,
      sync: e.sync,
      chunk_size: e.chunk_size,
      mapped_size: p?.mapped_size ?? 0,
      map_ver: p?.map_ver ?? 1,
      in_use: p?.inUse ?? false,
      frozen: p?.isFrozen ?? false,
      legs: [...e.legs.values()].map((sl) => ({
        session: sl.sessname,
        member_id: sl.leg.member_id,
        state: sl.leg.state.toLowerCase(),
        maintenance: sl.leg.maintenance,
        connected: sl.session.state === 'CONNECTED',
        dirty_chunks: p?.maps.get(sl.leg.member_id)?.dirtyCount ?? 0,
        total_chunks: p?.no_of_chunks ?? 0,
      })),
    };
  }

  private readonly legMetrics: { hist: Histogram; ios: Counter; bytes: Counter; errors: Counter };

  private registerMetrics(): void {
    const m = this.ctx.metrics;
    const legs = function* (self: RmrClientModule): Generator<[ClientPoolEntry, SessionLeg]> {
      for (const e of [...self.io_pools.values(), ...self.sync_pools.values()]) for (const sl of e.legs.values()) yield [e, sl];
    };
    m.gauge('rmr_client_leg_state', 'Legs by state (1 for the current state).', ['pool', 'session', 'kind', 'state'], () =>
      [...legs(this)].map(([e, sl]) => [{ pool: e.name, session: sl.sessname, kind: e.sync ? 'sync' : 'io', state: sl.leg.state.toLowerCase() }, 1] as const),
    );
    m.gauge('rmr_client_dirty_chunks', 'Chunks the client records as dirty per member.', ['pool', 'member'], () =>
      [...this.io_pools.values()].flatMap((e) => [...(e.pool?.maps ?? new Map()).entries()].map(([id, map]) => [{ pool: e.name, member: String(id) }, (map as { dirtyCount: number }).dirtyCount] as const)),
    );
    m.counter('rmr_client_read_retries_total', 'Reads retried on another leg.', ['pool'], () => [...this.io_pools.values()].map((e) => [{ pool: e.name }, e.pool?.stats.read_retries ?? 0] as const));
    m.counter('rmr_client_failed_ios_total', 'IOs failed to the upper layer.', ['pool'], () => [...this.io_pools.values()].map((e) => [{ pool: e.name }, e.pool?.stats.failed_ios ?? 0] as const));
    m.counter('rmr_client_map_adds_total', 'MAP_ADD messages sent for writes a leg missed.', ['pool'], () => [...this.io_pools.values()].map((e) => [{ pool: e.name }, e.pool?.stats.map_adds ?? 0] as const));
    m.gauge('rmr_session_connected', 'Transport sessions (1 connected, 0 not).', ['session'], () => [...this.session_users.values()].map((u) => [{ session: u.session.name }, u.session.state === 'CONNECTED' ? 1 : 0] as const));
    m.counter('rmr_session_reconnects_total', 'Reconnects of a transport session.', ['session'], () => [...this.session_users.values()].map((u) => [{ session: u.session.name }, u.session.stats.reconnects] as const));
  }
}

/** The verify report as text: a summary line, then one line per differing chunk (at most 1000). */
function verifyReportText(pool: ClientPool): string {
  const r = pool.verifyReport();
  if (r === null) return 'no verify has run';
  const p = pool.verifyProgress();
  const head = `${p.state}: source member ${r.source}, chunks ${r.first_chunk}..${r.first_chunk + r.chunk_count - 1}: ${r.compared} compared, ${r.skipped} skipped (dirty), ${r.differing} differing${r.error !== null ? `, error: ${r.error}` : ''}`;
  const lines = r.differences.slice(0, 1000).map((d) => `chunk ${d.chunk}: members ${d.members.join(',')} differed (now dirty for them)`);
  return [head, ...lines, ...(r.differences.length > 1000 ? [`... ${r.differences.length - 1000} more`] : [])].join('\n');
}
