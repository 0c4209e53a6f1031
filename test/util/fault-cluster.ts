// A cluster of real `rmr daemon` processes for the fault scenarios (test/faults/): N storage
// daemons and one compute client, each with a hand-written config (small heartbeat bounds,
// fault injection, sync settings), either on loopback addresses of the root namespace or
// each in a network namespace of a NetLab on one bridged segment. The test reaches every
// daemon through its control socket and the device through its NBD Unix socket (files are
// not network-namespaced); `rmr up` performs the bring-up over those sockets. Faults:
// signals to a daemon (SIGKILL, SIGSTOP/SIGCONT), restarts with the same config, the lab's
// partitions and rate caps, the stores' fault_injection files. Checks: every leg NORMAL and
// every dirty map empty on every node, the stores' data areas byte-identical after
// `rmr down`. close() kills whatever is left and deletes the namespaces, also after a
// failure.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { call, type Target } from '../../src/cli/node-client.js';
import { nodeCtl } from '../../src/cli/node-cluster.js';
import { formatDataPskLine } from '../../src/daemon/data-tls.js';
import type { NodeCtl } from '../../src/cli/cluster-ops.js';
import { MAIN, dataArea, firstDifference, rmr, type EventLine } from './cli-cluster.js';
import { NetLab, ipOf, netnsUnavailable, type Host } from './netns.js';
import type { SocketTarget } from './socket-stream.js';
import { waitFor, waitUntil } from './wait.js';

export const POOL = 'fp';
export const DEVICE = 'disk0';
const DATA_PORT = 1234;

export interface FaultClusterOptions {
  /** Short label for the temporary directory and the namespace names (lowercase letters). */
  label: string;
  /** Storage daemons (stg1..stgN); the first `members` of them form the pool. */
  storage_nodes?: number;
  members?: number;
  /** Each daemon in a network namespace of its own on one bridged segment (root only). */
  netns?: boolean;
  heartbeat_interval_ms?: number;
  heartbeat_timeout_ms?: number;
  /** `roles.storage` settings of every storage daemon (fault_injection, sync_*). */
  storage?: Record<string, unknown>;
  store_size?: number;
  chunk_size?: number;
  log_level?: 'debug' | 'info' | 'warn' | 'error';
}

export interface DaemonNode {
  readonly name: string;
  readonly role: 'storage' | 'client';
  readonly member_id: number;
  readonly ip: string;
  readonly port: number;
  readonly host: Host | null;
  readonly config: string;
  readonly socket: string;
  readonly log: string;
  readonly store: string;
  proc: ChildProcess | null;
  /** Exit of the current process (code or signal name). */
  exited: Promise<string> | null;
  stopped: boolean;
}

/** Why a scenario cannot run here (namespaces need root and iproute2/nftables), or null. */
export function faultClusterUnavailable(o: { netns?: boolean }): string | null {
  return o.netns === true ? netnsUnavailable() : null;
}

let instances = 0;

export interface MapLine {
  member: number;
  dirty: number;
  total: number;
}

/** Parses `member <id>: [...] <dirty>/<total> dirty` lines (map_summary and the client's map). */
export function parseMapText(text: string): MapLine[] {
  const out: MapLine[] = [];
  for (const line of text.split('\n')) {
    const m = /^member (\d+): \[[^\]]*\] (\d+)\/(\d+) dirty$/.exec(line.trim());
    if (m !== null) out.push({ member: Number(m[1]), dirty: Number(m[2]), total: Number(m[3]) });
  }
  return out;
}

export class FaultCluster {
  readonly dir: string;
  readonly cluster_file: string;
  readonly nodes = new Map<string, DaemonNode>();
  readonly lab: NetLab | null;
  readonly store_size: number;
  readonly chunk_size: number;
  /** Helper processes (fio, ...) killed at close. */
  private readonly helpers = new Set<ChildProcess>();
  private members: string[];
  private closed = false;
  private failed = false;

  private get psk_file(): string {
    return join(this.dir, 'data.psk');
  }

  private constructor(readonly o: FaultClusterOptions) {
    this.dir = mkdtempSync(join(tmpdir(), `rmr-${o.label}-`));
    this.cluster_file = join(this.dir, 'cluster.yaml');
    this.store_size = o.store_size ?? 32 << 20;
    this.chunk_size = o.chunk_size ?? 128 << 10;
    this.lab = o.netns === true ? new NetLab() : null;
    const n = o.storage_nodes ?? 3;
    this.members = Array.from({ length: o.members ?? n }, (_, i) => `stg${i + 1}`);
    writeFileSync(join(this.dir, 'secret'), randomBytes(24).toString('hex'), { mode: 0o600 });
    mkdirSync(join(this.dir, 'logs'));
    const names = [...Array.from({ length: n }, (_, i) => `stg${i + 1}`), 'cli'];
    // Per-node TLS-PSK identities on the data plane, as rmr up gives the daemons it starts
    // (and as the daemons need across hosts: the netns addresses are not loopback).
    writeFileSync(this.psk_file, names.map((x) => formatDataPskLine(x, randomBytes(32), x === 'cli' ? ['client'] : ['storage'])).join(''), { mode: 0o600 });
    let ips: string[];
    let hosts: (Host | null)[];
    if (this.lab !== null) {
      hosts = names.map((x) => (this.lab as NetLab).host(x));
      ips = this.lab.lan(hosts as Host[]);
    } else {
      // Loopback addresses of our own: 127.<a>.<b>.<i>, unique per process and cluster.
      const k = (process.pid * 8 + instances++) % (200 * 256);
      ips = names.map((_, i) => `127.${20 + Math.floor(k / 256)}.${k % 256}.${i + 1}`);
      hosts = names.map(() => null);
    }
    names.forEach((name, i) => {
      const role = name === 'cli' ? 'client' : 'storage';
      const state = join(this.dir, 'state', name);
      const node: DaemonNode = {
        name,
        role,
        member_id: role === 'storage' ? i + 1 : 0,
        ip: ips[i] as string,
        port: DATA_PORT,
        host: hosts[i] ?? null,
        config: join(this.dir, `${name}.yaml`),
        socket: join(state, 'control.sock'),
        log: join(this.dir, 'logs', `${name}.log`),
        store: join(this.dir, `${name}.img`),
        proc: null,
        exited: null,
        stopped: false,
      };
      this.nodes.set(name, node);
      this.writeDaemonConfig(node);
    });
    this.writeClusterFile();
  }

  /**
   * A cluster for the length of `body`: started, handed to it, closed after it; a failure
   * marks the run failed first (the directory is kept for a post-mortem with RMR_KEEP_FAILED=1).
   */
  static async run<T>(o: FaultClusterOptions, body: (c: FaultCluster) => Promise<T>): Promise<T> {
    const c = await FaultCluster.start(o);
    let result: T;
    try {
      result = await body(c);
    } catch (e) {
      c.markFailed();
      // A cleanup failure (netns) must not replace the scenario's own failure.
      await c.close().catch((ce: unknown) => process.stderr.write(`fault cluster cleanup after a failure: ${ce instanceof Error ? ce.message : String(ce)}\n`));
      throw e;
    }
    await c.close();
    return result;
  }

  /** Starts every daemon and brings the cluster up with `rmr up`; cleans up if that fails. */
  static async start(o: FaultClusterOptions): Promise<FaultCluster> {
    const c = new FaultCluster(o);
    try {
      await Promise.all([...c.nodes.values()].map((n) => c.spawnDaemon(n)));
      await c.up();
      return c;
    } catch (e) {
      c.failed = true;
      await c.close().catch((ce: unknown) => process.stderr.write(`fault cluster cleanup after a failed start: ${ce instanceof Error ? ce.message : String(ce)}\n`));
      throw e;
    }
  }

  node(name: string): DaemonNode {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }

  get client(): DaemonNode {
    return this.node('cli');
  }

  /** The pool's members (storage node names) as the cluster file has them now. */
  get memberNames(): readonly string[] {
    return this.members;
  }

  storageNodes(): DaemonNode[] {
    return [...this.nodes.values()].filter((n) => n.role === 'storage');
  }

  private writeDaemonConfig(n: DaemonNode): void {
    const cfg: Record<string, unknown> = {
      name: n.name,
      state_dir: join(this.dir, 'state', n.name),
      secret_file: join(this.dir, 'secret'),
      log: { file: n.log, format: 'json', level: this.o.log_level ?? 'info' },
      data: {
        listen: `${n.ip}:${n.port}`,
        tls_psk_file: this.psk_file,
        heartbeat_interval_ms: this.o.heartbeat_interval_ms ?? 250,
        heartbeat_timeout_ms: this.o.heartbeat_timeout_ms ?? 1500,
      },
      shutdown_timeout_ms: 10_000,
      ...(n.role === 'client' ? { nbd: { socket_dir: join(this.dir, 'nbd') } } : {}),
      roles: n.role === 'client' ? { client: {} } : { storage: { store_dirs: [this.dir], ...this.o.storage } },
    };
    writeFileSync(n.config, toYaml(cfg));
  }

  /** The cluster file `rmr up`/`rmr down` read: every daemon by its control socket. */
  writeClusterFile(): void {
    const stg = this.storageNodes();
    const cf = {
      cluster: this.o.label,
      state_dir: join(this.dir, 'state'),
      secret_file: join(this.dir, 'secret'),
      data_psk_file: this.psk_file,
      nodes: [...this.nodes.values()].map((n) => ({ name: n.name, addresses: [n.ip], port: n.port, control_socket: n.socket })),
      pools: [{ name: POOL, chunk_size: this.chunk_size, members: this.members.map((m) => ({ node: m, member_id: this.node(m).member_id })) }],
      stores: stg.filter((n) => this.members.includes(n.name)).map((n) => ({ node: n.name, pool: POOL, path: n.store, size: this.store_size })),
      client: { node: 'cli', devices: [{ name: DEVICE, pool: POOL, size: this.store_size }], nbd: { socket_dir: join(this.dir, 'nbd') } },
    };
    writeFileSync(this.cluster_file, toYaml(cf));
  }

  /** Adds a spare storage node to the pool in the cluster file (extend with `rmr up`). */
  addMember(name: string): void {
    if (this.members.includes(name)) throw new Error(`${name} is a member already`);
    this.node(name);
    this.members = [...this.members, name];
    this.writeClusterFile();
  }

  /** Drops a member from the cluster file (after it was removed from the pool). */
  dropMember(name: string): void {
    this.members = this.members.filter((m) => m !== name);
    this.writeClusterFile();
  }

  // ------------------------------------------------------------------ processes

  /** Starts a node's daemon (in its namespace) and waits until its roles have started. */
  async spawnDaemon(n: DaemonNode, timeout_ms = 30_000): Promise<void> {
    if (n.proc !== null && n.proc.exitCode === null && n.proc.signalCode === null) throw new Error(`${n.name} runs already (pid ${n.proc.pid ?? '?'})`);
    const err = openSync(join(this.dir, 'logs', `${n.name}.stderr`), 'a');
    const args = [MAIN, 'daemon', '--config', n.config];
    const opts = { stdio: ['ignore', err, err] as ['ignore', number, number] };
    const p = n.host !== null && this.lab !== null ? this.lab.spawn(n.host, process.execPath, args, opts) : spawn(process.execPath, args, opts);
    closeSync(err);
    n.proc = p;
    n.stopped = false;
    n.exited = new Promise<string>((res) => p.once('exit', (code, sig) => res(sig ?? String(code))));
    let gone: string | null = null;
    void n.exited.then((x) => (gone = x));
    // A daemon that exited is not waited on: the probe throws and the wait fails at once.
    await waitUntil(
      `daemon ${n.name} running`,
      async () => {
        if (gone !== null) throw new Error(`daemon ${n.name} exited (${String(gone)}) at start: ${this.tail(n, 5)}`);
        return (await this.running(n)) ? true : null;
      },
      { timeout_ms, poll_ms: 50, explain: () => this.tail(n, 5) },
    );
  }

  private async running(n: DaemonNode): Promise<boolean> {
    try {
      const r = await call({ socket: n.socket }, 'GET', '/v1/status', undefined, 2000);
      return r.status === 200 && (JSON.parse(r.body) as { daemon?: { state?: string } }).daemon?.state === 'running';
    } catch {
      return false;
    }
  }

  /** The daemon's pid (its process: `ip netns exec` execs it). */
  pid(name: string): number {
    const p = this.node(name).proc?.pid;
    if (p === undefined) throw new Error(`${name} has no process`);
    return p;
  }

  /** SIGKILL, and wait for the process to be gone. */
  async kill(name: string): Promise<void> {
    const n = this.node(name);
    if (n.proc === null || n.exited === null) throw new Error(`${name} has no process`);
    n.proc.kill('SIGKILL');
    await n.exited;
    n.stopped = false;
  }

  stop(name: string): void {
    const n = this.node(name);
    n.proc?.kill('SIGSTOP');
    n.stopped = true;
  }

  cont(name: string): void {
    const n = this.node(name);
    n.proc?.kill('SIGCONT');
    n.stopped = false;
  }

  /** Starts a node's daemon again with the same config (it resumes its objects). */
  restart(name: string): Promise<void> {
    return this.spawnDaemon(this.node(name));
  }

  /** A helper process (fio, ...) that close() kills if it is still running. */
  track(p: ChildProcess): ChildProcess {
    this.helpers.add(p);
    p.once('exit', () => this.helpers.delete(p));
    return p;
  }

  // ------------------------------------------------------------------ control

  ctl(name: string): NodeCtl {
    return nodeCtl(name, { socket: this.node(name).socket });
  }

  async read(name: string, path: string): Promise<string> {
    const v = await this.ctl(name).read(path);
    if (v === null) throw new Error(`${name}: ${path} does not exist`);
    return v;
  }

  /** Reads a file, or null when it does not exist or the daemon does not answer. */
  async tryRead(name: string, path: string): Promise<string | null> {
    try {
      return await this.ctl(name).read(path);
    } catch {
      return null;
    }
  }

  write(name: string, path: string, value: string): Promise<string> {
    return this.ctl(name).write(path, value);
  }

  target(name: string): Target {
    return { socket: this.node(name).socket };
  }

  /** Events of one daemon after `since` (long poll up to wait_ms). */
  async events(name: string, since: number, wait_ms = 0): Promise<EventLine[]> {
    const r = await call(this.target(name), 'GET', `/v1/events?since=${since}&wait_ms=${wait_ms}`, undefined, wait_ms + 10_000);
    if (r.status !== 200) throw new Error(`${name}: events: ${r.status} ${r.body}`);
    return r.body
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as EventLine);
  }

  /** The last event sequence number of a daemon (to wait for what comes after it). */
  async eventMark(name: string): Promise<number> {
    const ev = await this.events(name, 0);
    return ev.reduce((m, e) => Math.max(m, e.seq), 0);
  }

  /** Waits for an event of a daemon after `since` that matches. */
  async waitEvent(name: string, what: string, pred: (e: EventLine) => boolean, since: number, timeout_ms = 60_000): Promise<EventLine> {
    let next = since;
    let last_error: string | null = null;
    // The long poll is the wait, so no pause between polls, except after a failed request.
    return waitUntil(
      `${what} on ${name}`,
      async (left_ms) => {
        let ev: EventLine[];
        try {
          ev = await this.events(name, next, Math.min(left_ms, 2000));
          last_error = null;
        } catch (e) {
          // The daemon may be restarting: retry, but say so if the deadline comes.
          last_error = e instanceof Error ? e.message : String(e);
          await sleepMs(200);
          return null;
        }
        for (const e of ev) {
          next = Math.max(next, e.seq);
          if (pred(e)) return e;
        }
        return null;
      },
      { timeout_ms, poll_ms: 0, explain: () => `events up to seq ${next} seen, none matched${last_error !== null ? ` (last events request failed: ${last_error})` : ''}` },
    );
  }

  // ------------------------------------------------------------------ NBD

  get nbdSocket(): string {
    return join(this.dir, 'nbd', `${DEVICE}.sock`);
  }

  get nbdUri(): string {
    return `nbd+unix:///${DEVICE}?socket=${this.nbdSocket}`;
  }

  get nbdTarget(): SocketTarget {
    return { path: this.nbdSocket };
  }

  /** NBD requests the client's device has taken so far. */
  async deviceRequests(): Promise<number> {
    const t = await this.tryRead('cli', `brmr-client/ctl/devices/${DEVICE}/stats/requests`);
    return t === null ? -1 : Number(t.split(/\s+/)[0]);
  }

  /** Waits until the device has taken `n` more requests (the load ran on through a fault). */
  async moreRequests(n: number, timeout_ms = 30_000): Promise<void> {
    const before = await this.deviceRequests();
    let now = before;
    await waitFor(`${n} more device requests`, async () => (now = await this.deviceRequests()) >= before + n, timeout_ms, 50, () => `${now - before} so far`);
  }

  /** Waits until the client's leg of a member is in a state `ok` accepts (undefined: no leg); returns it. */
  async waitLeg(member_id: number, what: string, ok: (state: string | undefined) => boolean, timeout_ms = 60_000): Promise<string | undefined> {
    let st: string | undefined;
    // A leg that is gone is a state too (undefined): only null means "not yet".
    return waitUntil(
      what,
      async () => {
        st = (await this.legStates()).get(member_id);
        return ok(st) ? { st } : null;
      },
      { timeout_ms, poll_ms: 50, explain: () => `leg of member ${member_id}: ${st ?? 'missing'}` },
    ).then((r) => r.st);
  }

  /** Chunks the client's map records as dirty for a member (what it missed). */
  async dirtyFor(member_id: number): Promise<number> {
    return parseMapText(await this.read('cli', `rmr-client/pools/${POOL}/map`)).find((l) => l.member === member_id)?.dirty ?? 0;
  }

  // ------------------------------------------------------------------ state checks

  /** The client's leg states by member id. */
  async legStates(): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    const r = await call(this.target('cli'), 'GET', `/v1/tree/rmr-client/pools/${POOL}/status?json`, undefined, 5000);
    if (r.status !== 200) return out;
    const j = JSON.parse(r.body) as { value?: { legs?: { member_id: number; state: string }[] } } & { legs?: { member_id: number; state: string }[] };
    for (const l of j.value?.legs ?? j.legs ?? []) out.set(l.member_id, l.state);
    return out;
  }

  /**
   * One line per problem keeping the cluster from being NORMAL and clean: a leg of the
   * client or a member's server pool not NORMAL, a dirty chunk in any node's map of any
   * member, a background sync running. Empty: every leg NORMAL and every dirty map empty.
   */
  async unclean(): Promise<string[]> {
    const out: string[] = [];
    const legs = await this.legStates();
    for (const m of this.members) {
      const id = this.node(m).member_id;
      const st = legs.get(id);
      if (st !== 'normal') out.push(`client leg of member ${id}: ${st ?? 'missing'}`);
    }
    const cmap = await this.tryRead('cli', `rmr-client/pools/${POOL}/map`);
    if (cmap === null) out.push('client map unreadable');
    else for (const l of parseMapText(cmap)) if (l.dirty > 0) out.push(`client map: member ${l.member} ${l.dirty}/${l.total} dirty`);
    for (const m of this.members) {
      const st = await this.tryRead(m, `rmr-server/pools/${POOL}/state`);
      if (st === null || !st.startsWith('normal')) out.push(`${m} server pool: ${st?.split('\n')[0] ?? 'unreachable'}`);
      const ms = await this.tryRead(m, `rmr-server/pools/${POOL}/map_summary`);
      if (ms === null) out.push(`${m} map_summary unreadable`);
      else for (const l of parseMapText(ms)) if (l.dirty > 0) out.push(`${m} map: member ${l.member} ${l.dirty}/${l.total} dirty`);
      const sync = await this.tryRead(m, `rmr-server/pools/${POOL}/sync_state`);
      if (sync !== 'Stopped') out.push(`${m} sync: ${sync ?? 'unreadable'}`);
      // Its sync pool's legs to every other member (what it resyncs from).
      const legs = await this.syncLegs(m);
      for (const peer of this.members) {
        if (peer === m) continue;
        const st = legs.get(this.node(peer).member_id);
        if (st !== 'sync normal') out.push(`${m} sync leg to ${peer}: ${st ?? 'missing'}`);
      }
    }
    return out;
  }

  /** A storage node's sync-pool legs (member id → state) from its status. */
  async syncLegs(name: string): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    try {
      const r = await call(this.target(name), 'GET', '/v1/status', undefined, 5000);
      if (r.status !== 200) return out;
      const roles = (JSON.parse(r.body) as { roles?: { status?: { legs?: { pool: string; side: string; member_id: number; state: string }[] } }[] }).roles ?? [];
      for (const role of roles) for (const l of role.status?.legs ?? []) if (l.pool === POOL && l.side === 'client') out.set(l.member_id, l.state);
    } catch {
      // unreachable: no legs
    }
    return out;
  }

  /** Waits until every leg is NORMAL and every dirty map on every node is empty. */
  async waitClean(what: string, timeout_ms = 90_000): Promise<void> {
    let last: string[] = [];
    await waitFor(`${what}: every leg NORMAL and every map clean`, async () => (last = await this.unclean()).length === 0, timeout_ms, 250, () => last.join('; '));
  }

  // ------------------------------------------------------------------ operator procedures

  /**
   * Replaces a member's disk by an empty one in its place, as store-manager.ts replace()
   * documents: its fault filter cleared, remove_store, the file emptied, `add_store
   * mode=replace` with the pool's UUID (every chunk dirty for it, a discard flag in its
   * pool_md). Nothing is done on the client: its failed leg comes back through its store
   * check, has the peers mark the member fully dirty and the member copies the whole device
   * from them. Returns once the leg is NORMAL (the copy runs on).
   */
  async replaceDisk(name: string, log: (line: string) => void = () => undefined): Promise<void> {
    const n = this.node(name);
    const other = this.members.find((m) => m !== name);
    if (other === undefined) throw new Error('a replacement needs another member to copy from');
    const pool_uuid = await this.read(other, `brmr-server/stores/${POOL}/pool_uuid`);
    // The fault filter belongs to the device path, which the new disk takes over.
    if ((await this.tryRead(name, `brmr-server/stores/${POOL}/fault_injection`)) !== null) await this.write(name, `brmr-server/stores/${POOL}/fault_injection`, 'off=1');
    if ((await this.tryRead(name, `brmr-server/stores/${POOL}/state`)) !== null) await this.write(name, `brmr-server/stores/${POOL}/remove_store`, '1');
    truncateSync(n.store, 0);
    await this.write(name, 'brmr-server/ctl/add_store', `device=${n.store} pool=${POOL} mode=replace pool_uuid=${pool_uuid} mapped_size=${this.store_size / 512}`);
    const own = parseMapText(await this.read(name, `rmr-server/pools/${POOL}/map_summary`)).find((l) => l.member === n.member_id);
    if (own === undefined || own.dirty !== own.total) throw new Error(`${name}: the new disk is not dirty everywhere: ${JSON.stringify(own)}`);
    log(`${name} disk replaced (add_store mode=replace)`);
    await waitFor(`member ${n.member_id} NORMAL after its disk was replaced`, async () => (await this.legStates()).get(n.member_id) === 'normal', 60_000, 100, async () =>
      (await this.unclean()).join('; '),
    );
    log(`member ${n.member_id} NORMAL again (store check, rejoin)`);
  }

  /** Chunks a storage node synced from its peers so far (background and on demand). */
  async chunkSyncs(name: string): Promise<number> {
    const s = JSON.parse(await this.read(name, `rmr-server/pools/${POOL}/stats`)) as { chunk_syncs: number; chunk_sync_failures: number };
    return s.chunk_syncs - s.chunk_sync_failures;
  }

  /** Application bytes a storage node served so far. */
  async appBytes(name: string): Promise<number> {
    return (JSON.parse(await this.read(name, `rmr-server/pools/${POOL}/stats`)) as { app_bytes: number }).app_bytes;
  }

  // ------------------------------------------------------------------ bring-up, teardown

  /** `rmr up` of the cluster file (idempotent: extends a live cluster with new members). */
  async up(timeout_s = 90): Promise<void> {
    const r = await rmr(['up', this.cluster_file, '--timeout', String(timeout_s), '--quiet'], (timeout_s + 30) * 1000);
    if (r.code !== 0) throw new Error(`rmr up exited ${String(r.code)}: ${r.stderr.trim()} ${r.stdout.trim()}`);
  }

  /**
   * `rmr down` (disassemble: devices unmapped, legs and stores removed with their metadata
   * flushed, daemons stopped); then the data areas of the members' stores must be
   * byte-identical. Returns the number of bytes compared per store.
   */
  async downAndCompare(): Promise<number> {
    const r = await rmr(['down', this.cluster_file], 120_000);
    if (r.code !== 0) throw new Error(`rmr down exited ${String(r.code)}: ${r.stderr.trim()}`);
    // rmr down stops the daemons of the pool's members and the client; the others (spares,
    // removed members) get the same SIGTERM here.
    for (const n of this.nodes.values()) if (n.role === 'storage' && !this.members.includes(n.name) && n.proc !== null && n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGTERM');
    for (const n of this.nodes.values()) {
      if (n.exited === null) continue;
      const how = await Promise.race([n.exited, unrefSleep(20_000).then(() => 'still running')]);
      if (how === 'still running') throw new Error(`daemon ${n.name} still runs 20 s after rmr down`);
    }
    this.compareStores();
    return this.store_size;
  }

  /** Throws naming the first differing byte unless every member's data area is the same. */
  compareStores(): void {
    const [first, ...rest] = this.members.map((m) => this.node(m).store);
    if (first === undefined) return;
    const a = dataArea(first, this.store_size);
    if (a.length !== this.store_size) throw new Error(`${first} holds ${a.length} data bytes, expected ${this.store_size}`);
    for (const p of rest) {
      const d = firstDifference(a, dataArea(p, this.store_size));
      if (d !== -1) throw new Error(`store ${p} differs from ${first} first at data byte ${d} (chunk ${Math.floor(d / this.chunk_size)})`);
    }
  }

  /** The last lines of a daemon's log (for failure messages). */
  tail(n: DaemonNode, lines = 20): string {
    const out: string[] = [];
    for (const f of [n.log, join(this.dir, 'logs', `${n.name}.stderr`)]) {
      if (!existsSync(f)) continue;
      out.push(...readFileSync(f, 'utf8').trim().split('\n').slice(-lines));
    }
    return out.join('\n');
  }

  /** Marks the run failed: close() keeps the directory (with RMR_KEEP_FAILED=1) for a post-mortem. */
  markFailed(): void {
    this.failed = true;
  }

  /** Kills every daemon and helper, removes the namespaces and the directory. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const waits: Promise<unknown>[] = [];
    for (const p of [...this.helpers, ...[...this.nodes.values()].map((n) => n.proc)]) {
      if (p === null || p.exitCode !== null || p.signalCode !== null) continue;
      waits.push(new Promise((r) => p.once('exit', r)));
      p.kill('SIGCONT');
      p.kill('SIGKILL');
    }
    await Promise.race([Promise.all(waits), unrefSleep(10_000)]);
    const labError = this.lab === null ? null : await this.lab.close().then(() => null, (e: unknown) => (e instanceof Error ? e : new Error('netns cleanup failed', { cause: e })));
    if (this.failed && process.env.RMR_KEEP_FAILED === '1') process.stderr.write(`fault cluster kept in ${this.dir}\n`);
    else rmSync(this.dir, { recursive: true, force: true });
    if (labError !== null) throw labError;
  }
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A deadline for a race: does not keep the process alive once the race is won. */
function unrefSleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Host of a node in the lab (throws without namespaces). */
export function hostOf(c: FaultCluster, name: string): Host {
  const h = c.node(name).host;
  if (h === null) throw new Error(`${name} runs in the root namespace`);
  return h;
}

export { ipOf };
