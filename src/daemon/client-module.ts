// The compute client's devices in the daemon: brmr-client (map_device / unmap_device over an
// IO pool of the shared rmr-client module, reference §10.3, §11.4) and their NBD exports:
// one Unix socket per device (`<nbd.socket_dir>/<export>.sock`) and, when configured, one
// TCP listener serving every export. IO is timed per device and operation for /metrics.

import { mapDevice, mapJoiningMember, type BrmrDevice } from '../brmr/client/device.js';
import type { BlockDevice, WriteFlags, ZeroFlags } from '../util/block-device.js';
import { ForwardingDevice } from '../nbd/forwarding-device.js';
import { NbdServer, type NbdTls } from '../nbd/server.js';
import type { Listener } from '../transport/net.js';
import { errnoName } from '../util/errno.js';
import type { Clock } from '../util/ports.js';
import { ControlError } from './control-error.js';
import { dir, dynamicDir, file, kvFile, roFile, type JsonValue, type TreeNode } from './control-tree.js';
import { parseWord } from './kv.js';
import type { Histogram, HistogramSeries } from './metrics.js';
import { statusError, type RmrClientModule } from './rmr-client-module.js';
import type { RoleContext, RolePorts } from './daemon.js';
import type { ObjectBook } from './objects.js';
import { formatListen } from './validate.js';
import { isLoopbackHost } from './config.js';

const EXPORT_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const MAX_DEVICES = 64;

type Op = 'read' | 'write' | 'trim' | 'write_zeroes' | 'flush';

/** A BlockDevice that times every IO of the device it wraps (one histogram per device and op). */
class MeteredDevice extends ForwardingDevice {
  private readonly series: Record<Op, HistogramSeries>;

  constructor(
    dev: BlockDevice,
    name: string,
    private readonly clock: Clock,
    hist: Histogram,
    readonly bytes: Record<'read' | 'write', number>,
  ) {
    super(dev);
    // Series resolved once: this runs on every IO.
    const l = (op: Op): HistogramSeries => hist.series_of({ device: name, op });
    this.series = { read: l('read'), write: l('write'), trim: l('trim'), write_zeroes: l('write_zeroes'), flush: l('flush') };
  }

  private done(op: Op, t0: number): void {
    this.series[op].observe((this.clock.now() - t0) / 1000);
  }

  override read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    const t0 = this.clock.now();
    this.inner.read(offset, length, (s, d) => {
      this.done('read', t0);
      if (s === 0) this.bytes.read += length;
      cb(s, d);
    });
  }
  override write(offset: number, data: Buffer, flags: WriteFlags, cb: (status: number) => void): void {
    const t0 = this.clock.now();
    this.inner.write(offset, data, flags, (s) => {
      this.done('write', t0);
      if (s === 0) this.bytes.write += data.length;
      cb(s);
    });
  }
  override trim(offset: number, length: number, flags: WriteFlags, cb: (status: number) => void): void {
    const t0 = this.clock.now();
    this.inner.trim(offset, length, flags, (s) => (this.done('trim', t0), cb(s)));
  }
  override writeZeroes(offset: number, length: number, flags: ZeroFlags, cb: (status: number) => void): void {
    const t0 = this.clock.now();
    this.inner.writeZeroes(offset, length, flags, (s) => (this.done('write_zeroes', t0), cb(s)));
  }
  override flush(cb: (status: number) => void): void {
    const t0 = this.clock.now();
    this.inner.flush((s) => (this.done('flush', t0), cb(s)));
  }
}

interface DeviceEntry {
  readonly name: string;
  readonly pool: string;
  readonly export_name: string;
  readonly size_sectors: number;
  readonly dev: BrmrDevice;
  readonly bytes: Record<'read' | 'write', number>;
  unix: Listener | null;
  socket_path: string | null;
}

export class ClientModule {
  readonly devices = new Map<string, DeviceEntry>();
  readonly nbd: NbdServer;
  private tcp: Listener | null = null;
  private readonly ctx: RoleContext;
  private readonly ports: RolePorts;
  private readonly book: ObjectBook;
  private readonly clients: RmrClientModule;
  private readonly hist: Histogram;
  private readonly queue_depth: number;
  /** TLS of the TCP listener (nbd.tls) and of the Unix sockets (offered, never required). */
  private readonly tcp_tls: NbdTls;
  private readonly unix_tls: NbdTls;

  constructor(ctx: RoleContext, clients: RmrClientModule, queue_depth: number) {
    if (ctx.ports === null) throw new Error('the client role needs IO ports');
    this.ctx = ctx;
    this.ports = ctx.ports;
    this.book = ctx.objects();
    this.clients = clients;
    this.queue_depth = queue_depth;
    const n = ctx.config.nbd;
    this.nbd = new NbdServer({
      clock: ctx.clock,
      logger: ctx.logger,
      max_connections: n.max_connections,
      max_preauth_connections: n.max_preauth_connections,
      max_preauth_per_address: n.max_preauth_per_address,
      max_inflight_bytes: n.max_inflight_bytes,
      max_payload: n.max_payload,
      limits: { idle_timeout_ms: n.idle_timeout_ms, handshake_timeout_ms: n.handshake_timeout_ms },
    });
    const context = this.ports.nbd_tls;
    this.tcp_tls = context === null ? { mode: 'off', context: null } : { mode: ctx.config.nbd.tls, context };
    // A Unix socket is reached only by who its mode and group let in; TLS there is the
    // client's choice (nbds+unix://), so local tools need no credentials.
    this.unix_tls = context === null ? { mode: 'off', context: null } : { mode: 'on', context };
    this.hist = ctx.metrics.histogram('rmr_device_io_duration_seconds', 'Latency of device IO as NBD clients see it.', ['device', 'op']);
    this.registerMetrics();
    // A member added to a live pool must hold the mapped device before it takes IO.
    clients.beforeExtend = (pool, send) => {
      const d = [...this.devices.values()].find((x) => x.pool === pool);
      if (d === undefined) return Promise.resolve();
      return new Promise<void>((resolve, reject) =>
        mapJoiningMember(d.dev, send, (status, reason) => (status === 0 ? resolve() : reject(statusError(status, `add_sess mode=extend: device ${d.name} on the new member: ${reason ?? errnoName(status)}`)))),
      );
    };
  }

  /** The NBD TCP listener, if configured (every export on one port). */
  async listen(): Promise<void> {
    const t = this.ctx.config.nbd.tcp;
    if (t === null) return;
    this.tcp = await this.ports.net.listen({ host: t.host, port: t.port }, (s) => this.nbd.accept(s, this.tcp_tls));
    this.ctx.logger.log('info', 'NBD listening', { address: formatListen(this.tcp.address), tls: this.tcp_tls.mode });
    // Only nbd.allow_insecure lets a daemon start like this (config.ts): say so at every start.
    if (!isLoopbackHost(t.host) && this.tcp_tls.mode !== 'require') {
      this.ctx.logger.log('warn', 'NBD served without required TLS on a non-loopback address (nbd.allow_insecure): anyone who reaches it can read and write the disks', { address: formatListen(this.tcp.address), tls: this.tcp_tls.mode });
    }
  }

  get tcpAddress(): { host: string; port: number } | null {
    return this.tcp?.address ?? null;
  }

  private nextName(): string {
    for (let i = 0; i < MAX_DEVICES; i++) if (!this.devices.has(`brmr${i}`)) return `brmr${i}`;
    throw new ControlError('ENOSPC', `at most ${MAX_DEVICES} devices`);
  }

  /** map_device: maps the pool's device and exports it over NBD; returns the device name. */
  async mapDevice(pool_name: string, size_sectors: number, name?: string, export_name?: string, persist = true): Promise<string> {
    const e = this.clients.io_pools.get(pool_name);
    if (e === undefined) throw new ControlError('ENOENT', `no IO pool ${pool_name}`);
    if (e.pool === null) throw new ControlError('ENODEV', `pool ${pool_name} has no members yet (add_sess first)`);
    for (const d of this.devices.values()) if (d.pool === pool_name) throw new ControlError('EBUSY', `pool ${pool_name} has device ${d.name} mapped already`);
    const dev_name = name ?? this.nextName();
    if (!EXPORT_RE.test(dev_name) || this.devices.has(dev_name)) throw new ControlError(this.devices.has(dev_name) ? 'EEXIST' : 'EINVAL', `device name ${dev_name}`);
    const exp = export_name ?? dev_name;
    if (!EXPORT_RE.test(exp)) throw new ControlError('EINVAL', `export=${exp}: 1-64 characters [A-Za-z0-9_.-]`);
    if (this.nbd.find(exp) !== undefined && exp !== '') throw new ControlError('EEXIST', `export ${exp} exists`);
    const pool = e.pool;
    const dev = await new Promise<BrmrDevice>((resolve, reject) =>
      mapDevice(
        {
          pool,
          size_sectors,
          name: dev_name,
          queue_depth: this.queue_depth,
          log: this.ctx.logger,
          emit: (ev) => this.ctx.events.emit({ kind: 'device', subject: ev.device, from: ev.from, to: ev.to, detail: { reason: ev.reason } }),
        },
        (status, d, reason) => (status === 0 && d !== null ? resolve(d) : reject(statusError(status, `map_device: ${reason ?? errnoName(status)}`))),
      ),
    );
    const bytes = { read: 0, write: 0 };
    const entry: DeviceEntry = { name: dev_name, pool: pool_name, export_name: exp, size_sectors, dev, bytes, unix: null, socket_path: null };
    this.nbd.addExport(exp, new MeteredDevice(dev, dev_name, this.ctx.clock, this.hist, bytes), `RMR pool ${pool_name}`);
    this.devices.set(dev_name, entry);
    try {
      const path = `${this.ctx.config.nbd.socket_dir}/${exp}.sock`;
      entry.unix = await this.ports.listenUnix(path, (s) => this.nbd.accept(s, this.unix_tls));
      entry.socket_path = path;
      if (persist) await this.book.put({ kind: 'device', pool: pool_name, name: dev_name, size_sectors, ...(exp !== dev_name ? { export: exp } : {}) });
    } catch (err) {
      await this.unmapDevice(dev_name, false).catch(() => undefined);
      throw err instanceof ControlError ? err : new ControlError('EIO', `exporting ${dev_name}: ${err instanceof Error ? err.message : String(err)}`);
    }
    this.ctx.events.emit({ kind: 'export', subject: exp, to: 'serving', detail: { device: dev_name, uris: this.uris(entry) } });
    return dev_name;
  }

  async unmapDevice(name: string, persist = true): Promise<void> {
    const d = this.devices.get(name);
    if (d === undefined) throw new ControlError('ENOENT', `no device ${name}`);
    this.nbd.removeExport(d.export_name);
    await d.unix?.close();
    d.unix = null;
    // Connections of this export end before the device goes (their IO drains in the device).
    for (const c of [...this.nbd.connections]) if (c.exportName === d.export_name) c.shutdown();
    await new Promise<void>((resolve, reject) => d.dev.unmap((s) => (s === 0 ? resolve() : reject(statusError(s, `unmap_device ${name}: ${errnoName(s)}`)))));
    this.devices.delete(name);
    this.ctx.events.emit({ kind: 'export', subject: d.export_name, to: 'removed', detail: { device: name } });
    if (persist) await this.book.remove((r) => r.kind === 'device' && r.name === name);
  }

  /** How clients reach the export: nbd:// in clear, nbds:// with TLS (client credentials not included). */
  uris(d: DeviceEntry): string[] {
    const out: string[] = [];
    if (d.socket_path !== null) {
      out.push(`nbd+unix:///${d.export_name}?socket=${d.socket_path}`);
      if (this.unix_tls.mode !== 'off') out.push(`nbds+unix:///${d.export_name}?socket=${d.socket_path}`);
    }
    const t = this.tcp?.address;
    if (t !== undefined) {
      const hp = `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}/${d.export_name}`;
      if (this.tcp_tls.mode !== 'require') out.push(`nbd://${hp}`);
      if (this.tcp_tls.mode !== 'off') out.push(`nbds://${hp}`);
    }
    return out;
  }

  /** Daemon shutdown: NBD clients are told to go (in-flight IO completes), devices close. */
  async shutdown(): Promise<void> {
    await this.tcp?.close();
    this.tcp = null;
    for (const d of this.devices.values()) await d.unix?.close();
    await this.nbd.close();
    for (const name of [...this.devices.keys()]) await this.unmapDevice(name, false).catch(() => undefined);
  }

  deviceJson(d: DeviceEntry): JsonValue {
    const s = d.dev.status();
    return {
      name: d.name,
      pool: d.pool,
      export: d.export_name,
      uris: this.uris(d),
      state: s.state,
      degraded: s.degraded,
      size_bytes: s.size_bytes,
      legs: s.legs,
      normal_legs: s.normal_legs,
      in_flight: s.in_flight,
      waiting: s.waiting,
      stats: { ...s.stats },
    };
  }

  tree(): TreeNode {
    return dir({
      ctl: dir({
        map_device: kvFile(
          { pool: { type: 'string', required: true, max_len: 64 }, size: { type: 'int', required: true, min: 8, max: 2 ** 44 }, name: { type: 'string', max_len: 64 }, export: { type: 'string', max_len: 64 } },
          (v) => this.mapDevice(v.pool, v.size, v.name, v.export),
          'map the pool as a device and export it over NBD (size in 512-byte sectors); answers the device name',
        ),
        devices: dynamicDir(
          () => [...this.devices.keys()].sort(),
          (name) => {
            const d = this.devices.get(name);
            return d === undefined ? undefined : this.deviceTree(d);
          },
        ),
      }),
    });
  }

  private deviceTree(d: DeviceEntry): TreeNode {
    const stat = (f: () => number): TreeNode =>
      file({
        read: () => String(f()),
        write: (v) => {
          parseWord(v, ['0', '1']);
          const st = d.dev.stats as unknown as Record<string, number>;
          for (const k of Object.keys(st)) st[k] = 0;
        },
      });
    return dir({
      unmap_device: file({ write: (v) => (parseWord(v, ['1']), this.unmapDevice(d.name)), help: '1: stop the export and unmap the device' }),
      state: roFile(() => `${d.dev.state}${d.dev.degraded ? ' degraded' : ''}`),
      export: roFile(() => d.export_name),
      nbd_uri: roFile(() => this.uris(d).join('\n')),
      size: roFile(() => String(d.size_sectors), 'sectors'),
      status: file({ read: () => JSON.stringify(this.deviceJson(d)), json: () => this.deviceJson(d) }),
      stats: dir({
        requests: stat(() => d.dev.stats.reads + d.dev.stats.writes + d.dev.stats.trims + d.dev.stats.zeroes + d.dev.stats.flushes),
        request_sizes: roFile(() => `read_bytes ${d.dev.stats.bytes_read}\nwrite_bytes ${d.dev.stats.bytes_written}`),
        sts_resource: stat(() => d.dev.stats.busy),
        errors: stat(() => d.dev.stats.errors),
      }),
    });
  }

  private registerMetrics(): void {
    const m = this.ctx.metrics;
    const each = <T>(f: (d: DeviceEntry) => T): T[] => [...this.devices.values()].map(f);
    m.counter('rmr_device_io_total', 'Device IOs by operation.', ['device', 'op'], () =>
      each((d) => {
        const s = d.dev.stats;
        return [
          [{ device: d.name, op: 'read' }, s.reads] as const,
          [{ device: d.name, op: 'write' }, s.writes] as const,
          [{ device: d.name, op: 'trim' }, s.trims] as const,
          [{ device: d.name, op: 'write_zeroes' }, s.zeroes] as const,
          [{ device: d.name, op: 'flush' }, s.flushes] as const,
        ];
      }).flat(),
    );
    m.counter('rmr_device_io_bytes_total', 'Device bytes moved by direction.', ['device', 'op'], () =>
      each((d) => [[{ device: d.name, op: 'read' }, d.bytes.read] as const, [{ device: d.name, op: 'write' }, d.bytes.write] as const]).flat(),
    );
    m.counter('rmr_device_errors_total', 'Device IOs that failed.', ['device'], () => each((d) => [{ device: d.name }, d.dev.stats.errors] as const));
    m.gauge('rmr_device_degraded', 'Whether the device runs with fewer legs than members (1) or not (0).', ['device'], () => each((d) => [{ device: d.name }, d.dev.degraded ? 1 : 0] as const));
    m.gauge('rmr_nbd_connections', 'NBD client connections open.', [], () => [[{}, this.nbd.connections.size]]);
  }
}
