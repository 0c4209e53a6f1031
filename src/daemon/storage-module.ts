// A storage node in the daemon: rmr-server (server pools, the transport listener, the
// background sync of each pool) and brmr-server (stores), with their control trees
// (reference §11.2, §11.3). The node's sync pools live in the shared rmr-client module;
// `add_clt` attaches one to its server pool.
//
// Every operator action that changes what exists is recorded in the object book, so that
// a restarted daemon re-creates its pools, re-adds its stores and re-forms its sync pools.

import { ServerPool, type ServerPoolEvent } from '../rmr/server/server-pool.js';
import { RmrServerNode } from '../rmr/server/server-node.js';
import { BackgroundSync, type SyncState } from '../rmr/server/background-sync.js';
import { serverPoolTickers } from '../rmr/server/tickers.js';
import type { Ticker } from '../util/ticker.js';
import { TransportServer } from '../transport/server.js';
import { StoreManager, type StoreManagerEvent } from '../brmr/server/store-manager.js';
import { FaultController, withFaults } from '../brmr/server/fault-backend.js';
import { faultInjectionFile } from './fault-file.js';
import type { BrmrStore } from '../brmr/server/store.js';
import { uuidText } from '../brmr/server/header.js';
import { groupId } from '../util/jhash.js';
import { Errno, errnoName } from '../util/errno.js';
import type { BackendOpener } from '../brmr/server/backend.js';
import { ControlError } from './control-error.js';
import { dir, dynamicDir, file, kvFile, roFile, type JsonValue, type TreeNode } from './control-tree.js';
import { parseInteger, parseKv, parseWord } from './kv.js';
import { mapSummaryText, mapUnsyncedText } from './map-text.js';
import type { DirtyMap } from '../rmr/protocol/dirty-map.js';
import { mapPictureDir } from './map-picture.js';
import { DEFAULT_CHUNK_SIZE, statusError, type RmrClientModule } from './rmr-client-module.js';
import type { RoleContext, RolePorts } from './daemon.js';
import type { ObjectBook } from './objects.js';
import { formatListen } from './validate.js';
import { isLoopbackHost } from './config.js';

const POOL_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const SECTOR = 512;
/** Sync progress events while a sync runs: at most one per this many ms per pool. */
const PROGRESS_EVENT_MS = 1000;
/** A pool whose metadata writes keep failing logs it at most once per this many ms. */
const MD_ERROR_LOG_MS = 60_000;

export interface StorageSettings {
  readonly sync_max_bytes_per_s: number;
  readonly sync_min_bytes_per_s: number;
  readonly sync_share: number;
  /** Every store behind an error-injecting filter with a `fault_injection` control file (tests). */
  readonly fault_injection: boolean;
  /** Directories (or exact device paths) stores may be made or added in; null: the state directory. */
  readonly store_dirs: readonly string[] | null;
  /** A store path may be a symlink (e.g. /dev/disk/by-id/...). */
  readonly store_symlinks: boolean;
}

interface ServerPoolEntry {
  readonly pool: ServerPool;
  readonly sync: BackgroundSync;
  tickers: Ticker[];
  /** Name of the sync client pool attached by add_clt. */
  clt: string | null;
  last_progress_ms: number;
  /** Metadata write failures not logged yet, and when the last one was. */
  md_errors_unlogged: number;
  md_error_logged_ms: number;
}

const SYNC_STATE_TEXT: Readonly<Record<SyncState, string>> = { RUNNING: 'Running', STOPPED: 'Stopped', WAIT: 'Request_to_stop' };

function hexUuid(text: string, what: string): Buffer {
  const hex = text.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new ControlError('EINVAL', `${what}=${text}: a UUID of 32 hex digits`);
  return Buffer.from(hex, 'hex');
}

export class StorageModule {
  readonly pools = new Map<string, ServerPoolEntry>();
  readonly node: RmrServerNode;
  readonly stores: StoreManager;
  private server: TransportServer | null = null;
  private listen_address: string | null = null;
  private readonly ctx: RoleContext;
  private readonly ports: RolePorts;
  private readonly book: ObjectBook;
  private readonly clients: RmrClientModule;
  private readonly settings: StorageSettings;
  /** Fault controllers by device path (fault_injection on). */
  private readonly faults = new Map<string, FaultController>();

  constructor(ctx: RoleContext, clients: RmrClientModule, settings: StorageSettings) {
    if (ctx.ports === null) throw new Error('the storage role needs IO ports');
    this.ctx = ctx;
    this.ports = ctx.ports;
    this.book = ctx.objects();
    this.clients = clients;
    this.settings = settings;
    this.node = new RmrServerNode(ctx.logger);
    const faultsOf = (path: string): FaultController => this.faultsOf(path);
    // Every store operation (create, add, replace, and resume at start) goes through the
    // allow-list and opens without following a symlink unless allowed.
    const dirs = settings.store_dirs ?? [ctx.config.state_dir];
    const open: BackendOpener = (path, opts, cb) => {
      const why = this.ports.storePathRefusal(path, dirs, settings.store_symlinks);
      if (why !== null) return void queueMicrotask(() => cb(Errno.EACCES, null, why));
      this.ports.open(path, { ...opts, nofollow: !settings.store_symlinks }, cb);
    };
    this.stores = new StoreManager({
      open: settings.fault_injection ? withFaults(open, faultsOf) : open,
      random: this.ports.random,
      wall_ms: ctx.wall_ms,
      serverPool: (name) => this.pools.get(name)?.pool,
      log: ctx.logger,
      emit: (ev) => this.storeEvent(ev),
    });
    clients.syncPoolInUse = (name) => [...this.pools.values()].some((e) => e.clt === name);
    clients.localMappedSize = (name) => this.pools.get(name)?.pool.mapped_size ?? 0;
    this.registerMetrics();
  }

  /** The fault controller of the store on `path` (one per device, kept across re-adds). */
  private faultsOf(path: string): FaultController {
    let c = this.faults.get(path);
    if (c === undefined) this.faults.set(path, (c = new FaultController({ clock: this.ctx.clock, random: this.ports.random })));
    return c;
  }

  /** The data-plane listener (the reference's RTRS server on port 1234). */
  async listen(): Promise<void> {
    if (this.ports.secret === null) throw new Error('the storage role needs a cluster secret (secret_file) or per-node TLS identities (data.tls_psk_file, or data.tls_cert with data.tls_ca)');
    const c = this.ctx.config.data;
    const server = new TransportServer(
      {
        secret: this.ports.secret,
        tls: this.ports.data_tls,
        identify: this.ports.identify,
        heartbeat_interval_ms: c.heartbeat_interval_ms,
        heartbeat_timeout_ms: c.heartbeat_timeout_ms,
        handshake_timeout_ms: c.handshake_timeout_ms,
        max_preauth_connections: c.max_preauth_connections,
        max_preauth_per_address: c.max_preauth_per_address,
        max_answer_cache_bytes: c.max_answer_cache_bytes,
      },
      { net: this.ports.net, clock: this.ctx.clock, random: this.ports.random, log: this.ctx.logger },
      this.node,
    );
    // Plain TCP: TLS, when configured, is started on each accepted connection by the server.
    const at = await server.listen({ host: c.listen.host, port: c.listen.port });
    this.server = server;
    this.listen_address = formatListen(at);
    const tls = this.ports.data_tls !== null;
    this.ctx.logger.log('info', 'data plane listening', { address: this.listen_address, tls, identities: this.ports.identify !== null });
    if (!tls && !isLoopbackHost(c.listen.host)) {
      this.ctx.logger.log('warn', 'data plane without TLS on a non-loopback address (data.allow_insecure): an on-path attacker can inject writes after a handshake', { address: this.listen_address });
    }
  }

  get address(): string | null {
    return this.listen_address;
  }

  // ------------------------------------------------------------------ rmr-server operations

  async joinPool(name: string, member_id: number, chunk_size: number, persist = true): Promise<void> {
    if (!POOL_NAME_RE.test(name)) throw new ControlError('EINVAL', `poolname=${name}: 1-64 characters [A-Za-z0-9_.-]`);
    if (this.pools.has(name)) throw new ControlError('EEXIST', `server pool ${name} exists`);
    let pool: ServerPool;
    try {
      pool = new ServerPool({ pool_name: name, group_id: groupId(name), member_id, chunk_size, now: () => this.ctx.clock.now() }, (ev) => this.poolEvent(ev));
      this.node.addPool(pool);
    } catch (e) {
      throw new ControlError('EINVAL', e instanceof Error ? e.message : String(e));
    }
    const s = this.settings;
    const sync = new BackgroundSync(pool, this.ctx.clock, { max_bytes_per_s: s.sync_max_bytes_per_s, min_bytes_per_s: s.sync_min_bytes_per_s, share: s.sync_share }, (from, to, reason) => {
      this.ctx.events.emit({ kind: 'sync', subject: name, from: from.toLowerCase(), to: to.toLowerCase(), detail: { reason, ...(this.progressJson(name) as Record<string, JsonValue>) } });
    });
    const entry: ServerPoolEntry = { pool, sync, tickers: [], clt: null, last_progress_ms: 0, md_errors_unlogged: 0, md_error_logged_ms: -Infinity };
    entry.tickers = serverPoolTickers(this.ctx.clock, pool, (status) => this.metadataWriteFailed(entry, status));
    this.pools.set(name, entry);
    this.ctx.events.emit({ kind: 'server_pool', subject: name, to: 'empty', detail: { member_id, chunk_size } });
    if (persist) await this.book.put({ kind: 'server_pool', pool: name, member_id, chunk_size });
  }

  /**
   * The metadata ticker retries every 500 ms: a failed store (closed after an IO error, until
   * the operator removes it) must not flood the log with two error lines a second.
   */
  private metadataWriteFailed(e: ServerPoolEntry, status: number): void {
    e.md_errors_unlogged++;
    const now = this.ctx.clock.now();
    if (now - e.md_error_logged_ms < MD_ERROR_LOG_MS) return;
    this.ctx.logger.log('error', 'pool metadata write failed', { pool: e.pool.name, status: errnoName(status), failures: e.md_errors_unlogged, next_report_s: MD_ERROR_LOG_MS / 1000 });
    e.md_errors_unlogged = 0;
    e.md_error_logged_ms = now;
  }

  private need(name: string): ServerPoolEntry {
    const e = this.pools.get(name);
    if (e === undefined) throw new ControlError('ENOENT', `no server pool ${name}`);
    return e;
  }

  async leavePool(name: string): Promise<void> {
    const e = this.need(name);
    if (e.pool.hasStore || e.pool.state !== 'EMPTY') throw new ControlError('EBUSY', `server pool ${name} is ${e.pool.state.toLowerCase()}${e.pool.hasStore ? ' with a store (remove_store or delete_store first)' : ''}`);
    e.pool.removeClt();
    e.clt = null;
    this.closeEntry(e);
    this.node.removePool(e.pool.group_id);
    this.pools.delete(name);
    this.ctx.events.emit({ kind: 'server_pool', subject: name, to: 'left' });
    await this.book.remove((r) => (r.kind === 'server_pool' || r.kind === 'clt' || r.kind === 'sync_stopped') && r.pool === name);
  }

  private closeEntry(e: ServerPoolEntry): void {
    for (const t of e.tickers) t.stop();
    e.tickers = [];
    e.sync.close();
  }

  async addClt(name: string, clt: string, persist = true): Promise<void> {
    const e = this.need(name);
    if (clt !== name) throw new ControlError('EINVAL', `the sync pool of server pool ${name} must have its name (got ${clt})`);
    if (e.clt !== null) throw new ControlError('EEXIST', `server pool ${name} has sync pool ${e.clt} attached`);
    const src = this.clients.syncSource(clt);
    const err = e.pool.addClt(src);
    if (err !== null) throw new ControlError('EBUSY', err);
    if (persist) {
      // The operator's add_clt: the reference's GET_PARAMS check (peers that answer must hold
      // this pool; a restart's resume does not wait for peers that may be down).
      const mismatch = await new Promise<string | null>((resolve) => e.pool.checkPeers((m) => resolve(m)));
      if (mismatch !== null) {
        e.pool.removeClt();
        throw new ControlError('EINVAL', `the sync pool's peers are not of this pool: ${mismatch}`);
      }
    }
    e.clt = clt;
    if (persist) await this.book.put({ kind: 'clt', pool: name });
  }

  async removeClt(name: string): Promise<void> {
    const e = this.need(name);
    e.pool.removeClt();
    e.clt = null;
    await this.book.remove((r) => r.kind === 'clt' && r.pool === name);
  }

  async syncControl(name: string, what: 'start' | 'stop'): Promise<void> {
    const e = this.need(name);
    if (what === 'start') {
      const err = e.sync.start();
      if (err !== null) throw new ControlError('EAGAIN', err);
      await this.book.remove((r) => r.kind === 'sync_stopped' && r.pool === name);
    } else {
      e.sync.stop();
      await this.book.put({ kind: 'sync_stopped', pool: name });
    }
  }

  /** Applies a recorded operator stop after a restart. */
  holdSync(name: string): void {
    this.pools.get(name)?.sync.stop();
  }

  // ------------------------------------------------------------------ brmr-server operations

  createStore(pool: string, device: string, mapped_size: number, force = false): Promise<BrmrStore> {
    return new Promise<BrmrStore>((resolve, reject) =>
      this.stores.createStore({ pool, device, mapped_size, force }, (status, store, reason) => (status === 0 && store !== null ? resolve(store) : reject(statusError(status, `create_store: ${reason ?? errnoName(status)}`)))),
    ).then(async (store) => {
      await this.book.put({ kind: 'store', pool, device, mapped_size, store_uuid: uuidText(store.header.store_uuid) });
      return store;
    });
  }

  addStore(a: { pool: string; device: string; mapped_size?: number; mode?: 'replace'; pool_uuid?: Buffer; store_uuid?: Buffer; force?: boolean }, persist = true): Promise<BrmrStore> {
    return new Promise<BrmrStore>((resolve, reject) =>
      this.stores.addStore(a, (status, store, reason) => (status === 0 && store !== null ? resolve(store) : reject(statusError(status, `add_store: ${reason ?? errnoName(status)}`)))),
    ).then(async (store) => {
      if (persist) await this.book.put({ kind: 'store', pool: a.pool, device: a.device, mapped_size: store.header.mapped_size, store_uuid: uuidText(store.header.store_uuid) });
      return store;
    });
  }

  takeDownStore(pool: string, del: boolean, persist = true, force = false): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cb = (status: number, reason: string | null): void => (status === 0 ? resolve() : reject(statusError(status, `${del ? 'delete' : 'remove'}_store: ${reason ?? errnoName(status)}`)));
      if (del) this.stores.deleteStore(pool, cb, force);
      else this.stores.removeStore(pool, cb);
    }).then(() => (persist ? this.book.remove((r) => r.kind === 'store' && r.pool === pool) : undefined));
  }

  /**
   * Daemon shutdown: the listener closes (the compute client sees this node go), syncs stop,
   * every store leaves with its maps persisted and its device closed. The objects stay
   * recorded: the next start re-adds them.
   */
  async shutdown(): Promise<void> {
    for (const e of this.pools.values()) this.closeEntry(e);
    await this.server?.close();
    this.server = null;
    for (const store of this.stores.stores()) {
      await this.takeDownStore(store.pool, false, false).catch((err: unknown) => {
        this.ctx.logger.log('error', 'store not removed cleanly at shutdown', { pool: store.pool, reason: err instanceof Error ? err.message : String(err) });
      });
    }
  }

  // ------------------------------------------------------------------ events

  private poolEvent(ev: ServerPoolEvent): void {
    switch (ev.kind) {
      case 'server_pool_state':
        this.ctx.events.emit({ kind: 'server_pool', subject: ev.pool, from: ev.from.toLowerCase(), to: ev.to.toLowerCase(), detail: { reason: ev.reason } });
        return;
      case 'store_error':
        this.ctx.events.emit({ kind: 'store_error', subject: ev.pool, detail: { op: ev.op, status: errnoName(ev.status) } });
        return;
      case 'maps_lost':
        this.ctx.events.emit({ kind: 'maps_lost', subject: ev.pool, detail: { member_id: ev.member_id, reason: ev.reason } });
        return;
      case 'chunk_synced': {
        // Progress, not one event per chunk: at most one a second per pool, and the last one.
        const e = this.pools.get(ev.pool);
        if (e === undefined) return;
        const now = this.ctx.clock.now();
        const clean = e.pool.ownMap()?.isEmpty() ?? false;
        if (!clean && now - e.last_progress_ms < PROGRESS_EVENT_MS) return;
        e.last_progress_ms = now;
        this.ctx.events.emit({ kind: 'sync_progress', subject: ev.pool, detail: this.progressJson(ev.pool) as Record<string, JsonValue> });
        return;
      }
    }
  }

  private storeEvent(ev: StoreManagerEvent): void {
    switch (ev.kind) {
      case 'store_state':
        this.ctx.events.emit({ kind: 'store', subject: ev.pool, to: `${ev.open ? 'open' : 'closed'} ${ev.mapped ? 'mapped' : 'unmapped'}`, detail: { reason: ev.reason } });
        return;
      case 'store_failed':
        this.ctx.events.emit({ kind: 'store', subject: ev.pool, to: 'failed', detail: { op: ev.op, status: errnoName(ev.status) } });
        return;
      case 'store_added':
        this.ctx.events.emit({ kind: 'store', subject: ev.pool, to: 'added', detail: { mode: ev.mode, store_uuid: ev.store_uuid, path: ev.path } });
        return;
      case 'store_removed':
        this.ctx.events.emit({ kind: 'store', subject: ev.pool, to: ev.deleted ? 'deleted' : 'removed' });
        return;
      case 'store_need_full_resync':
        this.ctx.events.emit({ kind: 'store', subject: ev.pool, to: 'need_full_resync', detail: { member_id: ev.member_id } });
        return;
    }
  }

  progressJson(name: string): JsonValue {
    const e = this.pools.get(name);
    if (e === undefined) return null;
    const p = e.sync.progress();
    return {
      state: p.state.toLowerCase(),
      dirty_chunks: p.dirty_chunks,
      total_chunks: p.total_chunks,
      synced_bytes: p.synced_bytes,
      bytes_per_s: p.bytes_per_s,
      eta_s: p.eta_s === null ? null : Math.round(p.eta_s * 10) / 10,
      rate_limit_bytes_per_s: p.rate_limit_bytes_per_s,
      last_error: p.last_error,
    };
  }

  // ------------------------------------------------------------------ trees

  serverTree(): TreeNode {
    return dir({
      ctl: dir({
        join_pool: kvFile(
          { poolname: { type: 'string', required: true, max_len: 64 }, member_id: { type: 'int', required: true, min: 1, max: 255 }, chunk_size: { type: 'int', min: 4096, max: 1 << 30 } },
          (v) => this.joinPool(v.poolname, v.member_id, v.chunk_size ?? DEFAULT_CHUNK_SIZE),
          'create a server pool',
        ),
      }),
      pools: dynamicDir(
        () => [...this.pools.keys()].sort(),
        (name) => (this.pools.has(name) ? this.poolTree(name) : undefined),
      ),
    });
  }

  private poolTree(name: string): TreeNode {
    const e = (): ServerPoolEntry => this.need(name);
    // The debug writes of map and map_unsynced (reference §11.2): "<a> <b> <member_id>", chunks
    // b..b+a-1 of that member's map.
    const debugChunks = (v: string): [DirtyMap<unknown>, number, number] => {
      const parts = v.trim().split(/\s+/);
      if (parts.length !== 3) throw new ControlError('EINVAL', 'expected "<a> <b> <member_id>": chunks b..b+a-1 of member');
      const count = parseInteger('a (chunk count)', parts[0] as string, 1);
      const first = parseInteger('b (first chunk)', parts[1] as string, 0);
      const member = parseInteger('member_id', parts[2] as string, 1, 255);
      const p = e().pool;
      const m = p.maps.get(member);
      if (m === undefined) throw new ControlError('ENOENT', `pool ${name} has no map for member ${member}`);
      if (first + count > p.no_of_chunks) throw new ControlError('EINVAL', `chunks ${first}+${count} outside 0..${p.no_of_chunks}`);
      return [m, first, count];
    };
    return dir({
      leave_pool: file({ write: (v) => (parseWord(v, ['1']), this.leavePool(name)), help: '1: destroy the pool (no store, EMPTY)' }),
      add_clt: file({ write: (v) => this.addClt(name, v), help: '<sync pool name>: attach the sync pool' }),
      clt: roFile(() => e().clt ?? '(none)', 'the attached sync pool'),
      remove_clt: file({ write: (v) => (parseWord(v, ['1']), this.removeClt(name)), help: '1: detach the sync pool' }),
      sync: file({ write: (v) => this.syncControl(name, parseWord(v, ['start', 'stop'] as const)), help: 'start|stop the background sync' }),
      sync_state: roFile(() => SYNC_STATE_TEXT[e().sync.state]),
      sync_progress: file({ read: () => JSON.stringify(this.progressJson(name)), json: () => this.progressJson(name), help: 'dirty chunks, bytes synced, rate, ETA' }),
      sync_rate: file({
        read: () => {
          const o = e().sync.opts;
          return `max=${o.max_bytes_per_s} min=${o.min_bytes_per_s} share_percent=${Math.round(o.share * 100)}`;
        },
        write: (v) => {
          // `<max bytes/s>`, or `max=<bytes/s> min=<bytes/s> share_percent=<1..99>`. A bare
          // limit below the floor (10 MiB/s by default) lowers the floor with it: `rmr sync
          // rate 4M` was refused ('need min <= max') although it says what the operator wants.
          const bare = /^[0-9]+$/.test(v) ? parseInteger('sync_rate', v, 1 << 16, 2 ** 40) : null;
          const o = bare !== null
            ? { max: bare, min: Math.min(bare, e().sync.opts.min_bytes_per_s) }
            : parseKv({ max: { type: 'int', min: 1 << 16, max: 2 ** 40 }, min: { type: 'int', min: 1 << 16, max: 2 ** 40 }, share_percent: { type: 'int', min: 1, max: 99 } }, v);
          const err = e().sync.setRate({
            ...(o.max !== undefined ? { max_bytes_per_s: o.max } : {}),
            ...('min' in o && o.min !== undefined ? { min_bytes_per_s: o.min } : {}),
            ...('share_percent' in o && o.share_percent !== undefined ? { share: o.share_percent / 100 } : {}),
          });
          if (err !== null) throw new ControlError('EINVAL', err);
        },
        help: '<max bytes/s> or max=<bytes/s> min=<bytes/s> share_percent=<1..99>: the background sync rate controller',
      }),
      state: roFile(() => `${e().pool.state.toLowerCase()}\nMaintenance mode: ${e().pool.maintenance ? 1 : 0}`),
      member_id: roFile(() => String(e().pool.member_id)),
      chunk_size: roFile(() => String(e().pool.chunk_size)),
      map_summary: roFile(() => mapSummaryText(e().pool.maps)),
      map_picture: mapPictureDir(() => e().pool.maps),
      map: file({
        read: () => mapSummaryText(e().pool.maps),
        write: (v) => {
          const [m, first, count] = debugChunks(v);
          m.setDirty(first, count);
        },
        help: 'read: map summary; write "<a> <b> <member_id>": mark chunks dirty (debug)',
      }),
      map_unsynced: file({
        read: () => mapUnsyncedText(e().pool.maps),
        write: (v) => {
          const [m, first, count] = debugChunks(v);
          m.markUnsynced(first, count);
        },
        help: 'read: the dirty chunks each member holds no data for (replaced store, lost maps, new member); write "<a> <b> <member_id>": mark chunks dirty and unsynced (debug)',
      }),
      map_version: roFile(() => `Map ver: ${e().pool.map_ver}`),
      map_update_state: roFile(() => e().pool.map_update_state.toLowerCase()),
      last_io: roFile(() => {
        const r = e().pool.intentRecord();
        if (r === null || r.extents.length === 0) return '(empty)';
        return r.extents.map((x, i) => `[${i}]=(${x * r.extent_bytes},${r.extent_bytes})`).join(' ');
      }, 'the intent record: extents (byte offset, length) recorded before writes into them'),
      metadata: file({ read: () => this.metadataText(name), json: () => this.metadataJson(name) }),
      blksize: roFile(() => `${e().pool.chunk_size >> 10}k`),
      test_map: file({
        write: async (v) => {
          parseWord(v, ['1']);
          const sp = this.clients.sync_pools.get(name);
          if (sp === undefined) throw new ControlError('ENODEV', `server pool ${name} has no sync pool to reach its peers`);
          const text = await this.clients.testMap(sp, e().pool.maps);
          this.ctx.logger.log('info', 'test_map', { pool: name, result: text });
          return text;
        },
        help: '1: compare this node\'s maps against every peer through the sync pool; answers the differences',
      }),
      stats: file({ read: () => JSON.stringify(e().pool.stats), json: () => ({ ...e().pool.stats }) }),
    });
  }

  private metadataJson(name: string): JsonValue {
    const p = this.need(name).pool;
    const md = p.currentPoolMd();
    return {
      pool_name: md.header.pool_name,
      pool_uuid: uuidText(md.header.pool_uuid),
      group_id: md.header.group_id,
      chunk_size: md.header.chunk_size,
      mapped_size: md.header.mapped_size,
      queue_depth: md.header.queue_depth,
      map_ver: md.header.map_ver,
      members: md.srv_md
        .filter((s) => s.member_id !== 0)
        .map((s) => ({ member_id: s.member_id, srv_state: s.srv_state.toLowerCase(), store: s.store_state, map_update_state: s.map_update_state.toLowerCase(), map_ver: s.map_ver, mapped_size: s.mapped_size })),
    };
  }

  private metadataText(name: string): string {
    const j = this.metadataJson(name) as Record<string, JsonValue>;
    const lines = Object.entries(j)
      .filter(([k]) => k !== 'members')
      .map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
    for (const m of j.members as Record<string, JsonValue>[]) lines.push(`srv_md: ${Object.entries(m).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}`);
    return lines.join('\n');
  }

  brmrTree(): TreeNode {
    const spec = {
      device: { type: 'string', required: true, max_len: 4096 },
      pool: { type: 'string', required: true, max_len: 64 },
      mapped_size: { type: 'int', min: 8, max: 2 ** 44 },
      force: { type: 'bool' },
    } as const;
    return dir({
      ctl: dir({
        create_store: kvFile({ ...spec, mapped_size: { ...spec.mapped_size, required: true } }, async (v) => {
          await this.createStore(v.pool, v.device, v.mapped_size * SECTOR, v.force ?? false);
        }, 'format a device as a store of the pool (mapped_size in 512-byte sectors; force=y overwrites a device holding other data)'),
        add_store: kvFile({ ...spec, mode: { type: 'enum', values: ['replace'] as const }, pool_uuid: { type: 'string', max_len: 36 }, store_uuid: { type: 'string', max_len: 36 } }, async (v) => {
          await this.addStore({
            pool: v.pool,
            device: v.device,
            ...(v.mapped_size !== undefined ? { mapped_size: v.mapped_size * SECTOR } : {}),
            ...(v.mode !== undefined ? { mode: v.mode } : {}),
            ...(v.pool_uuid !== undefined ? { pool_uuid: hexUuid(v.pool_uuid, 'pool_uuid') } : {}),
            ...(v.store_uuid !== undefined ? { store_uuid: hexUuid(v.store_uuid, 'store_uuid') } : {}),
            ...(v.force === true ? { force: true } : {}),
          });
        }, 're-add a store (mode=replace: an empty disk replacing a member; force=y overwrites a disk holding other data)'),
      }),
      stores: dynamicDir(
        () => this.stores.stores().map((s) => s.pool).sort(),
        (pool) => (this.stores.store(pool) === undefined ? undefined : this.storeTree(pool)),
      ),
    });
  }

  private storeTree(pool: string): TreeNode {
    const s = (): BrmrStore => {
      const st = this.stores.store(pool);
      if (st === undefined) throw new ControlError('ENOENT', `pool ${pool} has no store`);
      return st;
    };
    return dir({
      state: roFile(() => s().stateText()),
      mapped_size: roFile(() => String(s().header.mapped_size / SECTOR), 'sectors'),
      dev_size: roFile(() => String(Math.floor(s().backend.size_bytes / SECTOR)), 'sectors'),
      bdev_name: roFile(() => s().backend.path),
      store_uuid: roFile(() => uuidText(s().header.store_uuid)),
      pool_uuid: roFile(() => uuidText(s().header.pool_uuid)),
      remove_store: file({ write: (v) => (parseWord(v, ['1']), this.takeDownStore(pool, false)), help: '1: detach the store (metadata kept)' }),
      delete_store: file({
        write: (v) => this.takeDownStore(pool, true, true, parseWord(v, ['1', 'force']) === 'force'),
        help: '1: detach the store and wipe its header and metadata (refused while it is a live member of its pool); force: even then',
      }),
      stats: file({ read: () => JSON.stringify(s().stats), json: () => ({ ...s().stats }) }),
      ...(this.settings.fault_injection ? { fault_injection: faultInjectionFile(this.faultsOf(s().backend.path)) } : {}),
    });
  }

  private registerMetrics(): void {
    const m = this.ctx.metrics;
    const each = <T>(f: (name: string, e: ServerPoolEntry) => T): T[] => [...this.pools.entries()].map(([n, e]) => f(n, e));
    m.gauge('rmr_server_pool_state', 'Server pools by state (1 for the current state).', ['pool', 'state'], () => each((n, e) => [{ pool: n, state: e.pool.state.toLowerCase() }, 1] as const));
    m.gauge('rmr_server_dirty_chunks', 'Chunks this node records as dirty, per member.', ['pool', 'member'], () =>
      each((n, e) => [...e.pool.maps.entries()].map(([id, map]) => [{ pool: n, member: String(id) }, map.dirtyCount] as const)).flat(),
    );
    m.counter('rmr_server_io_total', 'IOs of the compute client served.', ['pool', 'op'], () =>
      each((n, e) => [
        [{ pool: n, op: 'read' }, e.pool.stats.reads] as const,
        [{ pool: n, op: 'write' }, e.pool.stats.writes] as const,
      ]).flat(),
    );
    m.counter('rmr_server_io_bytes_total', 'Bytes of compute-client IO served.', ['pool'], () => each((n, e) => [{ pool: n }, e.pool.stats.app_bytes] as const));
    m.counter('rmr_server_refused_total', 'IOs refused (not NORMAL, store not ready).', ['pool'], () => each((n, e) => [{ pool: n }, e.pool.stats.refused] as const));
    m.counter('rmr_server_chunk_syncs_total', 'Chunks synced from a peer.', ['pool', 'result'], () =>
      each((n, e) => [
        [{ pool: n, result: 'ok' }, e.pool.stats.chunk_syncs] as const,
        [{ pool: n, result: 'failed' }, e.pool.stats.chunk_sync_failures] as const,
      ]).flat(),
    );
    m.counter('rmr_sync_bytes_total', 'Bytes the background sync copied.', ['pool'], () => each((n, e) => [{ pool: n }, e.sync.synced_bytes] as const));
    m.gauge('rmr_sync_rate_bytes_per_second', 'Background sync rate (moving average).', ['pool'], () => each((n, e) => [{ pool: n }, e.sync.progress().bytes_per_s] as const));
    m.gauge('rmr_sync_running', 'Whether the background sync runs (1) or not (0).', ['pool'], () => each((n, e) => [{ pool: n }, e.sync.state === 'RUNNING' ? 1 : 0] as const));
  }
}
