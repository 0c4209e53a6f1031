// Stores with damaged metadata on disk: add_store refuses a corrupt header with the reason;
// a damaged copy of pool_md or of the intent record is recovered from the other slot and
// said so; when both copies are damaged (not merely never written) the store is refused
// with a clear message, never used as if it had no metadata; a damaged map image makes every
// chunk dirty for this node (resynced, never read as clean).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServerPool, MD_POOL_OFFSET, MD_INTENT_OFFSET, MD_MAPS_OFFSET, type RecoveryReport, type ServerPoolEvent } from '../../src/rmr/server/server-pool.js';
import { memOpener, type MemDevice } from '../../src/brmr/server/backend.js';
import { StoreManager } from '../../src/brmr/server/store-manager.js';
import { HEADER_BYTES } from '../../src/brmr/server/header.js';
import type { BrmrStore } from '../../src/brmr/server/store.js';
import { MD_PAGE } from '../../src/rmr/server/md-slots.js';
import { mapBankBytes } from '../../src/rmr/server/map-store.js';
import { NodeRandom } from '../../src/node/ports.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { Errno } from '../../src/util/errno.js';

const CHUNK = 64 * 1024;
const SIZE = 16 * CHUNK;
const POOL = 'pool1';
/** Where RMR's metadata region starts in the store (header, then the data). */
const META = HEADER_BYTES + SIZE;

function node(devices: Map<string, MemDevice>) {
  const events: ServerPoolEvent[] = [];
  const pool = new ServerPool({ pool_name: POOL, group_id: 7, member_id: 1, chunk_size: CHUNK }, (ev) => events.push(ev));
  const log = new MemoryLogger();
  const mgr = new StoreManager({ open: memOpener(devices), random: new NodeRandom(), wall_ms: () => Date.now(), serverPool: () => pool, log, emit: () => undefined });
  return { pool, mgr, log, events };
}

type Res = [number, BrmrStore | null, string | null, RecoveryReport | undefined];

/** A store that was created, written, and had its metadata persisted twice (both slots hold copies). */
async function prepared(): Promise<{ devices: Map<string, MemDevice>; bytes: Buffer }> {
  const devices = new Map<string, MemDevice>();
  const n = node(devices);
  const [s] = await new Promise<Res>((r) => n.mgr.createStore({ pool: POOL, device: 'd', mapped_size: SIZE }, (a, b, c) => r([a, b, c, undefined])));
  assert.equal(s, 0);
  // Metadata equal to the stored copy is not written again (md-slots.ts), so the second
  // persist has something new to write: it lands in the other slot.
  n.pool.ownMap()?.setDirty(2, 1);
  for (let i = 0; i < 2; i++) {
    n.pool.map_ver++;
    assert.equal(await new Promise<number>((r) => n.pool.persistMetadata(r)), 0);
  }
  await new Promise<void>((r) => n.mgr.removeStore(POOL, () => r()));
  return { devices, bytes: (devices.get('d') as MemDevice).bytes };
}

async function add(devices: Map<string, MemDevice>) {
  const n = node(devices);
  const res = await new Promise<Res>((r) => n.mgr.addStore({ pool: POOL, device: 'd' }, (a, b, c, d) => r([a, b, c, d])));
  return { n, res };
}

/** Overwrites a metadata slot page with bytes that are not a valid record (and not blank). */
function damage(bytes: Buffer, at: number): void {
  bytes[at + 30] = (bytes[at + 30] as number) ^ 0xff;
}

test('a corrupt store header: add_store refuses it with the reason; nothing is registered', async () => {
  const { devices, bytes } = await prepared();
  bytes[200] = (bytes[200] as number) ^ 1;
  const { n, res } = await add(devices);
  assert.equal(res[0], Errno.EBADMSG);
  assert.match(res[2] ?? '', /^d: store header invalid: /);
  assert.equal(n.pool.state, 'EMPTY');
  bytes.fill(0, 0, HEADER_BYTES);
  const again = await add(devices);
  assert.equal(again.res[0], Errno.ENOENT);
  assert.match(again.res[2] ?? '', /holds no BRMR store/);
});

test('the newest pool_md copy damaged: recovered from the other slot, and the log says so', async () => {
  const { devices, bytes } = await prepared();
  // Both slots hold a record: damage the one with the higher sequence number.
  const seqOf = (s: number): number => bytes.readUInt32LE(META + MD_POOL_OFFSET + s * MD_PAGE + 8);
  const newest = seqOf(0) > seqOf(1) ? 0 : 1;
  damage(bytes, META + MD_POOL_OFFSET + newest * MD_PAGE);
  const { n, res } = await add(devices);
  assert.equal(res[0], 0, res[2] ?? '');
  assert.equal(res[3]?.found, true);
  assert.deepEqual(res[3]?.md_notes, [`pool_md slot ${newest}: checksum mismatch`]);
  assert.equal(n.log.count((l) => l.level === 'warn' && /recovered from the other copy/.test(l.msg) && /pool_md slot/.test(String(l.fields.notes))), 1);
});

test('both pool_md copies damaged: the store is refused, not taken as one without metadata', async () => {
  const { devices, bytes } = await prepared();
  damage(bytes, META + MD_POOL_OFFSET);
  damage(bytes, META + MD_POOL_OFFSET + MD_PAGE);
  const { n, res } = await add(devices);
  assert.equal(res[0], Errno.EBADMSG);
  assert.match(res[2] ?? '', /RMR metadata not restored: pool metadata damaged in both copies \(pool_md slot 0: checksum mismatch; pool_md slot 1: checksum mismatch\)/);
  assert.equal(n.pool.state, 'EMPTY');
});

test('never-written metadata (blank slots) is a store without metadata, not damage', async () => {
  const { devices, bytes } = await prepared();
  bytes.fill(0, META + MD_POOL_OFFSET, META + MD_POOL_OFFSET + 2 * MD_PAGE);
  const { res } = await add(devices);
  assert.equal(res[0], 0, res[2] ?? '');
  assert.equal(res[3]?.found, false);
});

test('one damaged pool_md copy beside a blank one (a first write torn by a crash): taken as never written, and said so', async () => {
  const { devices, bytes } = await prepared();
  bytes.fill(0, META + MD_POOL_OFFSET + MD_PAGE, META + MD_POOL_OFFSET + 2 * MD_PAGE);
  damage(bytes, META + MD_POOL_OFFSET);
  const { n, res } = await add(devices);
  assert.equal(res[0], 0, res[2] ?? '');
  assert.equal(res[3]?.found, false);
  assert.deepEqual(res[3]?.md_notes, ['pool_md slot 0: checksum mismatch']);
  assert.equal(n.log.count((l) => l.level === 'warn' && /torn first write/.test(l.msg)), 1);
});

test('both intent record copies damaged: refused (a lost record would hide writes not on every member)', async () => {
  const { devices, bytes } = await prepared();
  for (let s = 0; s < 2; s++) bytes.fill(0x5a, META + MD_INTENT_OFFSET + s * MD_PAGE, META + MD_INTENT_OFFSET + s * MD_PAGE + 64);
  const { n, res } = await add(devices);
  assert.equal(res[0], Errno.EBADMSG);
  assert.match(res[2] ?? '', /intent record damaged in both copies \(intent slot 0: bad magic; intent slot 1: bad magic\)/);
  assert.equal(n.pool.state, 'EMPTY');
});

test('a damaged map image: every chunk becomes dirty for this node, with the reason', async () => {
  const { devices, bytes } = await prepared();
  // Damage the start of both banks after the map directory: the live one among them.
  const bank = mapBankBytes(1);
  for (const b of [0, 1]) {
    const from = META + MD_MAPS_OFFSET + 2 * MD_PAGE + b * bank;
    for (let at = from; at < from + 8192; at += 97) bytes[at] = (bytes[at] as number) ^ 0x55;
  }
  const { n, res } = await add(devices);
  assert.equal(res[0], 0, res[2] ?? '');
  assert.match(res[3]?.maps_lost ?? '', /checksum|map/i);
  assert.equal(n.pool.ownMap()?.dirtyCount, SIZE / CHUNK, 'all chunks dirty: resynced, never read as clean');
  // Said loudly (issue 19 item 3): an error line, an event, and the pool's status.
  assert.equal(n.log.count((l) => l.level === 'error' && /without usable maps/.test(l.msg)), 1);
  assert.deepEqual(n.events.filter((e) => e.kind === 'maps_lost').map((e) => e.kind === 'maps_lost' && e.member_id), [1]);
  assert.match(n.pool.maps_lost ?? '', /checksum|map/i);
});

test('stored maps intact: no maps_lost status, event or error line', async () => {
  const { devices } = await prepared();
  const { n, res } = await add(devices);
  assert.equal(res[0], 0, res[2] ?? '');
  assert.equal(n.pool.maps_lost, null);
  assert.equal(n.events.filter((e) => e.kind === 'maps_lost').length, 0);
  assert.equal(n.log.count((l) => l.level === 'error'), 0);
});
