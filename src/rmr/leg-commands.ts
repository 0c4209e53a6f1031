// Pool commands a compute client (or a peer) sends to a storage node's pool, as typed values,
// and their execution against a ServerPool. The transport dispatcher encodes them as CMD
// messages (msg.ts); in-process tests call executeLegCommand directly: one implementation
// of what each command does, whatever carries it.

import { Errno } from '../util/errno.js';
import type { PeerMapCommand, ServerPool } from './server-pool.js';

export type LegCommand =
  | { kind: 'rejoin' }
  | { kind: 'enable_pool'; enable: boolean }
  | { kind: 'map_ready' }
  | { kind: 'map_send'; receiver: number }
  | { kind: 'map_done'; enable: boolean }
  | { kind: 'map_disable' }
  | { kind: 'map_check' }
  | { kind: 'store_check' }
  | { kind: 'map_get_ver' };

/** status 0 or -errno; `value` carries MAP_CHECK / STORE_CHECK answers (1/0) and versions. */
export type LegCommandCallback = (status: number, value: number, reason: string | null) => void;

export function executeLegCommand(pool: ServerPool, cmd: LegCommand, from_sync: boolean, cb: LegCommandCallback): void {
  const answer = (err: string | null, value = 0): void => cb(err === null ? 0 : Errno.EINVAL, value, err);
  switch (cmd.kind) {
    case 'rejoin':
      return answer(pool.join({ sync: from_sync, create: false, dirty: false, rejoin: true, chunk_size: pool.chunk_size, members: [] }));
    case 'enable_pool':
      return answer(from_sync ? null : pool.enable(cmd.enable));
    case 'map_ready':
      return answer(pool.mapReady(from_sync));
    case 'map_send':
      return pool.mapSend(cmd.receiver, (status) => cb(status, 0, status === 0 ? null : `map send failed (${status})`));
    case 'map_done':
      return answer(pool.mapDone(cmd.enable));
    case 'map_disable':
      pool.mapDisable(from_sync);
      return answer(null);
    case 'map_check':
      return answer(null, pool.mapCheck() ? 1 : 0);
    case 'store_check':
      return answer(null, pool.storeCheck() ? 1 : 0);
    case 'map_get_ver':
      return answer(null, pool.map_ver);
  }
}

/** A map-transfer command arriving from the map source's sync pool. */
export function applyPeerMapCommand(pool: ServerPool, cmd: PeerMapCommand): number {
  const err =
    cmd.kind === 'send_map_buf' ? pool.receiveMapBuf(cmd.member_id, cmd.first_page, cmd.page_count, cmd.pages, true) : pool.mapBufDone(cmd.map_ver);
  return err === null ? 0 : Errno.EINVAL;
}
