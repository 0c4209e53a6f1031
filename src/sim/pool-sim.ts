// A whole pool in one process on simulated time: the production client pool, storage-node
// pools, sync pools and transport, over the in-memory network and memory disks, driven by
// one seed. A seeded workload runs while seeded faults hit links, disks, storage nodes, the
// compute client and the pool's membership; an oracle checks every read against a register
// model per block, the members against each other while the pool is NORMAL, and after the
// faults heal, that the pool comes back (liveness) and the members converge byte for byte
// with clean maps.
//
// Invariants (each a violation kind):
//   durability      an acknowledged write that was durable (FUA, or a flush acknowledged after
//                   it) is never lost while one member holding it survives: reads never
//                   return what it superseded (checked with read validity)
//   read validity   a read returns a value of the register model: the last acknowledged write
//                   or one concurrent with the read (a storage-node crash may lose what was
//                   not durable; a failed or crashed client's write may or may not be there)
//   stability       while the pool is NORMAL, a block no write is touching reads the same from
//                   every NORMAL member (probes through each leg)
//   convergence     after healing and sync, every member's data area is byte-identical and
//                   every map is empty
//   liveness        every IO is answered, the pool is NORMAL and synced within bounded time
//   transitions     neither gatekeeper (leg state, server pool state) is asked for an
//                   illegal transition
//
// Same seed, same code: same history. `runSeed` returns a hash of the event trace.
//
// The files: world.ts (the nodes, the client and the bring-up), workload.ts (the workload and
// the oracle), restart.ts (crash, restart and membership steps), nemesis.ts (the fault
// schedule and the heal), options.ts (what a run is asked and answers). This file runs them
// in order.

import { createHash } from 'node:crypto';
import { FAULT_KINDS, type SimOptions, type SimResult } from './options.js';
import { Nemesis } from './nemesis.js';
import { Violation, SimWorld } from './world.js';
import { Workload } from './workload.js';

export * from './options.js';

/**
 * Runs one seed. The whole run is synchronous on the simulated clock (nothing in it may wait
 * for a microtask: it would run only after the seed ended); the promise is for callers.
 */
export function runSeed(o: SimOptions): Promise<SimResult> {
  return new Promise((resolve) => resolve(simulate(o)));
}

function simulate(o: SimOptions): SimResult {
  const w = new SimWorld(o);
  const { clock } = w;
  // Made once the pool is up: a violation during the bring-up ends the seed without them.
  let load: Workload | null = null;
  let nemesis: Nemesis | null = null;
  const result = (violation: string | null): SimResult => {
    nemesis?.settleAll();
    return {
      seed: w.seed,
      schedule: w.version,
      ok: violation === null,
      violation,
      trace_hash: createHash('sha256').update(w.trace.join('\n')).digest('hex'),
      trace_tail: w.trace.slice(-40),
      ops: load?.next_id ?? 0,
      reads_checked: load?.reads_checked ?? 0,
      probes: load?.probes ?? 0,
      sim_ms: clock.now(),
      members: w.initial_members,
      faults: w.faults,
      kinds_hit: FAULT_KINDS.filter((k) => w.kinds_hit.has(k)),
      kinds_injected: FAULT_KINDS.filter((k) => nemesis?.kinds_injected.has(k) === true),
      scheduled_faults: nemesis?.scheduled ?? 0,
      triggered_faults: nemesis?.triggered ?? 0,
      fault_log: nemesis?.fault_log ?? [],
    };
  };

  try {
    w.bringUp();
    // ---- mutations (deliberate bugs) for the mutation checks
    if (o.mutation === 'skip_map_add') {
      for (const leg of w.legs()) (leg.channel as { sendMapAdd: unknown }).sendMapAdd = (_m: unknown, cb: (s: number) => void) => clock.setTimer(0, () => cb(0));
    }
    // The deliberate bug writes the pool's member set behind its back (the same Set the core owns).
    if (o.mutation === 'no_piggyback') (w.client.pool.members as Set<number>).clear();

    // ---- the workload with the faults, probing stability as it runs
    const wl = (load = new Workload(w));
    const nem = (nemesis = new Nemesis(w, wl));
    wl.end_at = clock.now() + w.duration;
    nem.start();
    wl.startWorkers();
    let next_probe = clock.now() + 20;
    while (clock.now() < wl.end_at && w.found === null) {
      clock.runUntil(Math.min(wl.end_at, clock.now() + 10));
      if (clock.now() >= next_probe) {
        wl.probe();
        next_probe = clock.now() + 20;
      }
    }
    w.raise();
    // ---- heal everything and check that the pool comes back and converges
    nem.healAll();
    recovers(w, wl, nem);
    wl.finalRead();
    w.t(`end: ${nem.fault_log.length} faults`);
    return result(null);
  } catch (e) {
    if (e instanceof Violation) {
      if (w.found === null) w.t(`VIOLATION ${e.message}`);
      return result(w.found ?? e.message);
    }
    throw e;
  } finally {
    for (const c of w.cleanups) c();
  }
}

/**
 * After the heal: every IO is answered, every node is back, every leg NORMAL and every member
 * synced (liveness, with what each part looked like if not), then the members converge byte
 * for byte (the workload's check) and every map is clean.
 */
function recovers(w: SimWorld, wl: Workload, nem: Nemesis): void {
  w.wait('every IO answered', () => wl.inflight === 0, 30_000);
  nem.leaveMaintenance();
  w.wait('every member restarted', () => w.nodes.every((n) => n.up), 10_000);
  try {
    w.wait('every leg NORMAL', () => w.legs().length === w.members().length && w.legs().every((l) => l.state === 'NORMAL'), 60_000);
  } catch (e) {
    const srv = w
      .members()
      .map((n) => `node${n.member}:${n.pool.state}/${n.pool.map_update_state}/dirty ${n.pool.ownMap()?.dirtyCount ?? -1}`)
      .join(' ');
    throw new Violation(`${e instanceof Error ? e.message : String(e)} (client ${JSON.stringify(w.client.pool.status())}; ${srv})`);
  }
  try {
    w.wait('every member synced', () => w.members().every((n) => n.pool.state === 'NORMAL' && n.pool.ownMap()?.isEmpty() === true), 60_000);
  } catch (e) {
    const srv = w
      .members()
      .map((n) => `node${n.member}:${n.pool.state}/own dirty ${n.pool.ownMap()?.dirtyCount ?? -1} first ${n.pool.ownMap()?.nextDirty(0) ?? -1}`)
      .join(' ');
    const sy = w
      .members()
      .map((n) => `${n.bsync?.state ?? 'none'}:${n.bsync?.progress().last_error ?? ''}`)
      .join(' ');
    throw new Violation(`${e instanceof Error ? e.message : String(e)} (${srv}; sync ${sy})`);
  }
  // A worker's last IO may start just after the workload ends (its timer was set before),
  // after the wait for every IO above: it must land before the members are compared (seed
  // 10000770 compared them while a write released by the reconciliation was on its way).
  w.wait(
    'every IO answered and the pool settled',
    () => wl.inflight === 0 && w.legs().every((l) => l.state === 'NORMAL') && w.members().every((n) => n.pool.state === 'NORMAL' && n.pool.ownMap()?.isEmpty() === true),
    60_000,
  );
  wl.checkConvergence();
  // Peer maps are cleaned by the periodic check (lost MAP_CLEARs); a removed member's map is gone.
  w.wait('every map clean', () => w.members().every((n) => [...n.pool.maps.values()].every((m) => m.isEmpty() && w.members().some((x) => x.member === m.member_id))), 20_000);
}
