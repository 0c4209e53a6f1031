// A storage node's sync pool (§7.1): a client pool with `sync` set whose legs go to the
// other storage nodes of the pool. It is the node's SyncSource: peer reads for chunk sync
// (round robin, a refusal moves on to the next peer), MAP_CLEAR fan-out, and the map
// stream of a map spread.

import { Errno } from '../../util/errno.js';
import type { ClientPool } from '../client/client-pool.js';
import type { PeerMapCommand, PeerQuery, SyncSource } from './server-pool.js';
import type { TransportLeg } from '../client/transport-leg.js';
import type { ReadCallback } from './io-store.js';

export class SyncPoolSource implements SyncSource {
  private readonly pool: ClientPool;
  private readonly channels = new Map<number, TransportLeg>();

  constructor(pool: ClientPool) {
    if (!pool.sync) throw new RangeError('a sync source needs a sync pool');
    // The server pool is the sync pool's one user (the reference's add_clt opens it).
    if (pool.open() !== 0) throw new RangeError('the sync pool is in use already');
    this.pool = pool;
  }

  /** The sync client pool behind this source (its legs are the peers). */
  get clientPool(): ClientPool {
    return this.pool;
  }

  get max_io_size(): number {
    return this.pool.max_io_size;
  }

  /** Joins a peer (a sync join) and adds the leg, NORMAL at once as sync legs are. */
  addPeer(name: string, channel: TransportLeg, cb: (status: number, reason: string | null) => void): void {
    this.pool.addSess(name, channel, null, 32, (status, leg, reason) => {
      if (status !== 0 || leg === null) return cb(status, reason);
      this.channels.set(leg.member_id, channel);
      cb(0, null);
    });
  }

  readPeer(offset: number, length: number, cb: ReadCallback): void {
    this.pool.submit('read', offset, length, null, {}, cb);
  }

  mapClear(first_chunk: number, chunk_count: number, member_id: number, map_ver: number): void {
    for (const leg of this.pool.legs()) {
      if (leg.state !== 'NORMAL') continue;
      // Best effort: the periodic peer-map check cleans up what is lost (§8.6).
      this.channels.get(leg.member_id)?.sendMapClear(first_chunk, chunk_count, member_id, map_ver, () => undefined);
    }
  }

  peerMapCheck(member_id: number, cb: (status: number, empty: boolean) => void): void {
    const ch = this.channels.get(member_id);
    if (ch === undefined) return cb(Errno.ENOTCONN, false);
    ch.command({ kind: 'map_check' }, (status, value) => cb(status, status === 0 && value === 1));
  }

  peerCommand(receiver_member_id: number, cmd: PeerMapCommand, cb: (status: number) => void): void {
    const ch = this.channels.get(receiver_member_id);
    if (ch === undefined) return cb(Errno.ENOTCONN);
    ch.sendPeerMap(cmd, cb);
  }

  peerQuery(member_id: number, q: PeerQuery, cb: (status: number, data: Buffer | null) => void): void {
    const ch = this.channels.get(member_id);
    const leg = this.pool.leg(member_id);
    if (ch === undefined || leg === undefined || leg.state !== 'NORMAL') return cb(Errno.ENOTCONN, null);
    ch.command(q, (status, _v, _r, data) => cb(status, status === 0 ? (data ?? null) : null));
  }

  /** The sync leg to a peer that left the pool goes (the operator's step after del_sess delete, §9.6). */
  removePeer(member_id: number): void {
    this.channels.delete(member_id);
    this.pool.removeLeg(member_id, true);
  }
}
