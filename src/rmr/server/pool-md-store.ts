// pool_md on a storage node's store (protocol/pool-md.ts is its encoding): two alternating
// checksummed slots (md-slots.ts) in RMR's metadata region.

import { Errno } from '../../util/errno.js';
import { POOL_MD_MAGIC, POOL_MD_VERSION, POOL_MD_VERSIONS, decodePoolMd, encodePoolMd, type PoolMd } from '../protocol/pool-md.js';
import type { IoCallback, MetaStore } from './io-store.js';
import { MetaSlots, slotVerdict } from './md-slots.js';

/** pool_md persisted through a MetaStore at `base` (two slots). */
export class PoolMdStore {
  private readonly slots: MetaSlots;
  constructor(meta: MetaStore, base: number) {
    this.slots = new MetaSlots(meta, base, POOL_MD_MAGIC, POOL_MD_VERSION, POOL_MD_VERSIONS);
  }
  /**
   * The newest valid pool_md, or null if never written. `notes` name every damaged slot
   * (prefixed `pool_md`): with status 0 the record came from the other slot (or, beside a
   * blank slot, a torn first write was taken as never written); EBADMSG when both are damaged.
   * A version-1 record loads with the legacy owner section (pool-md.ts legacyOwner).
   */
  load(cb: (status: number, md: PoolMd | null, notes: readonly string[]) => void): void {
    this.slots.load((status, rec) => {
      const notes = this.slots.load_notes.map((n) => `pool_md ${n}`);
      if (status !== 0) return cb(status, null, notes);
      if (slotVerdict(this.slots, rec) === 'damaged') return cb(Errno.EBADMSG, null, notes);
      if (rec === null) return cb(0, null, notes);
      const md = decodePoolMd(rec.payload, rec.version);
      if (typeof md === 'string') return cb(Errno.EBADMSG, null, [...notes, `pool_md: ${md}`]);
      cb(0, md, notes);
    });
  }
  store(md: PoolMd, cb: IoCallback): void {
    this.slots.store(encodePoolMd(md), cb);
  }
}
