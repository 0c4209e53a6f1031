// `npm run sim -- --seeds N [--from S] [--swarm] [--faults KIND,...] (FAULT_KINDS in pool-sim.ts)
//                 [--duration MS] [--replay SEED [--drop 0,3]]`
// Runs seeds of the pool simulator and prints a summary. On a violation it prints the seed
// and the invariant, then shrinks the reproduction: it leaves out scheduled faults one at a
// time while the same invariant still fires, and prints the smallest fault set found, the
// command that replays it, and the end of its event trace. --replay runs one seed and
// prints its whole trace.
import { FAULT_KINDS, runSeed, type FaultKind, type SimOptions, type SimResult } from './pool-sim.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);

const faults = arg('faults')?.split(',').filter((f): f is FaultKind => (FAULT_KINDS as readonly string[]).includes(f));
const duration_ms = arg('duration') !== undefined ? Number(arg('duration')) : undefined;
const replay = arg('replay');
const drop = arg('drop')?.split(',').map(Number).filter(Number.isInteger);
const base: Omit<SimOptions, 'seed'> = { swarm: flag('swarm'), ...(faults ? { faults } : {}), ...(duration_ms ? { duration_ms } : {}) };
const invariant = (v: string | null): string => (v ?? '').split(':')[0] ?? '';

function replayCommand(seed: number, dropped: readonly number[]): string {
  const parts = [`npm run sim -- --replay ${seed}`];
  if (base.swarm === true) parts.push('--swarm');
  if (faults) parts.push(`--faults ${faults.join(',')}`);
  if (duration_ms) parts.push(`--duration ${duration_ms}`);
  if (dropped.length > 0) parts.push(`--drop ${dropped.join(',')}`);
  return parts.join(' ');
}

/** Greedy shrinking: drop each scheduled fault in turn while the same invariant still fires. */
async function shrink(seed: number, first: SimResult): Promise<{ dropped: number[]; result: SimResult }> {
  const want = invariant(first.violation);
  let dropped: number[] = [];
  let best = first;
  for (let i = 0; i < first.scheduled_faults; i++) {
    const trial = [...dropped, i];
    const r = await runSeed({ seed, ...base, drop_faults: trial });
    if (!r.ok && invariant(r.violation) === want) {
      dropped = trial;
      best = r;
    }
  }
  return { dropped, result: best };
}

if (replay !== undefined) {
  const r = await runSeed({ seed: Number(replay), echo: true, ...base, ...(drop ? { drop_faults: drop } : {}) });
  console.log(`seed ${r.seed}: ${r.ok ? 'ok' : `VIOLATION ${r.violation ?? ''}`} (${r.members} members, faults ${r.faults.join(',') || 'none'}, trace ${r.trace_hash.slice(0, 16)})`);
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
/** Per fault kind: seeds in which at least one fault of that kind happened. */
const with_kind = new Map<FaultKind, number>(FAULT_KINDS.map((k) => [k, 0]));
for (let seed = from; seed < from + n; seed++) {
  const r = await runSeed({ seed, ...base });
  sim_ms += r.sim_ms;
  ops += r.ops;
  reads += r.reads_checked;
  probes += r.probes;
  for (const k of r.kinds_hit) with_kind.set(k, (with_kind.get(k) ?? 0) + 1);
  if (!r.ok) {
    failed++;
    console.log(`\nseed ${seed} VIOLATION ${r.violation ?? ''}\n  faults: ${r.fault_log.join('; ') || 'none'}`);
    const s = await shrink(seed, r);
    console.log(
      `  shortest reproduction: ${s.result.fault_log.join('; ') || 'no faults'} (${s.dropped.length} of ${r.scheduled_faults} scheduled faults left out)\n` +
        `  replay: ${replayCommand(seed, s.dropped)}\n  last events:\n    ${s.result.trace_tail.slice(-15).join('\n    ')}`,
    );
  }
}
const wall_s = (performance.now() - start) / 1000;
console.log(`\nseeds with each fault kind: ${[...with_kind.entries()].map(([k, c]) => `${k} ${c}`).join(', ')}`);
console.log(
  `${n} seeds from ${from}: ${n - failed} ok, ${failed} violated; ${(n / wall_s).toFixed(2)} seeds/s; ` +
    `${(sim_ms / 3_600_000).toFixed(3)} simulated hours (${(sim_ms / 1000).toFixed(1)} s); ${ops} ops, ${reads} reads checked, ${probes} stability probes; ${wall_s.toFixed(1)} s wall`,
);
process.exit(failed === 0 ? 0 : 1);
