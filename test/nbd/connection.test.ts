// The NBD server's protocol state machine over in-memory streams (no sockets): handshake
// options, transmission commands with simple and structured replies, errors, bounds,
// backpressure in both directions, disconnects mid-request, DISC, shutdown, many clients.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NbdServer } from '../../src/nbd/server.js';
import { MemBlockDevice } from '../../src/nbd/mem-device.js';
import type { ConnectionLimits } from '../../src/nbd/connection.js';
import { Cmd, CmdFlag, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, Info, NbdErr, Opt, Rep, ReplyType, TFlag, readU64 } from '../../src/nbd/proto.js';
import { Errno } from '../../src/util/errno.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import type { TlsMode } from '../../src/nbd/handshake.js';
import { FilterDevice } from '../util/filter-device.js';
import { ForwardingDevice } from '../../src/nbd/forwarding-device.js';
import { CLIENT_HELLO, FAKE_SERVER_TLS, FakeTlsStream } from '../util/fake-tls.js';
import { memStreamPair, type MemEnd } from '../util/mem-stream.js';
import { WireClient, goData, metaData, type Reply } from '../util/nbd-wire-client.js';
import { waitFor } from '../util/wait.js';

const MiB = 1 << 20;

interface Env {
  server: NbdServer;
  logger: MemoryLogger;
  mem: MemBlockDevice;
  held: FilterDevice;
  connect(): { client: WireClient; serverEnd: MemEnd; clientEnd: MemEnd };
}

function env(limits: Partial<ConnectionLimits> = {}, clock?: SimClock, hwm?: number, max_inflight_bytes?: number): Env {
  const logger = new MemoryLogger();
  const server = new NbdServer({ logger, limits, ...(clock !== undefined ? { clock } : {}), ...(max_inflight_bytes !== undefined ? { max_inflight_bytes } : {}) });
  const mem = new MemBlockDevice({ size_bytes: 4 * MiB, dirty_context: 'rmr:dirty:1', block_sizes: { minimum: 512, preferred: 4096, maximum: 256 * 1024 } });
  const held = new FilterDevice(new MemBlockDevice({ size_bytes: 4 * MiB }), { hold: true });
  server.addExport('mem', mem, 'memory');
  server.addExport('ro', new MemBlockDevice({ size_bytes: MiB, writable: false }));
  server.addExport('held', held);
  return {
    server,
    logger,
    mem,
    held,
    connect: () => {
      const [c, s] = memStreamPair(hwm);
      server.accept(s);
      return { client: new WireClient(c), serverEnd: s, clientEnd: c };
    },
  };
}

function flags(client: WireClient, f = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): void {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(f, 0);
  client.send(b);
}

async function simple(client: WireClient): Promise<Extract<Reply, { kind: 'simple' }>> {
  const r = await client.reply();
  assert.equal(r.kind, 'simple');
  return r;
}

test('option phase: LIST, INFO, unknown options and errors keep the negotiation going', async () => {
  const e = env();
  const { client } = e.connect();
  assert.equal(await client.greeting(), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
  flags(client);

  client.sendOption(Opt.LIST);
  const list = await client.optionReplies();
  assert.deepEqual(list.map((r) => r.type), [Rep.SERVER, Rep.SERVER, Rep.SERVER, Rep.ACK]);
  assert.equal(list[0]?.data.toString('utf8', 4, 7), 'mem');

  client.sendOption(99, Buffer.from('junk'));
  assert.equal((await client.optionReply()).type, Rep.ERR_UNSUP);
  client.sendOption(Opt.STARTTLS);
  assert.equal((await client.optionReply()).type, Rep.ERR_UNSUP);
  client.sendOption(Opt.LIST, Buffer.from('x'));
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);

  client.sendOption(Opt.INFO, goData('mem', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE]));
  const info = await client.optionReplies();
  const byType = new Map(info.filter((r) => r.type === Rep.INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
  assert.equal(readU64(byType.get(Info.EXPORT) as Buffer, 2), 4 * MiB);
  assert.equal(byType.get(Info.NAME)?.toString('utf8', 2), 'mem');
  assert.equal(byType.get(Info.DESCRIPTION)?.toString('utf8', 2), 'memory');
  const bs = byType.get(Info.BLOCK_SIZE) as Buffer;
  assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [512, 4096, 32 * MiB], 'the maximum is the server\'s (32 MiB by default), not the device\'s 256 KiB');
  assert.equal(info[info.length - 1]?.type, Rep.ACK);

  client.sendOption(Opt.INFO, goData('nope'));
  assert.equal((await client.optionReply()).type, Rep.ERR_UNKNOWN);
  const bad = goData('mem');
  bad.writeUInt32BE(0xfffffff0, 0); // name length far beyond the data
  client.sendOption(Opt.GO, bad);
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
  client.sendOption(Opt.GO, Buffer.concat([goData('mem', [Info.NAME]), Buffer.from([0])]));
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID, 'trailing byte after the info list');

  const { size, flags: tflags } = await (async () => {
    client.sendOption(Opt.GO, goData(''));
    const r = await client.optionReplies();
    const ex = r.find((x) => x.type === Rep.INFO && x.data.readUInt16BE(0) === Info.EXPORT) as { data: Buffer };
    return { size: readU64(ex.data, 2), flags: ex.data.readUInt16BE(10) };
  })();
  assert.equal(size, 4 * MiB, 'the empty name is the default (first) export');
  assert.ok(tflags & TFlag.CAN_MULTI_CONN && tflags & TFlag.SEND_FAST_ZERO);
  client.request(Cmd.READ, 0, 512);
  assert.equal((await simple(client)).data?.length, 512);
});

test('meta contexts: LIST with prefixes, SET needs structured replies, ids are used in BLOCK_STATUS', async () => {
  const e = env();
  const { client } = e.connect();
  await client.greeting();
  flags(client);
  client.sendOption(Opt.LIST_META_CONTEXT, metaData('mem', []));
  assert.deepEqual((await client.optionReplies()).filter((r) => r.type === Rep.META_CONTEXT).map((r) => r.data.toString('utf8', 4)), ['base:allocation', 'rmr:dirty:1']);
  client.sendOption(Opt.LIST_META_CONTEXT, metaData('mem', ['base:']));
  assert.deepEqual((await client.optionReplies()).filter((r) => r.type === Rep.META_CONTEXT).map((r) => r.data.toString('utf8', 4)), ['base:allocation']);
  client.sendOption(Opt.LIST_META_CONTEXT, metaData('mem', ['rmr:', 'other:thing']));
  assert.deepEqual((await client.optionReplies()).filter((r) => r.type === Rep.META_CONTEXT).map((r) => r.data.toString('utf8', 4)), ['rmr:dirty:1']);
  client.sendOption(Opt.SET_META_CONTEXT, metaData('mem', ['base:allocation']));
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
  const broken = metaData('mem', ['base:allocation']);
  broken.writeUInt32BE(1000, 4 + 3); // query count beyond the data
  client.sendOption(Opt.LIST_META_CONTEXT, broken);
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
  client.sendOption(Opt.LIST_META_CONTEXT, metaData('nope', []));
  assert.equal((await client.optionReply()).type, Rep.ERR_UNKNOWN);

  client.sendOption(Opt.STRUCTURED_REPLY);
  assert.equal((await client.optionReply()).type, Rep.ACK);
  client.sendOption(Opt.SET_META_CONTEXT, metaData('mem', ['base:allocation', 'rmr:dirty:1', 'x:y']));
  const set = (await client.optionReplies()).filter((r) => r.type === Rep.META_CONTEXT);
  const ids = new Map(set.map((r) => [r.data.readUInt32BE(0), r.data.toString('utf8', 4)]));
  assert.deepEqual([...ids.values()], ['base:allocation', 'rmr:dirty:1']);
  client.sendOption(Opt.GO, goData('mem'));
  assert.equal((await client.optionReplies()).pop()?.type, Rep.ACK);

  const payload = Buffer.alloc(64 * 1024, 1);
  client.request(Cmd.WRITE, 128 * 1024, payload.length, { payload });
  assert.equal((await simple(client)).error, 0);
  client.request(Cmd.BLOCK_STATUS, 0, 4 * MiB);
  const chunks = await client.chunks();
  assert.equal(chunks.length, 2);
  const got = new Map<string, { length: number; flags: number }[]>();
  for (const c of chunks) {
    assert.ok(c.kind === 'chunk' && c.type === ReplyType.BLOCK_STATUS);
    const name = ids.get(c.payload.readUInt32BE(0)) as string;
    const ext = [];
    for (let at = 4; at < c.payload.length; at += 8) ext.push({ length: c.payload.readUInt32BE(at), flags: c.payload.readUInt32BE(at + 4) });
    got.set(name, ext);
  }
  assert.deepEqual(got.get('base:allocation'), [{ length: 256 * 1024, flags: 0 }], 'server-made, cut at the device maximum');
  assert.deepEqual(got.get('rmr:dirty:1'), [
    { length: 128 * 1024, flags: 0 },
    { length: 64 * 1024, flags: 1 },
    { length: 64 * 1024, flags: 0 },
  ]);
  client.request(Cmd.BLOCK_STATUS, 0, 4 * MiB, { flags: CmdFlag.REQ_ONE });
  for (const c of await client.chunks()) assert.ok(c.kind === 'chunk' && c.payload.length === 12, 'one extent per context');
});

test('EXPORT_NAME: zeroes unless NO_ZEROES; unknown name closes; ABORT is acknowledged then closed', async () => {
  const e = env();
  const a = e.connect().client;
  await a.greeting();
  flags(a, FLAG_FIXED_NEWSTYLE);
  a.sendOption(Opt.EXPORT_NAME, Buffer.from('mem'));
  const rep = await a.read(134);
  assert.equal(readU64(rep, 0), 4 * MiB);
  assert.ok(rep.subarray(10).every((b) => b === 0));
  a.request(Cmd.FLUSH, 0, 0);
  assert.equal((await simple(a)).error, 0);

  const b = e.connect().client;
  await b.greeting();
  flags(b);
  b.sendOption(Opt.EXPORT_NAME, Buffer.from('nope'));
  await b.waitClosed();

  const c = e.connect().client;
  await c.greeting();
  flags(c);
  c.sendOption(Opt.ABORT);
  assert.equal((await c.optionReply()).type, Rep.ACK);
  await c.waitClosed();
});

test('hostile handshakes close the connection without allocating: flags, magic, huge option', async () => {
  const e = env();
  const a = e.connect().client;
  await a.greeting();
  flags(a, 0x80);
  await a.waitClosed();
  const b = e.connect().client;
  await b.greeting();
  flags(b);
  b.send(Buffer.from('IHAVEOPX\0\0\0\x07\0\0\0\0', 'latin1'));
  await b.waitClosed();
  const c = e.connect().client;
  await c.greeting();
  flags(c);
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 'latin1');
  h.writeUInt32BE(Opt.GO, 8);
  h.writeUInt32BE(0xffffffff, 12);
  c.send(h);
  await c.waitClosed();
  assert.ok(e.logger.count((l) => l.fields.reason === `option ${Opt.GO} length 4294967295 over the limit`) === 1);
  await waitFor('connections gone', () => e.server.connections.size === 0, 2000);
});

test('transmission with simple replies: IO, errors, out of range, read-only, oversize', async () => {
  const e = env();
  const { client } = e.connect();
  await client.connect('mem');
  const data = Buffer.alloc(8192);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  client.request(Cmd.WRITE, 4096, data.length, { payload: data, flags: CmdFlag.FUA });
  assert.equal((await simple(client)).error, 0);
  client.request(Cmd.READ, 4096, data.length);
  assert.deepEqual((await simple(client)).data, data);
  client.request(Cmd.WRITE_ZEROES, 4096, 4096, { flags: CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO });
  assert.equal((await simple(client)).error, 0);
  client.request(Cmd.TRIM, 8192, 4096);
  assert.equal((await simple(client)).error, 0);
  client.request(Cmd.READ, 4096, 8192);
  assert.ok((await simple(client)).data?.every((b) => b === 0));
  client.request(Cmd.TRIM, 0, 4 * MiB, { flags: CmdFlag.FUA });
  assert.equal((await simple(client)).error, 0, 'trim beyond the max IO size is split');

  client.request(Cmd.READ, 4 * MiB - 512, 1024);
  assert.equal((await simple(client)).error, NbdErr.EINVAL);
  client.request(Cmd.WRITE, 4 * MiB - 512, 1024, { payload: Buffer.alloc(1024) });
  assert.equal((await simple(client)).error, NbdErr.ENOSPC);
  client.request(Cmd.READ, 0, 32 * MiB + 512);
  assert.equal((await simple(client)).error, NbdErr.EOVERFLOW, 'over the advertised maximum');
  // An oversize write's payload is skipped (not buffered whole) and the stream stays in sync.
  client.request(Cmd.WRITE, 0, 32 * MiB + 512, { payload: Buffer.alloc(32 * MiB + 512, 9) });
  assert.equal((await simple(client)).error, NbdErr.EINVAL);
  client.request(Cmd.BLOCK_STATUS, 0, 512);
  assert.equal((await simple(client)).error, NbdErr.EINVAL, 'no structured replies, no block status');
  client.request(Cmd.CACHE, 0, 512);
  assert.equal((await simple(client)).error, NbdErr.EINVAL);
  client.request(Cmd.READ, 0, 0);
  assert.equal((await simple(client)).error, 0);
  client.request(Cmd.READ, 4096, 16);
  assert.equal((await simple(client)).error, 0, 'still in sync after all that');
  assert.equal(e.mem.snapshot(0, 4096).every((b) => b === 0), true, 'refused writes changed nothing');

  const ro = e.connect().client;
  await ro.connect('ro');
  ro.request(Cmd.WRITE, 0, 512, { payload: Buffer.alloc(512, 1) });
  assert.equal((await simple(ro)).error, NbdErr.EPERM);
  ro.request(Cmd.TRIM, 0, 512);
  assert.equal((await simple(ro)).error, NbdErr.EPERM);
  ro.request(Cmd.READ, 0, 512);
  assert.equal((await simple(ro)).error, 0);
});

/** Records the length of every read and write the device is given. */
class SizeLog extends ForwardingDevice {
  readonly sizes: number[] = [];
  override read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    this.sizes.push(length);
    super.read(offset, length, cb);
  }
  override write(offset: number, data: Buffer, flags: { fua: boolean }, cb: (status: number) => void): void {
    this.sizes.push(data.length);
    super.write(offset, data, flags, cb);
  }
}

test('requests above the device maximum are split: pieces of the device maximum, 8 at a time, one reply; a failed piece fails the request', async () => {
  const logger = new MemoryLogger();
  const server = new NbdServer({ logger, max_payload: 4 * MiB });
  const mem = new MemBlockDevice({ size_bytes: 8 * MiB, block_sizes: { minimum: 512, preferred: 4096, maximum: 64 * 1024 } });
  const log = new SizeLog(mem);
  const held = new FilterDevice(log, { hold: true });
  server.addExport('split', held);
  const connect = (): WireClient => {
    const [c, s] = memStreamPair();
    server.accept(s);
    return new WireClient(c);
  };
  const client = connect();
  await client.connect('split', { structured: true });
  const data = Buffer.alloc(4 * MiB);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(i, i);
  client.request(Cmd.WRITE, 512, data.length, { payload: data, flags: CmdFlag.FUA });
  // 64 pieces of 64 KiB go to the device 8 at a time: the window is full, nothing more starts.
  for (let round = 0; round < 8; round++) {
    await waitFor(`round ${round}: 8 pieces held`, () => held.heldCount === 8);
    assert.equal(held.started, 8 * (round + 1));
    held.release();
  }
  assert.equal((await simple(client)).error, 0, 'one reply for the whole write');
  assert.equal(held.max_active, 8);
  assert.ok(log.sizes.every((n) => n === 64 * 1024), 'no piece larger than the device takes');
  assert.equal(log.sizes.length, 64);
  assert.ok(mem.snapshot(512, data.length).equals(data), 'every piece landed at its offset');

  held.opts = {};
  log.sizes.length = 0;
  client.request(Cmd.READ, 512, data.length, { flags: CmdFlag.DF });
  const chunks = await client.chunks();
  assert.equal(chunks.length, 1, 'the pieces go out as one OFFSET_DATA chunk (DF holds)');
  const [c] = chunks;
  assert.ok(c?.kind === 'chunk' && c.type === ReplyType.OFFSET_DATA && c.flags === 1);
  assert.equal(readU64(c.payload, 0), 512);
  assert.ok(c.payload.subarray(8).equals(data), 'the pieces in order');
  assert.equal(log.sizes.length, 64);

  // The fourth piece of a read fails: the error names its offset; the others are not read.
  let reads = 0;
  const failing = new (class extends ForwardingDevice {
    override read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
      if (reads++ === 3) return void queueMicrotask(() => cb(Errno.EIO, null));
      super.read(offset, length, cb);
    }
  })(new MemBlockDevice({ size_bytes: 8 * MiB, block_sizes: { minimum: 512, preferred: 4096, maximum: 64 * 1024 } }));
  server.addExport('failing', failing);
  const f = connect();
  await f.connect('failing', { structured: true });
  f.request(Cmd.READ, 0, 2 * MiB);
  const [err] = await f.chunks();
  assert.ok(err?.kind === 'chunk' && err.type === ReplyType.ERROR_OFFSET);
  assert.equal(err.payload.readUInt32BE(0), NbdErr.EIO);
  assert.equal(readU64(err.payload, err.payload.length - 8), 3 * 64 * 1024, 'the failed piece\'s offset');
  // Pieces 0..7 start together; 0, 1 and 2 end first and each lets one more start (8..10);
  // after 3 fails nothing more starts (of 32 pieces).
  assert.equal(reads, 11, 'no piece starts after the failure');
  f.request(Cmd.READ, 0, 4 * MiB + 512);
  const [over] = await f.chunks();
  assert.ok(over?.kind === 'chunk' && over.type === ReplyType.ERROR && over.payload.readUInt32BE(0) === NbdErr.EOVERFLOW, 'over the configured maximum');
  assert.equal(logger.count((l) => l.level === 'error'), 0);
});

test('a refused write whose payload is too large to skip closes the connection; garbage magic too', async () => {
  const e = env({ max_skip_bytes: 512 * 1024 });
  const a = e.connect().client;
  await a.connect('mem');
  a.request(Cmd.WRITE, 0, 48 * MiB); // header only: 48 MiB claimed, over the 32 MiB maximum
  await a.waitClosed();
  assert.equal(e.logger.count((l) => l.fields.reason === 'refused write payload of 50331648 bytes is too large to skip'), 1);
  const b = e.connect().client;
  await b.connect('mem');
  b.send(Buffer.alloc(28, 0x41));
  await b.waitClosed();
  assert.equal(e.logger.count((l) => l.fields.reason === 'bad request magic'), 1);
});

test('structured replies: OFFSET_DATA for reads, ERROR_OFFSET for failed reads, NONE for empty', async () => {
  const e = env();
  const { client } = e.connect();
  await client.connect('mem', { structured: true });
  client.request(Cmd.READ, 512, 1024, { flags: CmdFlag.DF });
  const [c] = await client.chunks();
  assert.ok(c?.kind === 'chunk' && c.type === ReplyType.OFFSET_DATA && c.flags === 1);
  assert.equal(readU64(c.payload, 0), 512);
  assert.equal(c.payload.length, 8 + 1024);
  client.request(Cmd.READ, 0, 0);
  const [n] = await client.chunks();
  assert.ok(n?.kind === 'chunk' && n.type === ReplyType.NONE && n.flags === 1);
  client.request(Cmd.READ, 4 * MiB, 512);
  const [err] = await client.chunks();
  assert.ok(err?.kind === 'chunk' && err.type === ReplyType.ERROR && err.payload.readUInt32BE(0) === NbdErr.EINVAL);
  client.request(Cmd.BLOCK_STATUS, 0, 512);
  const [nometa] = await client.chunks();
  assert.ok(nometa?.kind === 'chunk' && nometa.type === ReplyType.ERROR, 'no contexts selected');

  e.held.opts = { fail: { read: Errno.EIO } };
  const h = e.connect().client;
  await h.connect('held', { structured: true });
  h.request(Cmd.READ, 4096, 512);
  const [fe] = await h.chunks();
  assert.ok(fe?.kind === 'chunk' && fe.type === ReplyType.ERROR_OFFSET);
  assert.equal(fe.payload.readUInt32BE(0), NbdErr.EIO);
  const msg_len = fe.payload.readUInt16BE(4);
  assert.equal(readU64(fe.payload, 6 + msg_len), 4096);
});

test('device errors map to NBD errors', async () => {
  const e = env();
  e.held.opts = { fail: { write: Errno.ENOSPC, flush: Errno.ESHUTDOWN, zero: Errno.EOPNOTSUPP, trim: Errno.ETIMEDOUT, read: Errno.ENOMEM } };
  const { client } = e.connect();
  await client.connect('held');
  client.request(Cmd.WRITE, 0, 512, { payload: Buffer.alloc(512) });
  assert.equal((await simple(client)).error, NbdErr.ENOSPC);
  client.request(Cmd.FLUSH, 0, 0);
  assert.equal((await simple(client)).error, NbdErr.ESHUTDOWN);
  client.request(Cmd.WRITE_ZEROES, 0, 512, { flags: CmdFlag.FAST_ZERO });
  assert.equal((await simple(client)).error, NbdErr.ENOTSUP);
  client.request(Cmd.TRIM, 0, 512);
  assert.equal((await simple(client)).error, NbdErr.EIO);
  client.request(Cmd.READ, 0, 512);
  assert.equal((await simple(client)).error, NbdErr.ENOMEM);
});

test('in-flight requests are bounded: reading pauses at the bound and resumes as completions drain', async () => {
  const e = env({ max_inflight_requests: 4 });
  e.held.opts = { hold: true };
  const { client, serverEnd } = e.connect();
  await client.connect('held');
  for (let i = 0; i < 20; i++) client.request(Cmd.READ, i * 4096, 4096);
  await waitFor('4 held', () => e.held.heldCount === 4, 2000);
  await waitFor('server end paused', () => serverEnd.isPaused, 2000);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(e.held.started, 4, 'nothing beyond the bound reached the device');
  let replies = 0;
  while (replies < 20) {
    await waitFor('held', () => e.held.heldCount > 0, 2000);
    e.held.release(1);
    assert.equal((await simple(client)).error, 0);
    replies++;
  }
  assert.ok(e.held.max_active <= 4);
  assert.equal(serverEnd.isPaused, false);
});

test('in-flight bytes are bounded too (one request is always admitted)', async () => {
  const e = env({ max_inflight_bytes: 64 * 1024 });
  e.held.opts = { hold: true };
  const { client } = e.connect();
  await client.connect('held');
  for (let i = 0; i < 6; i++) client.request(Cmd.READ, 0, 48 * 1024);
  await waitFor('2 held', () => e.held.heldCount === 2, 2000);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(e.held.started, 2);
  for (let i = 0; i < 6; i++) {
    await waitFor('held', () => e.held.heldCount > 0, 2000);
    e.held.release(1);
    await simple(client);
  }
});

// Security review, finding 12: each connection may hold 64 MiB of requests, and there may be
// 1,024 connections. The daemon's budget bounds what all of them hold together.
test('the server-wide in-flight budget: many connections together hold at most the budget, and all complete', async () => {
  const e = env({}, undefined, undefined, 256 * 1024);
  e.held.opts = { hold: true };
  const clients: WireClient[] = [];
  for (let i = 0; i < 8; i++) {
    const { client } = e.connect();
    await client.connect('held');
    clients.push(client);
  }
  for (const c of clients) for (let k = 0; k < 8; k++) c.request(Cmd.READ, k * 65536, 64 * 1024);
  await waitFor('the budget is full', () => e.held.heldCount === 4, 2000);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(e.held.started, 4, 'no request beyond the budget reached the device');
  assert.equal(e.server.budget?.used, 256 * 1024);
  let replies = 0;
  while (replies < 64) {
    await waitFor('a held request', () => e.held.heldCount > 0, 2000);
    e.held.release(1);
    replies++;
    assert.ok((e.server.budget?.used ?? 0) <= 256 * 1024);
  }
  for (const c of clients) for (let k = 0; k < 8; k++) assert.equal((await simple(c)).error, 0);
  assert.equal(e.server.budget?.used, 0);
  assert.ok(e.held.max_active <= 4);
});

test('idle timeout: an attached client with nothing in flight and no request for idle_timeout_ms is closed (injected clock)', async () => {
  const clock = new SimClock();
  const e = env({ idle_timeout_ms: 10_000 }, clock);
  e.held.opts = { hold: true };
  const { client } = e.connect();
  await client.connect('mem');
  clock.runUntil(6000);
  client.request(Cmd.READ, 0, 512);
  assert.equal((await simple(client)).error, 0);
  clock.runUntil(15_000);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(client.closed, false, 'the request at 6 s restarted the period');
  clock.runUntil(16_500);
  await client.waitClosed();
  assert.equal(e.logger.count((l) => l.fields.reason === 'idle for 10000 ms (nbd.idle_timeout_ms)'), 1);
  // A request in flight keeps a connection, however long it takes.
  const busy = e.connect().client;
  await busy.connect('held');
  busy.request(Cmd.READ, 0, 512);
  await waitFor('held', () => e.held.heldCount === 1, 2000);
  clock.runUntil(60_000);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(busy.closed, false);
  e.held.release();
  assert.equal((await simple(busy)).error, 0);
});

test('a client that stops reading replies stops the server from taking more requests', async () => {
  const e = env({}, undefined, 256 * 1024);
  const { client, clientEnd, serverEnd } = e.connect();
  await client.connect('mem');
  const ops0 = e.mem.ops;
  clientEnd.pauseReading();
  for (let i = 0; i < 16; i++) client.request(Cmd.READ, 0, 64 * 1024);
  await waitFor('replies backed up', () => serverEnd.pendingWriteBytes > 256 * 1024, 2000);
  for (let i = 0; i < 32; i++) client.request(Cmd.READ, 0, 64 * 1024);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(e.mem.ops - ops0, 16, 'no new request was taken while replies were stuck');
  assert.ok(serverEnd.isPaused);
  clientEnd.resumeReading();
  for (let i = 0; i < 48; i++) assert.equal((await simple(client)).data?.length, 64 * 1024);
});

test('a client disconnecting mid-request: late completions are dropped, nothing throws', async () => {
  const e = env();
  e.held.opts = { hold: true };
  const { client, clientEnd } = e.connect();
  await client.connect('held');
  for (let i = 0; i < 8; i++) client.request(Cmd.READ, i * 4096, 4096);
  client.request(Cmd.WRITE, 0, 4096, { payload: Buffer.alloc(4096, 3) });
  client.request(Cmd.WRITE, 0, 8192); // header only: the payload never comes
  await waitFor('9 held', () => e.held.heldCount === 9, 2000);
  clientEnd.destroy();
  await waitFor('connection gone', () => e.server.connections.size === 0, 2000);
  e.held.release();
  await new Promise((r) => setImmediate(r));
  assert.equal(e.logger.count((l) => l.msg === 'nbd client went away with requests in flight'), 1);
  assert.equal(e.logger.count((l) => l.level === 'error'), 0);
});

test('DISC: in-flight requests are answered, then the server closes', async () => {
  const e = env();
  e.held.opts = { hold: true };
  const { client } = e.connect();
  await client.connect('held');
  client.request(Cmd.WRITE, 0, 512, { payload: Buffer.alloc(512, 1) });
  client.request(Cmd.DISC, 0, 0);
  client.request(Cmd.READ, 0, 512); // after DISC: ignored
  await waitFor('held', () => e.held.heldCount === 1, 2000);
  e.held.release();
  assert.equal((await simple(client)).error, 0);
  await client.waitClosed();
  assert.equal(e.held.started, 1);
});

test('server close waits for in-flight requests and refuses new connections', async () => {
  const e = env();
  e.held.opts = { hold: true };
  const { client } = e.connect();
  await client.connect('held');
  const pending = e.connect().client;
  await pending.greeting();
  client.request(Cmd.FLUSH, 0, 0);
  await waitFor('held', () => e.held.heldCount === 1, 2000);
  let closed = false;
  const done = e.server.close().then(() => (closed = true));
  await pending.waitClosed();
  assert.equal(closed, false);
  e.held.release();
  assert.equal((await simple(client)).error, 0);
  await done;
  const late = e.connect().client;
  await late.waitClosed();
  assert.equal(e.server.refused, 1);
});

test('handshake timeout closes a silent client (on the injected clock)', async () => {
  const clock = new SimClock();
  const e = env({ handshake_timeout_ms: 1000 }, clock);
  const { client } = e.connect();
  await client.greeting();
  clock.runUntil(999);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(client.closed, false);
  clock.runUntil(1001);
  await client.waitClosed();
  assert.equal(e.logger.count((l) => l.fields.reason === 'handshake timed out'), 1);
});

test('a client that takes no replies for reply_stall_timeout_ms is dropped (injected clock)', async () => {
  const clock = new SimClock();
  const e = env({ reply_stall_timeout_ms: 5000 }, clock, 64 * 1024);
  const { client, clientEnd, serverEnd } = e.connect();
  await client.connect('mem');
  clientEnd.pauseReading();
  for (let i = 0; i < 8; i++) client.request(Cmd.READ, 0, 64 * 1024);
  await waitFor('replies backed up', () => serverEnd.pendingWriteBytes > 64 * 1024, 2000);
  clock.runUntil(4999);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(serverEnd.isClosed, false);
  clock.runUntil(5001);
  await waitFor('server dropped the client', () => serverEnd.isClosed, 2000);
  assert.equal(e.logger.count((l) => l.fields.reason === 'client stopped taking replies'), 1);
});

test('many connections to one export in parallel, each with its own region', async () => {
  const e = env();
  const clients = await Promise.all(
    Array.from({ length: 64 }, async (_, i) => {
      const { client } = e.connect();
      await client.connect('mem', { structured: i % 2 === 0 });
      return client;
    }),
  );
  assert.equal(e.server.connections.size, 64);
  await Promise.all(
    clients.map(async (c, i) => {
      const region = 16 * 1024;
      const data = Buffer.alloc(region, i + 1);
      for (let k = 0; k < 4; k++) c.request(Cmd.WRITE, i * region + k * 4096, 4096, { payload: data.subarray(k * 4096, (k + 1) * 4096) });
      for (let k = 0; k < 4; k++) assert.equal((await c.reply()).kind, 'simple');
      c.request(Cmd.READ, i * region, region);
      const r = await c.reply();
      const got = r.kind === 'simple' ? r.data : r.payload.subarray(8);
      assert.deepEqual(got, data);
      c.request(Cmd.DISC, 0, 0);
      await c.waitClosed();
    }),
  );
  await waitFor('all closed', () => e.server.connections.size === 0, 2000);
});

// ---- STARTTLS (the handshake is the in-memory stand-in of test/util/fake-tls.ts; real TLS
// with real clients is in tls.test.ts) ----

function tlsEnv(mode: TlsMode, clock?: SimClock): { server: NbdServer; logger: MemoryLogger; connect(): { client: WireClient; clientEnd: MemEnd; stream: FakeTlsStream } } {
  const logger = new MemoryLogger();
  const server = new NbdServer({ logger, tls: { mode, context: FAKE_SERVER_TLS }, ...(clock !== undefined ? { clock, limits: { handshake_timeout_ms: 1000 } } : {}) });
  server.addExport('mem', new MemBlockDevice({ size_bytes: 4 * MiB, dirty_context: 'rmr:dirty:1' }), 'memory');
  return {
    server,
    logger,
    connect: () => {
      const [c, s] = memStreamPair();
      const stream = new FakeTlsStream(s);
      server.accept(stream);
      return { client: new WireClient(c), clientEnd: c, stream };
    },
  };
}

async function startTls(client: WireClient): Promise<void> {
  client.sendOption(Opt.STARTTLS);
  const r = await client.optionReply();
  assert.equal(r.type, Rep.ACK, 'STARTTLS acknowledged');
  client.send(CLIENT_HELLO);
}

test('tls require: every option but STARTTLS and ABORT gets ERR_TLS_REQD; after TLS all work and a second STARTTLS is refused', async () => {
  const e = tlsEnv('require');
  const { client, stream } = e.connect();
  await client.greeting();
  flags(client);
  for (const [opt, data] of [
    [Opt.LIST, Buffer.alloc(0)],
    [Opt.INFO, goData('mem', [Info.NAME])],
    [Opt.GO, goData('mem')],
    [Opt.STRUCTURED_REPLY, Buffer.alloc(0)],
    [Opt.LIST_META_CONTEXT, metaData('mem', [])],
    [Opt.SET_META_CONTEXT, metaData('mem', ['base:allocation'])],
    [99, Buffer.from('junk')],
  ] as const) {
    client.sendOption(opt, data);
    const r = await client.optionReply();
    assert.equal(r.type, Rep.ERR_TLS_REQD, `option ${opt} before TLS`);
  }
  client.sendOption(Opt.STARTTLS, Buffer.from('x'));
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID, 'STARTTLS takes no data');
  assert.equal(stream.started, 0);
  await startTls(client);
  client.sendOption(Opt.LIST);
  assert.deepEqual((await client.optionReplies()).map((r) => r.type), [Rep.SERVER, Rep.ACK]);
  assert.equal(stream.established, 1);
  client.sendOption(Opt.STARTTLS);
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID, 'a second STARTTLS');
  assert.equal(stream.started, 1, 'no second upgrade was begun');
  // Structured replies, meta contexts and block status over TLS.
  const { size } = await client.connect('mem', { structured: true, contexts: ['base:allocation', 'rmr:dirty:1'], skipGreeting: true });
  assert.equal(size, 4 * MiB);
  const payload = Buffer.alloc(4096, 7);
  client.request(Cmd.WRITE, 8192, payload.length, { payload });
  assert.equal((await simple(client)).error, 0);
  client.request(Cmd.BLOCK_STATUS, 0, 64 * 1024);
  const chunks = await client.chunks();
  assert.equal(chunks.length, 2);
  assert.ok(chunks.every((c) => c.kind === 'chunk' && c.type === ReplyType.BLOCK_STATUS));
  client.request(Cmd.READ, 8192, 4096);
  const rd = await client.reply();
  assert.ok(rd.kind === 'chunk' && rd.type === ReplyType.OFFSET_DATA && rd.payload.subarray(8).equals(payload));
});

test('tls require: EXPORT_NAME before TLS closes without a reply; ABORT is acknowledged', async () => {
  const e = tlsEnv('require');
  const a = e.connect().client;
  await a.greeting();
  flags(a);
  a.sendOption(Opt.EXPORT_NAME, Buffer.from('mem'));
  await a.waitClosed();
  assert.equal(a.buffered, 0, 'no export info leaked');
  assert.equal(e.logger.count((l) => l.fields.reason === 'EXPORT_NAME before STARTTLS while TLS is required'), 1);
  const b = e.connect().client;
  await b.greeting();
  flags(b);
  b.sendOption(Opt.ABORT);
  assert.equal((await b.optionReply()).type, Rep.ACK);
  await b.waitClosed();
});

test('tls on: options work in clear; what was negotiated before STARTTLS is forgotten after it', async () => {
  const e = tlsEnv('on');
  const { client } = e.connect();
  await client.greeting();
  flags(client);
  client.sendOption(Opt.LIST);
  assert.equal((await client.optionReplies()).pop()?.type, Rep.ACK);
  client.sendOption(Opt.STRUCTURED_REPLY);
  assert.equal((await client.optionReply()).type, Rep.ACK);
  await startTls(client);
  // A man in the middle could have sent STRUCTURED_REPLY in clear: it no longer counts.
  client.sendOption(Opt.SET_META_CONTEXT, metaData('mem', ['base:allocation']));
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
  client.sendOption(Opt.STARTTLS);
  assert.equal((await client.optionReply()).type, Rep.ERR_INVALID);
  // And a plain client is served in 'on' mode.
  const plain = e.connect().client;
  const { size } = await plain.connect('mem');
  assert.equal(size, 4 * MiB);
});

test('STARTTLS hostile paths: bytes behind the request, junk for a ClientHello, a silent client, a stream without TLS', async () => {
  const clock = new SimClock();
  const e = tlsEnv('require', clock);
  // Early bytes: an option sent right behind STARTTLS, before the ACK (an injection).
  const a = e.connect();
  await a.client.greeting();
  flags(a.client);
  const opt = (o: number): Buffer => {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 'latin1');
    h.writeUInt32BE(o, 8);
    return h;
  };
  a.client.send(Buffer.concat([opt(Opt.STARTTLS), opt(Opt.LIST)]));
  await a.client.waitClosed();
  assert.equal(a.client.buffered, 0, 'not even the ACK');
  assert.equal(a.stream.started, 0);
  assert.equal(e.logger.count((l) => l.fields.reason === '16 bytes after STARTTLS ahead of the TLS handshake'), 1);
  // Junk instead of a ClientHello.
  const b = e.connect();
  await b.client.greeting();
  flags(b.client);
  b.client.sendOption(Opt.STARTTLS);
  assert.equal((await b.client.optionReply()).type, Rep.ACK);
  b.client.sendOption(Opt.LIST);
  await b.client.waitClosed();
  await waitFor('the failed handshake is logged', () => e.logger.count((l) => l.msg === 'nbd TLS handshake failed') === 1, 2000);
  // Silence after the ACK: the handshake timeout covers the TLS phase.
  const c = e.connect();
  await c.client.greeting();
  flags(c.client);
  c.client.sendOption(Opt.STARTTLS);
  assert.equal((await c.client.optionReply()).type, Rep.ACK);
  clock.runUntil(1001);
  await c.client.waitClosed();
  assert.equal(e.logger.count((l) => l.fields.reason === 'handshake timed out'), 1);
  // A stream that cannot do TLS is refused when TLS is required ...
  const [pc, ps] = memStreamPair();
  e.server.accept(ps);
  const p = new WireClient(pc);
  await p.waitClosed();
  assert.equal(e.server.refused, 1);
  // ... and served without TLS when it is optional.
  const on = tlsEnv('on');
  const [qc, qs] = memStreamPair();
  on.server.accept(qs);
  const q = new WireClient(qc);
  await q.greeting();
  flags(q);
  q.sendOption(Opt.STARTTLS);
  assert.equal((await q.optionReply()).type, Rep.ERR_UNSUP);
  await waitFor('connections gone', () => e.server.connections.size === 0, 2000);
});
