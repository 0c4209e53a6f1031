// The compute client's periodic work of a pool, on the injected Clock (reference §3.11
// intervals): the recovery tick (store checks, map cleaning, pool_md push) every 3 s. The
// daemon starts one per pool.

import type { Clock } from '../../util/ports.js';
import { Ticker } from '../../util/ticker.js';
import type { ClientPool } from './client-pool.js';

export const RECOVER_INTERVAL_MS = 3000;

export function clientPoolTickers(clock: Clock, pool: ClientPool): Ticker[] {
  return [new Ticker(clock, RECOVER_INTERVAL_MS, () => pool.recoveryTick())];
}
