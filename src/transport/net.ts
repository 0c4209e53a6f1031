// The Net port: byte streams between hosts. Real adapter: src/node/net.ts (node:net / node:tls);
// the simulator provides in-memory links. The transport sees only these interfaces.

export interface TlsOptions {
  /** PEM certificate chain and key of this side (server: required unless PSK). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** PEM CA bundle used to verify the peer. A client with `ca` verifies the server. */
  ca?: string | Buffer;
  /** Server: require and verify client certificates against `ca`. */
  requestCert?: boolean;
  /** Name checked against the server certificate (client side); default: the host. */
  servername?: string;
  /** TLS-PSK instead of certificates: identity and key shared by both sides. */
  psk?: { identity: string; key: Buffer };
}

/**
 * Server-side TLS for upgrading an accepted plaintext stream in place (NBD's STARTTLS),
 * with certificates or with TLS-PSK (one key per client identity).
 */
export interface ServerTlsOptions {
  /** PEM certificate chain and key of this server (certificate mode). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** PEM CA bundle; with `verifyPeer`, a client must show a certificate it signed. */
  ca?: string | Buffer;
  verifyPeer?: boolean;
  /** TLS-PSK instead of certificates: the key of a client identity, null when unknown. */
  psk?: (identity: string) => Buffer | null;
  /** A handshake not done by then fails (default: the adapter's TLS handshake timeout). */
  handshakeTimeoutMs?: number;
}

/**
 * Server TLS made ready once by the Net adapter (PEM parsed, context built), then handed to
 * NetStream.startTls for every upgrade; opaque to the core.
 */
export interface ServerTls {
  readonly mode: 'x509' | 'psk';
}

/**
 * Who the peer proved to be in a TLS handshake: the subject of its verified certificate
 * (attribute name → values, e.g. CN and OU), or the identity of the PSK it used.
 */
export type TlsPeer = { readonly kind: 'x509'; readonly subject: Readonly<Record<string, readonly string[]>> } | { readonly kind: 'psk'; readonly identity: string };

export interface Address {
  host: string;
  port: number;
  tls?: TlsOptions;
}

export interface StreamHandlers {
  /** Bytes arrived. The buffer belongs to the receiver from now on. */
  onData(chunk: Buffer): void;
  /**
   * Optional: where the receiver wants the next bytes to land, i.e. the unfilled rest of a
   * large message it is assembling (null: anywhere). A stream able to read into caller
   * memory may read straight into it and then hands over a view of its first bytes through
   * onData, so the receiver finds them already in place and copies nothing. Asked before
   * every socket read; a stream may ignore it (the receiver then copies as usual).
   */
  readTarget?(): Buffer | null;
  /** The stream's pending write bytes fell back below its high-water mark. */
  onDrain(): void;
  /** The stream is closed (by either side or by error). Called exactly once. */
  onClose(err: Error | null): void;
}

/**
 * Contract details the transport relies on:
 * - onDrain fires once after a write() that returned false.
 * - write() after close or end() drops the bytes and returns true (onClose says why).
 * - attach() twice throws.
 */
export interface NetStream {
  /** Installs the handlers; data is not delivered before this is called. */
  attach(handlers: StreamHandlers): void;
  /**
   * Queues the buffers for sending, in order. Buffers are not copied: the caller must not
   * modify them afterwards. Writes issued in the same iteration of the event loop are batched.
   * Returns false when pending bytes exceed the high-water mark (wait for onDrain).
   */
  write(chunks: readonly Buffer[]): boolean;
  /** Bytes queued but not yet handed to the kernel. */
  readonly pendingWriteBytes: number;
  /** Stop / resume delivering onData (read-side backpressure). */
  pauseReading(): void;
  resumeReading(): void;
  /**
   * Sends what is queued, then closes (a goodbye frame gets out). Later writes are dropped.
   * The stream is destroyed if the peer does not take the bytes within `linger_ms`.
   * onClose follows.
   */
  end(linger_ms: number): void;
  /** Closes at once, discarding unsent bytes. onClose follows. */
  destroy(err?: Error): void;
  readonly remote: string;
  readonly local: string;
  /**
   * Optional: turns this accepted plaintext stream into the server end of a TLS session, in
   * place (the handlers stay attached). Bytes written before are sent in clear first; every
   * byte after goes through TLS. Exactly one of: cb(null) once the handshake is done (and
   * the client's certificate checked, if asked), or the stream closes (onClose with the
   * reason: a failed or timed-out handshake). No onData is delivered in between.
   */
  startTls?(tls: ServerTls, cb: (err: Error | null) => void): void;
  /**
   * Optional: the peer a completed TLS handshake authenticated (a verified client
   * certificate, or a PSK identity); null before TLS, or when the peer showed no certificate.
   */
  tlsPeer?(): TlsPeer | null;
}

export interface Listener {
  /** The bound address (port resolved when 0 was asked). */
  readonly address: { host: string; port: number };
  /** Stops accepting and frees the port at once; accepted streams stay open. */
  close(): Promise<void>;
}

export interface Net {
  /**
   * Opens a stream. `cb` gets exactly one of an error or a connected stream (for TLS: the
   * handshake is done). A connect not done within timeout_ms fails with code ETIMEDOUT.
   * With `tls.psk`, PSK replaces certificates.
   */
  connect(addr: Address, timeout_ms: number, cb: (err: Error | null, stream: NetStream | null) => void): void;
  listen(addr: Address, onConnection: (stream: NetStream) => void): Promise<Listener>;
}

/**
 * The address a pre-authentication limit counts against: the host of `host:port`, an IPv6
 * address cut to its /64 (one machine often holds a whole /64), a Unix socket as it is.
 * Shared by the data plane's and NBD's pre-authentication limits.
 */
export function addressKey(remote: string): string {
  if (remote.startsWith('unix:')) return remote;
  const v6 = /^\[([0-9A-Fa-f:.]+)\]:[0-9]+$/.exec(remote);
  if (v6 === null) return remote.replace(/:[0-9]+$/, '').replace(/^::ffff:/i, '');
  const h = (v6[1] as string).toLowerCase();
  if (/^::ffff:[0-9.]+$/.test(h)) return h.slice(7);
  // Expand "::" to reach the first four groups.
  const [head = '', tail] = h.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
