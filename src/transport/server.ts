// Transport server (the rtrs-srv equivalent): listens, authenticates every path, groups paths
// into sessions by name and incarnation, hands requests to the upper layer and executes each
// request id at most once per session.
//
// Connection states:  HELLO -> (CHALLENGE sent) AUTH -> (WELCOME sent) UP -> closed
// Anything unexpected in any state closes that connection with a logged reason; the server
// and its other sessions carry on.
//
// At-most-once: a session keeps one slot per tag (permit). A request carries (tag, id) with
// ids increasing per session. For the slot of its tag:
//   id == slot.id, running  -> a retransmission after failover: answer later on this path
//   id == slot.id, done     -> answer again from the cached status/data (not re-executed)
//   id <  slot.id           -> a stale copy from a dead path: dropped
//   id >  slot.id           -> a new request: executed
// Cached read data is released once the client's settled watermark passes the id; the cache
// of all sessions together is bounded in bytes and in age (an answer evicted early is
// answered ETIMEDOUT if its request comes again).
//
// Before authentication a connection is cheap for an attacker and costly here: such
// connections have their own small cap, a per-address cap and a short deadline (covering
// TLS, HELLO and AUTH), apart from the cap on authenticated paths. With `tls`, every
// connection is upgraded to TLS first; with `identify`, what the TLS handshake proved about
// the peer (certificate subject or PSK identity) becomes the session's `peer`, and sessions
// are named per peer: no peer can reach, resume or replace another peer's session.

import type { Clock, Logger, Random, TimerId } from '../util/ports.js';
import { nullLogger } from '../util/ports.js';
import { Errno } from '../util/errno.js';
import { FLAG_READ, FrameType, encodeFrameHead, type FrameFields } from './frame.js';
import {
  MIN_SECRET_BYTES,
  NONCE_BYTES,
  PROOF_BYTES,
  PROTOCOL_VERSION,
  clientProof,
  decodeAuth,
  decodeHello,
  encodeChallenge,
  encodeReject,
  encodeWelcome,
  proofMatches,
  serverProof,
  type Hello,
} from './handshake.js';
import { Link, type LinkOwner } from './link.js';
import { type Address, type Listener, type Net, type NetStream, type ServerTls, type TlsPeer, addressKey } from './net.js';
import {
  DEFAULT_HEARTBEAT,
  DEFAULT_MAX_IO_SIZE,
  DEFAULT_MAX_USER_HDR,
  LIMIT_MAX_IO_SIZE,
  LIMIT_MAX_USER_HDR,
  MAX_PATHS,
  MIN_MAX_IO_SIZE,
  PROTOCOL_MAX_QUEUE_DEPTH,
  checkHeartbeat,
  checkInt,
  maxPendingWriteBytes,
} from './options.js';

// Defined with the Net interfaces, where NBD's pre-authentication limits use it too.
export { addressKey };

/** An authenticated peer: its name (certificate CN, PSK identity) and the roles it holds. */
export interface PeerIdentity {
  readonly name: string;
  readonly roles: readonly string[];
}

export interface ServerOptions {
  secret: Buffer;
  /** TLS on every accepted connection, before the handshake (NetStream.startTls). */
  tls?: ServerTls | null;
  /**
   * Who a connection is, from what its TLS handshake proved (null: nothing). A string refuses
   * the connection with that reason. Without it every authenticated peer is trusted alike
   * (the shared-secret mode) and sessions have no `peer`.
   */
  identify?: ((peer: TlsPeer | null) => PeerIdentity | string) | null;
  /** Largest queue depth granted to a session (at most 512). */
  max_queue_depth?: number;
  max_io_size?: number;
  max_user_hdr?: number;
  max_sessions?: number;
  /** Authenticated paths (connections that finished the handshake). */
  max_connections?: number;
  /** Connections still in their handshake (TLS, HELLO, AUTH), and per remote address (IPv6: per /64). */
  max_preauth_connections?: number;
  max_preauth_per_address?: number;
  /** Deadline of the whole handshake, TLS included. */
  handshake_timeout_ms?: number;
  heartbeat_interval_ms?: number;
  heartbeat_timeout_ms?: number;
  /** How long a session without paths keeps its state (and its at-most-once cache). */
  session_linger_ms?: number;
  /** Read answers kept for retransmission, all sessions together: bytes, and age. */
  max_answer_cache_bytes?: number;
  answer_cache_max_age_ms?: number;
}

/** A request as the upper layer sees it. Answer exactly once with `respond`. */
export interface ServerRequest {
  readonly session: ServerSession;
  readonly kind: 'read' | 'write';
  readonly id: number;
  /** Opaque upper-layer header (view into received memory). */
  readonly user_hdr: Buffer;
  /** write-type payload (view); empty for read-type. */
  readonly data: Buffer;
  /** read-type: the most bytes the answer may carry. */
  readonly read_len: number;
  /** status: 0 or -errno; data: read-type answer of at most read_len bytes. */
  respond(status: number, data?: Buffer | null): void;
}

export interface ServerHandler {
  onRequest(req: ServerRequest): void;
  onSessionOpen?(session: ServerSession): void;
  /** The session's last path went down (it may come back within the linger time). */
  onSessionDisconnected?(session: ServerSession): void;
  onSessionClose?(session: ServerSession, reason: string): void;
}

export interface ServerPorts {
  net: Net;
  clock: Clock;
  random: Random;
  log?: Logger;
}

type Resolved = Required<Omit<ServerOptions, 'secret' | 'tls' | 'identify'>>;

function resolve(o: ServerOptions): Resolved {
  const r: Resolved = {
    max_queue_depth: o.max_queue_depth ?? PROTOCOL_MAX_QUEUE_DEPTH,
    max_io_size: o.max_io_size ?? DEFAULT_MAX_IO_SIZE,
    max_user_hdr: o.max_user_hdr ?? DEFAULT_MAX_USER_HDR,
    max_sessions: o.max_sessions ?? 1024,
    max_connections: o.max_connections ?? 4096,
    max_preauth_connections: o.max_preauth_connections ?? 128,
    max_preauth_per_address: o.max_preauth_per_address ?? 16,
    handshake_timeout_ms: o.handshake_timeout_ms ?? 3_000,
    heartbeat_interval_ms: o.heartbeat_interval_ms ?? DEFAULT_HEARTBEAT.heartbeat_interval_ms,
    heartbeat_timeout_ms: o.heartbeat_timeout_ms ?? DEFAULT_HEARTBEAT.heartbeat_timeout_ms,
    session_linger_ms: o.session_linger_ms ?? 60_000,
    max_answer_cache_bytes: o.max_answer_cache_bytes ?? 256 << 20,
    answer_cache_max_age_ms: o.answer_cache_max_age_ms ?? 30_000,
  };
  checkInt('max_queue_depth', r.max_queue_depth, 1, PROTOCOL_MAX_QUEUE_DEPTH);
  checkInt('max_io_size', r.max_io_size, MIN_MAX_IO_SIZE, LIMIT_MAX_IO_SIZE);
  checkInt('max_user_hdr', r.max_user_hdr, 0, LIMIT_MAX_USER_HDR);
  checkInt('max_sessions', r.max_sessions, 1, 1 << 20);
  checkInt('max_connections', r.max_connections, 1, 1 << 20);
  checkInt('max_preauth_connections', r.max_preauth_connections, 1, 1 << 20);
  checkInt('max_preauth_per_address', r.max_preauth_per_address, 1, 1 << 20);
  checkInt('handshake_timeout_ms', r.handshake_timeout_ms, 1, 3_600_000);
  checkHeartbeat(r);
  checkInt('session_linger_ms', r.session_linger_ms, 0, 86_400_000);
  checkInt('max_answer_cache_bytes', r.max_answer_cache_bytes, 0, 2 ** 50);
  checkInt('answer_cache_max_age_ms', r.answer_cache_max_age_ms, 1, 86_400_000);
  return r;
}

const enum SlotState {
  FREE,
  RUNNING,
  DONE,
}

class ServerSlot implements ServerRequest {
  readonly session: ServerSession;
  readonly tag: number;
  state = SlotState.FREE;
  kind: 'read' | 'write' = 'write';
  id = 0;
  user_hdr: Buffer = Buffer.alloc(0);
  data: Buffer = Buffer.alloc(0);
  read_len = 0;
  status = 0;
  answer: Buffer | null = null;
  /** The cached answer was dropped (cache full or too old) before the client settled it. */
  evicted = false;
  /** Bumped whenever `answer` is set: the cache queue's entries name the answer they hold. */
  answer_seq = 0;
  /** Where the answer goes: the path the newest copy of the request came on. */
  reply: ServerConn | null = null;
  constructor(session: ServerSession, tag: number) {
    this.session = session;
    this.tag = tag;
  }
  respond(status: number, data: Buffer | null = null): void {
    if (this.state !== SlotState.RUNNING) throw new Error(`respond called twice for request ${this.id}`);
    if (!Number.isInteger(status) || status > 0 || status < -4095) throw new Error(`respond: bad status ${status}`);
    if (data !== null && data.length > 0) {
      if (this.kind !== 'read') throw new Error('respond: a write-type request is answered without data');
      if (data.length > this.read_len) throw new Error(`respond: ${data.length} bytes for a ${this.read_len}-byte read`);
    }
    this.state = SlotState.DONE;
    this.status = status;
    this.answer = this.kind === 'read' ? data : null;
    this.evicted = false;
    this.user_hdr = EMPTY;
    this.data = EMPTY;
    this.session.onAnswered(this);
  }
}

const EMPTY = Buffer.alloc(0);

export interface ServerSessionStats {
  /** Requests handed to the upper layer. */
  executed: number;
  /** Copies of a request already seen (retransmissions after failover). */
  duplicates: number;
  /** Duplicates answered from the cache. */
  replayed: number;
  /** Stale copies dropped. */
  stale: number;
  /** New requests refused because too many were still running. */
  refused_busy: number;
}

export class ServerSession {
  readonly name: string;
  /** Who opened it, as `identify` said (null in the shared-secret mode). */
  readonly peer: PeerIdentity | null;
  readonly incarnation: number;
  readonly queue_depth: number;
  readonly max_io_size: number;
  readonly paths = new Map<number, ServerConn>();
  readonly stats: ServerSessionStats = { executed: 0, duplicates: 0, replayed: 0, stale: 0, refused_busy: 0 };
  closed = false;
  /** Requests handed to the handler and not yet answered (including detached ones). */
  running = 0;
  private settled = 0;
  private readonly slots: ServerSlot[];
  private readonly server: TransportServer;
  linger_timer: TimerId | null = null;
  /** Upper-layer state hangs here (e.g. the RMR server session). */
  context: unknown = null;

  constructor(server: TransportServer, name: string, peer: PeerIdentity | null, incarnation: number, queue_depth: number, max_io_size: number) {
    this.server = server;
    this.name = name;
    this.peer = peer;
    this.incarnation = incarnation;
    this.queue_depth = queue_depth;
    this.max_io_size = max_io_size;
    this.slots = Array.from({ length: queue_depth }, (_, i) => new ServerSlot(this, i));
  }

  get pathCount(): number {
    return this.paths.size;
  }

  onRequest(conn: ServerConn, f: Readonly<FrameFields>, user_hdr: Buffer, data: Buffer): void {
    const tag = f.tag;
    if (tag >= this.queue_depth) return conn.link.onProtocolError(`tag ${tag} >= queue depth ${this.queue_depth}`);
    const is_read = (f.flags & FLAG_READ) !== 0;
    if (is_read && (data.length !== 0 || f.arg < 0 || f.arg > this.max_io_size)) {
      return conn.link.onProtocolError(`bad read-type request (read length ${f.arg}, ${data.length} data bytes)`);
    }
    if (!is_read && f.arg !== 0) return conn.link.onProtocolError('write-type request with a read length');
    if (f.id === 0) return conn.link.onProtocolError('request id 0');
    this.settle(f.aux);
    let slot = this.slots[tag] as ServerSlot;
    if (f.id === slot.id) {
      this.stats.duplicates++;
      if (slot.state === SlotState.RUNNING) {
        slot.reply = conn;
      } else if (slot.state === SlotState.DONE) {
        if (slot.evicted) {
          // Its answer left the cache before the client settled it: say so, do not run it again.
          this.stats.replayed++;
          conn.link.sendFrame(encodeFrameHead(FrameType.RSP, 0, null, 0, slot.tag, Errno.ETIMEDOUT, slot.id, 0), null);
          return;
        }
        if (slot.kind === 'read' && slot.answer === null && slot.read_len > 0 && slot.status === 0) {
          // The client declared this id settled; a copy now is a confused client.
          this.stats.stale++;
          return;
        }
        this.stats.replayed++;
        this.sendAnswer(conn, slot);
      }
      return;
    }
    if (f.id < slot.id) {
      this.stats.stale++;
      return;
    }
    if (slot.state === SlotState.RUNNING) {
      // The client gave up on the old request (timeout) and reused its permit. Let the old
      // one finish unanswered; bound how many such orphans may pile up.
      if (this.running >= 2 * this.queue_depth) {
        this.stats.refused_busy++;
        conn.link.sendFrame(encodeFrameHead(FrameType.RSP, 0, null, 0, tag, Errno.EBUSY, f.id, 0), null);
        return;
      }
      slot.reply = null;
      slot = new ServerSlot(this, tag);
      this.slots[tag] = slot;
    }
    this.dropAnswer(slot);
    slot.evicted = false;
    slot.state = SlotState.RUNNING;
    slot.id = f.id;
    slot.kind = is_read ? 'read' : 'write';
    slot.user_hdr = user_hdr;
    slot.data = data;
    slot.read_len = is_read ? f.arg : 0;
    slot.status = 0;
    slot.reply = conn;
    this.running++;
    this.stats.executed++;
    this.server.handler.onRequest(slot);
  }

  /** Releases cached read data of requests the client has seen answered. */
  settle(watermark: number): void {
    // The watermark moves only at the client's sweep, so most requests skip the scan.
    if (watermark <= this.settled) return;
    this.settled = watermark;
    for (const s of this.slots) {
      if (s.state === SlotState.DONE && s.answer !== null && s.id < watermark) this.dropAnswer(s);
    }
  }

  /** Releases a slot's cached answer (and its bytes in the server's budget). */
  dropAnswer(slot: ServerSlot): void {
    if (slot.answer === null) return;
    this.server.uncache(slot.answer.length);
    slot.answer = null;
  }

  /** Every cached answer (the session is closing). */
  dropAnswers(): void {
    for (const s of this.slots) this.dropAnswer(s);
  }

  onAnswered(slot: ServerSlot): void {
    this.running--;
    if (this.closed || this.slots[slot.tag] !== slot) {
      slot.reply = null;
      slot.answer = null;
      return;
    }
    if (slot.answer !== null) this.server.cache(slot);
    let conn = slot.reply;
    if (conn === null || conn.link.isDown) conn = this.anyPath();
    slot.reply = null;
    if (conn !== null) this.sendAnswer(conn, slot);
  }

  private sendAnswer(conn: ServerConn, slot: ServerSlot): void {
    const d = slot.answer;
    const len = d === null ? 0 : d.length;
    conn.link.sendFrame(encodeFrameHead(FrameType.RSP, 0, null, len, slot.tag, slot.status, slot.id, 0), d);
  }

  private anyPath(): ServerConn | null {
    for (const c of this.paths.values()) if (!c.link.isDown) return c;
    return null;
  }

  /** Closes every path; the session is forgotten. */
  close(reason: string): void {
    this.server.closeSession(this, reason);
  }
}

const ALLOWED_HELLO: ReadonlySet<number> = new Set([FrameType.HELLO]);
const ALLOWED_AUTH: ReadonlySet<number> = new Set([FrameType.AUTH, FrameType.CLOSE]);
const ALLOWED_UP: ReadonlySet<number> = new Set([FrameType.REQ, FrameType.PING, FrameType.PONG, FrameType.CLOSE]);
const NOTHING: ReadonlySet<number> = new Set();

type ConnState = 'TLS' | 'HELLO' | 'AUTH' | 'UP';

class ServerConn implements LinkOwner {
  readonly link: Link;
  state: ConnState = 'HELLO';
  hello: Hello | null = null;
  hello_body: Buffer | null = null;
  server_nonce: Buffer | null = null;
  session: ServerSession | null = null;
  /** Counted against the pre-authentication limits (until UP or closed). */
  preauth = true;
  readonly address: string;
  /** What `identify` made of the TLS peer (null without identify). */
  peer: PeerIdentity | null = null;
  private readonly server: TransportServer;
  constructor(server: TransportServer, address: string, link_factory: (c: ServerConn) => Link) {
    this.server = server;
    this.address = address;
    this.link = link_factory(this);
  }
  onLinkFrame(link: Link, f: Readonly<FrameFields>, user_hdr: Buffer, data: Buffer): void {
    this.server.onConnFrame(this, f, user_hdr, data);
  }
  onLinkDown(link: Link, reason: string): void {
    this.server.onConnDown(this, reason);
  }
}

export interface ServerStats {
  connections_accepted: number;
  connections_refused: number;
  auth_failures: number;
  protocol_errors: number;
  /** Cached read answers dropped before the client settled them (cache full or too old). */
  answers_evicted: number;
}

export class TransportServer {
  readonly handler: ServerHandler;
  private readonly o: Resolved;
  private readonly secret: Buffer;
  private readonly tls: ServerTls | null;
  private readonly identify: ((peer: TlsPeer | null) => PeerIdentity | string) | null;
  private readonly net: Net;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly log: Logger;
  private readonly listeners: Listener[] = [];
  private readonly conns = new Set<ServerConn>();
  /** Sessions by peer and name (see sessionKey). */
  private readonly sessions_by_key = new Map<string, ServerSession>();
  private preauth = 0;
  private readonly preauth_by_address = new Map<string, number>();
  /** Cached read answers in the order they were answered: slot and the answer_seq it had then. */
  private cache_slots: ServerSlot[] = [];
  private cache_seqs: number[] = [];
  private cache_times: number[] = [];
  private cache_head = 0;
  private cache_bytes = 0;
  private cache_timer: TimerId | null = null;
  private answer_seq = 0;
  private closed = false;
  /** Lets a reconnecting client notice that the server restarted. */
  readonly instance: number;
  readonly stats: ServerStats = { connections_accepted: 0, connections_refused: 0, auth_failures: 0, protocol_errors: 0, answers_evicted: 0 };

  constructor(options: ServerOptions, ports: ServerPorts, handler: ServerHandler) {
    this.o = resolve(options);
    if (options.secret.length < MIN_SECRET_BYTES) throw new RangeError(`secret must be at least ${MIN_SECRET_BYTES} bytes`);
    this.secret = Buffer.from(options.secret);
    this.tls = options.tls ?? null;
    this.identify = options.identify ?? null;
    this.net = ports.net;
    this.clock = ports.clock;
    this.random = ports.random;
    this.log = ports.log ?? nullLogger;
    this.handler = handler;
    const b = this.random.bytes(8);
    this.instance = (b.readUInt32LE(0) & 0x1f_ffff) * 0x1_0000_0000 + b.readUInt32LE(4) + 1;
  }

  /** Starts accepting on an address; may be called for several addresses. */
  async listen(addr: Address): Promise<{ host: string; port: number }> {
    if (this.closed) throw new Error('server is closed');
    const l = await this.net.listen(addr, (stream) => this.accept(stream));
    this.listeners.push(l);
    this.log.log('info', 'transport listening', { host: l.address.host, port: l.address.port, tls: addr.tls !== undefined || this.tls !== null });
    return l.address;
  }

  sessions(): ServerSession[] {
    return [...this.sessions_by_key.values()];
  }

  /** The session of that name (of `peer`, when sessions have peers). */
  session(name: string, peer: string | null = null): ServerSession | undefined {
    return this.sessions_by_key.get(sessionKey(peer, name));
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Connections still in their handshake. */
  get preauthCount(): number {
    return this.preauth;
  }

  /** Bytes of read answers cached for retransmission, all sessions. */
  get answerCacheBytes(): number {
    return this.cache_bytes;
  }

  private accept(stream: NetStream): void {
    const address = addressKey(stream.remote);
    const per = this.preauth_by_address.get(address) ?? 0;
    const refuse = this.closed
      ? 'shutting down'
      : this.preauth >= this.o.max_preauth_connections
        ? `${this.preauth} connections are in their handshake (limit ${this.o.max_preauth_connections})`
        : per >= this.o.max_preauth_per_address
          ? `${per} connections from ${address} are in their handshake (limit ${this.o.max_preauth_per_address})`
          : this.tls !== null && stream.startTls === undefined
            ? 'TLS is required and this stream cannot do TLS'
            : null;
    if (refuse !== null) {
      this.stats.connections_refused++;
      this.log.log('warn', 'connection refused', { remote: stream.remote, reason: refuse });
      stream.destroy();
      return;
    }
    this.stats.connections_accepted++;
    this.preauth++;
    this.preauth_by_address.set(address, per + 1);
    const conn = new ServerConn(this, address, (c) =>
      new Link(
        stream,
        this.clock,
        this.log,
        {
          heartbeat_interval_ms: this.o.heartbeat_interval_ms,
          heartbeat_timeout_ms: this.o.heartbeat_timeout_ms,
          max_pending_write_bytes: maxPendingWriteBytes(this.o.max_queue_depth, this.o.max_io_size, this.o.max_user_hdr),
          pause_reads_on_backpressure: true,
        },
        c,
        { allowed: this.tls !== null ? NOTHING : ALLOWED_HELLO, max_user_hdr: 0, max_data: 0 },
        stream.remote,
      ),
    );
    this.conns.add(conn);
    // One deadline for everything before WELCOME: the TLS handshake, HELLO and AUTH.
    conn.link.armDeadline(this.o.handshake_timeout_ms, `no handshake within ${this.o.handshake_timeout_ms} ms`);
    if (this.tls === null) {
      this.admit(conn, null);
      return;
    }
    conn.state = 'TLS';
    (stream.startTls as NonNullable<NetStream['startTls']>)(this.tls, (err) => {
      // A failed handshake closes the stream (onLinkDown follows); only success comes here.
      if (err !== null || conn.link.isDown) return;
      conn.state = 'HELLO';
      conn.link.decoder.limits = { allowed: ALLOWED_HELLO, max_user_hdr: 0, max_data: 0 };
      this.admit(conn, stream.tlsPeer?.() ?? null);
    });
  }

  /** Names the peer of a connection (identify), or refuses it. */
  private admit(conn: ServerConn, peer: TlsPeer | null): void {
    if (this.identify === null) return;
    const who = this.identify(peer);
    if (typeof who === 'string') {
      this.stats.auth_failures++;
      this.log.log('warn', 'connection refused', { remote: conn.link.stream.remote, reason: who });
      conn.link.close(`refused: ${who}`);
      return;
    }
    conn.peer = who;
  }

  private releasePreauth(conn: ServerConn): void {
    if (!conn.preauth) return;
    conn.preauth = false;
    this.preauth--;
    const n = (this.preauth_by_address.get(conn.address) ?? 1) - 1;
    if (n <= 0) this.preauth_by_address.delete(conn.address);
    else this.preauth_by_address.set(conn.address, n);
  }

  onConnFrame(conn: ServerConn, f: Readonly<FrameFields>, user_hdr: Buffer, data: Buffer): void {
    if (conn.state === 'UP') {
      if (f.type === FrameType.REQ) (conn.session as ServerSession).onRequest(conn, f, user_hdr, data);
      else if (f.type === FrameType.PING) (conn.session as ServerSession).settle(f.aux);
      return;
    }
    if (conn.state === 'HELLO') return this.onHello(conn, data);
    if (conn.state === 'AUTH' && f.type === FrameType.AUTH) return this.onAuth(conn, data);
  }

  private reject(conn: ServerConn, status: number, reason: string): void {
    const body = encodeReject({ status, reason });
    this.log.log('warn', 'handshake rejected', { remote: conn.link.stream.remote, reason });
    conn.link.finish(encodeFrameHead(FrameType.REJECT, 0, null, body.length, 0, 0, 0, 0), body, `rejected: ${reason}`);
  }

  private onHello(conn: ServerConn, body: Buffer): void {
    const h = decodeHello(body);
    if (!h.ok) {
      this.stats.protocol_errors++;
      return this.reject(conn, Errno.EPROTO, h.reason);
    }
    const hello = h.value;
    if (hello.version !== PROTOCOL_VERSION) {
      return this.reject(conn, Errno.EPROTO, `protocol version ${hello.version} not supported (this server speaks ${PROTOCOL_VERSION})`);
    }
    if (hello.path_index >= MAX_PATHS) return this.reject(conn, Errno.EINVAL, `path index ${hello.path_index} >= ${MAX_PATHS}`);
    if (hello.queue_depth < 1 || hello.max_io_size < MIN_MAX_IO_SIZE) {
      return this.reject(conn, Errno.EINVAL, `bad limits (queue_depth ${hello.queue_depth}, max_io_size ${hello.max_io_size})`);
    }
    conn.hello = hello;
    conn.hello_body = Buffer.from(body);
    conn.server_nonce = this.random.bytes(NONCE_BYTES);
    conn.state = 'AUTH';
    conn.link.decoder.limits = { allowed: ALLOWED_AUTH, max_user_hdr: 0, max_data: 0 };
    const challenge = encodeChallenge({
      server_nonce: conn.server_nonce,
      server_proof: serverProof(this.secret, conn.hello_body, conn.server_nonce),
    });
    conn.link.sendFrame(encodeFrameHead(FrameType.CHALLENGE, 0, null, challenge.length, 0, 0, 0, 0), challenge);
  }

  private onAuth(conn: ServerConn, body: Buffer): void {
    const a = decodeAuth(body);
    if (!a.ok || a.value.length !== PROOF_BYTES) {
      this.stats.protocol_errors++;
      return this.reject(conn, Errno.EPROTO, a.ok ? 'bad proof' : a.reason);
    }
    const hello = conn.hello as Hello;
    const expected = clientProof(this.secret, conn.hello_body as Buffer, conn.server_nonce as Buffer);
    if (!proofMatches(expected, a.value)) {
      this.stats.auth_failures++;
      this.log.log('warn', 'client failed authentication', { remote: conn.link.stream.remote, session: hello.session_name });
      return this.reject(conn, Errno.EKEYREJECTED, 'authentication failed');
    }
    if (this.conns.size - this.preauth >= this.o.max_connections) {
      return this.reject(conn, Errno.EBUSY, `path limit ${this.o.max_connections} reached`);
    }
    // A peer's sessions are its own: the key holds the peer's name, so no other peer can
    // resume, join or replace them, whatever session name it sends.
    const key = sessionKey(conn.peer?.name ?? null, hello.session_name);
    let session = this.sessions_by_key.get(key);
    let resumed = true;
    if (session !== undefined && session.incarnation !== hello.incarnation) {
      this.closeSession(session, 'replaced by a new incarnation of the client');
      session = undefined;
    }
    if (session === undefined) {
      if (this.sessions_by_key.size >= this.o.max_sessions) {
        return this.reject(conn, Errno.EBUSY, `session limit ${this.o.max_sessions} reached`);
      }
      resumed = false;
      session = new ServerSession(
        this,
        hello.session_name,
        conn.peer,
        hello.incarnation,
        Math.min(hello.queue_depth, this.o.max_queue_depth),
        Math.min(hello.max_io_size, this.o.max_io_size),
      );
      this.sessions_by_key.set(key, session);
    } else if (hello.queue_depth < session.queue_depth) {
      return this.reject(conn, Errno.EINVAL, `queue depth ${hello.queue_depth} below the session's ${session.queue_depth}`);
    }
    const old = session.paths.get(hello.path_index);
    if (old !== undefined) old.link.close('path replaced by a new connection');
    this.releasePreauth(conn);
    conn.session = session;
    conn.state = 'UP';
    session.paths.set(hello.path_index, conn);
    if (session.linger_timer !== null) {
      this.clock.cancel(session.linger_timer);
      session.linger_timer = null;
    }
    conn.link.clearDeadline();
    conn.link.decoder.limits = { allowed: ALLOWED_UP, max_user_hdr: this.o.max_user_hdr, max_data: session.max_io_size };
    const welcome = encodeWelcome({
      queue_depth: session.queue_depth,
      max_io_size: session.max_io_size,
      max_user_hdr: this.o.max_user_hdr,
      resumed,
      server_instance: this.instance,
    });
    conn.link.sendFrame(encodeFrameHead(FrameType.WELCOME, 0, null, welcome.length, 0, 0, 0, 0), welcome);
    conn.link.startHeartbeat();
    this.log.log('info', 'path authenticated', {
      session: session.name,
      ...(conn.peer !== null ? { peer: conn.peer.name } : {}),
      path: hello.path_index,
      remote: conn.link.stream.remote,
      resumed,
    });
    if (!resumed) this.handler.onSessionOpen?.(session);
  }

  onConnDown(conn: ServerConn, reason: string): void {
    this.conns.delete(conn);
    this.releasePreauth(conn);
    const s = conn.session;
    if (s === null) {
      this.log.log('debug', 'unauthenticated connection closed', { remote: conn.link.stream.remote, reason });
      return;
    }
    const idx = (conn.hello as Hello).path_index;
    if (s.paths.get(idx) === conn) s.paths.delete(idx);
    this.log.log('info', 'path down', { session: s.name, path: idx, reason });
    if (s.paths.size === 0 && !s.closed && !this.closed) {
      this.handler.onSessionDisconnected?.(s);
      s.linger_timer = this.clock.setTimer(this.o.session_linger_ms, () => {
        s.linger_timer = null;
        if (s.paths.size === 0) this.closeSession(s, `no path for ${this.o.session_linger_ms} ms`);
      });
    }
  }

  closeSession(s: ServerSession, reason: string): void {
    if (s.closed) return;
    s.closed = true;
    if (s.linger_timer !== null) this.clock.cancel(s.linger_timer);
    s.linger_timer = null;
    const key = sessionKey(s.peer?.name ?? null, s.name);
    if (this.sessions_by_key.get(key) === s) this.sessions_by_key.delete(key);
    s.dropAnswers();
    for (const c of [...s.paths.values()]) c.link.close(reason);
    s.paths.clear();
    this.log.log('info', 'session closed', { session: s.name, reason });
    this.handler.onSessionClose?.(s, reason);
  }

  // ---------------------------------------------------------------- the answer cache budget

  /** A slot's read answer enters the cache (ServerSession.onAnswered). */
  cache(slot: ServerSlot): void {
    const len = (slot.answer as Buffer).length;
    if (len === 0) return;
    this.cache_bytes += len;
    slot.answer_seq = ++this.answer_seq;
    this.cache_slots.push(slot);
    this.cache_seqs.push(slot.answer_seq);
    this.cache_times.push(this.clock.now());
    this.evict(false);
    if (this.cache_timer === null && this.cache_head < this.cache_slots.length) {
      this.cache_timer = this.clock.setTimer(this.o.answer_cache_max_age_ms, this.onCacheTimer);
    }
  }

  /** Bytes a slot's cached answer held (released by the session). */
  uncache(bytes: number): void {
    this.cache_bytes -= bytes;
  }

  private readonly onCacheTimer = (): void => {
    this.cache_timer = null;
    this.evict(true);
    if (this.cache_head < this.cache_slots.length && !this.closed) {
      const due = (this.cache_times[this.cache_head] as number) + this.o.answer_cache_max_age_ms - this.clock.now();
      this.cache_timer = this.clock.setTimer(Math.max(1, due), this.onCacheTimer);
    }
  };

  /**
   * Drops the oldest cached answers while over the byte budget, and (by_age) those older than
   * the age limit. Entries of answers released meanwhile are skipped.
   */
  private evict(by_age: boolean): void {
    const old_before = this.clock.now() - this.o.answer_cache_max_age_ms;
    while (this.cache_head < this.cache_slots.length) {
      const slot = this.cache_slots[this.cache_head] as ServerSlot;
      const live = slot.answer !== null && slot.answer_seq === this.cache_seqs[this.cache_head];
      if (live) {
        const over = this.cache_bytes > this.o.max_answer_cache_bytes;
        const old = by_age && (this.cache_times[this.cache_head] as number) <= old_before;
        if (!over && !old) break;
        slot.session.dropAnswer(slot);
        slot.evicted = true;
        this.stats.answers_evicted++;
      }
      this.cache_head++;
    }
    // Compact once the consumed prefix dominates.
    if (this.cache_head > 1024 && this.cache_head * 2 > this.cache_slots.length) {
      this.cache_slots = this.cache_slots.slice(this.cache_head);
      this.cache_seqs = this.cache_seqs.slice(this.cache_head);
      this.cache_times = this.cache_times.slice(this.cache_head);
      this.cache_head = 0;
    }
  }

  /** Stops listening and closes every session and connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.cache_timer !== null) this.clock.cancel(this.cache_timer);
    this.cache_timer = null;
    await Promise.all(this.listeners.map((l) => l.close()));
    for (const s of [...this.sessions_by_key.values()]) this.closeSession(s, 'server shutting down');
    for (const c of [...this.conns]) c.link.close('server shutting down');
  }
}

/** Sessions are kept per peer: `<peer>/<name>` (a session name holds no `/`), or the bare name without peers. */
function sessionKey(peer: string | null, name: string): string {
  return peer === null ? name : `${peer}/${name}`;
}
