// Scenario 9: a randomized soak (`npm run soak -- --minutes N [--seed S]`). One FaultCluster
// (3 storage daemons with fault-injecting stores, one compute client; each daemon in a
// network namespace when the machine allows it) runs round after round until the time is
// up. Each round picks a fault kind of the scenarios with a seeded generator, and a
// victim and variant for it:
//   storage_kill   SIGKILL of a member's daemon, writes go on, restart (scenario 1)
//   storage_stop   SIGSTOP beyond the heartbeat bound, SIGCONT (scenario 2)
//   partition      a member cut from the client, from its peers or from everyone, healed (3)
//   disk_errors    read and write errors on a member's store until it leaves IO service,
//                  then the disk replaced by an empty one and copied from the peers (7, 4)
//   client_kill    SIGKILL of the compute client and restart: reassembly (5)
//   maintenance    a member's leg into maintenance mode and back (8)
//   double         two members out at once, each by SIGKILL, SIGSTOP, a cut from everyone
//                  or maintenance, overlapping; one member serves alone; both come back, in
//                  either order (the combined member failures of §9.4)
// and runs it under the load of the scenarios (scenario.ts runLoad: fio with crc32c verify
// and the history workload judged by the checker; the client crash runs the history alone,
// fio's connections die with the daemon); after each round every leg must be NORMAL and
// every map clean. Every few rounds `rmr verify` compares the members by hashes, and at the
// end `rmr down` and the stores compared byte for byte. Prints each fault as it happens, a
// line per round and a summary (faults per kind, IO operations done and checked,
// violations); exits 1 on any violation or failed step, with the seed and the fault
// sequence so far (`--seed S` replays the same choices; timing differs from run to run).

import { parseArgs } from 'node:util';
import { SeededRandom } from '../../src/util/seeded-random.js';
import { FaultCluster, POOL, faultClusterUnavailable, hostOf } from '../util/fault-cluster.js';
import { describeLoad, runLoad, type LoadOptions, type LoadReport } from '../util/scenario.js';
import { runSteps } from '../util/crash-scenario.js';
import { rmr } from '../util/cli-cluster.js';
import type { NetLab } from '../util/netns.js';
import { waitFor } from '../util/wait.js';

const KINDS = ['storage_kill', 'storage_stop', 'partition', 'disk_errors', 'client_kill', 'maintenance', 'double'] as const;
type Kind = (typeof KINDS)[number];
type Log = (line: string) => void;

const HB_INTERVAL_MS = 250;
const HB_TIMEOUT_MS = 2000;
const USAGE = 'usage: npm run soak -- [--minutes N] [--seed S] [--verify-every R] [--kinds k1,k2,...]';

interface Args {
  minutes: number;
  seed: number;
  verify_every: number;
  kinds: Kind[];
}

function parse(): Args {
  const { values } = parseArgs({
    options: { minutes: { type: 'string', default: '5' }, seed: { type: 'string' }, 'verify-every': { type: 'string', default: '3' }, kinds: { type: 'string' }, help: { type: 'boolean' } },
  });
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n  kinds: ${KINDS.join(' ')}\n`);
    process.exit(0);
  }
  const minutes = Number(values.minutes);
  const seed = values.seed === undefined ? Date.now() % 1_000_000 : Number(values.seed);
  const verify_every = Number(values['verify-every']);
  const kinds = values.kinds === undefined ? [...KINDS] : values.kinds.split(',').map((k) => k.trim());
  const bad = kinds.filter((k) => !(KINDS as readonly string[]).includes(k));
  if (!(minutes > 0) || !Number.isInteger(seed) || seed < 0 || !Number.isInteger(verify_every) || verify_every < 1 || bad.length > 0 || kinds.length === 0) {
    process.stderr.write(`${USAGE}${bad.length > 0 ? ` (unknown kind ${bad.join(', ')}; kinds: ${KINDS.join(' ')})` : ''}\n`);
    process.exit(2);
  }
  return { minutes, seed, verify_every, kinds: kinds as Kind[] };
}

const stamp = (t0: number): string => `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s`;

/** One round's fault: its kind, what it does (for the sequence), and the load options that go with it. */
interface Planned {
  kind: Kind;
  /** Faults it injects (double: two). */
  count?: number;
  what: string;
  faults: (log: Log) => Promise<void>;
  load: Partial<LoadOptions>;
}

function plan(c: FaultCluster, rnd: SeededRandom, kinds: readonly Kind[]): Planned {
  const kind = kinds[rnd.int(kinds.length)] as Kind;
  const members = c.memberNames;
  const victim = members[rnd.int(members.length)] as string;
  const id = c.node(victim).member_id;
  const failed = (st: string | undefined): boolean => st !== 'normal';
  const normal = (st: string | undefined): boolean => st === 'normal';
  const hold = 500 + rnd.int(4500); // device requests while the fault lasts (0.2-2 s here)
  switch (kind) {
    case 'storage_kill':
      return {
        kind,
        what: `SIGKILL ${victim}, ${hold} requests, restart`,
        load: {},
        faults: async (log) => {
          await c.kill(victim);
          log(`SIGKILL ${victim}`);
          await c.waitLeg(id, `the client fails member ${id}`, failed, 15_000);
          await c.moreRequests(hold);
          if ((await c.dirtyFor(id)) === 0) throw new Error(`member ${id} missed writes while dead, but nothing is dirty for it`);
          await c.restart(victim);
          log(`restart ${victim}`);
          await c.waitLeg(id, `member ${id} NORMAL again`, normal);
        },
      };
    case 'storage_stop': {
      const stop_ms = HB_TIMEOUT_MS * (2 + rnd.int(3));
      return {
        kind,
        what: `SIGSTOP ${victim} for ${stop_ms} ms, SIGCONT`,
        load: {},
        faults: async (log) => {
          const t0 = Date.now();
          c.stop(victim);
          log(`SIGSTOP ${victim}`);
          await c.waitLeg(id, `the client fails member ${id}`, failed, 15_000);
          log(`member ${id} failed after ${Date.now() - t0} ms`);
          while (Date.now() - t0 < stop_ms) await new Promise((r) => setTimeout(r, 50));
          c.cont(victim);
          log(`SIGCONT ${victim} after ${Date.now() - t0} ms`);
          await c.waitLeg(id, `member ${id} NORMAL again`, normal);
        },
      };
    }
    case 'partition': {
      const lab = c.lab;
      if (lab === null) throw new Error('partition needs the namespace lab');
      const mode = (['client', 'peers', 'all'] as const)[rnd.int(3)] as 'client' | 'peers' | 'all';
      const h = hostOf(c, victim);
      const peers = members.filter((m) => m !== victim);
      return {
        kind,
        what: `${victim} cut from ${mode === 'client' ? 'the client' : mode === 'peers' ? 'its peers' : 'everyone'}, ${hold} requests, heal`,
        load: {},
        faults: async (log) => {
          if (mode === 'client') lab.partition(h, { peer: hostOf(c, 'cli') });
          else if (mode === 'all') lab.partition(h, 'all');
          else for (const p of peers) lab.partition(h, { peer: hostOf(c, p) });
          log(`${victim} cut from ${mode}`);
          try {
            if (mode === 'peers') {
              const other = peers[0] as string;
              await waitCond(`the sync legs between ${other} and ${victim} fail`, async () => (await c.syncLegs(other)).get(id) !== 'sync normal', 15_000);
              await c.moreRequests(hold);
              // The client reaches every member: nothing is missed.
              const st = (await c.legStates()).get(id);
              if (st !== 'normal') throw new Error(`the client lost member ${id} (${st ?? 'missing'}) although only its peers were cut off`);
              if ((await c.dirtyFor(id)) !== 0) throw new Error(`writes are dirty for member ${id} although the client reached it`);
            } else {
              await c.waitLeg(id, `the client fails member ${id}`, failed, 15_000);
              await c.moreRequests(hold);
              if ((await c.dirtyFor(id)) === 0) throw new Error(`member ${id} missed writes while cut off, but nothing is dirty for it`);
            }
          } finally {
            lab.heal();
          }
          log('healed');
          if (mode === 'peers') {
            await waitCond('the sync legs are back', async () => {
              for (const p of peers) if ((await c.syncLegs(p)).get(id) !== 'sync normal' || (await c.syncLegs(victim)).get(c.node(p).member_id) !== 'sync normal') return false;
              return true;
            }, 60_000);
          } else await c.waitLeg(id, `member ${id} NORMAL again`, normal);
        },
      };
    }
    case 'disk_errors': {
      const rate = [0.02, 0.1, 0.3][rnd.int(3)] as number;
      const err = 'EIO';
      const fseed = rnd.int(1_000_000);
      return {
        kind,
        what: `${victim} store ${rate * 100}% read/write errors (${err}), ${hold} requests, disk replaced`,
        load: {},
        faults: async (log) => {
          await c.write(victim, `brmr-server/stores/${POOL}/fault_injection`, `read_error_rate=${rate} write_error_rate=${rate} error=${err} seed=${fseed}`);
          log(`${victim} store: ${rate * 100}% errors (${err})`);
          await waitCond(`${victim} leaves IO service`, async () => (await c.tryRead(victim, `rmr-server/pools/${POOL}/state`))?.startsWith('no_io') === true, 30_000);
          await c.waitLeg(id, `the client fails member ${id}`, (st) => st === 'failed', 15_000);
          log(`${victim} NO_IO, its leg failed`);
          await c.moreRequests(hold);
          await c.replaceDisk(victim, log);
        },
      };
    }
    case 'client_kill': {
      const io = rnd.int(400);
      return {
        kind,
        what: `SIGKILL cli after ${io} requests, restart`,
        // The NBD connections die with the client: fio would fail, the history's ops in
        // flight have unknown outcomes (none may fail, no acknowledged write may be lost).
        load: { fio: null, no_client_errors: false, history: { op_timeout_ms: 5000, final_deadline_ms: 120_000 }, settle_timeout_ms: 120_000 },
        faults: (log) => runSteps(c, [{ io }, { kill: 'cli' }, { restart: 'cli' }], log),
      };
    }
    case 'double': {
      const [a, b] = pickTwo(rnd, members);
      const fa = memberFault(c, a, rnd);
      const fb = memberFault(c, b, rnd);
      const b_first = rnd.int(2) === 1;
      return {
        kind,
        count: 2,
        what: `${fa.what} and ${fb.what} overlapping, ${hold} requests, back ${b_first ? `${b} first` : `${a} first`}`,
        load: {},
        faults: async (log) => {
          await fa.inject(log);
          await c.moreRequests(Math.floor(hold / 4));
          await fb.inject(log);
          try {
            await c.moreRequests(hold);
            for (const x of [a, b]) if ((await c.dirtyFor(c.node(x).member_id)) === 0) throw new Error(`${x} missed writes while out, but nothing is dirty for it`);
          } finally {
            for (const f of b_first ? [fb, fa] : [fa, fb]) await f.recover(log);
          }
          for (const x of [a, b]) await c.waitLeg(c.node(x).member_id, `member ${c.node(x).member_id} NORMAL again`, normal, 90_000);
        },
      };
    }
    case 'maintenance': {
      const sess = `rmr-client/pools/${POOL}/sessions/cli@${victim}`;
      return {
        kind,
        what: `${victim} into maintenance, ${hold} requests, out`,
        load: {},
        faults: async (log) => {
          await c.write('cli', `${sess}/enable`, '0');
          log(`${victim} into maintenance`);
          await c.moreRequests(hold);
          if ((await c.dirtyFor(id)) === 0) throw new Error(`member ${id} missed writes in maintenance, but nothing is dirty for it`);
          await c.write('cli', `${sess}/enable`, '1');
          log(`${victim} out of maintenance`);
          await c.waitLeg(id, `member ${id} NORMAL again`, normal);
        },
      };
    }
  }
}

function pickTwo(rnd: SeededRandom, members: readonly string[]): [string, string] {
  const a = members[rnd.int(members.length)] as string;
  const rest = members.filter((m) => m !== a);
  return [a, rest[rnd.int(rest.length)] as string];
}

/** One member taken out of IO service and brought back, in two steps (for overlapping faults). */
interface MemberFault {
  what: string;
  inject: (log: Log) => Promise<void>;
  recover: (log: Log) => Promise<void>;
}

function memberFault(c: FaultCluster, victim: string, rnd: SeededRandom): MemberFault {
  const id = c.node(victim).member_id;
  const ways = c.lab !== null ? (['kill', 'stop', 'cut', 'maintenance'] as const) : (['kill', 'stop', 'maintenance'] as const);
  const how = ways[rnd.int(ways.length)] as 'kill' | 'stop' | 'cut' | 'maintenance';
  const out = (): Promise<string | undefined> => c.waitLeg(id, `the client fails member ${id}`, (st) => st !== 'normal', 15_000);
  const sess = `rmr-client/pools/${POOL}/sessions/cli@${victim}`;
  switch (how) {
    case 'kill':
      return {
        what: `SIGKILL ${victim}`,
        inject: async (log) => {
          await c.kill(victim);
          log(`SIGKILL ${victim}`);
          await out();
        },
        recover: async (log) => {
          await c.restart(victim);
          log(`restart ${victim}`);
        },
      };
    case 'stop':
      return {
        what: `SIGSTOP ${victim}`,
        inject: async (log) => {
          c.stop(victim);
          log(`SIGSTOP ${victim}`);
          await out();
        },
        recover: (log) => {
          c.cont(victim);
          log(`SIGCONT ${victim}`);
          return Promise.resolve();
        },
      };
    case 'cut': {
      const lab = c.lab as NetLab;
      const h = hostOf(c, victim);
      return {
        what: `${victim} cut from everyone`,
        inject: async (log) => {
          lab.partition(h, 'all');
          log(`${victim} cut from all`);
          await out();
        },
        recover: (log) => {
          lab.heal(h);
          log(`${victim} healed`);
          return Promise.resolve();
        },
      };
    }
    case 'maintenance':
      return {
        what: `${victim} in maintenance`,
        inject: async (log) => {
          await c.write('cli', `${sess}/enable`, '0');
          log(`${victim} into maintenance`);
        },
        recover: async (log) => {
          await c.write('cli', `${sess}/enable`, '1');
          log(`${victim} out of maintenance`);
        },
      };
  }
}

function waitCond(what: string, cond: () => Promise<boolean>, timeout_ms: number): Promise<void> {
  return waitFor(what, cond, timeout_ms, 100);
}

interface Totals {
  rounds: number;
  per_kind: Map<Kind, number>;
  faults: number;
  fio_writes: number;
  fio_reads: number;
  history_ops: number;
  history_unknown: number;
  ops_checked: number;
  verifies: number;
  violations: string[];
}

async function main(): Promise<number> {
  const a = parse();
  const netns_skip = faultClusterUnavailable({ netns: true });
  const kinds = netns_skip === null ? a.kinds : a.kinds.filter((k) => k !== 'partition');
  if (kinds.length === 0) {
    process.stderr.write(`soak: no fault kind can run here (partition: ${netns_skip ?? ''})\n`);
    return 2;
  }
  const t0 = Date.now();
  const end = t0 + a.minutes * 60_000;
  const out = (line: string): void => void process.stdout.write(`${stamp(t0)} ${line}\n`);
  out(`soak: seed ${a.seed}, ${a.minutes} min, kinds ${kinds.join(' ')}${netns_skip !== null && a.kinds.includes('partition') ? ` (no partitions: ${netns_skip})` : ''}; rmr verify every ${a.verify_every} rounds`);
  const rnd = new SeededRandom(a.seed);
  const sequence: string[] = [];
  const totals: Totals = { rounds: 0, per_kind: new Map(KINDS.map((k) => [k, 0])), faults: 0, fio_writes: 0, fio_reads: 0, history_ops: 0, history_unknown: 0, ops_checked: 0, verifies: 0, violations: [] };
  const c = await FaultCluster.start({ label: 'soak', netns: netns_skip === null, storage: { fault_injection: true }, heartbeat_interval_ms: HB_INTERVAL_MS, heartbeat_timeout_ms: HB_TIMEOUT_MS });
  const onSignal = (): void => {
    out('interrupted: cleaning up');
    void c.close().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const verify = async (when: string): Promise<void> => {
    const v = await rmr(['verify', POOL, '--cluster', c.cluster_file, '--json'], 300_000);
    totals.verifies++;
    const report = v.stdout.trim().split('\n').pop() ?? '';
    if (v.code !== 0) totals.violations.push(`rmr verify ${when} exited ${String(v.code)}: ${v.stderr.trim()} ${report}`);
    else out(`rmr verify ${when}: members agree (${report.slice(0, 200)})`);
  };
  try {
    await c.waitClean('after bring-up (initial sync)');
    out(`cluster up in ${c.dir}${c.lab !== null ? ' (every daemon in its own network namespace)' : ' (loopback)'}`);
    while (Date.now() < end && totals.violations.length === 0) {
      const round = totals.rounds + 1;
      const p = plan(c, rnd, kinds);
      const seed = a.seed * 1000 + round;
      const runtime_s = 8 + rnd.int(7);
      sequence.push(`${round}:${p.kind}(${p.what})`);
      totals.per_kind.set(p.kind, (totals.per_kind.get(p.kind) ?? 0) + 1);
      totals.faults += p.count ?? 1;
      out(`round ${round}: ${p.kind}: ${p.what}; load ${runtime_s} s, seed ${seed}`);
      let r: LoadReport;
      try {
        r = await runLoad(c, {
          seed,
          runtime_s,
          ...p.load,
          faults: (log) => p.faults((line) => {
            log(line);
            out(`  ${line}`);
          }),
        });
      } catch (e) {
        totals.violations.push(`round ${round} (${p.kind}: ${p.what}): ${e instanceof Error ? e.message : String(e)}`);
        break;
      }
      totals.rounds = round;
      totals.fio_writes += r.fio?.write_ios ?? 0;
      totals.fio_reads += r.fio?.read_ios ?? 0;
      totals.history_ops += r.workload?.ops.length ?? 0;
      totals.history_unknown += r.workload?.stats.unknown ?? 0;
      totals.ops_checked += r.ops_checked;
      if (r.violations > 0) totals.violations.push(`round ${round}: ${r.violations} history violations`);
      out(`  ${describeLoad(`round ${round}`, r)}`);
      if (round % a.verify_every === 0) await verify(`after round ${round}`);
    }
    if (totals.violations.length === 0) {
      if (totals.rounds % a.verify_every !== 0) await verify('at the end');
      if (totals.violations.length === 0) {
        const bytes = await c.downAndCompare();
        out(`rmr down: the ${c.memberNames.length} members' stores are identical (${bytes >> 20} MiB each)`);
      }
    }
  } catch (e) {
    totals.violations.push(`${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (totals.violations.length > 0) c.markFailed();
    // A cleanup error must not cost the summary (the seed and the fault sequence).
    await c.close().catch((e: unknown) => totals.violations.push(`cleanup: ${e instanceof Error ? e.message : String(e)}`));
  }
  const kindsLine = [...totals.per_kind].filter(([k]) => kinds.includes(k)).map(([k, n]) => `${k} ${n}`).join(', ');
  out('summary:');
  process.stdout.write(
    [
      `  seed ${a.seed}, ${((Date.now() - t0) / 60_000).toFixed(1)} min, ${totals.rounds} rounds completed`,
      `  faults injected: ${totals.faults} in ${sequence.length} rounds (rounds per kind: ${kindsLine})`,
      `  IO operations checked: ${totals.ops_checked} (fio ${totals.fio_writes} writes + ${totals.fio_reads} verified reads; history ${totals.history_ops} ops, ${totals.history_unknown} of unknown outcome)`,
      `  rmr verify runs: ${totals.verifies}`,
      `  violations: ${totals.violations.length}`,
      ...totals.violations.map((v) => `    ${v}`),
      ...(totals.violations.length > 0 ? [`  replay with: npm run soak -- --minutes ${a.minutes} --seed ${a.seed}`, `  fault sequence: ${sequence.join('; ')}`] : []),
    ].join('\n') + '\n',
  );
  return totals.violations.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`soak failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
