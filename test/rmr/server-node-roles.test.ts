// Commands authorised by the sender's role (security review, finding 11: with one shared
// secret any session could send every command). With per-node identities a storage node's
// sync session cannot send a compute client's messages (join a pool as its client, write,
// MAP_ADD) and a compute client cannot send a storage peer's (sync IO, MAP_CLEAR, sync
// commands); a node holding both roles may send both; without identities nothing changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RmrServerNode, ROLE_CLIENT, ROLE_STORAGE } from '../../src/rmr/server/server-node.js';
import { ServerPool } from '../../src/rmr/server/server-pool.js';
import { CmdType, IoOp, encodeCmd, encodeIo, encodeMapAdd, encodeMapClear } from '../../src/rmr/protocol/msg.js';
import type { ServerRequest, ServerSession } from '../../src/transport/server.js';
import { SimClock } from '../../src/sim/sim-clock.js';
import { MemDisk } from '../../src/sim/mem-disk.js';
import { MemoryLogger } from '../util/memory-logger.js';
import { Errno } from '../../src/util/errno.js';

const CHUNK = 65536;
const SIZE = 16 * CHUNK;

function setup() {
  const clock = new SimClock();
  const pool = new ServerPool({ pool_name: 'p', group_id: 42, member_id: 1, chunk_size: CHUNK }, () => undefined);
  assert.equal(pool.register({ block: new MemDisk(SIZE, clock), meta: new MemDisk(1 << 20, clock), meta_base: 0, ioAllowed: () => true }, 'create', SIZE), null);
  const log = new MemoryLogger();
  const node = new RmrServerNode(log);
  node.addPool(pool);
  return { clock, pool, node, log };
}

function session(name: string, peer: { name: string; roles: string[] } | null): ServerSession {
  return { name, peer } as unknown as ServerSession;
}

function send(node: RmrServerNode, clock: SimClock, s: ServerSession, user_hdr: Buffer, kind: 'read' | 'write', data = Buffer.alloc(0), read_len = 4096): number {
  const answers: number[] = [];
  const req: ServerRequest = { session: s, kind, id: 1, user_hdr, data, read_len, respond: (status: number) => void answers.push(status) };
  node.onRequest(req);
  clock.runUntil(clock.now() + 10);
  assert.equal(answers.length, 1, 'answered once');
  return answers[0] as number;
}

const join = (sync: 0 | 1) => encodeCmd(42, { cmd_type: CmdType.JOIN_POOL, sync, pool_name: 'p' }, { queue_depth: 8, chunk_size: CHUNK, dirty: 0, create: 1, rejoin: 0, extend: 0, member_cnt: 0, member_ids: Buffer.alloc(4), member_dirty: Buffer.alloc(4), epoch: 0, owner_id: Buffer.alloc(16) });
const write = (sync: 0 | 1) => encodeIo(42, { offset: 0, length: 4096, flags: IoOp.WRITE, map_ver: 1, prio: 0, member_id: 1, failed_cnt: 0, failed_ids: Buffer.alloc(4), sync, seq: 0, settled: 0 });
const mapAdd = encodeMapAdd(42, { first_chunk: 1, chunk_count: 2, map_ver: 3, failed_cnt: 1, failed_ids: Buffer.from([2, 0, 0, 0]) });
const mapClear = encodeMapClear(42, { first_chunk: 0, chunk_count: 1, member_id: 2, map_ver: 1 });

test('a storage node\'s session cannot send a compute client\'s messages', () => {
  const { clock, node, log } = setup();
  const stg2 = session('stg2@stg1', { name: 'stg2', roles: [ROLE_STORAGE] });
  assert.equal(send(node, clock, stg2, join(0), 'read'), Errno.EACCES, 'join as the pool\'s compute client');
  assert.equal(send(node, clock, stg2, write(0), 'write', Buffer.alloc(4096)), Errno.EACCES, 'a client write');
  assert.equal(send(node, clock, stg2, mapAdd, 'write'), Errno.EACCES, 'MAP_ADD');
  assert.equal(send(node, clock, stg2, encodeCmd(42, { cmd_type: CmdType.MAP_CHECK, sync: 0, pool_name: 'p' }, {}), 'read'), Errno.EACCES);
  assert.equal(log.count((l) => l.msg === 'message refused: the peer lacks the role that sends it'), 4);
  // Its own traffic gets through the role check (and on to the pool's own rules).
  assert.notEqual(send(node, clock, stg2, join(1), 'read'), Errno.EACCES);
});

test('a compute client\'s session cannot send a storage peer\'s messages', () => {
  const { clock, node } = setup();
  const cli = session('cli1@stg1', { name: 'cli1', roles: [ROLE_CLIENT] });
  assert.equal(send(node, clock, cli, join(1), 'read'), Errno.EACCES, 'join as a sync peer');
  assert.equal(send(node, clock, cli, write(1), 'write', Buffer.alloc(4096)), Errno.EACCES, 'sync IO');
  assert.equal(send(node, clock, cli, mapClear, 'write'), Errno.EACCES, 'MAP_CLEAR');
  assert.equal(send(node, clock, cli, join(0), 'read'), 0, 'its own join');
  assert.notEqual(send(node, clock, cli, write(0), 'write', Buffer.alloc(4096)), Errno.EACCES, 'a write: on to the pool\'s own rules');
});

test('a node with both roles, and a session without identities, may send both kinds', () => {
  const { clock, node } = setup();
  for (const s of [session('hc1@stg1', { name: 'hc1', roles: [ROLE_STORAGE, ROLE_CLIENT] }), session('any@stg1', null)]) {
    assert.notEqual(send(node, clock, s, join(0), 'read'), Errno.EACCES);
    assert.notEqual(send(node, clock, s, mapClear, 'write'), Errno.EACCES);
  }
});
