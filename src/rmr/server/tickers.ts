// The storage node's periodic work of a pool, on the injected Clock (reference §3.11
// intervals): the peer-map check and metadata exchange every 3 s, and the metadata flush
// every 500 ms. The daemon starts one per pool.

import type { Clock } from '../../util/ports.js';
import { Ticker } from '../../util/ticker.js';
import type { ServerPool } from './server-pool.js';

export const CHECK_MAPS_INTERVAL_MS = 3000;
export const MD_SYNC_INTERVAL_MS = 500;

/** Peer-map checks, and metadata writes (one at a time; a failure is reported). */
export function serverPoolTickers(clock: Clock, pool: ServerPool, onMdError: (status: number) => void): Ticker[] {
  let writing = false;
  return [
    new Ticker(clock, CHECK_MAPS_INTERVAL_MS, () => {
      pool.checkPeerMaps();
      // The peers' srv_md slots (MD_SEND through the sync pool, §8.7).
      pool.exchangeMetadata();
    }),
    new Ticker(clock, MD_SYNC_INTERVAL_MS, () => {
      if (writing || !pool.hasStore) return;
      writing = true;
      pool.persistMetadata((s) => {
        writing = false;
        if (s !== 0) onMdError(s);
      });
    }),
  ];
}
