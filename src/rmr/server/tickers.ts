// The periodic work of a pool, on the injected Clock (reference §3.11 intervals): the
// client's recovery tick (store checks, map cleaning, pool_md push) every 3 s, the storage
// node's peer-map check and metadata exchange every 3 s, and its metadata flush every 500 ms.
// The daemon starts one per pool.

import type { Clock, TimerId } from '../../util/ports.js';
import type { ClientPool } from '../client/client-pool.js';
import type { ServerPool } from './server-pool.js';

export const RECOVER_INTERVAL_MS = 3000;
export const CHECK_MAPS_INTERVAL_MS = 3000;
export const MD_SYNC_INTERVAL_MS = 500;

export class Ticker {
  private timer: TimerId | null = null;
  private stopped = false;
  constructor(
    private readonly clock: Clock,
    private readonly every_ms: number,
    private readonly fn: () => void,
  ) {
    this.arm();
  }
  private arm(): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimer(this.every_ms, () => {
      this.timer = null;
      this.fn();
      this.arm();
    });
  }
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) this.clock.cancel(this.timer);
    this.timer = null;
  }
}

export function clientPoolTickers(clock: Clock, pool: ClientPool): Ticker[] {
  return [new Ticker(clock, RECOVER_INTERVAL_MS, () => pool.recoveryTick())];
}

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
