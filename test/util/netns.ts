// Network namespaces for fault tests (root only): hosts are namespaces, wired by veth pairs
// (`link`) or to a bridge (`lan`, a switch in a namespace of its own), with addresses in
// 10.231.0.0/16. Faults: nft drop rules inside a host (to / from one peer, or everything:
// a partition), link down/up, and tc tbf bandwidth caps. Processes run in a host through
// `ip netns exec`. Every name starts with `rmrf<run>-` (<run> = this process's pid in base
// 36): close() kills the processes and deletes the namespaces (their interfaces go with
// them), and the first lab of a process sweeps what a crashed earlier run left behind
// (namespaces of runs whose process is gone). Traffic stays inside the namespaces the lab
// created; nothing is routed to the root namespace or beyond.

import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { pidRunning } from '../../src/node/liveness.js';

export const NETNS_PREFIX = 'rmrf';
const RUN = process.pid.toString(36);
const IP = '/usr/sbin/ip';
const NFT = '/usr/sbin/nft';
const TC = '/usr/sbin/tc';

export interface Host {
  /** Short name given by the test. */
  readonly name: string;
  /** The namespace's real name (`ip netns exec <ns>`). */
  readonly ns: string;
  /** Interfaces of this host and their addresses (without prefix length). */
  readonly ifaces: { name: string; ip: string }[];
}

/** The first address of a host: what its peers connect to. */
export function ipOf(h: Host): string {
  const i = h.ifaces[0];
  if (i === undefined) throw new Error(`host ${h.name} has no interface yet`);
  return i.ip;
}

function sh(cmd: string, args: readonly string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 10_000, ...(input !== undefined ? { input } : {}) });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(err.stderr ?? '').trim() || err.message}`, { cause: e });
  }
}

/** Why namespace tests cannot run here, or null. */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  try {
    sh(IP, ['netns', 'list']);
    sh(NFT, ['--version']);
    sh(TC, ['-V']);
  } catch (e) {
    return `iproute2/nftables missing: ${(e as Error).message}`;
  }
  return null;
}

function killNamespacePids(ns: string): void {
  let pids: string[];
  try {
    pids = sh(IP, ['netns', 'pids', ns]).split(/\s+/).filter((p) => p !== '');
  } catch {
    return;
  }
  for (const p of pids) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

/**
 * Removes namespaces left by earlier runs whose process is gone (`all`: every one with the
 * prefix, also of live runs). Returns the names removed.
 */
export function sweepNetns(all = false): string[] {
  const removed: string[] = [];
  let list: string;
  try {
    list = sh(IP, ['netns', 'list']);
  } catch {
    return removed;
  }
  for (const line of list.split('\n')) {
    const ns = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${NETNS_PREFIX}([0-9a-z]+)-`).exec(ns);
    if (m === null) continue;
    const pid = parseInt(m[1] as string, 36);
    if (!all && (pid === process.pid || pidRunning(pid))) continue;
    killNamespacePids(ns);
    try {
      sh(IP, ['netns', 'del', ns]);
      removed.push(ns);
    } catch {
      // raced with another sweeper
    }
  }
  return removed;
}

let swept = false;

export class NetLab {
  private readonly hosts = new Map<string, Host>();
  private readonly children = new Set<ChildProcess>();
  private readonly namespaces: string[] = [];
  /** Where each host of a lan() is plugged in: the switch and its port toward the host. */
  private readonly switch_ports = new Map<string, { sw: Host; port: string }>();
  private ifno = 0;
  private subnet = 0;
  private closed = false;
  /** Leftovers of crashed runs removed when this lab was made. */
  readonly swept: string[];

  constructor() {
    this.swept = swept ? [] : sweepNetns();
    swept = true;
  }

  private nsName(name: string): string {
    if (!/^[a-z0-9]{1,12}$/.test(name)) throw new Error(`host name '${name}': 1..12 lowercase letters or digits`);
    return `${NETNS_PREFIX}${RUN}-${name}`;
  }

  /** A new namespace with loopback up and an empty nft table for the fault rules. */
  host(name: string): Host {
    if (this.closed) throw new Error('lab closed');
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    const ns = this.nsName(name);
    sh(IP, ['netns', 'add', ns]);
    this.namespaces.push(ns);
    sh(IP, ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh(IP, ['netns', 'exec', ns, NFT, '-f', '-'], [
      'table inet rmrf {',
      '  chain input { type filter hook input priority 0; policy accept; }',
      '  chain output { type filter hook output priority 0; policy accept; }',
      '}',
    ].join('\n'));
    const h: Host = { name, ns, ifaces: [] };
    this.hosts.set(name, h);
    return h;
  }

  private iface(): string {
    return `rf${RUN}${(this.ifno++).toString(36)}`;
  }

  /** A point-to-point veth link in a /24 of its own: a gets .1, b gets .2. */
  link(a: Host, b: Host): { a: string; b: string } {
    const net = `10.231.${++this.subnet}`;
    const ia = this.iface();
    const ib = `${ia}p`;
    sh(IP, ['link', 'add', ia, 'netns', a.ns, 'type', 'veth', 'peer', 'name', ib, 'netns', b.ns]);
    for (const [h, i, ip] of [[a, ia, `${net}.1`], [b, ib, `${net}.2`]] as const) {
      sh(IP, ['-n', h.ns, 'addr', 'add', `${ip}/24`, 'dev', i]);
      sh(IP, ['-n', h.ns, 'link', 'set', i, 'up']);
      h.ifaces.push({ name: i, ip });
    }
    return { a: `${net}.1`, b: `${net}.2` };
  }

  /**
   * One shared segment: a bridge in a switch namespace of its own, each host on it by a veth
   * pair, addresses 10.231.<n>.1, .2, ... in host order. Returns the hosts' addresses.
   */
  lan(hosts: Host[]): string[] {
    const net = `10.231.${++this.subnet}`;
    const sw = this.host(`sw${this.subnet}`);
    sh(IP, ['-n', sw.ns, 'link', 'add', 'br0', 'type', 'bridge']);
    sh(IP, ['-n', sw.ns, 'link', 'set', 'br0', 'up']);
    return hosts.map((h, k) => {
      const i = this.iface();
      const port = `${i}s`;
      const ip = `${net}.${k + 1}`;
      sh(IP, ['link', 'add', i, 'netns', h.ns, 'type', 'veth', 'peer', 'name', port, 'netns', sw.ns]);
      sh(IP, ['-n', sw.ns, 'link', 'set', port, 'master', 'br0']);
      this.switch_ports.set(h.name, { sw, port });
      sh(IP, ['-n', sw.ns, 'link', 'set', port, 'up']);
      sh(IP, ['-n', h.ns, 'addr', 'add', `${ip}/24`, 'dev', i]);
      sh(IP, ['-n', h.ns, 'link', 'set', i, 'up']);
      h.ifaces.push({ name: i, ip });
      return ip;
    });
  }

  /** Starts a process inside a host; close() kills it. */
  spawn(h: Host, cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn(IP, ['netns', 'exec', h.ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Runs a command inside a host to completion; throws with its stderr on failure. */
  exec(h: Host, cmd: string, args: readonly string[]): string {
    return sh(IP, ['netns', 'exec', h.ns, cmd, ...args]);
  }

  /**
   * Drops traffic at host `h`: `{ from: peer }` what arrives from the peer, `{ to: peer }`
   * what h sends to it, `{ peer }` both ways, `'all'` everything but loopback. Rules add up
   * until heal().
   */
  partition(h: Host, what: { from: Host } | { to: Host } | { peer: Host } | 'all'): void {
    const rules: string[] = [];
    if (what === 'all') {
      rules.push('add rule inet rmrf input iifname != "lo" drop', 'add rule inet rmrf output oifname != "lo" drop');
    } else {
      const peer = 'from' in what ? what.from : 'to' in what ? what.to : what.peer;
      for (const { ip } of peer.ifaces) {
        if (!('to' in what)) rules.push(`add rule inet rmrf input ip saddr ${ip} drop`);
        if (!('from' in what)) rules.push(`add rule inet rmrf output ip daddr ${ip} drop`);
      }
      if (rules.length === 0) throw new Error(`host ${peer.name} has no address to partition from`);
    }
    sh(IP, ['netns', 'exec', h.ns, NFT, '-f', '-'], rules.join('\n'));
  }

  /** Removes the drop rules of one host, or of every host. */
  heal(h?: Host): void {
    for (const x of h === undefined ? this.hosts.values() : [h]) {
      sh(IP, ['netns', 'exec', x.ns, NFT, '-f', '-'], 'flush chain inet rmrf input\nflush chain inet rmrf output');
    }
  }

  /** The nft rules active in a host (for assertions and failure messages). */
  rules(h: Host): string {
    return this.exec(h, NFT, ['list', 'table', 'inet', 'rmrf']);
  }

  linkDown(h: Host, iface = h.ifaces[0]?.name ?? ''): void {
    sh(IP, ['-n', h.ns, 'link', 'set', iface, 'down']);
  }

  linkUp(h: Host, iface = h.ifaces[0]?.name ?? ''): void {
    sh(IP, ['-n', h.ns, 'link', 'set', iface, 'up']);
  }

  /** Caps what h sends on `iface` with tc tbf (`rate` as tc takes it: 10mbit, 500kbit). */
  rate(h: Host, rate: string, iface = h.ifaces[0]?.name ?? '', burst = '32kb', latency = '50ms'): void {
    sh(IP, ['netns', 'exec', h.ns, TC, 'qdisc', 'replace', 'dev', iface, 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', latency]);
  }

  /**
   * Caps what reaches h over its lan() segment (tc tbf on the switch port toward it): with
   * rate() on h as well, the host's link is capped both ways.
   */
  rateInto(h: Host, rate: string, burst = '32kb', latency = '50ms'): void {
    const p = this.switch_ports.get(h.name);
    if (p === undefined) throw new Error(`host ${h.name} is on no lan()`);
    this.rate(p.sw, rate, p.port, burst, latency);
  }

  unrateInto(h: Host): void {
    const p = this.switch_ports.get(h.name);
    if (p !== undefined) this.unrate(p.sw, p.port);
  }

  unrate(h: Host, iface = h.ifaces[0]?.name ?? ''): void {
    try {
      sh(IP, ['netns', 'exec', h.ns, TC, 'qdisc', 'del', 'dev', iface, 'root']);
    } catch {
      // no qdisc set
    }
  }

  /** Kills every process, deletes every namespace (interfaces go with them). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exits = [...this.children].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    );
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 5000).unref())]);
    const errors: string[] = [];
    for (const ns of this.namespaces.reverse()) {
      killNamespacePids(ns);
      try {
        sh(IP, ['netns', 'del', ns]);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    this.hosts.clear();
    if (errors.length > 0) throw new Error(`netns cleanup: ${errors.join('; ')}`);
  }
}
