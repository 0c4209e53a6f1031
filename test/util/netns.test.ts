// Self-test of the namespace harness: a TCP echo between two namespaces works; each kind of
// partition breaks it and heal restores it; a link going down does too; a tbf cap slows a
// transfer; on a shared segment a rule against one peer leaves the others reachable; a run
// that crashes leaves namespaces the next sweep removes; close() leaves nothing behind; a
// server in a namespace is driven from the test through a Unix socket (sockets in the file
// system are not network-namespaced).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { runWorkload } from './history/nbd-workload.js';
import { checkHistory } from './history/checker.js';
import { createInterface } from 'node:readline';
import { NETNS_PREFIX, NetLab, ipOf, netnsUnavailable, sweepNetns } from './netns.js';
import { waitFor, within } from './wait.js';

const skip = netnsUnavailable();
const FIX = join(process.cwd(), 'dist/test/fixtures');

interface Probe {
  ok: boolean;
  ms: number;
  error?: string;
}

/** JSON lines of a child, and a wait for a line after a mark. */
function follow(child: ChildProcess): { lines: Probe[]; after: (mark: number, pred: (p: Probe) => boolean, what: string, timeout_ms?: number) => Promise<number> } {
  const lines: Probe[] = [];
  if (child.stdout === null) throw new Error('child without stdout');
  createInterface({ input: child.stdout }).on('line', (l) => lines.push(JSON.parse(l) as Probe));
  return {
    lines,
    after: async (mark, pred, what, timeout_ms = 8000) => {
      let at = -1;
      await waitFor(what, () => (at = lines.findIndex((p, i) => i >= mark && pred(p))) >= 0, timeout_ms, 5);
      return at + 1;
    },
  };
}

function ourNamespaces(): string[] {
  return execFileSync('/usr/sbin/ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${NETNS_PREFIX}${process.pid.toString(36)}-`));
}

async function echoIn(lab: NetLab, h: Parameters<NetLab['spawn']>[0]): Promise<number> {
  const echo = lab.spawn(h, process.execPath, [join(FIX, 'net-echo.js'), ipOf(h), '7000']);
  const first = await within('echo listening', new Promise<string>((r) => createInterface({ input: echo.stdout as NodeJS.ReadableStream }).once('line', r)), 10_000);
  return (JSON.parse(first) as { port: number }).port;
}

test('two namespaces: echo works; partitions (all, to, from) and link down break it; heal restores it', { skip: skip ?? false }, async (t) => {
  const lab = new NetLab();
  t.after(() => lab.close());
  const a = lab.host('a');
  const b = lab.host('b');
  const addr = lab.link(a, b);
  assert.deepEqual(addr, { a: ipOf(a), b: ipOf(b) });
  const port = await echoIn(lab, a);
  const probe = follow(lab.spawn(b, process.execPath, [join(FIX, 'net-probe.js'), 'loop', ipOf(a), String(port), '30', '250']));
  let mark = await probe.after(0, (p) => p.ok, 'first echo');
  const broken = async (what: string): Promise<void> => {
    mark = await probe.after(mark, (p) => !p.ok, `echo broken by ${what}`);
    // A probe started before the fault may still have succeeded: require two failures in a row.
    mark = await probe.after(mark, (p) => !p.ok, `echo still broken by ${what}`);
  };
  const healed = async (what: string): Promise<void> => {
    mark = await probe.after(mark, (p) => p.ok, `echo back after ${what}`);
  };
  lab.partition(a, 'all');
  assert.match(lab.rules(a), /iifname != "lo" drop/);
  await broken('a partitioned from everything');
  lab.heal(a);
  await healed('heal');
  lab.partition(b, { to: a });
  await broken('b dropping what it sends to a');
  lab.heal();
  await healed('heal');
  lab.partition(a, { from: b });
  await broken('a dropping what comes from b');
  lab.heal(a);
  await healed('heal');
  lab.linkDown(b);
  await broken('b link down');
  lab.linkUp(b);
  await healed('link up');
});

test('a tbf cap on a link slows a transfer to its rate; removing it restores the speed', { skip: skip ?? false }, async (t) => {
  const lab = new NetLab();
  t.after(() => lab.close());
  const a = lab.host('a');
  const b = lab.host('b');
  lab.link(a, b);
  const port = await echoIn(lab, a);
  const bulk = async (): Promise<number> => {
    const p = follow(lab.spawn(b, process.execPath, [join(FIX, 'net-probe.js'), 'bulk', ipOf(a), String(port), String(256 * 1024)]));
    await p.after(0, () => true, 'bulk transfer', 20_000);
    const r = p.lines[0] as Probe;
    assert.ok(r.ok, r.error);
    return r.ms;
  };
  lab.rate(b, '2mbit');
  const capped = await bulk();
  // 256 KiB is 2.1 Mbit: about a second at 2 mbit/s (the 32 KiB burst goes at once).
  assert.ok(capped >= 800, `256 KiB under a 2 mbit cap took ${capped} ms`);
  lab.unrate(b);
  const free = await bulk();
  assert.ok(free < capped / 2, `uncapped took ${free} ms, capped ${capped} ms`);
});

test('a shared segment: a rule against one peer leaves the others reachable', { skip: skip ?? false }, async (t) => {
  const lab = new NetLab();
  t.after(() => lab.close());
  const [s, c1, c2] = [lab.host('srv'), lab.host('c1'), lab.host('c2')];
  const ips = lab.lan([s, c1, c2]);
  assert.equal(new Set(ips).size, 3);
  const port = await echoIn(lab, s);
  const p1 = follow(lab.spawn(c1, process.execPath, [join(FIX, 'net-probe.js'), 'loop', ipOf(s), String(port), '30', '250']));
  const p2 = follow(lab.spawn(c2, process.execPath, [join(FIX, 'net-probe.js'), 'loop', ipOf(s), String(port), '30', '250']));
  let m1 = await p1.after(0, (p) => p.ok, 'c1 echo');
  await p2.after(0, (p) => p.ok, 'c2 echo');
  lab.partition(s, { peer: c1 });
  m1 = await p1.after(m1, (p) => !p.ok, 'c1 cut off');
  m1 = await p1.after(m1, (p) => !p.ok, 'c1 still cut off');
  const m2 = p2.lines.length;
  await p2.after(m2, (p) => p.ok, 'c2 still served');
  await p2.after(m2 + 1, (p) => p.ok, 'c2 still served (twice)');
  lab.heal(s);
  await p1.after(m1, (p) => p.ok, 'c1 back');
});

test('a crashed run leaves namespaces that the next sweep removes; close() leaves nothing', { skip: skip ?? false }, async () => {
  // A child process makes a host and dies without cleaning up.
  const script = `import('${join(process.cwd(), 'dist/test/util/netns.js')}').then((m) => { const lab = new m.NetLab(); lab.host('left'); process.stdout.write(process.pid + '\\n'); process.exit(1); })`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = Number(await within('crashed run', new Promise<string>((r) => createInterface({ input: child.stdout }).once('line', r)), 10_000));
  await within('crashed run exit', new Promise((r) => child.once('exit', r)), 10_000);
  const leftover = `${NETNS_PREFIX}${pid.toString(36)}-left`;
  const listed = (): string => execFileSync('/usr/sbin/ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.match(listed(), new RegExp(`^${leftover}\\b`, 'm'));
  const lab = new NetLab();
  const kept = lab.host('kept');
  const removed = sweepNetns();
  assert.ok(removed.includes(leftover), `sweep removed ${JSON.stringify(removed)}`);
  assert.doesNotMatch(listed(), new RegExp(`^${leftover}\\b`, 'm'));
  assert.ok(ourNamespaces().includes(kept.ns), 'a live run is left alone');
  lab.spawn(kept, process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
  await lab.close();
  assert.deepEqual(ourNamespaces(), []);
});

test('a server inside a namespace is reachable from the test through a Unix socket (how scenarios drive daemons)', { skip: skip ?? false }, async (t) => {
  const lab = new NetLab();
  t.after(() => lab.close());
  const h = lab.host('nbd');
  const dir = mkdtempSync(join(tmpdir(), 'netns-nbd-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'nbd.sock');
  const srv = lab.spawn(h, process.execPath, [join(FIX, 'nbd-server.js'), String(4 << 20), sock]);
  await within('NBD server in the namespace', new Promise<string>((r) => createInterface({ input: srv.stdout as NodeJS.ReadableStream }).once('line', r)), 10_000);
  const w = await runWorkload({ target: { path: sock }, export_name: 'mem', seed: 3, duration_ms: 400 });
  const r = checkHistory(w.ops, { multi_conn: w.multi_conn, trim: 'undefined', final: 'register' });
  assert.deepEqual(r.violations.map((v) => v.message), []);
  assert.ok(w.ops.length > 100);
});
