// A hand-driven transport client for tests of the server's defences: it speaks exactly the
// bytes a test chooses, including a correct handshake followed by misbehaviour.
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { FrameDecoder, FrameType, encodeFrameHead, type FrameFields } from '../../src/transport/frame.js';
import { PROTOCOL_VERSION, clientProof, decodeChallenge, decodeReject, encodeHello } from '../../src/transport/handshake.js';
import { waitUntil } from './wait.js';

export interface RawFrame {
  f: FrameFields;
  data: Buffer;
}

export class RawClient {
  readonly socket: net.Socket;
  readonly frames: RawFrame[] = [];
  errors: string[] = [];
  closed = false;
  private readonly decoder: FrameDecoder;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    const all = new Set<number>(Object.values(FrameType));
    this.decoder = new FrameDecoder(
      {
        onFrame: (f, _h, data) => this.frames.push({ f: { ...f }, data: Buffer.from(data) }),
        onProtocolError: (r) => this.errors.push(r),
      },
      { allowed: all, max_user_hdr: 1 << 16, max_data: 64 << 20 },
    );
    socket.on('data', (d) => this.decoder.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => (this.closed = true));
  }

  /** Plain TCP, or TLS with `o.tls` (the frames then run inside it); `o.localAddress` picks the source. */
  static connect(port: number, host = '127.0.0.1', o: { tls?: tls.ConnectionOptions; localAddress?: string } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const base = { port, host, ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}) };
      const s: net.Socket = o.tls === undefined ? net.connect(base, () => resolve(new RawClient(s))) : tls.connect({ ...base, ...o.tls }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  send(buf: Buffer): void {
    this.socket.write(buf);
  }

  sendFrame(type: number, body: Buffer): void {
    this.send(Buffer.concat([encodeFrameHead(type, 0, null, body.length, 0, 0, 0, 0), body]));
  }

  hello(name: string, opts: { path_index?: number; incarnation?: number; queue_depth?: number } = {}): Buffer {
    const body = encodeHello({
      version: PROTOCOL_VERSION,
      path_index: opts.path_index ?? 0,
      queue_depth: opts.queue_depth ?? 32,
      max_io_size: 1 << 20,
      incarnation: opts.incarnation ?? 1,
      client_nonce: randomBytes(32),
      session_name: name,
    });
    this.sendFrame(FrameType.HELLO, body);
    return body;
  }

  waitFrame(type: number, timeout_ms = 5000): Promise<RawFrame> {
    return this.waitAny([type], timeout_ms);
  }

  waitAny(types: number[], timeout_ms = 5000): Promise<RawFrame> {
    // A closed connection sends nothing more: the probe throws and the wait fails at once.
    return waitUntil(
      `a frame of types ${types.join(',')}`,
      () => {
        const i = this.frames.findIndex((fr) => types.includes(fr.f.type));
        if (i >= 0) return this.frames.splice(i, 1)[0] as RawFrame;
        if (this.closed) throw new Error(`connection closed while waiting for frame types ${types.join(',')}`);
        return null;
      },
      { timeout_ms, poll_ms: 5 },
    );
  }

  /** Full handshake with `secret` (the server's proof is not checked: this client is a test tool). */
  async handshake(name: string, secret: Buffer, opts: { incarnation?: number; path_index?: number } = {}): Promise<RawFrame> {
    const hello = this.hello(name, opts);
    const ch = await this.waitFrame(FrameType.CHALLENGE);
    const c = decodeChallenge(ch.data);
    if (!c.ok) throw new Error(c.reason);
    this.sendFrame(FrameType.AUTH, clientProof(secret, hello, c.value.server_nonce));
    const fr = await this.waitAny([FrameType.WELCOME, FrameType.REJECT]);
    if (fr.f.type === FrameType.REJECT) {
      const r = decodeReject(fr.data);
      throw new Error(`rejected: ${r.ok ? r.value.reason : r.reason}`);
    }
    return fr;
  }

  waitClosed(timeout_ms = 5000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`connection still open after ${timeout_ms} ms`)), timeout_ms);
      this.socket.once('close', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}
