// The node daemon, independent of what it serves: control tree, events, metrics and the
// control API, plus the roles its configuration names (storage node, compute client), each
// a plug-in that mounts its subtrees and starts and stops in order. Sockets, files and
// signals are node-daemon.ts's business; this file runs the same under tests.

import type { Clock, Logger, LogLevel, Random } from '../util/ports.js';
import type { Listener, Net, ServerTls, TlsOptions, TlsPeer } from '../transport/net.js';
import type { PeerIdentity } from '../transport/server.js';
import type { NetStream } from '../transport/net.js';
import type { BackendOpener } from '../brmr/server/backend.js';
import { ObjectBook, type StateFile } from './objects.js';
import type { DaemonConfig } from './config.js';
import { configToPlain } from './config.js';
import { ControlApi } from './control-api.js';
import { ControlError, toControlError } from './control-error.js';
import { ControlTree, dir, dynamicDir, file, roFile, type JsonValue, type TreeNode } from './control-tree.js';
import { EventLog } from './events.js';
import { parseWord } from './kv.js';
import { MetricsRegistry } from './metrics.js';

/**
 * The outside world as the storage and client roles reach it: sockets, store backends,
 * randomness, the cluster secret and the file of persisted objects. node-daemon.ts gives the
 * real ones; tests may give their own.
 */
export interface RolePorts {
  readonly net: Net;
  readonly listenUnix: (path: string, onConnection: (stream: NetStream) => void) => Promise<Listener>;
  readonly random: Random;
  readonly open: BackendOpener;
  /** Why a store may not be at `device` given the allow-list (null: it may); see src/node/store-paths.ts. */
  readonly storePathRefusal: (device: string, dirs: readonly string[], symlinks: boolean) => string | null;
  /** Cluster secret (null when the daemon has none configured). */
  readonly secret: Buffer | null;
  /** Transport TLS of outgoing sessions (null: plain TCP). */
  readonly tls: TlsOptions | null;
  /** Transport TLS of the data listener: every accepted connection is upgraded (null: plain TCP). */
  readonly data_tls: ServerTls | null;
  /** Who a peer is, from its TLS handshake (per-node identities); null: the shared-secret mode. */
  readonly identify: ((peer: TlsPeer | null) => PeerIdentity | string) | null;
  /** NBD STARTTLS material (config nbd.tls*), ready for NetStream.startTls; null when nbd.tls is off. */
  readonly nbd_tls: ServerTls | null;
  readonly objects: StateFile;
}

export interface RoleContext {
  readonly daemon: string;
  readonly config: DaemonConfig;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly wall_ms: () => number;
  readonly events: EventLog;
  readonly metrics: MetricsRegistry;
  readonly tree: ControlTree;
  /** Null when the daemon was built without IO ports (tests of the framework). */
  readonly ports: RolePorts | null;
  /**
   * One object per daemon under `key`, made on first use: the modules two roles both need
   * (rmr-client, the object book) are shared instead of mounted twice.
   */
  shared<T>(key: string, make: () => T): T;
  /** The persisted objects (see objects.ts); throws without ports. */
  objects(): ObjectBook;
}

/** A row of `rmr status`'s pool table: one leg (client side) or one member (server side). */
export interface LegStatus {
  readonly pool: string;
  /** `client` (an IO or sync pool's leg) or `server` (this node's server pool). */
  readonly side: 'client' | 'server';
  readonly member_id: number | null;
  readonly session: string | null;
  readonly state: string;
  readonly dirty_chunks?: number | null;
  readonly total_chunks?: number | null;
}

export interface RoleStatus {
  readonly state: string;
  readonly legs?: readonly LegStatus[];
  readonly detail?: { readonly [k: string]: JsonValue };
}

/**
 * A role plug-in. The daemon mounts `mounts()` (path → subtree, e.g. `rmr-server` → the
 * server's tree), then calls start() in configuration order; stop() runs in reverse order.
 * A role that needs a module another role also uses (both sides use `rmr-client`) shares
 * that module's object rather than mounting it twice (mounting twice fails with EEXIST).
 */
export interface Role {
  readonly name: string;
  mounts?(ctx: RoleContext): Readonly<Record<string, TreeNode>>;
  start(ctx: RoleContext): Promise<void>;
  stop(ctx: RoleContext): Promise<void>;
  status?(): RoleStatus;
}

/** Builds a role from its settings under `roles.<name>`; throws ConfigError naming the field. */
export type RoleFactory = (settings: unknown, at: string) => Role;

export type DaemonState = 'created' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';
type RoleState = 'configured' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface DaemonDeps {
  readonly config: DaemonConfig;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly wall_ms: () => number;
  readonly roles: readonly Role[];
  readonly version: string;
  readonly pid: number;
  /** Lets `daemon/log_level` change the logger's level at run time. */
  readonly log_level?: { get(): LogLevel; set(l: LogLevel): void };
  /** Bearer token TCP control clients must send (read from control.token_file). */
  readonly control_token?: string | null;
  readonly ports?: RolePorts;
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;

export class Daemon {
  readonly config: DaemonConfig;
  readonly tree: ControlTree;
  readonly events: EventLog;
  readonly metrics: MetricsRegistry;
  readonly api: ControlApi;
  private readonly d: DaemonDeps;
  private readonly roleStates = new Map<string, RoleState>();
  private readonly started: Role[] = [];
  private daemonState: DaemonState = 'created';
  private started_at_ms = 0;
  private readonly shared_objects = new Map<string, unknown>();
  private ctx: RoleContext | null = null;

  constructor(d: DaemonDeps) {
    this.d = d;
    this.config = d.config;
    const names = new Set<string>();
    for (const r of d.roles) {
      if (names.has(r.name)) throw new Error(`role ${r.name} configured twice`);
      names.add(r.name);
      this.roleStates.set(r.name, 'configured');
    }
    this.tree = new ControlTree({ clock: d.clock, handler_timeout_ms: d.config.control.handler_timeout_ms });
    this.events = new EventLog({ daemon: d.config.name, capacity: d.config.events.capacity, wall_ms: d.wall_ms });
    this.metrics = new MetricsRegistry({ series_max: d.config.metrics.series_max });
    this.api = new ControlApi({
      tree: this.tree,
      events: this.events,
      metrics: this.metrics,
      status: () => this.status(),
      clock: d.clock,
      token: d.control_token ?? null,
    });
    this.registerMetrics();
  }

  get state(): DaemonState {
    return this.daemonState;
  }

  get context(): RoleContext {
    if (this.ctx !== null) return this.ctx;
    const d = this.d;
    const shared = <T>(key: string, make: () => T): T => {
      if (!this.shared_objects.has(key)) this.shared_objects.set(key, make());
      return this.shared_objects.get(key) as T;
    };
    const ports = d.ports ?? null;
    this.ctx = {
      daemon: d.config.name,
      config: d.config,
      logger: d.logger,
      clock: d.clock,
      wall_ms: d.wall_ms,
      events: this.events,
      metrics: this.metrics,
      tree: this.tree,
      ports,
      shared,
      objects: () => {
        if (ports === null) throw new Error('this daemon has no IO ports');
        return shared('objects', () => new ObjectBook(ports.objects));
      },
    };
    return this.ctx;
  }

  /** Mounts the trees and starts the roles in order; on a failure stops those started and throws. */
  async start(): Promise<void> {
    if (this.daemonState !== 'created') throw new Error(`daemon start in state ${this.daemonState}`);
    this.started_at_ms = this.d.wall_ms();
    this.setState('starting');
    this.tree.mount('daemon', this.daemonTree());
    const ctx = this.context;
    try {
      for (const r of this.d.roles) {
        for (const [path, node] of Object.entries(r.mounts?.(ctx) ?? {})) this.tree.mount(path, node);
      }
      for (const r of this.d.roles) {
        this.setRoleState(r.name, 'starting');
        try {
          await r.start(ctx);
        } catch (e) {
          this.setRoleState(r.name, 'failed', { reason: toControlError(e).message });
          throw new Error(`role ${r.name} failed to start: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
        }
        this.started.push(r);
        this.setRoleState(r.name, 'running');
      }
    } catch (e) {
      this.d.logger.log('error', 'start failed; stopping the roles already started', { reason: e instanceof Error ? e.message : String(e) });
      await this.stopRoles();
      this.setState('failed');
      throw e;
    }
    this.setState('running');
  }

  /** Stops roles in reverse order; a role that fails to stop is logged, the others still stop. */
  async stop(): Promise<boolean> {
    if (this.daemonState === 'stopping' || this.daemonState === 'stopped') return true;
    this.setState('stopping');
    const clean = await this.stopRoles();
    this.api.close();
    this.setState('stopped');
    return clean;
  }

  status(): JsonValue {
    const now = this.d.wall_ms();
    const roles: JsonValue[] = [];
    for (const r of this.d.roles) {
      let st: RoleStatus | undefined;
      try {
        st = r.status?.();
      } catch (e) {
        st = { state: 'error', detail: { reason: toControlError(e).message } };
      }
      roles.push({
        name: r.name,
        state: this.roleStates.get(r.name) ?? 'configured',
        status: (st ?? null) as unknown as JsonValue,
      });
    }
    return {
      daemon: {
        name: this.config.name,
        pid: this.d.pid,
        version: this.d.version,
        state: this.daemonState,
        started_at: this.started_at_ms === 0 ? null : new Date(this.started_at_ms).toISOString(),
        uptime_seconds: this.started_at_ms === 0 ? 0 : Math.max(0, Math.round((now - this.started_at_ms) / 1000)),
        control_socket: this.config.control.socket,
        last_event_seq: this.events.last_seq,
      },
      roles,
    };
  }

  private async stopRoles(): Promise<boolean> {
    let clean = true;
    const ctx = this.context;
    while (this.started.length > 0) {
      const r = this.started.pop() as Role;
      this.setRoleState(r.name, 'stopping');
      try {
        await r.stop(ctx);
        this.setRoleState(r.name, 'stopped');
      } catch (e) {
        clean = false;
        this.setRoleState(r.name, 'failed', { reason: toControlError(e).message });
      }
    }
    return clean;
  }

  private setState(to: DaemonState): void {
    const from = this.daemonState;
    this.daemonState = to;
    this.events.emit({ kind: 'daemon', subject: this.config.name, from, to });
    this.d.logger.log(to === 'failed' ? 'error' : 'info', `daemon ${to}`, { from });
  }

  private setRoleState(name: string, to: RoleState, detail?: { reason: string }): void {
    const from = this.roleStates.get(name) ?? 'configured';
    this.roleStates.set(name, to);
    this.events.emit(detail === undefined ? { kind: 'role', subject: name, from, to } : { kind: 'role', subject: name, from, to, detail });
    this.d.logger.log(to === 'failed' ? 'error' : 'info', `role ${name} ${to}`, { from, ...(detail ?? {}) });
  }

  private daemonTree(): TreeNode {
    const d = this.d;
    const logLevel = d.log_level;
    return dir({
      name: roFile(() => this.config.name),
      pid: roFile(() => String(d.pid)),
      version: roFile(() => d.version),
      state: roFile(() => this.daemonState),
      config: file({ read: () => JSON.stringify(configToPlain(this.config), null, 2), json: () => configToPlain(this.config) as unknown as JsonValue, help: 'the resolved configuration' }),
      log_level: file({
        read: () => logLevel?.get() ?? this.config.log.level,
        write: (v) => {
          if (logLevel === undefined) throw new ControlError('EOPNOTSUPP', 'this daemon cannot change its log level');
          const from = logLevel.get();
          const to = parseWord(v, LOG_LEVELS);
          logLevel.set(to);
          this.events.emit({ kind: 'config', subject: 'log_level', from, to });
        },
        help: 'debug|info|warn|error',
      }),
      events: dir({
        last_seq: roFile(() => String(this.events.last_seq)),
        capacity: roFile(() => String(this.events.capacity)),
        dropped: roFile(() => String(this.events.dropped_total)),
      }),
      roles: dynamicDir(
        () => this.d.roles.map((r) => r.name),
        (name) => {
          const r = this.d.roles.find((x) => x.name === name);
          if (r === undefined) return undefined;
          return dir({
            state: roFile(() => this.roleStates.get(name) ?? 'configured'),
            status: file({ read: () => JSON.stringify(r.status?.() ?? null), json: () => (r.status?.() ?? null) as unknown as JsonValue }),
          });
        },
      ),
    });
  }

  private registerMetrics(): void {
    const m = this.metrics;
    m.gauge('rmr_daemon_info', 'Constant 1, labelled with the daemon name and version.', ['daemon', 'version'], () => [[{ daemon: this.config.name, version: this.d.version }, 1]]);
    m.gauge('rmr_daemon_start_time_seconds', 'Wall-clock start time of the daemon (Unix seconds).', [], () => [[{}, this.started_at_ms / 1000]]);
    m.gauge('rmr_daemon_roles', 'Roles by state.', ['role', 'state'], () => [...this.roleStates].map(([role, state]) => [{ role, state }, 1] as const));
    m.counter('rmr_events_total', 'Events emitted since the daemon started.', [], () => [[{}, this.events.last_seq]]);
    m.counter('rmr_events_dropped_total', 'Events pushed out of the ring before every reader saw them.', [], () => [[{}, this.events.dropped_total]]);
  }
}
