// The steps of a seed that change who runs: a storage node crashes and restarts from its
// disks, the compute client crashes and a new one assembles the pool; and the operator's
// membership steps: a removal, an extension, a disk replacement. The fault schedule
// (nemesis.ts) decides when; these say what happens.

import { TransportLeg } from '../rmr/client/transport-leg.js';
import { followLinkEvents, linkMark } from '../rmr/client/leg-links.js';
import { clientPoolTickers } from '../rmr/client/tickers.js';
import { Errno } from '../util/errno.js';
import { nullLogger } from '../util/ports.js';
import { CHUNK, GID, POOL, type SimClient, type SimNode, type SimWorld } from './world.js';
import type { Workload } from './workload.js';

// ---- storage-node crash and restart
export function crashNode(w: SimWorld, n: SimNode, mode: 'process' | 'drop' | 'tear'): void {
  n.up = false;
  n.gen++;
  for (const tk of n.tickers) tk.stop();
  n.bsync?.close();
  n.bsync = null;
  w.net.crashHost(n.host);
  for (const s of n.sync_sessions.values()) s.close('host crashed');
  n.data.crash(mode);
  n.meta.crash(mode);
}

/** Restart from the disks: add_store (metadata reloaded, intent record applied), serve, sync pool. */
export function restartNode(w: SimWorld, n: SimNode): void {
  n.gen++;
  const gen = n.gen;
  n.pool = w.makePool(n, 'add');
  n.pool.loadMetadata((st, report, reason) => {
    if (n.gen !== gen) return;
    if (st !== 0 || report === null) return w.violate(`restart: node${n.member} could not load its metadata (${st}: ${reason ?? ''})`);
    w.t(`node${n.member} restarted: ${report.intent_chunks} intent chunks dirty, maps ${report.maps_lost ?? 'kept'}, map_ver ${report.map_ver}`);
    void w.serve(n).catch((e: unknown) => w.violate(`restart: node${n.member} could not listen: ${String(e)}`));
    w.joinPeers(n);
    n.up = true;
  });
}

// ---- compute-client crash and a new client assembling the pool
export function crashClient(w: SimWorld, load: Workload): void {
  const client = w.client;
  client.up = false;
  for (const tk of client.tickers) tk.stop();
  w.net.crashHost('client');
  for (const s of client.sessions.values()) s.close('client crashed');
  // Its writes in flight are undecided: they may have landed anywhere, or nowhere.
  load.clientCrashed();
  w.client_gen++;
  w.client = { pool: client.pool, sessions: new Map(), tickers: [], gen: w.client_gen, up: false };
}

/** add_sess mode=assemble for every member, retried until each works. */
export function restartClient(w: SimWorld, load: Workload): void {
  const gen = w.client_gen;
  w.client = { pool: w.newClientPool(gen), sessions: new Map(), tickers: [], gen, up: true };
  const c = w.client;
  c.tickers = clientPoolTickers(w.clock, c.pool);
  c.pool.open();
  w.t('client restarted');
  w.emit('client', null);
  // An extension the crashed client left unfinished is the operator's to re-run.
  for (const n of w.members()) {
    if (n.extending === true) extendMember(w, c, n);
    else assembleMember(w, c, n);
  }
  load.startWorkers();
  // The operator's re-run of a del_sess delete that the crashed client finished but not
  // every member recorded (their pool_md still lists the member; re-running is harmless).
  const redo = new Set<number>();
  const operator = (): void => {
    if (c.gen !== w.client.gen) return;
    for (const n of w.nodes) {
      if (n.in_pool || !c.pool.members.has(n.member) || redo.has(n.member)) continue;
      redo.add(n.member);
      c.pool.delSess(n.member, 'delete', (st, why) => {
        redo.delete(n.member);
        w.t(`operator: del_sess ${n.member} again: ${st === 0 ? 'ok' : (why ?? st)}`);
      });
    }
    w.clock.setTimer(500, operator);
  };
  w.clock.setTimer(500, operator);
}

function assembleMember(w: SimWorld, c: SimClient, n: SimNode): void {
  let s = w.session('client', n.host);
  c.sessions.set(n.member, s);
  void s.open().catch(() => undefined);
  const attempt = (): void => {
    if (c.gen !== w.client.gen || !n.in_pool) return;
    if (s.state === 'CLOSED') {
      s = w.session('client', n.host);
      c.sessions.set(n.member, s);
      void s.open().catch(() => undefined);
    }
    if (s.state !== 'CONNECTED') return void w.clock.setTimer(50, attempt);
    const mark = linkMark(s);
    c.pool.addSess(s.name, new TransportLeg(s, GID, POOL, CHUNK, false), 'assemble', 128, (st, leg) => {
      if (c.gen !== w.client.gen) return;
      if (st !== 0 || leg === null) return void w.clock.setTimer(200, attempt);
      followLinkEvents(s, c.pool, leg, nullLogger, mark);
    });
  };
  attempt();
}

// ---- membership: removal, extend, replacement
/** Every member NORMAL and clean: no member holds data another lacks. */
export function quiet(w: SimWorld): boolean {
  return (
    w.client.up &&
    w.nodes.every((n) => !n.in_pool || n.up) &&
    w.legs().length === w.members().length &&
    w.legs().every((l) => l.state === 'NORMAL' && !l.maintenance) &&
    w.members().every((n) => n.pool.state === 'NORMAL' && n.pool.ownMap()?.isEmpty() === true)
  );
}

export function removeMember(w: SimWorld, n: SimNode, i: number): void {
  const c = w.client;
  c.pool.delSess(n.member, 'delete', (st, why) => {
    // EIO: the member left but no remaining one recorded it yet (every other leg was
    // FAILED); del_sess says to re-run it, and the operator does (seed 61002823 waited
    // for a removal nobody finished). A crashed client's restart re-runs it too.
    if (st === Errno.EIO && c === w.client && c.up) {
      w.t(`fault #${i}: del_sess ${n.member} not recorded yet (${why ?? st}), re-run`);
      return void w.clock.setTimer(500, () => c === w.client && c.up && n.in_pool && removeMember(w, n, i));
    }
    if (st !== 0) return w.t(`fault #${i}: del_sess ${n.member} refused (${why ?? st})`);
    w.t(`node${n.member} removed from the pool`);
    w.kinds_hit.add('remove');
    n.in_pool = false;
    n.gen++;
    for (const tk of n.tickers) tk.stop();
    n.bsync?.close();
    n.bsync = null;
    // The operator's step on the other nodes (§9.6): their sync legs to it go.
    for (const p of w.members()) {
      p.source?.removePeer(n.member);
      p.sync_sessions.get(n.member)?.close('peer removed');
      p.sync_sessions.delete(n.member);
    }
    for (const s of n.sync_sessions.values()) s.close('removed');
    w.client.sessions.get(n.member)?.close('removed');
  });
}

export function extendPool(w: SimWorld, i: number): void {
  const m = Math.max(...w.nodes.map((x) => x.member)) + 1;
  const n = w.newNode(m);
  n.extending = true;
  w.t(`fault #${i}: extend with node${m}`);
  w.emit('member', m);
  w.joinPeers(n);
  for (const p of w.members()) if (p !== n) w.connectPeer(p, n, () => undefined);
  if (w.client.up) extendMember(w, w.client, n);
}

/**
 * The operator's extend of `n` by client `c`, retried until it works. A new node that
 * crashed before its join, or took the join but the client's extend failed after it,
 * refuses another create-mode join: it never held data, so the operator makes its store
 * afresh (delete_store, create_store) and runs the extend again.
 */
function extendMember(w: SimWorld, c: SimClient, n: SimNode): void {
  const m = n.member;
  let s = w.session('client', n.host);
  c.sessions.set(m, s);
  void s.open().catch(() => undefined);
  const attempt = (): void => {
    if (c.gen !== w.client.gen || !c.up || !n.in_pool) return;
    if (s.state === 'CLOSED') {
      s = w.session('client', n.host);
      c.sessions.set(m, s);
      void s.open().catch(() => undefined);
    }
    if (s.state !== 'CONNECTED') return void w.clock.setTimer(50, attempt);
    const mark = linkMark(s);
    c.pool.extend(s.name, new TransportLeg(s, GID, POOL, CHUNK, false), 128, (st, leg, why) => {
      if (c.gen !== w.client.gen) return;
      if (st !== 0 || leg === null) {
        w.t(`extend node${m}: ${why ?? st}, retried`);
        if (n.up && !(n.pool.state === 'REGISTERED' && n.pool.marked_create) && n.pool.unregister('store made afresh') === null) {
          w.freshDisks(n);
          w.registerStore(n, n.pool, 'create');
          w.t(`operator: node${m}'s store made afresh for the extend`);
        }
        return void w.clock.setTimer(200, attempt);
      }
      n.extending = false;
      w.kinds_hit.add('extend');
      followLinkEvents(s, c.pool, leg, nullLogger, mark);
    });
  };
  attempt();
}

/**
 * Schedule 1's extension as it ran: the node is created and serves (its disks draw from
 * the seed's stream, its tickers run), but never joins: the rest of the step waited
 * behind an `await` that resolved only after the seed ended.
 */
export function strayNode(w: SimWorld, m: number): void {
  void w.serve(w.nodeShell(m)).catch(() => undefined);
}

export function replaceDisk(w: SimWorld, n: SimNode, i: number): void {
  const gen = n.gen;
  n.bsync?.close();
  n.bsync = null;
  // remove_store: the maps are persisted, the store leaves the pool (once no chunk sync runs).
  const unregister = (tries: number): void => {
    if (n.gen !== gen) return;
    const err = n.pool.unregister('remove_store');
    if (err !== null) {
      if (tries > 100) return w.violate(`liveness: replace of node${n.member}: ${err}`);
      return void w.clock.setTimer(10, () => unregister(tries + 1));
    }
    n.gen++;
    const g2 = n.gen;
    w.freshDisks(n);
    w.registerStore(n, n.pool, 'replace');
    w.t(`fault #${i}: node${n.member} disk replaced by an empty one`);
    w.kinds_hit.add('replace');
    n.pool.persistMetadata((st) => {
      if (n.gen !== g2) return;
      if (st !== 0) return w.violate(`replace: node${n.member} metadata not persisted (${st})`);
      w.startTickers(n);
      w.startBackgroundSync(n);
    });
  };
  n.pool.persistMetadata(() => unregister(0));
}
