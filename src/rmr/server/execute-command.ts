// A storage node's pool executes the commands of protocol/leg-commands.ts: the transport
// dispatcher (server-node.ts) decodes them from CMD messages, in-process tests hand them over
// directly. One implementation of what each command does, whatever carries it.

import { Errno } from '../../util/errno.js';
import { MAX_INTENT_RANGES, MAX_MEMBERS } from '../protocol/msg.js';
import { decodePoolMd, encodePoolMd } from '../protocol/pool-md.js';
import { JOIN_ANSWER_BLANK, MAP_GET_VER_LOST, MAX_CMD_ANSWER, MD_WRITE_NOT_SERVING, MD_WRITE_SERVING, MD_WRITE_UNJOINED, READ_MAP_HEADER, READ_MAP_PAGES, encodeRanges, type LegCommand, type LegCommandCallback, type PeerMapCommand } from '../protocol/leg-commands.js';
import type { ServerPool } from './server-pool.js';

export function executeLegCommand(pool: ServerPool, cmd: LegCommand, from_sync: boolean, cb: LegCommandCallback): void {
  const answer = (err: string | null, value = 0): void => cb(err === null ? 0 : Errno.EINVAL, value, err);
  switch (cmd.kind) {
    case 'join': {
      // The joiner's owner pair must be the member's own (docs/ownership.md §3.2): older is
      // fenced (ESTALE), newer must PREPARE first (EAGAIN). Peers' sync joins are not gated
      // yet (the peer epoch gate, M6, is not built).
      const own = from_sync ? 0 : pool.ownerJoinStatus(cmd.owner);
      if (own !== 0) return cb(own, pool.owner.epoch, ownerRefusal(pool, own, cmd.owner.epoch));
      const err = pool.join({ sync: from_sync, create: cmd.create, dirty: cmd.dirty, blank_ok: cmd.blank_ok === true, extend: cmd.extend === true, chunk_size: pool.chunk_size, members: cmd.members });
      if (err !== null || from_sync || !pool.hasStore) return answer(err, pool.member_id);
      // Said with the answer: the client knows whether the node started dirty (membership.join).
      const blank = Buffer.from([pool.store_blank ? JOIN_ANSWER_BLANK : 0]);
      // The membership is on disk before the client counts on it: a node that crashes right
      // after its join restarts knowing its pool (found by the simulator, seed 3025).
      return pool.persistMetadata((s) => cb(s, pool.member_id, s === 0 ? null : `pool metadata not persisted (${s})`, blank));
    }
    case 'rejoin': {
      const own = from_sync ? 0 : pool.ownerJoinStatus(cmd.owner);
      if (own !== 0) return cb(own, pool.owner.epoch, ownerRefusal(pool, own, cmd.owner.epoch));
      return answer(pool.join({ sync: from_sync, create: false, dirty: false, rejoin: true, chunk_size: pool.chunk_size, members: [] }));
    }
    case 'enable_pool':
      // Back in IO service with nothing of its own only in its cache (ServerPool.flushBeforeService).
      if (cmd.enable && !from_sync && pool.state !== 'NORMAL' && pool.hasStore) {
        return pool.flushBeforeService((s) => (s === 0 ? enableOrMaintenance(pool, cmd, from_sync, cb) : cb(s, 0, `store flush before serving failed (${s})`)));
      }
      return enableOrMaintenance(pool, cmd, from_sync, cb);
    case 'maintenance':
      return enableOrMaintenance(pool, cmd, from_sync, cb);
    case 'map_ready':
      return answer(pool.mapReady(from_sync));
    case 'map_send':
      return pool.mapSend(cmd.receiver, cmd.map_ver, (status) => cb(status, 0, status === 0 ? null : `map send failed (${status})`));
    case 'map_done':
      // The received maps are durable before the node serves on them, and so is what it
      // acknowledged before it left IO service (ServerPool.flushBeforeService).
      if (pool.map_update_state !== 'DONE') return answer(pool.mapDone(cmd.enable));
      return (cmd.enable ? pool.flushBeforeService.bind(pool) : pool.syncMaps.bind(pool))((s) => (s === 0 ? answer(pool.mapDone(cmd.enable)) : cb(s, 0, `maps not persisted (${s})`)));
    case 'map_disable':
      pool.mapDisable(from_sync);
      return answer(null);
    case 'map_check':
      return answer(null, pool.mapCheck() ? 1 : 0);
    case 'store_check':
      return answer(null, pool.storeCheck() ? 1 : 0);
    case 'map_get_ver':
      return cb(0, pool.map_ver, null, Buffer.from([pool.maps_lost !== null ? MAP_GET_VER_LOST : 0]));
    case 'leave':
      return answer(from_sync ? null : pool.leave(cmd.member_id, cmd.delete));
    case 'pool_info': {
      // Persisted before the answer: a node that restarts knows the pool's members (§9.6).
      const err = pool.poolInfo(cmd.member_id, cmd.op, cmd.mode, cmd.dirty);
      if (err !== null || !pool.hasStore) return answer(err);
      return pool.persistMetadata((s) => cb(s, 0, s === 0 ? null : `pool metadata not persisted (${s})`));
    }
    case 'md_read': {
      const md = pool.currentPoolMd();
      return cb(0, 0, null, encodePoolMd(md));
    }
    case 'md_write': {
      const md = decodePoolMd(cmd.md);
      if (typeof md === 'string') return cb(Errno.EBADMSG, 0, md);
      // The answer's value says whether the node serves IO: the client's tick learns of a node
      // that left IO service without its IO failing (a store replaced, a peer's read failing),
      // and of one that awaits a join (MD_WRITE_UNJOINED).
      const served = pool.state === 'NORMAL' ? MD_WRITE_SERVING : pool.state === 'REGISTERED' || pool.state === 'EMPTY' ? MD_WRITE_UNJOINED : MD_WRITE_NOT_SERVING;
      return answer(from_sync ? 'metadata from a sync pool' : pool.adoptClientMd(md), served);
    }
    case 'user':
      return pool.userCommand(cmd.bytes, Math.min(cmd.rsp_len, MAX_CMD_ANSWER), (status, data) => cb(status, 0, status === 0 ? null : 'user command failed', data));
    case 'read_map_buf':
      return cb(0, 0, null, readMapSlice(pool, cmd.map_idx, cmd.page));
    case 'intent_to_map': {
      if (from_sync) return answer('INTENT_TO_MAP from a sync pool');
      const r = pool.intentToMap(cmd.ranges, cmd.with_intent);
      if (typeof r === 'string') return answer(r);
      return pool.syncMaps((s) => {
        if (s === 0 && cmd.with_intent) pool.intentReconciled();
        cb(s, r, s === 0 ? null : `maps not persisted (${s})`);
      });
    }
    case 'own_dirty': {
      const [ranges, next] = pool.ownDirtyRuns(cmd.from_chunk, MAX_INTENT_RANGES);
      return cb(0, next, null, encodeRanges(ranges));
    }
    case 'map_mark': {
      if (from_sync) return answer('MAP_MARK from a sync pool');
      const r = pool.mapMark(cmd.member_id, cmd.ranges, cmd.conditional);
      if (typeof r === 'string') return answer(r);
      return pool.syncMaps((s) => cb(s, r, s === 0 ? null : `maps not persisted (${s})`));
    }
    case 'send_discard':
    case 'discard_clear': {
      if (from_sync) return answer(`${cmd.kind} from a sync pool`);
      const err = cmd.kind === 'send_discard' ? pool.sendDiscard(cmd.member_id) : pool.discardClear(cmd.member_id);
      if (err !== null) return answer(err);
      return pool.persistMetadata((s) => cb(s, 0, s === 0 ? null : `pool metadata not persisted (${s})`));
    }
    case 'chunk_hash':
      return pool.chunkHashes(cmd.first_chunk, cmd.chunk_count, (status, data) => cb(status, 0, status === 0 ? null : `chunk hashes failed (${status})`, data));
    case 'map_test': {
      const r = pool.mapTest(cmd.member_id, cmd.first_page, cmd.crcs);
      return typeof r === 'string' ? answer(r) : cb(0, r.differing, null, r.answer);
    }
    case 'map_set_ver': {
      if (from_sync) return answer('MAP_SET_VER from a sync pool');
      const err = pool.mapSetVer(cmd.map_ver);
      if (err !== null || !pool.hasStore) return answer(err, pool.map_ver);
      // Durable before the answer, like every version this node learns with maps.
      return pool.persistMetadata((s) => cb(s, pool.map_ver, s === 0 ? null : `pool metadata not persisted (${s})`));
    }
    case 'verify':
      if (from_sync) return answer('VERIFY from a sync pool');
      return pool.verifyChunks(cmd.first_chunk, cmd.chunk_count, cmd.members, (status, data, reason) => cb(status, 0, reason, data));
    case 'owner':
      if (from_sync) return answer('OWNER from a sync pool');
      if (cmd.op === 'query') return cb(0, pool.owner.epoch, null, pool.ownerInfo());
      if (cmd.op === 'prepare') return pool.prepare(cmd, (s, reason, info) => cb(s, pool.owner.epoch, reason, info));
      if (cmd.op === 'release') {
        // Only the owner itself lets go (M4).
        const own = pool.ownerJoinStatus(cmd.owner);
        if (own !== 0) return cb(own, pool.owner.epoch, ownerRefusal(pool, own, cmd.owner.epoch));
        return pool.release((s, reason) => cb(s, pool.owner.epoch, reason, pool.ownerInfo()));
      }
      return cb(Errno.EOPNOTSUPP, 0, 'OWNER FOLD is not built yet');
    case 'service':
      return cb(Errno.EOPNOTSUPP, 0, 'SERVICE is not built yet');
  }
}

/** Why a join, rejoin or release with the owner epoch `epoch` was refused with `status`. */
function ownerRefusal(pool: ServerPool, status: number, epoch: number): string {
  const o = pool.owner;
  return status === Errno.ESTALE
    ? `pool owned by ${pool.owner_name} (epoch ${o.epoch}): epoch ${epoch} is fenced`
    : `pool owned at epoch ${o.epoch}, not ${epoch}: PREPARE first`;
}

/** ENABLE_POOL and MAINTENANCE: the state change, then the pool metadata on disk before the answer. */
function enableOrMaintenance(pool: ServerPool, cmd: Extract<LegCommand, { kind: 'enable_pool' | 'maintenance' }>, from_sync: boolean, cb: LegCommandCallback): void {
  const err = from_sync ? null : cmd.kind === 'enable_pool' ? pool.enable(cmd.enable, cmd.trust === true) : cmd.on ? pool.enable(false) : pool.maintenanceOff();
  if (err !== null || from_sync || !pool.hasStore) return cb(err === null ? 0 : Errno.EINVAL, 0, err);
  pool.persistMetadata((s) => cb(s, 0, s === 0 ? null : `pool metadata not persisted (${s})`));
}

/**
 * READ_MAP_BUF (reference §5.4): the next slice of this node's maps from a cursor (map index
 * in member order, page). member_id 0 in the answer marks the end.
 */
function readMapSlice(pool: ServerPool, map_idx: number, page: number): Buffer {
  const maps = [...pool.maps.values()].sort((a, b) => a.member_id - b.member_id);
  const m = maps[map_idx];
  const head = Buffer.alloc(READ_MAP_HEADER);
  if (m === undefined || page >= m.page_count) {
    const next = maps[map_idx + 1];
    if (m !== undefined && next !== undefined) return readMapSlice(pool, map_idx + 1, 0);
    return head; // member 0: the end
  }
  const n = Math.min(READ_MAP_PAGES, m.page_count - page);
  const out = Buffer.alloc(READ_MAP_HEADER + n * 4096);
  out[0] = m.member_id;
  const done = page + n >= m.page_count;
  // After the last map the cursor names no map (MAX_MEMBERS): the next answer is the end.
  out[1] = done ? Math.min(map_idx + 1, MAX_MEMBERS) : map_idx;
  out.writeUInt32LE(page, 4);
  out.writeUInt32LE(n, 8);
  out.writeUInt32LE(done ? 0 : page + n, 12);
  for (let i = 0; i < n; i++) m.encodePage(page + i, out.subarray(READ_MAP_HEADER + i * 4096, READ_MAP_HEADER + (i + 1) * 4096));
  return out;
}

/** A map-transfer command arriving from the map source's sync pool. */
export function applyPeerMapCommand(pool: ServerPool, cmd: PeerMapCommand): number {
  const err =
    cmd.kind === 'send_map_buf' ? pool.receiveMapBuf(cmd.member_id, cmd.first_page, cmd.page_count, cmd.pages, true) : pool.mapBufDone(cmd.map_ver);
  return err === null ? 0 : Errno.EINVAL;
}
