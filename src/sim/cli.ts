// `npm run sim -- --seeds N [--from S] [--swarm] [--faults KIND,...] (FAULT_KINDS in options.ts)
//                 [--duration MS] [--schedule V] [--replay SEED [--drop 0,3]]`
// Runs seeds of the pool simulator and prints a summary. On a violation it prints the seed
// and the invariant, then shrinks the reproduction: it leaves out scheduled faults one at a
// time while the same invariant still fires, and prints the smallest fault set found, the
// command that replays it, and the end of its event trace. --replay runs one seed and
// prints its whole trace. --schedule picks the fault schedule version (SCHEDULES in
// options.ts; a recorded seed replays with the version it was found with).
// `npm run sim:long` (long.ts) runs fresh seeds on every core.
import { DEFAULT_SCHEDULE, FAULT_KINDS, SCHEDULES, runSeed, type FaultKind, type Schedule, type SimOptions } from './pool-sim.js';
import { describeViolation, shrink } from './shrink.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);

const faults = arg('faults')?.split(',').filter((f): f is FaultKind => (FAULT_KINDS as readonly string[]).includes(f));
const duration_ms = arg('duration') !== undefined ? Number(arg('duration')) : undefined;
const replay = arg('replay');
const drop = arg('drop')?.split(',').map(Number).filter(Number.isInteger);
const schedule_arg = Number(arg('schedule') ?? DEFAULT_SCHEDULE);
if (!(SCHEDULES as readonly number[]).includes(schedule_arg)) {
  console.error(`--schedule: one of ${SCHEDULES.join(', ')}`);
  process.exit(2);
}
const base: Omit<SimOptions, 'seed'> = { swarm: flag('swarm'), schedule: schedule_arg as Schedule, ...(faults ? { faults } : {}), ...(duration_ms ? { duration_ms } : {}) };

if (replay !== undefined) {
  const r = await runSeed({ seed: Number(replay), echo: true, ...base, ...(drop ? { drop_faults: drop } : {}) });
  console.log(
    `seed ${r.seed}: ${r.ok ? 'ok' : `VIOLATION ${r.violation ?? ''}`} (schedule ${r.schedule}, ${r.members} members, faults ${r.faults.join(',') || 'none'}, ` +
      `took effect ${r.kinds_hit.join(',') || 'none'}, trace ${r.trace_hash.slice(0, 16)})`,
  );
  process.exit(r.ok ? 0 : 1);
}

const n = Number(arg('seeds') ?? 100);
const from = Number(arg('from') ?? 1);
const start = performance.now();
let failed = 0;
let sim_ms = 0;
let ops = 0;
let reads = 0;
let probes = 0;
/** Per fault kind: seeds in which at least one fault of that kind took effect / was injected. */
const with_kind = new Map<FaultKind, number>(FAULT_KINDS.map((k) => [k, 0]));
const injected = new Map<FaultKind, number>(FAULT_KINDS.map((k) => [k, 0]));
for (let seed = from; seed < from + n; seed++) {
  const r = await runSeed({ seed, ...base });
  sim_ms += r.sim_ms;
  ops += r.ops;
  reads += r.reads_checked;
  probes += r.probes;
  for (const k of r.kinds_hit) with_kind.set(k, (with_kind.get(k) ?? 0) + 1);
  for (const k of r.kinds_injected) injected.set(k, (injected.get(k) ?? 0) + 1);
  if (!r.ok) {
    failed++;
    console.log(`\n${describeViolation(seed, base, r, await shrink(seed, base, r))}`);
  }
}
const wall_s = (performance.now() - start) / 1000;
console.log(`\nseeds in which each fault kind took effect (of those it was injected in): ${[...with_kind.entries()].map(([k, c]) => `${k} ${c}/${injected.get(k) ?? 0}`).join(', ')}`);
console.log(
  `${n} seeds from ${from}: ${n - failed} ok, ${failed} violated; ${(n / wall_s).toFixed(2)} seeds/s; ` +
    `${(sim_ms / 3_600_000).toFixed(3)} simulated hours (${(sim_ms / 1000).toFixed(1)} s); ${ops} ops, ${reads} reads checked, ${probes} stability probes; ${wall_s.toFixed(1)} s wall`,
);
process.exit(failed === 0 ? 0 : 1);
