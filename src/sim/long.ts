// `npm run sim:long -- [--seeds N] [--minutes M] [--from S] [--jobs J] [--schedule V] [--duration MS]
//                      [--mix both|default|swarm] [--faults KIND,...] [--no-shrink]`
// The long check: a fresh random range of seeds (or from S), default and swarm fault mixes
// alternating (even offsets default, odd swarm; --mix for one of them), on every core (worker threads; J defaults
// to os.availableParallelism()). It stops starting seeds after N seeds (default 1000 unless
// --minutes is given) or M minutes, whichever comes first. It prints progress every 10 s, and
// for every violation the invariant, the shortest reproduction (faults left out one at a
// time while the same invariant fires, as `npm run sim` does) and the line that replays it;
// at the end, per fault kind: the seeds that injected it, those in which it took effect, and
// the violations among those. Exits 1 if any seed violated an invariant. --no-shrink skips
// the shrinking (to measure violation rates).
import { availableParallelism } from 'node:os';
import { randomInt } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DEFAULT_SCHEDULE, FAULT_KINDS, SCHEDULES, runSeed, type FaultKind, type Schedule, type SimOptions, type SimResult } from './pool-sim.js';
import { describeViolation, replayCommand, shrink } from './shrink.js';

type Task = { type: 'run'; seed: number; swarm: boolean } | { type: 'shrink'; seed: number; swarm: boolean; first: SimResult };
type Reply = { type: 'ran'; seed: number; swarm: boolean; r: SimResult } | { type: 'shrunk'; seed: number; text: string };

interface Shared {
  schedule: Schedule;
  duration_ms?: number;
  faults?: FaultKind[];
}

const optionsFor = (sh: Shared, swarm: boolean): Omit<SimOptions, 'seed'> => ({
  swarm,
  schedule: sh.schedule,
  ...(sh.duration_ms !== undefined ? { duration_ms: sh.duration_ms } : {}),
  ...(sh.faults !== undefined ? { faults: sh.faults } : {}),
});

/** A seed that threw (not a violation the oracle saw, a crash of the simulator or the code under test). */
function thrown(seed: number, schedule: Schedule, e: unknown): SimResult {
  const msg = `internal error: runSeed threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`;
  return { seed, schedule, ok: false, violation: msg, trace_hash: '', trace_tail: [], ops: 0, reads_checked: 0, probes: 0, sim_ms: 0, members: 0, faults: [], kinds_hit: [], kinds_injected: [], scheduled_faults: 0, triggered_faults: 0, fault_log: [] };
}

if (!isMainThread) {
  const sh = workerData as Shared;
  const port = parentPort;
  if (port === null) throw new Error('no parent port');
  port.on('message', (task: Task | null) => {
    if (task === null) return port.close();
    const o = optionsFor(sh, task.swarm);
    const work =
      task.type === 'run'
        ? runSeed({ seed: task.seed, ...o }).then(
            (r): Reply => ({ type: 'ran', seed: task.seed, swarm: task.swarm, r }),
            (e: unknown): Reply => ({ type: 'ran', seed: task.seed, swarm: task.swarm, r: thrown(task.seed, sh.schedule, e) }),
          )
        : shrink(task.seed, o, task.first).then(
            (s): Reply => ({ type: 'shrunk', seed: task.seed, text: describeViolation(task.seed, o, task.first, s) }),
            (e: unknown): Reply => ({ type: 'shrunk', seed: task.seed, text: `seed ${task.seed} VIOLATION ${task.first.violation ?? ''}\n  (shrinking threw: ${String(e)})` }),
          );
    void work.then((reply) => port.postMessage(reply));
  });
} else {
  await main();
}

async function main(): Promise<void> {
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const num = (name: string): number | undefined => {
    const v = arg(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) {
      console.error(`--${name}: a number`);
      process.exit(2);
    }
    return n;
  };
  const minutes = num('minutes');
  const max_seeds = num('seeds') ?? (minutes === undefined ? 1000 : Infinity);
  const jobs = Math.max(1, Math.floor(num('jobs') ?? availableParallelism()));
  const schedule = num('schedule') ?? DEFAULT_SCHEDULE;
  if (!(SCHEDULES as readonly number[]).includes(schedule)) {
    console.error(`--schedule: one of ${SCHEDULES.join(', ')}`);
    process.exit(2);
  }
  const duration_ms = num('duration');
  const shrinking = !process.argv.includes('--no-shrink');
  const mix = arg('mix') ?? 'both';
  if (mix !== 'both' && mix !== 'default' && mix !== 'swarm') {
    console.error('--mix: both, default or swarm');
    process.exit(2);
  }
  const faults = arg('faults')?.split(',');
  const unknown = faults?.filter((f) => !(FAULT_KINDS as readonly string[]).includes(f)) ?? [];
  if (unknown.length > 0) {
    console.error(`--faults: unknown ${unknown.join(',')} (kinds: ${FAULT_KINDS.join(' ')})`);
    process.exit(2);
  }
  const sh: Shared = { schedule: schedule as Schedule, ...(duration_ms !== undefined ? { duration_ms } : {}), ...(faults !== undefined ? { faults: faults as FaultKind[] } : {}) };
  const swarmAt = (k: number): boolean => (mix === 'both' ? k % 2 === 1 : mix === 'swarm');
  // A fresh range each run unless told: seeds are 32-bit.
  const from = num('from') ?? randomInt(100_000_000, 2 ** 32 - 100_000_000);
  let deadline = minutes === undefined ? Infinity : performance.now() + minutes * 60_000;
  // Ctrl-C: no new seed starts, the ones running finish, and the summary (with the per-kind
  // table) is printed as at the end; a second Ctrl-C stops at once.
  process.once('SIGINT', () => {
    console.log('\nSIGINT: finishing the seeds under way, then the summary (Ctrl-C again to stop now)');
    deadline = 0;
    process.once('SIGINT', () => process.exit(130));
  });
  console.log(
    `sim:long: seeds from ${from}${Number.isFinite(max_seeds) ? `, ${max_seeds} seeds` : ''}${minutes !== undefined ? `, ${minutes} minutes` : ''}, ` +
      `schedule ${sh.schedule}${faults !== undefined ? `, faults ${faults.join(',')}` : ''}, ${jobs} workers; ${mix === 'both' ? 'even offsets default mix, odd swarm' : `${mix} mix`}`,
  );

  const MIXES = ['default', 'swarm'] as const;
  const per_mix = { default: { seeds: 0, violations: 0 }, swarm: { seeds: 0, violations: 0 } };
  const kinds = new Map<FaultKind, { injected: number; took_effect: number; violations: number }>(FAULT_KINDS.map((k) => [k, { injected: 0, took_effect: 0, violations: 0 }]));
  const violations: { seed: number; swarm: boolean; violation: string; text: string | null }[] = [];
  let next = 0;
  let done = 0;
  let sim_ms = 0;
  let ops = 0;
  let reads = 0;
  const start = performance.now();
  let last_progress = start;
  const shrinks: Task[] = [];
  const progress = (): string => {
    const min = (performance.now() - start) / 60_000;
    return `[${min.toFixed(1)} min] ${done} seeds (${per_mix.default.seeds} default, ${per_mix.swarm.seeds} swarm), ${violations.length} violations, ${(done / (min * 60)).toFixed(2)} seeds/s`;
  };

  await new Promise<void>((resolve) => {
    let live = 0;
    const feed = (w: Worker): void => {
      const task: Task | undefined = shrinks.shift() ?? (next < max_seeds && performance.now() < deadline ? { type: 'run', seed: (from + next) >>> 0, swarm: swarmAt(next++) } : undefined);
      if (task !== undefined) return w.postMessage(task);
      w.postMessage(null);
    };
    for (let j = 0; j < jobs; j++) {
      const w = new Worker(fileURLToPath(import.meta.url), { workerData: sh });
      live++;
      w.on('message', (m: Reply) => {
        if (m.type === 'ran') {
          const r = m.r;
          done++;
          const mix = per_mix[m.swarm ? 'swarm' : 'default'];
          mix.seeds++;
          sim_ms += r.sim_ms;
          ops += r.ops;
          reads += r.reads_checked;
          for (const k of r.kinds_injected) (kinds.get(k) as { injected: number }).injected++;
          for (const k of r.kinds_hit) {
            const c = kinds.get(k) as { took_effect: number; violations: number };
            c.took_effect++;
            if (!r.ok) c.violations++;
          }
          if (!r.ok) {
            mix.violations++;
            violations.push({ seed: m.seed, swarm: m.swarm, violation: r.violation ?? '', text: null });
            console.log(`\nseed ${m.seed}${m.swarm ? ' (swarm)' : ''} VIOLATION ${r.violation ?? ''}${shrinking ? ' (shrinking...)' : ''}`);
            if (shrinking && r.scheduled_faults > 0 && r.trace_hash !== '') shrinks.push({ type: 'shrink', seed: m.seed, swarm: m.swarm, first: r });
          }
          if (performance.now() - last_progress > 10_000) {
            last_progress = performance.now();
            console.log(progress());
          }
        } else {
          const v = violations.find((x) => x.seed === m.seed);
          if (v !== undefined) v.text = m.text;
          console.log(`\n${m.text}`);
        }
        feed(w);
      });
      w.on('error', (e) => {
        console.error(`worker failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        process.exitCode = 1;
      });
      w.on('exit', () => {
        if (--live === 0) resolve();
      });
      feed(w);
    }
  });

  const wall_s = (performance.now() - start) / 1000;
  console.log(`\n${progress()}`);
  console.log(`\nper fault kind (seeds; violations among the seeds in which the kind took effect):`);
  console.log(`  ${'kind'.padEnd(14)} ${'injected'.padStart(9)} ${'took effect'.padStart(12)} ${'violations'.padStart(11)}`);
  for (const [k, c] of kinds) console.log(`  ${k.padEnd(14)} ${String(c.injected).padStart(9)} ${String(c.took_effect).padStart(12)} ${String(c.violations).padStart(11)}`);
  for (const m of MIXES) console.log(`${m} mix: ${per_mix[m].seeds} seeds, ${per_mix[m].violations} violations`);
  console.log(
    `${done} seeds from ${from} (schedule ${sh.schedule}): ${violations.length} violated; ${(done / wall_s).toFixed(2)} seeds/s; ` +
      `${(sim_ms / 3_600_000).toFixed(2)} simulated hours; ${ops} ops, ${reads} reads checked; ${wall_s.toFixed(0)} s wall`,
  );
  if (violations.length > 0) {
    console.log(`\nviolations (replay lines):`);
    for (const v of violations) {
      const replay = v.text?.match(/replay: (.*)/)?.[1] ?? replayCommand(v.seed, optionsFor(sh, v.swarm));
      console.log(`  ${v.seed}${v.swarm ? ' (swarm)' : ''}: ${v.violation.slice(0, 160)}\n    ${replay}`);
    }
    process.exitCode = 1;
  }
}
