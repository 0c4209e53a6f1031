// brmr-server's store manager on file and memory backends: create, restart and add, the
// identity checks of add_store, replace, remove and delete, and a backend error taking the
// store and its pool out of service.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { memOpener, type MemDevice, type BackendOpener } from '../../src/brmr/server/backend.js';
import { nodeFileOpener } from '../../src/node/file-backend.js';
import { StoreManager, storeMetaBytes, type StoreManagerEvent } from '../../src/brmr/server/store-manager.js';
import { HEADER_BYTES, STATE_BLANK, STATE_MAPPED, STATE_NEED_SYNC, decodeHeader, hasHeaderMagic, uuidText } from '../../src/brmr/server/header.js';
import type { BrmrStore } from '../../src/brmr/server/store.js';
import { decodeAnswer, encodeRequest, BRMR_RSP_MAX } from '../../src/brmr/msg.js';
import { defaultParams } from '../../src/brmr/params.js';
import { NodeRandom } from '../../src/node/ports.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { Errno } from '../../src/util/errno.js';
import type { RecoveryReport } from '../../src/rmr/server/server-pool.js';

const CHUNK = 64 * 1024;
const SIZE = 16 * CHUNK;
const POOL = 'pool1';

interface Node {
  pool: ServerPool;
  mgr: StoreManager;
  events: StoreManagerEvent[];
  log: MemoryLogger;
}

function node(open: BackendOpener, member_id = 1, pool_name = POOL): Node {
  const pool = new ServerPool({ pool_name, group_id: 7, member_id, chunk_size: CHUNK }, () => undefined);
  const events: StoreManagerEvent[] = [];
  const log = new MemoryLogger();
  const mgr = new StoreManager({ open, random: new NodeRandom(), wall_ms: () => Date.now(), serverPool: (n) => (n === pool_name ? pool : undefined), log, emit: (e) => events.push(e) });
  return { pool, mgr, events, log };
}

type Res = [number, BrmrStore | null, string | null, RecoveryReport | undefined];
const create = (n: Node, device: string, extra: { mapped_size?: number; pool?: string; pool_uuid?: Buffer } = {}) =>
  new Promise<Res>((r) => n.mgr.createStore({ pool: extra.pool ?? POOL, device, mapped_size: extra.mapped_size ?? SIZE, pool_uuid: extra.pool_uuid }, (s, st, why) => r([s, st, why, undefined])));
const add = (n: Node, device: string, extra: Partial<Parameters<StoreManager['addStore']>[0]> = {}) =>
  new Promise<Res>((r) => n.mgr.addStore({ pool: POOL, device, ...extra }, (s, st, why, rep) => r([s, st, why, rep])));
const remove = (n: Node) => new Promise<[number, string | null]>((r) => n.mgr.removeStore(POOL, (s, why) => r([s, why])));
const del = (n: Node) => new Promise<[number, string | null]>((r) => n.mgr.deleteStore(POOL, (s, why) => r([s, why])));
const cmd = (st: BrmrStore, bytes: Buffer) => new Promise<[number, Buffer | null]>((r) => st.submitCmd(bytes, BRMR_RSP_MAX, (s, b) => r([s, b])));

for (const kind of ['file', 'memory'] as const) {
  const setup = (t: { after: (fn: () => void) => void }) => {
    const dir = mkdtempSync(join(tmpdir(), 'brmr-sm-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const devices = new Map<string, MemDevice>();
    const open = kind === 'file' ? nodeFileOpener : memOpener(devices);
    const raw = (path: string): Buffer => (kind === 'file' ? readFileSync(path) : (devices.get(path) as MemDevice).bytes);
    return { dir, open, raw, devices };
  };

  test(`${kind}: create_store, restart, add_store restores the store and RMR's maps`, async (t) => {
    const { dir, open, raw } = setup(t);
    const path = join(dir, 'a.img');
    const n1 = node(open);
    const [s, st, why] = await create(n1, path);
    assert.equal(s, 0, why ?? '');
    assert.ok(st !== null);
    assert.equal(n1.pool.state, 'REGISTERED');
    assert.equal(st.stateText(), 'open unmapped');
    assert.equal(st.ioAllowed(), false, 'not mapped yet');
    const img = raw(path);
    assert.equal(img.length, HEADER_BYTES + SIZE + storeMetaBytes(SIZE, CHUNK), 'a new file is sized to fit exactly');
    const h = decodeHeader(img.subarray(0, HEADER_BYTES));
    if (typeof h === 'string') assert.fail(h);
    assert.equal(h.pool_name, POOL);
    assert.equal(h.member_id, 1);
    assert.ok(h.store_uuid.equals(st.header.store_uuid));
    // Data IO lands at byte 4096; RMR's metadata persists after the data.
    assert.equal(await new Promise<number>((r) => st.write(0, Buffer.alloc(4096, 0x5a), true, r)), 0);
    assert.equal(raw(path)[HEADER_BYTES], 0x5a);
    n1.pool.ownMap()?.setDirty(3, 2);
    assert.equal(await new Promise<number>((r) => n1.pool.persistMetadata(r)), 0);
    // GET_PARAMS answers from the device; MAP marks it mapped (persisted).
    const [gs, gb] = await cmd(st, encodeRequest({ cmd: 'GET_PARAMS' }));
    assert.equal(gs, 0);
    const ga = decodeAnswer(gb as Buffer, 'GET_PARAMS');
    assert.ok(typeof ga !== 'string' && ga.info !== null);
    assert.equal(ga.info.mapped, false);
    assert.equal(ga.info.mapped_size, SIZE);
    const pool_uuid = Buffer.alloc(16, 0x42);
    const [ms, mb] = await cmd(st, encodeRequest({ cmd: 'MAP', mapped_size: SIZE, pool_uuid, params: defaultParams() }));
    assert.equal(ms, 0);
    assert.deepEqual(decodeAnswer(mb as Buffer, 'MAP'), { cmd: 'MAP', status: 0, reason: '', info: null });
    assert.equal(st.ioAllowed(), true);
    const [, bad] = await cmd(st, encodeRequest({ cmd: 'MAP', mapped_size: SIZE * 2, pool_uuid, params: defaultParams() }));
    const badA = decodeAnswer(bad as Buffer, 'MAP');
    assert.ok(typeof badA !== 'string' && badA.status === Errno.EINVAL && /mapped size/.test(badA.reason));
    const [, un] = await cmd(st, encodeRequest({ cmd: 'UNMAP', rollback: false }));
    assert.ok(typeof decodeAnswer(un as Buffer, 'UNMAP') !== 'string');
    assert.equal(st.mapped, true, 'UNMAP keeps MAPPED (the store holds the device data)');
    const store_uuid = st.header.store_uuid;
    assert.deepEqual(await remove(n1), [0, null]);
    assert.equal(n1.pool.state, 'EMPTY');
    // "Restart": a new server pool and manager; add_store with every identity given.
    const n2 = node(open);
    const [as, ast, awhy, rep] = await add(n2, path, { pool_uuid, store_uuid, mapped_size: SIZE });
    assert.equal(as, 0, awhy ?? '');
    assert.ok(ast !== null && rep !== undefined);
    assert.equal(rep.found, true);
    assert.equal(rep.maps_lost, null);
    assert.equal(n2.pool.ownMap()?.dirtyCount, 2, 'the dirty map came back from the store');
    assert.equal(ast.stateText(), 'open mapped');
    assert.ok(n2.events.some((e) => e.kind === 'store_added' && e.mode === 'add' && e.store_uuid === uuidText(store_uuid)));
    const [rs, rd] = await new Promise<[number, Buffer | null]>((r) => ast.read(0, 4096, (s2, d) => r([s2, d])));
    assert.equal(rs, 0);
    assert.deepEqual(rd, Buffer.alloc(4096, 0x5a));
    assert.deepEqual(await remove(n2), [0, null]);
  });

  test(`${kind}: create_store refuses a device with a header; add_store refuses strangers with the reason`, async (t) => {
    const { dir, open } = setup(t);
    const path = join(dir, 'b.img');
    const n1 = node(open);
    const [s1, st] = await create(n1, path, { pool_uuid: Buffer.alloc(16, 1) });
    assert.equal(s1, 0);
    const uuid1 = (st as BrmrStore).header.store_uuid;
    assert.deepEqual(await remove(n1), [0, null]);
    const n2 = node(open);
    const [s2, , why2] = await create(n2, path);
    assert.equal(s2, Errno.EEXIST);
    assert.match(why2 ?? '', /already holds the store of pool pool1/);
    assert.equal(n2.pool.state, 'EMPTY', 'nothing registered');
    // Wrong pool name: a node of another pool.
    const other = node(open, 1, 'pool2');
    const [s3, , why3] = await new Promise<Res>((r) => other.mgr.addStore({ pool: 'pool2', device: path }, (s, x, w) => r([s, x, w, undefined])));
    assert.equal(s3, Errno.EINVAL);
    assert.match(why3 ?? '', /belongs to pool 'pool1', not 'pool2'/);
    // Wrong pool UUID.
    const [s4, , why4] = await add(n2, path, { pool_uuid: Buffer.alloc(16, 2) });
    assert.equal(s4, Errno.EINVAL);
    assert.match(why4 ?? '', /pool UUID differs/);
    // Another member's disk.
    const [s5, , why5] = await add(node(open, 2), path);
    assert.equal(s5, Errno.EINVAL);
    assert.match(why5 ?? '', /member 1's, this node is member 2/);
    // A re-created store presented as the old one: delete, create again, add with the old UUID.
    assert.equal((await add(n2, path))[0], 0);
    assert.deepEqual(await del(n2), [0, null]);
    const n3 = node(open);
    const [s6, st6] = await create(n3, path);
    assert.equal(s6, 0, 'a deleted store leaves a device create_store accepts');
    assert.ok(!(st6 as BrmrStore).header.store_uuid.equals(uuid1), 'with a new store UUID');
    assert.deepEqual(await remove(n3), [0, null]);
    const [s7, , why7] = await add(node(open), path, { store_uuid: uuid1 });
    assert.equal(s7, Errno.EINVAL);
    assert.match(why7 ?? '', /store UUID differs/);
    // No header at all.
    const [s8, , why8] = await add(node(open), join(dir, 'absent.img'));
    assert.notEqual(s8, 0);
    assert.ok(why8 !== null);
  });

  test(`${kind}: delete_store refuses a store its pool's other members count on, naming them; force deletes it; after del_sess delete (LEAVE_POOL delete) it goes`, async (t) => {
    const { dir, open, raw } = setup(t);
    const path = join(dir, 'live.img');
    const n = node(open);
    const [s1] = await create(n, path);
    assert.equal(s1, 0);
    // The create-mode join of a two-member pool: member 2 counts on this copy.
    assert.equal(n.pool.join({ sync: false, create: true, dirty: false, chunk_size: CHUNK, members: [{ id: 2, dirty: false }] }), null);
    const [s2, why2] = await del(n);
    assert.equal(s2, Errno.EBUSY, 'a live member is not deleted');
    assert.match(why2 ?? '', /live member.*compute client joined/);
    // The client leaves without deleting (disassemble): member 2 still counts on it.
    assert.equal(n.pool.leave(1, false), null);
    const [s3, why3] = await del(n);
    assert.equal(s3, Errno.EBUSY);
    assert.match(why3 ?? '', /beside member\(s\) 2/);
    assert.ok(hasHeaderMagic(raw(path)), 'nothing wiped');
    // force: deleted anyway, with a warning.
    const [s4, why4] = await new Promise<[number, string | null]>((r) => n.mgr.deleteStore(POOL, (s, w) => r([s, w]), true));
    assert.equal(s4, 0, why4 ?? '');
    assert.ok(!hasHeaderMagic(raw(path)), 'wiped');
    assert.ok(n.log.lines.some((l) => /delete_store forced/.test(l.msg)));
    // The documented order: del_sess mode=delete (LEAVE_POOL with delete) first, then delete_store.
    const path2 = join(dir, 'live2.img');
    const m = node(open);
    assert.equal((await create(m, path2))[0], 0);
    assert.equal(m.pool.join({ sync: false, create: true, dirty: false, chunk_size: CHUNK, members: [{ id: 2, dirty: false }] }), null);
    assert.equal(m.pool.leave(1, true), null);
    assert.deepEqual(await del(m), [0, null]);
  });

  test(`${kind}: delete_store wipes header and metadata; replace writes a fresh mapped store that needs a full resync`, async (t) => {
    const { dir, open, raw } = setup(t);
    const path = join(dir, 'c.img');
    const n1 = node(open);
    const [s1, st] = await create(n1, path);
    assert.equal(s1, 0);
    const meta_offset = (st as BrmrStore).header.meta_offset;
    assert.equal(await new Promise<number>((r) => n1.pool.persistMetadata(r)), 0);
    assert.ok(raw(path).subarray(meta_offset).some((x) => x !== 0), 'metadata was written');
    assert.deepEqual(await del(n1), [0, null]);
    const img = raw(path);
    assert.ok(!hasHeaderMagic(img), 'header wiped');
    assert.ok(img.subarray(meta_offset).every((x) => x === 0), 'metadata region wiped');
    assert.ok(n1.events.some((e) => e.kind === 'store_removed' && e.deleted));
    // Replace: an empty disk takes member 1's place.
    const pool_uuid = Buffer.alloc(16, 9);
    const n2 = node(open);
    const [s2, , why2] = await add(n2, path, { mode: 'replace' });
    assert.equal(s2, Errno.EINVAL);
    assert.match(why2 ?? '', /pool UUID/);
    const [s3, st3, why3] = await add(n2, join(dir, 'new.img'), { mode: 'replace', pool_uuid, mapped_size: SIZE });
    assert.equal(s3, 0, why3 ?? '');
    const h = (st3 as BrmrStore).header;
    assert.equal(h.state, STATE_MAPPED | STATE_NEED_SYNC);
    assert.ok(h.pool_uuid.equals(pool_uuid));
    assert.equal(n2.pool.ownMap()?.isFull(), true, 'every chunk dirty for this member');
    assert.ok(n2.events.some((e) => e.kind === 'store_need_full_resync' && e.member_id === 1));
    assert.equal(n2.pool.marked_create, false, 'the member comes back through its rejoin, not a create join');
    assert.equal(n2.pool.discarded.has(1), true, 'flagged until every peer holds it fully dirty');
    assert.equal(n2.pool.pool_md?.srv_md.find((x) => x.member_id === 1)?.discard_entries, true, 'the flag is persisted');
    assert.deepEqual(await remove(n2), [0, null]);
    // Replace refuses a disk that holds a store.
    const [s4, , why4] = await add(node(open), join(dir, 'new.img'), { mode: 'replace', pool_uuid, mapped_size: SIZE });
    assert.equal(s4, Errno.EEXIST);
    assert.match(why4 ?? '', /empty disk/);
  });
}

test('create_store refuses a device too small; a backend error closes the store and takes the pool out of IO', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'brmr-sm-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const small = join(dir, 'small.img');
  writeFileSync(small, Buffer.alloc(SIZE));
  const n0 = node(nodeFileOpener);
  const [s0, , why0] = await new Promise<Res>((r) => n0.mgr.createStore({ pool: POOL, device: small, mapped_size: SIZE, device_size: 1 }, (s, x, w) => r([s, x, w, undefined])));
  assert.equal(s0, Errno.ENOSPC);
  assert.match(why0 ?? '', /need/);
  const devices = new Map<string, MemDevice>();
  const n = node(memOpener(devices));
  const [s1, st] = await create(n, 'mem0');
  assert.equal(s1, 0);
  const store = st as BrmrStore;
  // Join and enable the pool as a client would, and map the store.
  assert.equal(n.pool.join({ sync: false, create: true, dirty: false, chunk_size: CHUNK, members: [] }), null);
  assert.equal(n.pool.enable(true), null);
  await cmd(store, encodeRequest({ cmd: 'MAP', mapped_size: SIZE, pool_uuid: Buffer.alloc(16, 3), params: defaultParams() }));
  assert.equal(store.ioAllowed(), true);
  (devices.get('mem0') as MemDevice).bad_write_ranges.push({ offset: 4096, length: 4096 });
  const io = { offset: 0, length: 4096, flags: 1, map_ver: 1, prio: 0, member_id: 1, failed_cnt: 0, failed_ids: Buffer.alloc(4), sync: 0, seq: 0, settled: 0 };
  const status = await new Promise<number>((r) => n.pool.handleIo(io, Buffer.alloc(4096, 1), false, (s) => r(s)));
  assert.equal(status, Errno.EIO);
  assert.equal(store.open, false, 'the store is unusable');
  assert.equal(store.failed_status, Errno.EIO);
  assert.equal(store.ioAllowed(), false);
  assert.equal(n.pool.state, 'NO_IO', 'the pool left IO service');
  assert.ok(n.events.some((e) => e.kind === 'store_failed' && e.op === 'write'));
  assert.equal(n.log.count((l) => l.level === 'error' && /store IO failed/.test(l.msg)), 1);
  const [gs, gb] = await cmd(store, encodeRequest({ cmd: 'GET_PARAMS' }));
  assert.equal(gs, 0);
  const ga = decodeAnswer(gb as Buffer, 'GET_PARAMS');
  assert.ok(typeof ga !== 'string' && ga.status === Errno.EIO && /failed/.test(ga.reason), 'commands report the failure');
  assert.deepEqual(await remove(n), [0, null], 'a failed store can be removed');
});

test('a store created on a file this open made is blank until its first write: the bit is cleared on disk before the data is written', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'brmr-blank-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const n = node(nodeFileOpener);
  const path = join(dir, 'fresh.img');
  const [s, st, why] = await create(n, path);
  assert.equal(s, 0, why ?? '');
  const store = st as BrmrStore;
  const headerState = (): number => {
    const h = decodeHeader(readFileSync(path).subarray(0, HEADER_BYTES));
    if (typeof h === 'string') assert.fail(h);
    return h.state;
  };
  assert.notEqual(headerState() & STATE_BLANK, 0, 'blank on disk');
  assert.equal(store.registered().blank?.(), true);
  // Two writes at once: one header write clears the bit, both wait for it.
  const w = (off: number): Promise<number> => new Promise((r) => store.write(off, Buffer.alloc(4096, 9), false, r));
  assert.deepEqual(await Promise.all([w(0), w(8192)]), [0, 0]);
  assert.equal(headerState() & STATE_BLANK, 0, 'cleared on disk');
  assert.equal(store.registered().blank?.(), false);
  assert.equal((await remove(n))[0], 0);

  // A file that held something (taken with force) is not known to be zeroes.
  const used = join(dir, 'used.img');
  writeFileSync(used, Buffer.alloc(8192, 1));
  const m = node(nodeFileOpener);
  const [s2, st2, why2] = await new Promise<Res>((r) => m.mgr.createStore({ pool: POOL, device: used, mapped_size: SIZE, force: true }, (a, b, c) => r([a, b, c, undefined])));
  assert.equal(s2, 0, why2 ?? '');
  assert.equal((st2 as BrmrStore).registered().blank?.(), false);
  assert.equal((await remove(m))[0], 0);
});
