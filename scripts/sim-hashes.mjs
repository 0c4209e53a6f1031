// Lists, one line per seed, what a simulator run produced: seed, trace hash, verdict and counts.
// Two listings of the same seeds are identical exactly when every run drew the same random
// numbers in the same order and did the same things (the trace hash covers every event line):
// the check that a refactoring of src/rmr, src/transport or src/sim changed no behaviour.
// usage (after npm run build): node scripts/sim-hashes.mjs [--from 1] [--seeds 200] [--swarm]
//        [--duration MS] [--faults a,b] [--mutation skip_map_add|no_piggyback|drop_intent] > file
import { runSeed } from '../dist/src/sim/pool-sim.js';

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const from = Number(arg('from') ?? 1);
const count = Number(arg('seeds') ?? 200);
const opts = {
  swarm: process.argv.includes('--swarm'),
  ...(arg('duration') !== undefined ? { duration_ms: Number(arg('duration')) } : {}),
  ...(arg('faults') !== undefined ? { faults: arg('faults').split(',') } : {}),
  ...(arg('mutation') !== undefined ? { mutation: arg('mutation') } : {}),
};
for (let seed = from; seed < from + count; seed++) {
  const r = await runSeed({ seed, ...opts });
  console.log(
    [
      seed,
      r.trace_hash,
      r.ok ? 'ok' : JSON.stringify(r.violation),
      r.ops,
      r.reads_checked,
      r.probes,
      r.sim_ms.toFixed(3),
      r.scheduled_faults,
      r.fault_log.length,
      r.kinds_hit.join(','),
    ].join(' '),
  );
}
