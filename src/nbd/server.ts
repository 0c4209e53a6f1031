// The NBD server: named exports (name -> BlockDevice + description) and the connections
// accepted for them. It never listens itself: whoever owns the sockets (TCP, Unix, TLS, or an
// in-memory stream in tests) hands each accepted NetStream to accept().

import { type NetStream, type ServerTls, addressKey } from '../transport/net.js';
import { type Clock, type Logger, nullLogger } from '../util/ports.js';
import type { BlockDevice } from '../util/block-device.js';
import { type ConnectionLimits, DEFAULT_LIMITS, InflightBudget, NbdConnection } from './connection.js';
import { DEFAULT_MAX_PAYLOAD_BYTES, LIMIT_MAX_PAYLOAD_BYTES, type ExportTable, type NbdExport, checkDevice, exportLimits } from './export-info.js';
import type { TlsMode } from './handshake.js';

/** TLS of a server or of one listener: the policy, and the Net adapter's ServerTls for it. */
export interface NbdTls {
  readonly mode: TlsMode;
  /** Needed unless mode is off (NodeNet.serverTls). */
  readonly context: ServerTls | null;
}

const NO_TLS: NbdTls = { mode: 'off', context: null };

export interface NbdServerOptions {
  limits?: Partial<ConnectionLimits>;
  logger?: Logger;
  /** Arms the handshake timeout; without it a silent client holds its socket until it leaves. */
  clock?: Clock;
  /** The export a client gets for the empty name; default: the first export added. */
  default_export?: string;
  /** Connections at once, across all exports; beyond it new streams are closed at once. */
  max_connections?: number;
  /**
   * TCP connections still in their NBD handshake (greeting to GO/EXPORT_NAME, STARTTLS
   * included), all addresses together and per address (an IPv6 address by its /64); beyond
   * either, new streams are closed at once. Default 128 and 16, as the data plane's. They
   * are a share of max_connections, so idle sockets that never finish a handshake cannot
   * take every slot (issue 21: they counted against the 1,024 like attached clients and were
   * held 30 s). Unix-socket connections are not counted: who can reach the socket is
   * already decided by its mode and group.
   */
  max_preauth_connections?: number;
  max_preauth_per_address?: number;
  /** TLS for every accepted stream unless accept() is given another; default off. */
  tls?: NbdTls;
  /** Request bytes in flight over all connections together (see InflightBudget); default none. */
  max_inflight_bytes?: number;
  /**
   * Largest READ/WRITE payload a client may send or ask for (advertised in NBD_INFO_BLOCK_SIZE);
   * requests above a device's own maximum are split. Default 32 MiB, at most 64 MiB.
   */
  max_payload?: number;
}

export class NbdServer implements ExportTable {
  readonly connections = new Set<NbdConnection>();
  private readonly exports = new Map<string, NbdExport>();
  private readonly limits: ConnectionLimits;
  private readonly logger: Logger;
  private readonly clock: Clock | null;
  private readonly default_export: string | null;
  private readonly max_connections: number;
  private readonly max_preauth: number;
  private readonly max_preauth_per_address: number;
  /** TCP connections in their handshake → the address they count against. */
  private readonly preauth = new Map<NbdConnection, string>();
  private readonly preauth_by_address = new Map<string, number>();
  private readonly tls: NbdTls;
  private readonly max_payload: number;
  readonly budget: InflightBudget | null;
  private closing = false;
  private idle_waiters: (() => void)[] = [];
  /** Connections refused because of max_connections, the pre-auth limits, or shutdown. */
  refused = 0;

  constructor(opts: NbdServerOptions = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.logger = opts.logger ?? nullLogger;
    this.clock = opts.clock ?? null;
    this.default_export = opts.default_export ?? null;
    this.max_connections = opts.max_connections ?? 1024;
    this.max_preauth = opts.max_preauth_connections ?? 128;
    this.max_preauth_per_address = opts.max_preauth_per_address ?? 16;
    for (const [k, v] of [['max_preauth_connections', this.max_preauth], ['max_preauth_per_address', this.max_preauth_per_address]] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${k} ${v} must be a positive integer`);
    }
    this.tls = checkTls(opts.tls ?? NO_TLS);
    this.budget = opts.max_inflight_bytes === undefined ? null : new InflightBudget(opts.max_inflight_bytes);
    this.max_payload = opts.max_payload ?? DEFAULT_MAX_PAYLOAD_BYTES;
    if (!Number.isSafeInteger(this.max_payload) || this.max_payload < 4096 || this.max_payload > LIMIT_MAX_PAYLOAD_BYTES) {
      throw new Error(`max_payload ${this.max_payload} must be 4 KiB .. 64 MiB`);
    }
  }

  addExport(name: string, device: BlockDevice, description = ''): void {
    if (this.exports.has(name)) throw new Error(`export ${name} exists`);
    checkDevice(name, device);
    this.exports.set(name, { name, description, device, ...exportLimits(device, this.max_payload) });
  }

  /** Removes an export for new clients; connected clients keep their device. */
  removeExport(name: string): boolean {
    return this.exports.delete(name);
  }

  find(name: string): NbdExport | undefined {
    const e = this.exports.get(name);
    if (e !== undefined || name !== '') return e;
    if (this.default_export !== null) return this.exports.get(this.default_export);
    return this.exports.values().next().value;
  }

  all(): readonly NbdExport[] {
    return [...this.exports.values()];
  }

  /** Serves a connected stream; `tls` overrides the server's TLS for it (e.g. per listener). */
  accept(stream: NetStream, tls: NbdTls = this.tls): void {
    let mode = checkTls(tls).mode;
    // A stream that cannot upgrade (an in-memory one, say) is served as if TLS were off,
    // unless TLS is required: then it gets nothing at all.
    if (mode === 'on' && stream.startTls === undefined) mode = 'off';
    // Unix sockets are reached only by who their mode and group let in: not counted.
    const address = stream.remote.startsWith('unix:') ? null : addressKey(stream.remote);
    const per = address === null ? 0 : (this.preauth_by_address.get(address) ?? 0);
    const refuse = this.closing
      ? 'shutting down'
      : this.connections.size >= this.max_connections
        ? 'too many connections'
        : address !== null && this.preauth.size >= this.max_preauth
          ? `${this.preauth.size} connections are in their NBD handshake (limit ${this.max_preauth})`
          : address !== null && per >= this.max_preauth_per_address
            ? `${per} connections from ${address} are in their NBD handshake (limit ${this.max_preauth_per_address})`
            : mode === 'require' && stream.startTls === undefined
              ? 'TLS required but this stream cannot do TLS'
              : null;
    if (refuse !== null) {
      this.refused++;
      this.logger.log('warn', 'nbd connection refused', { remote: stream.remote, reason: refuse });
      stream.attach({ onData: () => undefined, onDrain: () => undefined, onClose: () => undefined });
      stream.destroy();
      return;
    }
    const conn = new NbdConnection(stream, {
      table: this,
      limits: this.limits,
      logger: this.logger,
      clock: this.clock,
      tls_mode: mode,
      tls: tls.context,
      budget: this.budget,
      onAttached: (c) => this.endPreauth(c),
      onClosed: (c) => {
        this.endPreauth(c);
        this.connections.delete(c);
        if (this.connections.size === 0) for (const w of this.idle_waiters.splice(0)) w();
      },
    });
    // The connection may have closed inside its constructor (stream already dead).
    if (conn.phase === 'closed') return;
    this.connections.add(conn);
    // (A stream with bytes already buffered may have finished its handshake in the constructor.)
    if (address !== null && (conn.phase === 'client_flags' || conn.phase === 'options' || conn.phase === 'tls')) {
      this.preauth.set(conn, address);
      this.preauth_by_address.set(address, per + 1);
    }
  }

  /** TCP connections still in their handshake (counted against the pre-auth limits). */
  get preauthCount(): number {
    return this.preauth.size;
  }

  private endPreauth(c: NbdConnection): void {
    const address = this.preauth.get(c);
    if (address === undefined) return;
    this.preauth.delete(c);
    const n = (this.preauth_by_address.get(address) ?? 1) - 1;
    if (n <= 0) this.preauth_by_address.delete(address);
    else this.preauth_by_address.set(address, n);
  }

  /**
   * Stops taking connections, lets every attached client's in-flight requests finish and
   * closes all connections; resolves when the last one is closed.
   */
  close(): Promise<void> {
    this.closing = true;
    for (const c of [...this.connections]) c.shutdown();
    if (this.connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle_waiters.push(resolve));
  }
}

function checkTls(t: NbdTls): NbdTls {
  if (t.mode !== 'off' && t.context === null) throw new Error(`NBD TLS mode ${t.mode} needs a ServerTls`);
  return t;
}
