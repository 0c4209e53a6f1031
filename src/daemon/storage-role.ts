// The storage role (rmr-server + brmr-server + the node's sync pools): mounts
// `rmr-server/`, `brmr-server/` and (shared) `rmr-client/`, opens the data-plane listener,
// and resumes what the object book holds: server pools, stores (add_store, checked against
// the recorded store UUID), sync pools and their peers, add_clt, an operator's sync stop.

import type { Role, RoleContext, RoleFactory, RoleStatus, LegStatus } from './daemon.js';
import type { TreeNode } from './control-tree.js';
import { Reader } from './validate.js';
import { RmrClientModule } from './rmr-client-module.js';
import { StorageModule, type StorageSettings } from './storage-module.js';
import { Resumer } from './resume.js';

export function sharedClientModule(ctx: RoleContext): { module: RmrClientModule; mount: boolean } {
  let fresh = false;
  const module = ctx.shared('rmr-client', () => {
    fresh = true;
    return new RmrClientModule(ctx);
  });
  return { module, mount: fresh };
}

export function parseStorageSettings(v: unknown, at: string): StorageSettings {
  const r = new Reader();
  const o = v === null || v === undefined ? {} : r.object(at, v, ['sync_max_bytes_per_s', 'sync_min_bytes_per_s', 'sync_share_percent', 'fault_injection', 'store_dirs', 'store_symlinks']);
  let store_dirs: string[] | null = null;
  if (o?.store_dirs !== undefined) {
    store_dirs = [];
    (r.list(`${at}.store_dirs`, o.store_dirs, 1, 256) ?? []).forEach((d, i) => {
      const p = r.string(`${at}.store_dirs[${i}]`, d, { pattern: /^\/[^\0]*$/, hint: 'an absolute path' });
      if (p !== undefined) store_dirs?.push(p);
    });
  }
  const s: StorageSettings = {
    sync_max_bytes_per_s: o?.sync_max_bytes_per_s === undefined ? 4 * 2 ** 30 : (r.size(`${at}.sync_max_bytes_per_s`, o.sync_max_bytes_per_s, 1 << 20, 2 ** 40) ?? 0),
    sync_min_bytes_per_s: o?.sync_min_bytes_per_s === undefined ? 10 << 20 : (r.size(`${at}.sync_min_bytes_per_s`, o.sync_min_bytes_per_s, 1 << 16, 2 ** 40) ?? 0),
    sync_share: o?.sync_share_percent === undefined ? 0.3 : (r.int(`${at}.sync_share_percent`, o.sync_share_percent, 1, 99) ?? 30) / 100,
    fault_injection: o?.fault_injection === undefined ? false : (r.bool(`${at}.fault_injection`, o.fault_injection) ?? false),
    store_dirs,
    store_symlinks: o?.store_symlinks === undefined ? false : (r.bool(`${at}.store_symlinks`, o.store_symlinks) ?? false),
  };
  r.done();
  return s;
}

export class StorageRole implements Role {
  readonly name = 'storage';
  private storage: StorageModule | null = null;
  private clients: RmrClientModule | null = null;
  private resumer: Resumer | null = null;

  constructor(private readonly settings: StorageSettings) {}

  mounts(ctx: RoleContext): Readonly<Record<string, TreeNode>> {
    const { module, mount } = sharedClientModule(ctx);
    module.sync_enabled = true;
    this.clients = module;
    this.storage = new StorageModule(ctx, module, this.settings);
    return { 'rmr-server': this.storage.serverTree(), 'brmr-server': this.storage.brmrTree(), ...(mount ? { 'rmr-client': module.tree() } : {}) };
  }

  async start(ctx: RoleContext): Promise<void> {
    const storage = this.storage as StorageModule;
    const clients = this.clients as RmrClientModule;
    await storage.listen();
    const book = ctx.objects();
    const resumer = new Resumer(ctx.clock, ctx.logger, ctx.events);
    this.resumer = resumer;
    if (!ctx.config.resume) return;
    for (const r of book.list('server_pool')) await storage.joinPool(r.pool, r.member_id, r.chunk_size, false);
    for (const r of book.list('client_pool')) if (r.sync) await clients.joinPool(r.pool, true, r.chunk_size, r.min_replicas, false);
    // Stores first (the sync pool is sized by the store), then add_clt: one try each before
    // the role counts as started (local disks), retries in the background; peers likewise.
    for (const r of book.list('store')) {
      const add = (): Promise<unknown> => storage.addStore({ pool: r.pool, device: r.device, store_uuid: Buffer.from(r.store_uuid.replace(/-/g, ''), 'hex') }, false);
      const attach = (): void => {
        if (book.list('clt').some((c) => c.pool === r.pool)) {
          void resumer.run(`add_clt ${r.pool}`, () => book.list('clt').some((c) => c.pool === r.pool), () => storage.addClt(r.pool, r.pool, false));
        }
        if (book.list('sync_stopped').some((c) => c.pool === r.pool)) storage.holdSync(r.pool);
      };
      const first = await add().then(
        () => true,
        (err: unknown) => {
          ctx.logger.log('warn', 'store not re-added at start; retrying', { pool: r.pool, device: r.device, reason: err instanceof Error ? err.message : String(err) });
          return false;
        },
      );
      if (first) attach();
      else void resumer.run(`add_store ${r.pool}`, () => book.has(r) && storage.stores.store(r.pool) === undefined, add).then((ok) => ok && attach());
    }
    for (const r of book.list('session')) {
      if (!r.sync) continue;
      const e = clients.sync_pools.get(r.pool);
      if (e === undefined) continue;
      void resumer.run(`sync session ${r.pool}/${r.sessname}`, () => book.has(r) && !e.legs.has(r.sessname), () => clients.addSess(e, r.sessname, r.paths, null, false));
    }
  }

  async stop(): Promise<void> {
    this.resumer?.stop();
    this.clients?.shutdown(true);
    await this.storage?.shutdown();
  }

  status(): RoleStatus {
    const s = this.storage;
    const legs: LegStatus[] = [];
    for (const [name, e] of s?.pools ?? []) {
      legs.push({ pool: name, side: 'server', member_id: e.pool.member_id, session: null, state: `${e.pool.state.toLowerCase()}${e.pool.maps_lost !== null ? ' (maps lost)' : ''}`, dirty_chunks: e.pool.ownMap()?.dirtyCount ?? null, total_chunks: e.pool.no_of_chunks });
    }
    for (const e of this.clients?.sync_pools.values() ?? []) {
      for (const sl of e.legs.values()) legs.push({ pool: e.name, side: 'client', member_id: sl.leg.member_id, session: sl.sessname, state: `sync ${sl.leg.state.toLowerCase()}` });
    }
    return {
      state: 'ok',
      legs,
      detail: {
        listen: s?.address ?? null,
        pending: Object.fromEntries(this.resumer?.pending ?? []),
        sync: Object.fromEntries([...(s?.pools.keys() ?? [])].map((n) => [n, s?.progressJson(n) ?? null])),
      },
    };
  }
}

export const storageRoleFactory: RoleFactory = (settings, at) => new StorageRole(parseStorageSettings(settings, at));
