// The fault proxy as a process, for shell scenarios and soaks (also inside a namespace via
// `ip netns exec`):
//   node dist/test/util/fault-proxy-cli.js --target HOST:PORT|unix:PATH [--listen HOST:PORT|unix:PATH]
//        [--seed N] [--control PATH]
//   node dist/test/util/fault-proxy-cli.js ctl CONTROL_PATH 'up latency_ms=50' ...
// The proxy prints one JSON line {"host", "port", "control"} once listening, then answers each
// command line from stdin (and from each connection to the control socket) with one JSON
// line: {"open", "refusing", "faults", "stats"} or {"error"}. Commands: `up|down|both
// key=value...` (latency_ms, jitter_ms, rate, stall, blackhole, stop_reading), `clear`,
// `cut`, `refuse=1|0`, `stats`. SIGTERM/SIGINT or the end of stdin (with --exit-on-eof)
// close it.

import net from 'node:net';
import { createInterface } from 'node:readline';
import { unlinkSync } from 'node:fs';
import { FaultProxy, type Endpoint } from './fault-proxy.js';

function endpoint(what: string, s: string): Endpoint {
  if (s.startsWith('unix:')) return { path: s.slice(5) };
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${what}: '${s}' is not HOST:PORT or unix:PATH`);
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

function answer(proxy: FaultProxy, line: string): string {
  try {
    return proxy.command(line);
  } catch (e) {
    return JSON.stringify({ error: e instanceof Error ? e.message : String(e) });
  }
}

const CTL_ANSWER_MS = 10_000;

async function ctl(path: string, commands: string[]): Promise<number> {
  const s = net.connect(path);
  const lines = createInterface({ input: s });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  // A proxy that goes away mid-command is an error, not an empty answer (exit 0), and one
  // that stops answering is given up on rather than waited for forever.
  // (readline ends on 'end' only: a reset must end the wait too.)
  const closed = new Promise<'closed'>((resolve) => s.once('close', () => resolve('closed')));
  s.on('error', () => undefined);
  let code = 0;
  const it = lines[Symbol.asyncIterator]();
  for (const c of commands) {
    // One command per line: a line break inside one would send two and shift every answer.
    if (/[\r\n]/.test(c)) {
      process.stdout.write(`${JSON.stringify({ error: `a command may not contain a line break: ${JSON.stringify(c)}` })}\n`);
      s.destroy();
      return 1;
    }
    s.write(`${c}\n`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), CTL_ANSWER_MS)));
    const r = await Promise.race([it.next(), timeout, closed]);
    clearTimeout(timer);
    if (r === 'timeout' || r === 'closed' || r.done === true || typeof r.value !== 'string') {
      const why = r === 'timeout' ? `no answer within ${CTL_ANSWER_MS} ms` : 'the proxy closed the control connection';
      process.stdout.write(`${JSON.stringify({ error: `'${c}': ${why}` })}\n`);
      s.destroy();
      return 1;
    }
    process.stdout.write(`${r.value}\n`);
    // An answer is one JSON object; a cut-short or foreign line counts as a failure.
    const answer = jsonOrNull(r.value);
    if (answer === null || typeof answer !== 'object' || 'error' in answer) code = 1;
  }
  s.end();
  return code;
}

function jsonOrNull(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'ctl') {
    const [path, ...commands] = argv.slice(1);
    if (path === undefined || commands.length === 0) throw new Error('usage: fault-proxy-cli ctl CONTROL_PATH COMMAND...');
    return ctl(path, commands);
  }
  let target: Endpoint | null = null;
  let listen: Endpoint | undefined;
  let seed = 1;
  let control: string | null = null;
  let exitOnEof = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--target') target = endpoint('--target', v());
    else if (a === '--listen') listen = endpoint('--listen', v());
    else if (a === '--seed') seed = Number(v());
    else if (a === '--control') control = v();
    else if (a === '--exit-on-eof') exitOnEof = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (target === null) throw new Error('--target HOST:PORT|unix:PATH is required');
  const proxy = await new FaultProxy({ target, seed, ...(listen !== undefined ? { listen } : {}) }).start();
  let ctlServer: net.Server | null = null;
  if (control !== null) {
    const path = control;
    try {
      unlinkSync(path);
    } catch {
      // not there
    }
    ctlServer = net.createServer((s) => {
      s.on('error', () => undefined);
      createInterface({ input: s }).on('line', (l) => s.write(`${answer(proxy, l)}\n`));
    });
    await new Promise<void>((resolve) => ctlServer?.listen(path, resolve));
  }
  const a = proxy.address;
  process.stdout.write(`${JSON.stringify({ host: a.host, port: a.port, control })}\n`);
  return new Promise<number>((resolve) => {
    const stop = (): void => {
      ctlServer?.close();
      if (control !== null) {
        try {
          unlinkSync(control);
        } catch {
          // gone
        }
      }
      void proxy.close().then(() => resolve(0));
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    const rl = createInterface({ input: process.stdin });
    rl.on('line', (l) => process.stdout.write(`${answer(proxy, l)}\n`));
    rl.on('close', () => {
      if (exitOnEof) stop();
    });
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`fault-proxy: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  },
);
