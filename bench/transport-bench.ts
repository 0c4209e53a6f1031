// `npm run bench:transport`: the transport (one path) against the simplest fast plain-TCP
// request/response loop, interleaved over rounds, in one invocation. Prints medians, the
// ratio transport/baseline per case, and one JSON line. A benchmark, never a test.
import net from 'node:net';
import { BaselineReader } from './baseline-framing.js';
import { procCpuSeconds } from './child.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { ClientSession, type Permit, type ResponseCallback } from '../src/transport/client-session.js';
import { NodeNet } from '../src/node/net.js';
import { NodeClock, NodeRandom } from '../src/node/ports.js';

interface Case {
  name: string;
  kind: 'read' | 'write';
  size: number;
  qd: number;
}
const ALL_CASES: Case[] = [
  { name: '4k-write-qd32', kind: 'write', size: 4096, qd: 32 },
  { name: '4k-read-qd32', kind: 'read', size: 4096, qd: 32 },
  { name: '1m-write-qd8', kind: 'write', size: 1 << 20, qd: 8 },
];
const CASES = process.env.BENCH_CASES ? ALL_CASES.filter((c) => (process.env.BENCH_CASES as string).split(',').includes(c.name)) : ALL_CASES;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const WARMUP_S = 0.3;
const SECRET = randomBytes(32);
const SERVER = fileURLToPath(new URL('./transport-server.js', import.meta.url));

async function spawnServer(mode: string): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, [...(process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean), SERVER, mode, SECRET.toString('hex')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) resolve((JSON.parse(buf.split('\n')[0] as string) as { port: number }).port);
    });
    proc.once('exit', (c) => reject(new Error(`${mode} server exited ${c}`)));
  });
  return { proc, port };
}

/** Read and write syscalls a process has made so far. */
function procSyscalls(pid: number): number {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  const get = (k: string): number => Number(new RegExp(`${k}: (\\d+)`).exec(io)?.[1] ?? 0);
  return get('syscr') + get('syscw');
}

interface Sample {
  rate: number;
  /** Read + write syscalls per op, client and server together. */
  sys_per_op: number;
  /** CPU microseconds per op, client and server together. */
  cpu_us: number;
}

/** Runs `issue` keeping `qd` requests in flight; returns completed ops per second. */
function drive(qd: number, server_pid: number, issue: (done: () => void) => void): Promise<Sample> {
  return new Promise((resolve) => {
    let cpu0 = 0;
    let sys0 = 0;
    let counting = false;
    let stop = false;
    let ops = 0;
    let inflight = 0;
    let start = 0;
    const done = (): void => {
      inflight--;
      if (counting) ops++;
      if (!stop) {
        inflight++;
        issue(done);
      } else if (inflight === 0) {
        const cpu = process.cpuUsage();
        const cpu_s = (cpu.user + cpu.system) / 1e6 + procCpuSeconds(server_pid) - cpu0;
        const sys = procSyscalls(process.pid) + procSyscalls(server_pid) - sys0;
        resolve({ rate: ops / ((performance.now() - start) / 1000), cpu_us: (cpu_s * 1e6) / ops, sys_per_op: sys / ops });
      }
    };
    for (let i = 0; i < qd; i++) {
      inflight++;
      issue(done);
    }
    setTimeout(() => {
      counting = true;
      start = performance.now();
      const cpu = process.cpuUsage();
      cpu0 = (cpu.user + cpu.system) / 1e6 + procCpuSeconds(server_pid);
      sys0 = procSyscalls(process.pid) + procSyscalls(server_pid);
      setTimeout(() => {
        stop = true;
        counting = false;
      }, SECONDS * 1000);
    }, WARMUP_S * 1000);
  });
}

async function runBaseline(port: number, pid: number, c: Case): Promise<Sample> {
  const sock = await new Promise<net.Socket>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
  });
  sock.setNoDelay(true);
  const waiting = new Map<number, () => void>();
  let next = 1;
  const payload = Buffer.alloc(c.kind === 'write' ? c.size : 0, 1);
  const reader = new BaselineReader((buf, end) => {
    for (let off = 0; off < end; off += 16 + buf.readUInt32LE(off)) {
      const id = buf.readUInt32LE(off + 4);
      const cb = waiting.get(id);
      waiting.delete(id);
      cb?.();
    }
  });
  sock.on('data', (chunk: Buffer) => {
    sock.cork();
    reader.push(chunk);
    sock.uncork();
  });
  const rate = await drive(c.qd, pid, (done) => {
    const id = next++ >>> 0;
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32LE(payload.length, 0);
    h.writeUInt32LE(id, 4);
    h.writeUInt32LE(c.kind === 'read' ? c.size : 0, 8);
    h.writeUInt32LE(c.kind === 'read' ? 0 : 1, 12);
    waiting.set(id, done);
    sock.write(h);
    if (payload.length > 0) sock.write(payload);
  });
  sock.destroy();
  return rate;
}

async function runTransport(port: number, pid: number, c: Case): Promise<Sample> {
  const session = new ClientSession(
    { session_name: `bench@${process.pid}-${randomBytes(2).toString('hex')}`, addresses: [{ host: '127.0.0.1', port }], secret: SECRET, queue_depth: c.qd, max_io_size: 4 << 20 },
    { net: new NodeNet(), clock: new NodeClock({ unref: true }), random: new NodeRandom() },
  );
  await session.open();
  const payload = c.kind === 'write' ? Buffer.alloc(c.size, 1) : null;
  const read_len = c.kind === 'read' ? c.size : 0;
  const rate = await drive(c.qd, pid, (done) => {
    const p = session.tryGetPermit() as Permit;
    const cb: ResponseCallback = (err) => {
      if (err !== null) throw err;
      done();
    };
    session.send(p, c.kind, null, payload, read_len, cb);
  });
  session.close();
  return rate;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

const base = await spawnServer('baseline');
const trans = await spawnServer('transport');
type Series = { baseline: Sample[]; transport: Sample[] };
const results = new Map<string, Series>();
for (const c of CASES) results.set(c.name, { baseline: [], transport: [] });
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of CASES) {
      const res = results.get(c.name) as Series;
      // Alternate which goes first so drift on a shared machine hurts both alike.
      const order = r % 2 === 0 ? (['baseline', 'transport'] as const) : (['transport', 'baseline'] as const);
      for (const who of order) {
        const v = who === 'baseline' ? await runBaseline(base.port, base.proc.pid as number, c) : await runTransport(trans.port, trans.proc.pid as number, c);
        res[who].push(v);
      }
      const lb = res.baseline.at(-1) as Sample;
      const lt = res.transport.at(-1) as Sample;
      process.stderr.write(
        `round ${r + 1}/${ROUNDS} ${c.name}: baseline ${Math.round(lb.rate)} ops/s ${lb.cpu_us.toFixed(2)} cpu-us/op ${lb.sys_per_op.toFixed(2)} syscalls/op, transport ${Math.round(lt.rate)} ops/s ${lt.cpu_us.toFixed(2)} cpu-us/op ${lt.sys_per_op.toFixed(2)} syscalls/op\n`,
      );
    }
  }
} finally {
  // SIGTERM lets a profiled server write its profile.
  base.proc.kill('SIGTERM');
  trans.proc.kill('SIGTERM');
}

const out = CASES.map((c) => {
  const r = results.get(c.name) as Series;
  const b = median(r.baseline.map((x) => x.rate));
  const t = median(r.transport.map((x) => x.rate));
  return {
    name: c.name,
    unit: 'ops/s',
    baseline: Math.round(b),
    transport: Math.round(t),
    ratio: Number((t / b).toFixed(3)),
    mib_per_s: Number(((t * c.size) / (1 << 20)).toFixed(1)),
    cpu_us_baseline: Number(median(r.baseline.map((x) => x.cpu_us)).toFixed(2)),
    cpu_us_transport: Number(median(r.transport.map((x) => x.cpu_us)).toFixed(2)),
  };
});
console.log(`\ntransport vs plain TCP loop, medians of ${ROUNDS} rounds x ${SECONDS}s (node ${process.version})`);
console.log('case              baseline ops/s   transport ops/s   ratio   transport MiB/s   cpu-us/op base  transport');
for (const o of out) {
  console.log(
    `${o.name.padEnd(18)}${String(o.baseline).padStart(14)}${String(o.transport).padStart(18)}${o.ratio.toFixed(3).padStart(8)}${String(o.mib_per_s).padStart(18)}` +
      `${o.cpu_us_baseline.toFixed(2).padStart(16)}${o.cpu_us_transport.toFixed(2).padStart(11)}`,
  );
}
const line = JSON.stringify({ bench: 'transport', cases: out.map(({ name, baseline, transport, ratio }) => ({ name, baseline, transport, ratio })) });
mkdirSync('bench/results', { recursive: true });
writeFileSync(`bench/results/transport-${new Date().toISOString().replace(/[:.]/g, '-')}.json`, `${line}\n`);
console.log(line);
