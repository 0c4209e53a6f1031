// The compute-client role (rmr-client IO pools + brmr-client devices + NBD exports): mounts
// `brmr-client/` and (shared) `rmr-client/`, opens the NBD TCP listener if configured, and
// resumes what the object book holds: IO pools, their legs (add_sess mode=assemble: the
// members go through recovery), then the devices (re-map) and their exports.

import type { Role, RoleContext, RoleFactory, RoleStatus, LegStatus } from './daemon.js';
import type { TreeNode } from './control-tree.js';
import { Reader } from './validate.js';
import type { RmrClientModule } from './rmr-client-module.js';
import { ClientModule } from './client-module.js';
import { Resumer } from './resume.js';
import { sharedClientModule } from './storage-role.js';

export class ClientRole implements Role {
  readonly name = 'client';
  private devices: ClientModule | null = null;
  private clients: RmrClientModule | null = null;
  private resumer: Resumer | null = null;

  constructor(private readonly queue_depth: number) {}

  mounts(ctx: RoleContext): Readonly<Record<string, TreeNode>> {
    const { module, mount } = sharedClientModule(ctx);
    module.io_enabled = true;
    this.clients = module;
    this.devices = new ClientModule(ctx, module, this.queue_depth);
    return { 'brmr-client': this.devices.tree(), ...(mount ? { 'rmr-client': module.tree() } : {}) };
  }

  async start(ctx: RoleContext): Promise<void> {
    const devices = this.devices as ClientModule;
    const clients = this.clients as RmrClientModule;
    await devices.listen();
    const book = ctx.objects();
    const resumer = new Resumer(ctx.clock, ctx.logger, ctx.events);
    this.resumer = resumer;
    if (!ctx.config.resume) return;
    for (const r of book.list('client_pool')) if (!r.sync) await clients.joinPool(r.pool, false, r.chunk_size, r.min_replicas, false);
    for (const r of book.list('client_pool')) {
      if (r.sync) continue;
      const e = clients.io_pools.get(r.pool);
      if (e === undefined) continue;
      const sessions = book.list('session').filter((s) => !s.sync && s.pool === r.pool);
      const legs = sessions.map((s) => resumer.run(`session ${r.pool}/${s.sessname}`, () => book.has(s) && !e.legs.has(s.sessname), () => clients.addSess(e, s.sessname, s.paths, 'assemble', false)));
      // A device is re-mapped and exported once its pool serves again (a NORMAL leg): after
      // a client crash every member stays RECONNECTING until recovery (Cases 3/4) has them
      // all and reconciles them, and an export before that failed its IO with ENODEV (the
      // client-crash fault scenario saw hundreds of failed NBD requests right after the
      // restart). Until then NBD clients find no export, as while the daemon was down.
      const devs = book.list('device').filter((d) => d.pool === r.pool);
      if (devs.length === 0 || legs.length === 0) continue;
      this.whenServing(ctx, r.pool, () => {
        for (const d of devs) {
          void resumer.run(`map_device ${d.name}`, () => book.has(d) && !devices.devices.has(d.name), () => devices.mapDevice(d.pool, d.size_sectors, d.name, d.export, false));
        }
      });
    }
  }

  /** Calls `fn` once the IO pool has a NORMAL leg (now, or at the leg event that makes one). */
  private whenServing(ctx: RoleContext, pool: string, fn: () => void): void {
    // The pool's own legs: the module's session list fills only when add_sess answers, which
    // may come after the leg event that made the pool serve.
    const serving = (): boolean => [...(this.clients?.io_pools.get(pool)?.pool?.legs() ?? [])].some((l) => l.state === 'NORMAL');
    if (serving()) return fn();
    const unsubscribe = ctx.events.subscribe((ev) => {
      if (ev.kind !== 'pool_session' || !ev.subject.startsWith(`${pool}/`) || ev.to !== 'normal' || !serving()) return;
      unsubscribe();
      this.waiting.delete(unsubscribe);
      fn();
    });
    this.waiting.add(unsubscribe);
  }

  /** Subscriptions of devices waiting for their pool (dropped at stop). */
  private readonly waiting = new Set<() => void>();

  async stop(): Promise<void> {
    for (const u of this.waiting) u();
    this.waiting.clear();
    this.resumer?.stop();
    await this.devices?.shutdown();
    this.clients?.shutdown(false);
  }

  status(): RoleStatus {
    const legs: LegStatus[] = [];
    for (const e of this.clients?.io_pools.values() ?? []) {
      for (const sl of e.legs.values()) {
        legs.push({ pool: e.name, side: 'client', member_id: sl.leg.member_id, session: sl.sessname, state: `${sl.leg.state.toLowerCase()}${sl.leg.maintenance ? ' (maintenance)' : ''}`, dirty_chunks: e.pool?.maps.get(sl.leg.member_id)?.dirtyCount ?? null, total_chunks: e.pool?.no_of_chunks ?? null });
      }
    }
    const d = this.devices;
    return {
      state: 'ok',
      legs,
      detail: {
        devices: [...(d?.devices.values() ?? [])].map((x) => d?.deviceJson(x) ?? null),
        pending: Object.fromEntries(this.resumer?.pending ?? []),
      },
    };
  }
}

export function parseClientSettings(v: unknown, at: string): { queue_depth: number } {
  const r = new Reader();
  const o = v === null || v === undefined ? {} : r.object(at, v, ['queue_depth']);
  const queue_depth = o?.queue_depth === undefined ? 128 : (r.int(`${at}.queue_depth`, o.queue_depth, 1, 4096) ?? 128);
  r.done();
  return { queue_depth };
}

export const clientRoleFactory: RoleFactory = (settings, at) => new ClientRole(parseClientSettings(settings, at).queue_depth);
