// `npm run sim -- --seeds N [--from S] [--swarm] [--faults link_cut,partition,disk_error]
//                 [--duration MS] [--replay SEED]`
// Runs seeds of the pool simulator and prints a summary; on a violation prints the seed, the
// invariant and the end of its event trace. --replay runs one seed and prints its whole trace.
import { FAULT_KINDS, runSeed, type FaultKind } from './pool-sim.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);

const faults = arg('faults')?.split(',').filter((f): f is FaultKind => (FAULT_KINDS as readonly string[]).includes(f));
const duration_ms = arg('duration') !== undefined ? Number(arg('duration')) : undefined;
const replay = arg('replay');

if (replay !== undefined) {
  const r = await runSeed({ seed: Number(replay), echo: true, swarm: flag('swarm'), ...(faults ? { faults } : {}), ...(duration_ms ? { duration_ms } : {}) });
  console.log(`seed ${r.seed}: ${r.ok ? 'ok' : `VIOLATION ${r.violation ?? ''}`} (${r.members} members, faults ${r.faults.join(',') || 'none'}, trace ${r.trace_hash.slice(0, 16)})`);
  process.exit(r.ok ? 0 : 1);
}

const n = Number(arg('seeds') ?? 100);
const from = Number(arg('from') ?? 1);
const start = performance.now();
let failed = 0;
let sim_ms = 0;
let ops = 0;
for (let seed = from; seed < from + n; seed++) {
  const r = await runSeed({ seed, swarm: flag('swarm'), ...(faults ? { faults } : {}), ...(duration_ms ? { duration_ms } : {}) });
  sim_ms += r.sim_ms;
  ops += r.ops;
  if (!r.ok) {
    failed++;
    console.log(`\nseed ${seed} VIOLATION ${r.violation ?? ''}\n  replay: npm run sim -- --replay ${seed}${flag('swarm') ? ' --swarm' : ''}\n  last events:\n    ${r.trace_tail.slice(-15).join('\n    ')}`);
  }
}
const wall_s = (performance.now() - start) / 1000;
console.log(
  `\n${n} seeds from ${from}: ${n - failed} ok, ${failed} violated; ${(n / wall_s).toFixed(2)} seeds/s; ` +
    `${(sim_ms / 1000).toFixed(1)} simulated s; ${ops} ops; ${wall_s.toFixed(1)} s wall`,
);
process.exit(failed === 0 ? 0 : 1);
