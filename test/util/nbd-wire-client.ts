// A byte-level NBD client for unit tests and the fuzzer: it sends exactly what a test says
// (valid or not) over any NetStream and parses what the server answers. Every wait has a
// deadline.

import type { NetStream } from '../../src/transport/net.js';
import { ByteQueue } from '../../src/nbd/byte-queue.js';
import {
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  NBDMAGIC,
  Opt,
  Rep,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  encodeRequest,
  readU64,
} from '../../src/nbd/proto.js';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export type Reply =
  | { kind: 'simple'; error: number; cookie: number; data: Buffer | null }
  | { kind: 'chunk'; flags: number; type: number; cookie: number; payload: Buffer };

export function optionData(name: string, extra: Buffer = Buffer.alloc(0)): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  return Buffer.concat([b, extra]);
}

/** INFO/GO data: name, u16 count, u16 info types. */
export function goData(name: string, infos: number[] = []): Buffer {
  const t = Buffer.alloc(2 + 2 * infos.length);
  t.writeUInt16BE(infos.length, 0);
  infos.forEach((v, i) => t.writeUInt16BE(v, 2 + 2 * i));
  return optionData(name, t);
}

/** LIST/SET_META_CONTEXT data: name, u32 count, (u32 len, query) each. */
export function metaData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [Buffer.alloc(4)];
  (parts[0] as Buffer).writeUInt32BE(queries.length, 0);
  for (const q of queries) parts.push(optionData(q));
  return optionData(name, Buffer.concat(parts));
}

export class WireClient {
  private readonly q = new ByteQueue();
  closed = false;
  closeErr: Error | null = null;
  private wake: (() => void) | null = null;
  private cookie = 1;
  /** Simple replies to reads carry data; the client must know how much. */
  private readonly readLens = new Map<number, number>();

  constructor(readonly stream: NetStream) {
    stream.attach({
      onData: (c) => {
        this.q.push(c);
        this.poke();
      },
      onDrain: () => undefined,
      onClose: (err) => {
        this.closed = true;
        this.closeErr = err;
        this.poke();
      },
    });
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async until(cond: () => boolean, what: string, timeout_ms: number): Promise<void> {
    const end = performance.now() + timeout_ms;
    while (!cond()) {
      const left = end - performance.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  get buffered(): number {
    return this.q.length;
  }

  send(...bufs: Buffer[]): void {
    this.stream.write(bufs);
  }

  async read(n: number, timeout_ms = 3000): Promise<Buffer> {
    await this.until(() => this.q.length >= n || this.closed, `${n} bytes`, timeout_ms);
    if (this.q.length < n) throw new Error(`stream closed with ${this.q.length} of ${n} bytes`);
    return Buffer.from(this.q.take(n));
  }

  async waitClosed(timeout_ms = 3000): Promise<void> {
    await this.until(() => this.closed, 'close', timeout_ms);
  }

  async greeting(): Promise<number> {
    const g = await this.read(18);
    if (!g.subarray(0, 8).equals(NBDMAGIC) || g.readUInt32BE(8) !== IHAVEOPT_HI || g.readUInt32BE(12) !== IHAVEOPT_LO) throw new Error('bad greeting');
    return g.readUInt16BE(16);
  }

  sendOption(opt: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(IHAVEOPT_HI, 0);
    h.writeUInt32BE(IHAVEOPT_LO, 4);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    this.send(h, data);
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readUInt32BE(0) !== 0x0003e889 || h.readUInt32BE(4) !== 0x045565a9) throw new Error('bad option reply magic');
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(len) };
  }

  /** Replies up to and including the first ACK or error. */
  async optionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === Rep.ACK || r.type >= 0x80000000) return out;
    }
  }

  /**
   * Greeting, flags, STARTTLS when `tls` is given (it runs the client's TLS handshake over
   * this stream once the server acknowledged), optional STRUCTURED_REPLY and
   * SET_META_CONTEXT, then GO. `skipGreeting`: the greeting and flags were done already.
   */
  async connect(name: string, o: { structured?: boolean; contexts?: string[]; skipGreeting?: boolean; tls?: () => Promise<void> } = {}): Promise<{ size: number; flags: number }> {
    if (o.skipGreeting !== true) {
      await this.greeting();
      const f = Buffer.alloc(4);
      f.writeUInt32BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 0);
      this.send(f);
    }
    if (o.tls !== undefined) {
      this.sendOption(Opt.STARTTLS);
      const r = await this.optionReply();
      if (r.type !== Rep.ACK) throw new Error(`STARTTLS refused: 0x${r.type.toString(16)}`);
      if (this.q.length > 0) throw new Error('bytes behind the STARTTLS reply');
      await o.tls();
    }
    if (o.structured === true) {
      this.sendOption(Opt.STRUCTURED_REPLY);
      const r = await this.optionReplies();
      if (r[0]?.type !== Rep.ACK) throw new Error('STRUCTURED_REPLY refused');
    }
    if (o.contexts !== undefined) {
      this.sendOption(Opt.SET_META_CONTEXT, metaData(name, o.contexts));
      await this.optionReplies();
    }
    this.sendOption(Opt.GO, goData(name));
    const replies = await this.optionReplies();
    const last = replies[replies.length - 1];
    if (last?.type !== Rep.ACK) throw new Error(`GO failed: 0x${(last?.type ?? 0).toString(16)}`);
    const info = replies.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === 0);
    if (info === undefined) throw new Error('no NBD_INFO_EXPORT');
    return { size: readU64(info.data, 2), flags: info.data.readUInt16BE(10) };
  }

  /** Sends a request; returns its cookie. */
  request(type: number, offset: number, length: number, o: { flags?: number; payload?: Buffer; cookie?: number } = {}): number {
    const cookie = o.cookie ?? this.cookie++;
    if (type === 0) this.readLens.set(cookie, length);
    const h = encodeRequest({ flags: o.flags ?? 0, type, cookie_hi: 0, cookie_lo: cookie, offset, length });
    if (o.payload !== undefined) this.send(h, o.payload);
    else this.send(h);
    return cookie;
  }

  async reply(timeout_ms = 3000): Promise<Reply> {
    const magic = (await this.read(4, timeout_ms)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const h = await this.read(12, timeout_ms);
      const error = h.readUInt32BE(0);
      const cookie = h.readUInt32BE(8);
      const len = this.readLens.get(cookie);
      this.readLens.delete(cookie);
      const data = error === 0 && len !== undefined && len > 0 ? await this.read(len, timeout_ms) : null;
      return { kind: 'simple', error, cookie, data };
    }
    if (magic === STRUCTURED_REPLY_MAGIC) {
      const h = await this.read(16, timeout_ms);
      const len = h.readUInt32BE(12);
      return { kind: 'chunk', flags: h.readUInt16BE(0), type: h.readUInt16BE(2), cookie: h.readUInt32BE(8), payload: await this.read(len, timeout_ms) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** Chunks of one structured reply, up to the one with DONE. */
  async chunks(timeout_ms = 3000): Promise<Reply[]> {
    const out: Reply[] = [];
    for (;;) {
      const r = await this.reply(timeout_ms);
      out.push(r);
      if (r.kind === 'simple' || (r.flags & 1) !== 0) return out;
    }
  }
}
