// Shared pieces of the listener fuzzers: the time budget and seed (short in npm test, long
// with `npm run fuzz -- --seconds N` or RMR_FUZZ_SECONDS=N), and byte-level mutations.

import type { SeededRandom } from '../../src/util/seeded-random.js';

export interface FuzzBudget {
  seed: number;
  /** Stop starting new cases after this long. */
  ms: number;
  /** True in a long run (cases are not capped by count). */
  long: boolean;
}

/** The budget of one fuzzer: `default_ms` in npm test, RMR_FUZZ_SECONDS when set. */
export function fuzzBudget(default_ms: number, default_seed: number): FuzzBudget {
  const secs = Number(process.env.RMR_FUZZ_SECONDS ?? '');
  const seed = Number(process.env.RMR_FUZZ_SEED ?? default_seed);
  if (Number.isFinite(secs) && secs > 0) return { seed, ms: secs * 1000, long: true };
  return { seed, ms: default_ms, long: false };
}

export const BOUNDARY_U32 = [0, 1, 3, 0x7fffffff, 0x80000000, 0xfffffff0, 0xffffffff, 4096, 4097, 65536, 65537, 1 << 20, 33 << 20];

/** 1..4 mutations: bit flips, boundary u32/u16 values, truncation, insertion, duplication. */
export function mutate(rnd: SeededRandom, b: Buffer): Buffer {
  let cur = Buffer.from(b);
  const n = 1 + rnd.int(4);
  for (let i = 0; i < n; i++) {
    const at = cur.length === 0 ? 0 : rnd.int(cur.length);
    switch (rnd.int(7)) {
      case 0:
        if (cur.length > 0) cur[at] = (cur[at] as number) ^ (1 << rnd.int(8));
        break;
      case 1:
        if (cur.length >= 4) cur.writeUInt32LE(BOUNDARY_U32[rnd.int(BOUNDARY_U32.length)] as number, Math.min(at, cur.length - 4));
        break;
      case 2:
        cur = cur.subarray(0, at);
        break;
      case 3:
        cur = Buffer.concat([cur.subarray(0, at), rnd.bytes(1 + rnd.int(32)), cur.subarray(at)]);
        break;
      case 4:
        cur = Buffer.concat([cur, cur.subarray(at, Math.min(cur.length, at + 64))]);
        break;
      case 5:
        if (cur.length >= 2) cur.writeUInt16LE(rnd.int(65536), Math.min(at, cur.length - 2));
        break;
      default:
        if (cur.length > 0) cur[at] = rnd.int(256);
    }
  }
  return cur;
}
