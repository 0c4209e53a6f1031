// Kernel-sized IO (issue 22): the NBD export of a BRMR device advertises a 32 MiB maximum
// payload in NBD_INFO_BLOCK_SIZE and serves requests that large although the RMR pool takes
// 1 MiB IOs (the transport's negotiated max_io_size): the server splits them. The stack is
// the whole in-process data path over the real transport on loopback (two storage nodes
// with memory stores); first a raw NBD client over a memory stream, then real clients
// (nbdinfo, qemu-io, nbdsh) over TCP and a Unix socket. After each, both members hold the
// same bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { Cmd, CmdFlag, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, Info, NbdErr, Opt, Rep, ReplyType, readU64 } from '../../src/nbd/proto.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { makeBrmrCluster, type BrmrCluster } from '../util/brmr-cluster.js';
import { memStreamPair } from '../util/mem-stream.js';
import { WireClient, goData } from '../util/nbd-wire-client.js';
import { checkInfo, runOk, tempDir, serveExport, type ServedExport } from '../util/nbd-checks.js';
import { DATA_OFFSET } from '../../src/brmr/server/header.js';

const MiB = 1 << 20;
const SIZE = 64 * MiB;
const BIG = 32 * MiB;
let cluster: BrmrCluster;
let served: ServedExport | undefined;
const logger = new MemoryLogger();
let dir = '';
const tcpUri = (): string => (served as ServedExport).tcpUri();
const unixUri = (): string => (served as ServedExport).unixUri();

/**
 * The two members hold the same bytes, compared where they lie (no copies: copying both
 * stores blocked this process for over a second on a loaded machine, past the test pool's
 * 1 s heartbeat timeout, and both legs failed).
 */
async function identical(what: string): Promise<void> {
  await cluster.waitSynced();
  const [a, b] = [0, 1].map((i) => store(i));
  if (a === undefined || b === undefined || !a.equals(b)) {
    let i = 0;
    while (a !== undefined && b !== undefined && i < a.length && a[i] === b[i]) i++;
    assert.fail(`${what}: the members differ first at device byte ${i}`);
  }
}

/** Member i's data area, in place. */
function store(i: number): Buffer {
  const node = cluster.nodes[i];
  const dev = node === undefined ? undefined : cluster.mem_devices.get(node.path);
  assert.ok(dev !== undefined, `memory store of member ${i + 1}`);
  return dev.bytes.subarray(DATA_OFFSET, DATA_OFFSET + SIZE);
}

/** `bytes` of a pattern that does not repeat at any power-of-two period (made natively, fast). */
function pattern(bytes: number, seed: number): Buffer {
  const unit = Buffer.alloc(4093);
  for (let i = 0; i < unit.length; i++) unit[i] = (i * 131 + seed * 17 + (i >> 8)) & 0xff;
  return Buffer.alloc(bytes, unit);
}

before(async () => {
  dir = await tempDir('nbd-large-');
  cluster = await makeBrmrCluster({ nodes: 2, backend: 'memory', transport: 'loopback', size_bytes: SIZE, chunk_size: 256 * 1024, queue_depth: 128 });
  await cluster.waitSynced();
  assert.ok(cluster.device !== null, 'the device is mapped');
  served = await serveExport('rmr', cluster.device, 'replicated over 2 storage nodes', dir, logger);
});

after(async () => {
  await served?.close();
  await cluster?.close();
  await rm(dir, { recursive: true, force: true });
});

test('handshake: NBD_INFO_BLOCK_SIZE says 512 / 256 KiB / 32 MiB over a pool of 1 MiB IOs; a 32 MiB write and read go through in pieces', async () => {
  const dev = cluster.device;
  assert.ok(dev !== null);
  assert.equal(dev.block_sizes.maximum, MiB, 'the pool takes 1 MiB IOs (the transport\'s max_io_size)');
  const [c, s] = memStreamPair();
  (served as ServedExport).server.accept(s);
  const client = new WireClient(c);
  assert.equal(await client.greeting(), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 0);
  client.send(flags);
  client.sendOption(Opt.INFO, goData('rmr', [Info.BLOCK_SIZE]));
  const info = await client.optionReplies();
  const bs = info.find((r) => r.type === Rep.INFO && r.data.readUInt16BE(0) === Info.BLOCK_SIZE)?.data;
  assert.ok(bs !== undefined, 'NBD_INFO_BLOCK_SIZE sent');
  assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [512, 256 * 1024, BIG]);
  await client.connect('rmr', { structured: true, skipGreeting: true });

  const data = pattern(BIG, 1);
  const writes = dev.stats.writes;
  client.request(Cmd.WRITE, 8 * MiB, BIG, { payload: data, flags: CmdFlag.FUA });
  const w = await client.reply(30_000);
  assert.ok(w.kind === 'simple' && w.error === 0, 'the 32 MiB FUA write succeeds');
  assert.equal(dev.stats.writes - writes, 32, 'the device got 32 writes of 1 MiB');
  const reads = dev.stats.reads;
  client.request(Cmd.READ, 8 * MiB, BIG, { flags: CmdFlag.DF });
  const chunks = await client.chunks(30_000);
  assert.equal(chunks.length, 1, 'one OFFSET_DATA chunk');
  const [r] = chunks;
  assert.ok(r?.kind === 'chunk' && r.type === ReplyType.OFFSET_DATA);
  assert.equal(readU64(r.payload, 0), 8 * MiB);
  assert.ok(r.payload.subarray(8).equals(data), 'read back what was written');
  assert.equal(dev.stats.reads - reads, 32);
  assert.ok(store(0).subarray(8 * MiB, 8 * MiB + BIG).equals(data), 'member 1 holds the data');
  await identical('32 MiB write');

  // Above the advertised maximum: refused as the spec says, the connection stays usable.
  client.request(Cmd.READ, 0, BIG + 512);
  const [over] = await client.chunks();
  assert.ok(over?.kind === 'chunk' && over.type === ReplyType.ERROR && over.payload.readUInt32BE(0) === NbdErr.EOVERFLOW);
  client.request(Cmd.WRITE, 0, BIG + 512, { payload: Buffer.alloc(BIG + 512, 0xee) });
  const wo = await client.reply(30_000);
  assert.ok(wo.kind === 'simple' && wo.error === NbdErr.EINVAL);
  assert.ok(!store(0).subarray(0, 512).includes(0xee), 'the refused write changed nothing');
  client.request(Cmd.READ, 8 * MiB, 512);
  const [after_] = await client.chunks();
  assert.ok(after_?.kind === 'chunk' && after_.type === ReplyType.OFFSET_DATA && after_.payload.subarray(8).equals(data.subarray(0, 512)), `still in sync: ${JSON.stringify(after_).slice(0, 300)}`);
  client.request(Cmd.DISC, 0, 0);
  await client.waitClosed();
});

test('nbdinfo shows the block size constraints; qemu-io writes and reads back 32 MiB in one request (TCP); members identical', async () => {
  const e = await checkInfo(tcpUri(), { size_bytes: SIZE, writable: true });
  assert.deepEqual([e.block_size_minimum, e.block_size_preferred, e.block_size_maximum], [512, 256 * 1024, BIG]);
  const r = await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 32M', '-c', 'read -P 0x5a 0 32M', '-c', 'write -P 0xa5 32M 32M', '-c', 'read -P 0xa5 32M 32M', '-c', 'read -P 0x5a 0 32M', tcpUri()], 120_000);
  assert.match(r.stdout, /wrote 33554432\/33554432 bytes at offset 0\n/);
  assert.match(r.stdout, /read 33554432\/33554432 bytes at offset 33554432\n/);
  assert.doesNotMatch(r.stdout + r.stderr, /Pattern verification failed|error/i);
  await identical('qemu-io 32M');
});

test('nbdsh (libnbd) over the Unix socket: 32 MiB pwrite and pread with FUA; one byte more is refused with EINVAL / EOVERFLOW', async () => {
  const script = `
import json
h.set_strict_mode(0)
h.connect_uri(${JSON.stringify(unixUri())})
out = {"max": h.get_block_size(nbd.SIZE_MAXIMUM)}
buf = bytes(((i * 7) & 0xff) for i in range(256)) * (${BIG} // 256)
h.pwrite(buf, ${16 * MiB}, nbd.CMD_FLAG_FUA)
out["same"] = h.pread(${BIG}, ${16 * MiB}) == buf
def code(f):
    try:
        f()
        return "ok"
    except nbd.Error as e:
        return e.errno
out["read_over"] = code(lambda: h.pread(${BIG + 512}, 0))
out["write_over"] = code(lambda: h.pwrite(b"x" * ${BIG + 512}, 0))
out["read_after"] = code(lambda: h.pread(512, 0))
h.shutdown()
print(json.dumps(out))
`;
  const r = await runOk('nbdsh', ['-c', script], 120_000);
  const got = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
  assert.deepEqual(got, { max: BIG, same: true, read_over: 'EOVERFLOW', write_over: 'EINVAL', read_after: 'ok' });
  await identical('nbdsh 32M');
  assert.equal(logger.count((l) => l.level === 'error'), 0, 'no device contract errors');
});
