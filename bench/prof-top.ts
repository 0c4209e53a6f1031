// Summarises V8 .cpuprofile files (node --cpu-prof): the functions with the most self time,
// per profile, with their share of the time the process was not idle. `npm run bench -- --profile` writes one
// profile per rmr process; this names where their time goes.
// Usage: node dist/bench/prof-top.js <dir or .cpuprofile files> [--top N]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

interface ProfNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface TopEntry {
  name: string;
  self_ms: number;
  share: number;
}

/** Self time per function (name + file + line), largest first. */
export function topSelf(p: Profile, n: number): { total_ms: number; busy_ms: number; top: TopEntry[] } {
  const byId = new Map<number, ProfNode>();
  for (const node of p.nodes) byId.set(node.id, node);
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const node = byId.get(p.samples[i] as number);
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    total += dt;
    if (node === undefined) continue;
    const f = node.callFrame;
    const file = f.url === '' ? '' : ` ${f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/').replace(/^node:/, 'node:')}:${f.lineNumber + 1}`;
    const key = `${f.functionName === '' ? '(anonymous)' : f.functionName}${file}`;
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  // Shares of the busy time: "(idle)" is the loop waiting for events.
  const busy = total - (self.get('(idle)') ?? 0);
  const top = [...self.entries()]
    .filter(([name]) => name !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, ms]) => ({ name, self_ms: Math.round(ms), share: ms / busy }));
  return { total_ms: Math.round(total), busy_ms: Math.round(busy), top };
}

const argv = process.argv.slice(2);
const ti = argv.indexOf('--top');
const n = ti >= 0 ? Number(argv[ti + 1]) : 30;
const paths = argv.filter((a, i) => a !== '--top' && i !== ti + 1);
const files: string[] = [];
for (const p of paths) {
  if (statSync(p).isDirectory()) for (const f of readdirSync(p).sort()) if (f.endsWith('.cpuprofile')) files.push(join(p, f));
  if (p.endsWith('.cpuprofile')) files.push(p);
}
for (const f of files) {
  const { total_ms, busy_ms, top } = topSelf(JSON.parse(readFileSync(f, 'utf8')) as Profile, n);
  console.log(`\n${basename(f)}: ${total_ms} ms sampled, ${busy_ms} ms not idle (shares below are of that)`);
  for (const e of top) console.log(`${(e.share * 100).toFixed(1).padStart(6)} %  ${String(e.self_ms).padStart(7)} ms  ${e.name}`);
}
