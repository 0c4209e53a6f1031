// Shrinking a violating seed to a shorter reproduction, and the command that replays it
// (used by `npm run sim` and `npm run sim:long`).
import { DEFAULT_SCHEDULE, runSeed, type SimOptions, type SimResult } from './pool-sim.js';

/** The invariant a violation names: the text before its first colon. */
export const invariant = (v: string | null): string => (v ?? '').split(':')[0] ?? '';

/** `npm run sim -- --replay ...` for a seed run with `o` (default options left out). */
export function replayCommand(seed: number, o: Omit<SimOptions, 'seed'>, dropped: readonly number[] = []): string {
  const parts = [`npm run sim -- --replay ${seed}`];
  if (o.swarm === true) parts.push('--swarm');
  if (o.faults) parts.push(`--faults ${o.faults.join(',')}`);
  if (o.duration_ms !== undefined) parts.push(`--duration ${o.duration_ms}`);
  if ((o.schedule ?? DEFAULT_SCHEDULE) !== DEFAULT_SCHEDULE) parts.push(`--schedule ${o.schedule}`);
  if (dropped.length > 0) parts.push(`--drop ${dropped.join(',')}`);
  return parts.join(' ');
}

/** Greedy shrinking: drop each scheduled fault in turn while the same invariant still fires. */
export async function shrink(seed: number, o: Omit<SimOptions, 'seed'>, first: SimResult): Promise<{ dropped: number[]; result: SimResult }> {
  const want = invariant(first.violation);
  let dropped: number[] = [];
  let best = first;
  for (let i = 0; i < first.scheduled_faults; i++) {
    const trial = [...dropped, i];
    const r = await runSeed({ seed, ...o, drop_faults: trial });
    if (!r.ok && invariant(r.violation) === want) {
      dropped = trial;
      best = r;
    }
  }
  return { dropped, result: best };
}

/** The report of a violation: the seed, its faults, the shortest reproduction and its replay line. */
export function describeViolation(seed: number, o: Omit<SimOptions, 'seed'>, r: SimResult, s: { dropped: number[]; result: SimResult }): string {
  return (
    `seed ${seed}${o.swarm === true ? ' (swarm)' : ''} VIOLATION ${r.violation ?? ''}\n  faults: ${r.fault_log.join('; ') || 'none'}\n` +
    `  shortest reproduction: ${s.result.fault_log.join('; ') || 'no faults'} (${s.dropped.length} of ${r.scheduled_faults} scheduled faults left out)\n` +
    `  replay: ${replayCommand(seed, o, s.dropped)}\n  last events:\n    ${s.result.trace_tail.slice(-15).join('\n    ')}`
  );
}
