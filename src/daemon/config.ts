// Daemon configuration: one table of settings, each with its default, its environment
// variable (RMR_<KEY>) and its flag (--<key>); precedence default < file < env < flag. The
// file is YAML (JSON is YAML too); `roles` is a mapping of role name to that role's own
// settings, validated by the role (daemon.ts). Pure: reading the file is the caller's
// (loadConfigFile in cli/main.ts; cli/node-cluster.ts for the cluster file).

import { parse as parseYaml, YAMLParseError } from 'yaml';
import { ConfigError, Reader, join, formatListen, type ListenAddress, type RawObject } from './validate.js';
import type { LogLevel } from '../util/ports.js';
import type { TlsMode } from '../nbd/handshake.js';

export type LogFormat = 'human' | 'json';

export interface DaemonConfig {
  /** This daemon's name: events, logs, default paths. */
  readonly name: string;
  /**
   * pid, state and object files, sockets; default `/var/lib/rmr/<name>` for root (a system
   * daemon), else `${XDG_STATE_HOME:-~/.local/state}/rmr/<name>`. Survives reboots:
   * objects.json, what the daemon resumes, lives here.
   */
  readonly state_dir: string;
  /** Secret, token and key files readable by group or others: refused, or only a warning. */
  readonly secret_file_modes: 'strict' | 'warn';
  readonly control: {
    readonly socket: string;
    /** Optional TCP listener for the control API; requires token_file. */
    readonly tcp: ListenAddress | null;
    readonly token_file: string | null;
    /** HTTPS on control.tcp: this daemon's certificate chain and key. */
    readonly tls_cert: string | null;
    readonly tls_key: string | null;
    /** Plain HTTP on a non-loopback control.tcp (the token then travels in clear). */
    readonly allow_insecure: boolean;
    readonly max_body_bytes: number;
    /** Connections that sent a valid token (TCP) or came on the Unix socket. */
    readonly max_connections: number;
    /** TCP connections that have not yet sent a request with a valid token, and per address. */
    readonly max_unauthenticated: number;
    readonly max_unauthenticated_per_address: number;
    readonly handler_timeout_ms: number;
    readonly max_followers: number;
  };
  readonly log: {
    readonly level: LogLevel;
    readonly format: LogFormat;
    readonly file: string | null;
    /** The file is rotated (to `<file>.1` ... `<file>.<keep>`) when it grows past this; 0: never. */
    readonly max_bytes: number;
    readonly keep: number;
    /** Lines with the same message: at most `burst` per `window_ms`; the rest are counted and reported. */
    readonly burst: number;
    readonly window_ms: number;
  };
  readonly events: { readonly capacity: number };
  readonly metrics: { readonly series_max: number };
  /** Cluster secret file: every transport session authenticates with it (required by roles). */
  readonly secret_file: string | null;
  /**
   * Data plane: the listener of a storage node and the transport's TLS, both directions:
   * certificates (`tls_cert`/`tls_key` this node's, `tls_ca` the cluster CA that every peer's
   * certificate must chain to: per-node identities), or per-node PSKs (`tls_psk_file`). A
   * non-loopback listener without TLS needs `allow_insecure`.
   */
  readonly data: {
    readonly listen: ListenAddress;
    readonly tls_cert: string | null;
    readonly tls_key: string | null;
    readonly tls_ca: string | null;
    readonly tls_psk_file: string | null;
    readonly allow_insecure: boolean;
    readonly heartbeat_interval_ms: number;
    readonly heartbeat_timeout_ms: number;
    readonly handshake_timeout_ms: number;
    readonly max_preauth_connections: number;
    readonly max_preauth_per_address: number;
    /** Read answers kept for retransmission, all sessions together. */
    readonly max_answer_cache_bytes: number;
  };
  /** NBD exports of the client role: `<socket_dir>/<export>.sock`, and optionally TCP. */
  readonly nbd: NbdConfig;
  /** Re-create the pools, stores, legs and devices of the last run at start. */
  readonly resume: boolean;
  readonly shutdown_timeout_ms: number;
  /** Role name → that role's settings (opaque here). */
  readonly roles: Readonly<Record<string, unknown>>;
}

export interface NbdConfig {
  readonly socket_dir: string;
  readonly tcp: ListenAddress | null;
  /** STARTTLS policy of the TCP listener (the Unix sockets offer TLS as `on` when it is configured). */
  readonly tls: TlsMode;
  /** nbdkit's layout: server-cert.pem, server-key.pem, and ca-cert.pem for tls_verify_peer. */
  readonly tls_certificates: string | null;
  /** `identity:hexkey` lines (psktool, nbdkit --tls-psk, libnbd tls-psk-file). */
  readonly tls_psk_file: string | null;
  /** Clients must show a certificate signed by the CA in tls_certificates. */
  readonly tls_verify_peer: boolean;
  /** Serve plaintext NBD (tls not require) on a non-loopback nbd.tcp. */
  readonly allow_insecure: boolean;
  /** Mode and group of the Unix sockets. */
  readonly socket_mode: number;
  readonly socket_group: string | null;
  /** Request bytes in flight over all NBD connections of the daemon (each connection has its own bound too). */
  readonly max_inflight_bytes: number;
  /** An NBD connection with no request for this long is closed; 0: never. */
  readonly idle_timeout_ms: number;
  readonly max_connections: number;
  /** TCP connections in their NBD handshake: in all, and per address (a share of max_connections). */
  readonly max_preauth_connections: number;
  readonly max_preauth_per_address: number;
  /** Deadline of an NBD handshake (greeting to GO, STARTTLS included). */
  readonly handshake_timeout_ms: number;
  /** Largest READ/WRITE payload advertised to NBD clients; longer than the pool's max IO is split. */
  readonly max_payload: number;
}

/** Where defaults come from: the host, not the code (so tests pass their own). */
export interface ConfigEnv {
  readonly hostname: string;
  /**
   * Parent of the default state directories: `/var/lib/rmr` for root (system daemons), else
   * `${XDG_STATE_HOME:-$HOME/.local/state}/rmr` (see defaultStateRoot).
   */
  readonly state_root: string;
  /** Environment variables (RMR_*). */
  readonly vars: Readonly<Record<string, string | undefined>>;
}

type Kind =
  | { readonly t: 'name' }
  | { readonly t: 'path' }
  | { readonly t: 'path?' }
  | { readonly t: 'listen' }
  | { readonly t: 'listen?' }
  | { readonly t: 'int'; readonly min: number; readonly max: number }
  | { readonly t: 'enum'; readonly values: readonly string[] }
  | { readonly t: 'bool' }
  | { readonly t: 'mode' }
  | { readonly t: 'group?' };

type Value = string | number | boolean | ListenAddress | null;

export interface Setting {
  /** Dotted path in the file: `control.socket`. */
  readonly key: string;
  readonly kind: Kind;
  readonly help: string;
  /** Default, given the settings resolved before it (table order). */
  readonly def: (got: (key: string) => Value, env: ConfigEnv) => Value;
}

function asText(v: Value): string {
  return typeof v === 'string' ? v : '';
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** A file mode in octal, as a string: YAML reads an unquoted 0660 as the decimal 660. */
const MODE_RE = /^(?:0o?)?([0-7]{3})$/;
const GROUP_RE = /^(?:[0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?)$/;

/**
 * Where state directories go by default: a system path for root, whatever starts it (systemd,
 * sudo, cron: `/tmp` and `$XDG_RUNTIME_DIR` were lost at reboot, and the one depended on the
 * caller's environment), the user's state directory otherwise.
 */
export function defaultStateRoot(euid: number | null, vars: Readonly<Record<string, string | undefined>>): string {
  if (euid === 0) return '/var/lib/rmr';
  const xdg = vars.XDG_STATE_HOME;
  if (xdg !== undefined && xdg.startsWith('/')) return `${xdg}/rmr`;
  const home = vars.HOME;
  if (home !== undefined && home.startsWith('/') && home !== '/') return `${home}/.local/state/rmr`;
  return '/var/lib/rmr';
}

/** 127.0.0.0/8, ::1 and localhost: addresses only this host reaches. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^::ffff:/, '');
  return h === 'localhost' || h === '::1' || /^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/.test(h);
}

export function formatMode(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}

export const SETTINGS: readonly Setting[] = [
  { key: 'name', kind: { t: 'name' }, help: 'daemon name (events, logs, default paths)', def: (_, e) => e.hostname.split('.')[0] || 'rmr' },
  { key: 'state_dir', kind: { t: 'path' }, help: 'directory of the pid, state and object files (objects.json: what the daemon resumes) and sockets; owned by the daemon user, not group/other-writable', def: (got, e) => `${e.state_root}/${asText(got('name'))}` },
  { key: 'secret_file_modes', kind: { t: 'enum', values: ['strict', 'warn'] }, help: 'secret, token and key files readable by group or others: strict refuses them, warn logs a warning', def: () => 'strict' },
  { key: 'control.socket', kind: { t: 'path' }, help: 'control API Unix socket', def: (got) => `${asText(got('state_dir'))}/control.sock` },
  { key: 'control.tcp', kind: { t: 'listen?' }, help: 'control API TCP listener host:port (needs control.token_file)', def: () => null },
  { key: 'control.token_file', kind: { t: 'path?' }, help: 'file holding the bearer token for TCP control clients (at least 32 characters, mode 0600)', def: () => null },
  { key: 'control.tls_cert', kind: { t: 'path?' }, help: 'PEM certificate chain: control.tcp speaks HTTPS', def: () => null },
  { key: 'control.tls_key', kind: { t: 'path?' }, help: 'PEM private key of control.tls_cert', def: () => null },
  { key: 'control.allow_insecure', kind: { t: 'bool' }, help: 'allow plain HTTP on a non-loopback control.tcp (the token travels in clear)', def: () => false },
  { key: 'control.max_body_bytes', kind: { t: 'int', min: 1024, max: 16 << 20 }, help: 'largest request body accepted', def: () => 65536 },
  { key: 'control.max_connections', kind: { t: 'int', min: 1, max: 10_000 }, help: 'concurrent authenticated control connections (Unix socket, or TCP with a valid token)', def: () => 64 },
  { key: 'control.max_unauthenticated', kind: { t: 'int', min: 1, max: 10_000 }, help: 'TCP control connections that have not shown a valid token yet (the oldest is dropped for a new one)', def: () => 32 },
  { key: 'control.max_unauthenticated_per_address', kind: { t: 'int', min: 1, max: 10_000 }, help: 'the same, per remote address', def: () => 8 },
  { key: 'control.handler_timeout_ms', kind: { t: 'int', min: 100, max: 3_600_000 }, help: 'deadline of one control-tree read or write', def: () => 30_000 },
  { key: 'control.max_followers', kind: { t: 'int', min: 0, max: 1000 }, help: 'concurrent `rmr events --follow` streams', def: () => 16 },
  { key: 'log.level', kind: { t: 'enum', values: ['debug', 'info', 'warn', 'error'] }, help: 'lowest level logged', def: () => 'info' },
  { key: 'log.format', kind: { t: 'enum', values: ['human', 'json'] }, help: 'human lines or JSON lines', def: () => 'human' },
  { key: 'log.file', kind: { t: 'path?' }, help: 'log file (default: stderr)', def: () => null },
  { key: 'log.max_bytes', kind: { t: 'int', min: 0, max: 2 ** 40 }, help: 'rotate log.file to <file>.1 when it grows past this many bytes (0: never; SIGHUP reopens it for logrotate)', def: () => 64 << 20 },
  { key: 'log.keep', kind: { t: 'int', min: 1, max: 100 }, help: 'rotated log files kept (<file>.1 ... <file>.N)', def: () => 3 },
  { key: 'log.burst', kind: { t: 'int', min: 1, max: 1_000_000 }, help: 'lines with the same message logged per log.window_ms; the rest are counted and reported', def: () => 20 },
  { key: 'log.window_ms', kind: { t: 'int', min: 1, max: 3_600_000 }, help: 'window of log.burst', def: () => 10_000 },
  { key: 'events.capacity', kind: { t: 'int', min: 1, max: 1_000_000 }, help: 'events kept for `rmr events --since`', def: () => 10_000 },
  { key: 'metrics.series_max', kind: { t: 'int', min: 1, max: 1_000_000 }, help: 'label sets per metric', def: () => 10_000 },
  { key: 'secret_file', kind: { t: 'path?' }, help: 'cluster secret file (transport authentication; at least 32 bytes, mode 0600); optional with per-node TLS identities', def: () => null },
  { key: 'data.listen', kind: { t: 'listen' }, help: 'data-plane listener host:port (off loopback it needs TLS: data.tls_* or data.tls_psk_file, or data.allow_insecure)', def: () => ({ host: '0.0.0.0', port: 1234 }) },
  { key: 'data.tls_cert', kind: { t: 'path?' }, help: 'PEM certificate chain of this node for transport TLS (CN = node name, OU = client and/or storage)', def: () => null },
  { key: 'data.tls_key', kind: { t: 'path?' }, help: 'PEM private key of data.tls_cert', def: () => null },
  { key: 'data.tls_ca', kind: { t: 'path?' }, help: 'PEM cluster CA: peers must show a certificate it signed (per-node identities)', def: () => null },
  { key: 'data.tls_psk_file', kind: { t: 'path?' }, help: 'per-node TLS-PSK keys instead of certificates: identity:hexkey:roles lines', def: () => null },
  { key: 'data.allow_insecure', kind: { t: 'bool' }, help: 'allow a plaintext data listener on a non-loopback address (an on-path attacker can inject writes)', def: () => false },
  { key: 'data.heartbeat_interval_ms', kind: { t: 'int', min: 10, max: 60_000 }, help: 'transport heartbeat period', def: () => 1000 },
  { key: 'data.heartbeat_timeout_ms', kind: { t: 'int', min: 20, max: 600_000 }, help: 'a path silent this long is declared dead', def: () => 5000 },
  { key: 'data.handshake_timeout_ms', kind: { t: 'int', min: 100, max: 60_000 }, help: 'deadline of an incoming handshake, TLS included', def: () => 3000 },
  { key: 'data.max_preauth_connections', kind: { t: 'int', min: 1, max: 100_000 }, help: 'incoming connections still in their handshake', def: () => 128 },
  { key: 'data.max_preauth_per_address', kind: { t: 'int', min: 1, max: 100_000 }, help: 'the same, per remote address (IPv6: per /64)', def: () => 16 },
  { key: 'data.max_answer_cache_bytes', kind: { t: 'int', min: 1 << 20, max: 2 ** 40 }, help: 'read answers kept for retransmission after a path failure, all sessions together', def: () => 256 << 20 },
  { key: 'nbd.socket_dir', kind: { t: 'path' }, help: 'directory of the NBD Unix sockets (<export>.sock)', def: (got) => `${asText(got('state_dir'))}/nbd` },
  { key: 'nbd.tcp', kind: { t: 'listen?' }, help: 'NBD TCP listener host:port (all exports); off loopback it needs nbd.tls: require or nbd.allow_insecure', def: () => null },
  { key: 'nbd.tls', kind: { t: 'enum', values: ['off', 'on', 'require'] }, help: 'NBD STARTTLS: off, on (client\'s choice) or require (no option before TLS)', def: () => 'off' },
  { key: 'nbd.tls_certificates', kind: { t: 'path?' }, help: 'directory with server-cert.pem, server-key.pem (and ca-cert.pem for tls_verify_peer)', def: () => null },
  { key: 'nbd.tls_psk_file', kind: { t: 'path?' }, help: 'TLS-PSK keys, one identity:hexkey per line (psktool format), instead of certificates', def: () => null },
  { key: 'nbd.tls_verify_peer', kind: { t: 'bool' }, help: 'NBD clients must show a certificate signed by ca-cert.pem', def: () => false },
  { key: 'nbd.allow_insecure', kind: { t: 'bool' }, help: 'allow plaintext NBD on a non-loopback nbd.tcp (anyone who reaches it can read and write the disks)', def: () => false },
  { key: 'nbd.socket_mode', kind: { t: 'mode' }, help: 'mode of the NBD Unix sockets, octal in quotes', def: () => 0o660 },
  { key: 'nbd.socket_group', kind: { t: 'group?' }, help: 'group (name or gid) of the NBD Unix sockets; default the daemon\'s', def: () => null },
  { key: 'nbd.max_inflight_bytes', kind: { t: 'int', min: 1 << 20, max: 2 ** 40 }, help: 'request bytes in flight over all NBD connections together', def: () => 512 << 20 },
  { key: 'nbd.idle_timeout_ms', kind: { t: 'int', min: 0, max: 7 * 86_400_000 }, help: 'close an NBD connection with no request for this long (0: never)', def: () => 0 },
  { key: 'nbd.max_connections', kind: { t: 'int', min: 1, max: 100_000 }, help: 'NBD connections, all listeners together', def: () => 1024 },
  { key: 'nbd.max_preauth_connections', kind: { t: 'int', min: 1, max: 100_000 }, help: 'TCP connections still in their NBD handshake, all addresses together (a share of nbd.max_connections)', def: () => 128 },
  { key: 'nbd.max_preauth_per_address', kind: { t: 'int', min: 1, max: 100_000 }, help: 'TCP connections still in their NBD handshake from one address (IPv6: one /64)', def: () => 16 },
  { key: 'nbd.handshake_timeout_ms', kind: { t: 'int', min: 100, max: 600_000 }, help: 'deadline of an NBD handshake, STARTTLS included; a client not attached by then is closed', def: () => 10_000 },
  { key: 'nbd.max_payload', kind: { t: 'int', min: 64 << 10, max: 64 << 20 }, help: 'largest NBD read or write a client may send (NBD_INFO_BLOCK_SIZE maximum); split into the pool\'s max IO', def: () => 32 << 20 },
  { key: 'resume', kind: { t: 'bool' }, help: 'recreate the objects of the last run at start (false: the operator replays the bring-up)', def: () => true },
  { key: 'shutdown_timeout_ms', kind: { t: 'int', min: 100, max: 600_000 }, help: 'deadline of a clean shutdown before exit 1', def: () => 10_000 },
];

/** `control.max_body_bytes` → `RMR_CONTROL_MAX_BODY_BYTES`. */
export function envName(key: string): string {
  return `RMR_${key.replace(/\./g, '_').toUpperCase()}`;
}

/** `control.max_body_bytes` → `control-max-body-bytes` (used as `--control-max-body-bytes`). */
export function flagName(key: string): string {
  return key.replace(/[._]/g, '-');
}

const TOP_KEYS = ['name', 'state_dir', 'secret_file_modes', 'control', 'log', 'events', 'metrics', 'secret_file', 'data', 'nbd', 'resume', 'shutdown_timeout_ms', 'roles'];

/** Parses YAML (or JSON) text; syntax errors name the file, line and column. */
export function parseConfigText(text: string, filename: string): unknown {
  try {
    return parseYaml(text, { uniqueKeys: true, maxAliasCount: 100 });
  } catch (e) {
    if (e instanceof YAMLParseError) {
      const pos = e.linePos?.[0];
      const first = (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
      throw new ConfigError([`${filename}${pos === undefined ? '' : `:${pos.line}:${pos.col}`}: ${first}`]);
    }
    throw e;
  }
}

/**
 * Resolves the daemon configuration: `file` (parsed, or undefined for none), then the RMR_*
 * environment, then `flags` (setting key → text). Throws a ConfigError listing every problem.
 */
export function resolveDaemonConfig(file: unknown, env: ConfigEnv, flags: Readonly<Record<string, string>> = {}): DaemonConfig {
  const r = new Reader();
  const fromFile = new Map<string, unknown>();
  let roles: Record<string, unknown> = {};
  if (file !== undefined && file !== null) {
    const top = r.object('', file, TOP_KEYS);
    if (top !== undefined) {
      flatten(r, top, '', fromFile);
      if (top.roles !== undefined) {
        const ro = r.object('roles', top.roles, Object.keys(top.roles ?? {}));
        if (ro !== undefined) roles = { ...ro };
      }
    }
  }
  for (const k of Object.keys(flags)) if (!SETTINGS.some((s) => s.key === k)) r.fail(`--${flagName(k)}`, 'unknown flag');
  const values = new Map<string, Value>();
  const got = (key: string): Value => values.get(key) ?? null;
  for (const s of SETTINGS) {
    const ev = env.vars[envName(s.key)];
    const fv = flags[s.key];
    let v: Value | undefined;
    if (fv !== undefined) v = readSetting(r, `--${flagName(s.key)}`, s.kind, fv);
    else if (ev !== undefined) v = readSetting(r, envName(s.key), s.kind, ev);
    else if (fromFile.has(s.key)) v = readSetting(r, s.key, s.kind, fromFile.get(s.key));
    else v = s.def(got, env);
    values.set(s.key, v === undefined ? s.def(got, env) : v);
  }
  checkDataSettings(r, got, Object.hasOwn(roles, 'storage'));
  if ((got('data.heartbeat_timeout_ms') as number) < (got('data.heartbeat_interval_ms') as number)) r.fail('data.heartbeat_timeout_ms', 'must be at least data.heartbeat_interval_ms');
  checkControlSettings(r, got);
  checkNbdSettings(r, 'nbd.', (k) => got(`nbd.${k}`));
  r.done();
  const str = (k: string): string => values.get(k) as string;
  const num = (k: string): number => values.get(k) as number;
  return {
    name: str('name'),
    state_dir: str('state_dir'),
    secret_file_modes: str('secret_file_modes') as 'strict' | 'warn',
    control: {
      socket: str('control.socket'),
      tcp: values.get('control.tcp') as ListenAddress | null,
      token_file: values.get('control.token_file') as string | null,
      tls_cert: values.get('control.tls_cert') as string | null,
      tls_key: values.get('control.tls_key') as string | null,
      allow_insecure: values.get('control.allow_insecure') as boolean,
      max_body_bytes: num('control.max_body_bytes'),
      max_connections: num('control.max_connections'),
      max_unauthenticated: num('control.max_unauthenticated'),
      max_unauthenticated_per_address: num('control.max_unauthenticated_per_address'),
      handler_timeout_ms: num('control.handler_timeout_ms'),
      max_followers: num('control.max_followers'),
    },
    log: {
      level: str('log.level') as LogLevel,
      format: str('log.format') as LogFormat,
      file: values.get('log.file') as string | null,
      max_bytes: num('log.max_bytes'),
      keep: num('log.keep'),
      burst: num('log.burst'),
      window_ms: num('log.window_ms'),
    },
    events: { capacity: num('events.capacity') },
    metrics: { series_max: num('metrics.series_max') },
    secret_file: values.get('secret_file') as string | null,
    data: {
      listen: values.get('data.listen') as ListenAddress,
      tls_cert: values.get('data.tls_cert') as string | null,
      tls_key: values.get('data.tls_key') as string | null,
      tls_ca: values.get('data.tls_ca') as string | null,
      tls_psk_file: values.get('data.tls_psk_file') as string | null,
      allow_insecure: values.get('data.allow_insecure') as boolean,
      heartbeat_interval_ms: num('data.heartbeat_interval_ms'),
      heartbeat_timeout_ms: num('data.heartbeat_timeout_ms'),
      handshake_timeout_ms: num('data.handshake_timeout_ms'),
      max_preauth_connections: num('data.max_preauth_connections'),
      max_preauth_per_address: num('data.max_preauth_per_address'),
      max_answer_cache_bytes: num('data.max_answer_cache_bytes'),
    },
    nbd: {
      socket_dir: str('nbd.socket_dir'),
      tcp: values.get('nbd.tcp') as ListenAddress | null,
      tls: str('nbd.tls') as TlsMode,
      tls_certificates: values.get('nbd.tls_certificates') as string | null,
      tls_psk_file: values.get('nbd.tls_psk_file') as string | null,
      tls_verify_peer: values.get('nbd.tls_verify_peer') as boolean,
      allow_insecure: values.get('nbd.allow_insecure') as boolean,
      socket_mode: num('nbd.socket_mode'),
      socket_group: values.get('nbd.socket_group') as string | null,
      max_inflight_bytes: num('nbd.max_inflight_bytes'),
      idle_timeout_ms: num('nbd.idle_timeout_ms'),
      max_connections: num('nbd.max_connections'),
      max_preauth_connections: num('nbd.max_preauth_connections'),
      max_preauth_per_address: num('nbd.max_preauth_per_address'),
      handshake_timeout_ms: num('nbd.handshake_timeout_ms'),
      max_payload: num('nbd.max_payload'),
    },
    resume: values.get('resume') as boolean,
    shutdown_timeout_ms: num('shutdown_timeout_ms'),
    roles,
  };
}

/**
 * NBD TLS settings that make sense together, and the rule that a disk is not served in
 * clear beyond this host unless the operator says so in as many words. `get` reads the
 * settings by short name (tls, tcp, ...); `at` prefixes the paths in the messages (`nbd.` in
 * a daemon config, `client.nbd.` in a cluster file).
 */
export function checkNbdSettings(r: Reader, at: string, get: (key: 'tls' | 'tcp' | 'tls_certificates' | 'tls_psk_file' | 'tls_verify_peer' | 'allow_insecure') => unknown): void {
  const tls = get('tls') as TlsMode;
  const certs = get('tls_certificates');
  const psk = get('tls_psk_file');
  const verify = get('tls_verify_peer') === true;
  if (tls === 'off') {
    for (const k of ['tls_certificates', 'tls_psk_file'] as const) if (get(k) !== null) r.fail(`${at}${k}`, `is set but ${at}tls is off: set ${at}tls: require (or on), or remove it`);
    if (verify) r.fail(`${at}tls_verify_peer`, `is true but ${at}tls is off`);
  } else {
    if (certs === null && psk === null) r.fail(`${at}tls`, `${tls} needs ${at}tls_certificates (a directory with server-cert.pem and server-key.pem) or ${at}tls_psk_file`);
    if (certs !== null && psk !== null) r.fail(`${at}tls_psk_file`, `give ${at}tls_certificates or ${at}tls_psk_file, not both`);
    if (verify && certs === null) r.fail(`${at}tls_verify_peer`, `needs ${at}tls_certificates with ca-cert.pem (PSK clients are authenticated by their key)`);
  }
  const tcp = get('tcp') as ListenAddress | null;
  if (tcp !== null && !isLoopbackHost(tcp.host) && tls !== 'require' && get('allow_insecure') !== true) {
    const why = tls === 'on' ? `${at}tls: on still serves clients that skip TLS` : 'NBD would be plaintext and unauthenticated';
    r.fail(`${at}tcp`, `${formatListen(tcp)} is not a loopback address and ${why}: set ${at}tls: require (with ${at}tls_certificates or ${at}tls_psk_file), or ${at}allow_insecure: true`);
  }
}

/** How the data plane authenticates nodes, from the settings (see data-tls.ts). */
export type DataAuth = 'secret' | 'x509-secret' | 'x509' | 'psk';

export function dataAuth(d: { readonly tls_cert: string | null; readonly tls_key: string | null; readonly tls_ca: string | null; readonly tls_psk_file: string | null }): DataAuth {
  if (d.tls_psk_file !== null) return 'psk';
  if (d.tls_cert !== null && d.tls_key !== null) return d.tls_ca !== null ? 'x509' : 'x509-secret';
  return 'secret';
}

/**
 * The data plane's TLS settings that go together, and the rule that a non-loopback listener
 * is not plaintext unless the operator says so: the transport's HMAC covers only the
 * handshake, so an on-path attacker could relay one and then inject writes.
 */
function checkDataSettings(r: Reader, got: (key: string) => Value, listens: boolean): void {
  const cert = got('data.tls_cert');
  const key = got('data.tls_key');
  const ca = got('data.tls_ca');
  const psk = got('data.tls_psk_file');
  if ((cert === null) !== (key === null)) r.fail(cert === null ? 'data.tls_cert' : 'data.tls_key', 'transport TLS needs both data.tls_cert and data.tls_key');
  if (psk !== null && (cert !== null || key !== null || ca !== null)) r.fail('data.tls_psk_file', 'give data.tls_psk_file or certificates (data.tls_cert, data.tls_key, data.tls_ca), not both');
  if (ca !== null && cert === null) r.fail('data.tls_ca', 'needs data.tls_cert and data.tls_key (every node shows its own certificate)');
  const listen = got('data.listen') as ListenAddress;
  const tls = psk !== null || (cert !== null && key !== null);
  // Only the storage role opens the listener.
  if (listens && !tls && !isLoopbackHost(listen.host) && got('data.allow_insecure') !== true) {
    r.fail('data.listen', `${formatListen(listen)} is not a loopback address and the data plane would be plaintext (an on-path attacker can inject writes): set data.tls_psk_file, or data.tls_cert, data.tls_key and data.tls_ca (docs/security.md), or data.allow_insecure: true`);
  }
}

/** HTTPS for a non-loopback control listener: its bearer token must not travel in clear. */
function checkControlSettings(r: Reader, got: (key: string) => Value): void {
  const tcp = got('control.tcp') as ListenAddress | null;
  const cert = got('control.tls_cert');
  const key = got('control.tls_key');
  if ((cert === null) !== (key === null)) r.fail(cert === null ? 'control.tls_cert' : 'control.tls_key', 'HTTPS needs both control.tls_cert and control.tls_key');
  if (tcp === null) return;
  if (got('control.token_file') === null) r.fail('control.tcp', 'a TCP control listener needs control.token_file (bearer token); refusing an unauthenticated one');
  if (cert === null && !isLoopbackHost(tcp.host) && got('control.allow_insecure') !== true) {
    r.fail('control.tcp', `${formatListen(tcp)} is not a loopback address and the control API would be plain HTTP (its all-powerful token in clear): set control.tls_cert and control.tls_key, or control.allow_insecure: true`);
  }
}

/** File mapping → dotted keys, reporting keys that are no setting. */
function flatten(r: Reader, o: RawObject, at: string, out: Map<string, unknown>): void {
  for (const [k, v] of Object.entries(o)) {
    const key = join(at, k);
    if (key === 'roles') continue;
    if (SETTINGS.some((s) => s.key === key)) {
      out.set(key, v);
      continue;
    }
    const prefix = `${key}.`;
    const children = SETTINGS.filter((s) => s.key.startsWith(prefix)).map((s) => s.key.slice(prefix.length));
    if (children.length === 0) continue; // unknown top-level keys were reported by r.object
    const sub = r.object(key, v, children);
    if (sub !== undefined) flatten(r, sub, key, out);
  }
}

/** Reads `v` as the daemon setting `key` would be read (cluster files reuse the daemon's rules). */
export function readSettingAs(r: Reader, at: string, key: string, v: unknown): Value | undefined {
  const s = SETTINGS.find((x) => x.key === key);
  if (s === undefined) throw new Error(`no setting ${key}`);
  return readSetting(r, at, s.kind, v);
}

function readSetting(r: Reader, at: string, kind: Kind, v: unknown): Value | undefined {
  switch (kind.t) {
    case 'name':
      return r.string(at, v, { pattern: NAME_RE, hint: 'a name of 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit' });
    case 'path':
      return r.string(at, v, { pattern: /^[^\0]+$/, hint: 'a path' });
    case 'path?':
      return v === null || v === '' ? null : r.string(at, v, { pattern: /^[^\0]+$/, hint: 'a path' });
    case 'listen':
      return r.listen(at, v);
    case 'listen?':
      return v === null || v === '' ? null : r.listen(at, v);
    case 'int':
      return r.int(at, v, kind.min, kind.max);
    case 'enum':
      return r.oneOf(at, v, kind.values);
    case 'bool':
      return r.bool(at, v);
    case 'mode': {
      const m = typeof v === 'string' ? MODE_RE.exec(v.trim()) : null;
      if (m === null) return r.fail(at, `must be an octal mode in quotes, e.g. '0660', got ${typeof v === 'number' ? `the number ${v} (quote it: YAML reads 0660 as decimal)` : JSON.stringify(v)}`);
      return parseInt(m[1] as string, 8);
    }
    case 'group?':
      if (v === null || v === '') return null;
      if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return String(v);
      return r.string(at, v, { pattern: GROUP_RE, hint: 'a group name or numeric gid' });
  }
}

/** The resolved configuration as a file would spell it (`rmr daemon --print-config`). */
export function configToPlain(c: DaemonConfig): Record<string, unknown> {
  return {
    name: c.name,
    state_dir: c.state_dir,
    // A policy, not a secret: shown so that the output, read back as a file, is this config.
    secret_file_modes: c.secret_file_modes,
    control: { ...c.control, tcp: c.control.tcp === null ? null : formatListen(c.control.tcp) },
    log: c.log,
    events: c.events,
    metrics: c.metrics,
    secret_file: c.secret_file,
    data: { ...c.data, listen: formatListen(c.data.listen) },
    nbd: { ...c.nbd, tcp: c.nbd.tcp === null ? null : formatListen(c.nbd.tcp), socket_mode: formatMode(c.nbd.socket_mode) },
    resume: c.resume,
    shutdown_timeout_ms: c.shutdown_timeout_ms,
    roles: c.roles,
  };
}
