// Persistence of a node's dirty maps through its MetaStore (reference §3.10, made crash
// consistent). The maps are written as one image into the bank not referenced by the
// current directory record, then a new directory record (alternating checksummed slots)
// points to it: a crash at any moment leaves the previous image intact and referenced.
//
// Image: per map  member_id u8 | pad[3] | page_count u32 | state u8[page_count]
//                 (0 clean, 1 full, 2 bitmap follows) | bitmaps of state-2 pages
// so clean and fully dirty pages cost one byte. Directory record payload:
//   bank u8 | flags u8 | pad[2] | image_len u32 | image_crc32c u32 | map_ver u64
// flags bit 0 (MAP_DIR_LOST): the maps were lost once and no map update has replaced them
// since, so the image holds no knowledge, only "everything dirty" (issue 19 item 3). The
// byte was padding before: older images read as not lost.
//
// Losing maps is never silent: an image that fails its checksum is reported, and the owner
// then treats every chunk as dirty (over-approximating dirtiness is safe; under- is not).

import { crc32c } from '../../util/crc32c.js';
import { Errno } from '../../util/errno.js';
import { DirtyMap, PAGE_BYTES } from '../protocol/dirty-map.js';
import { MetaSlots, MD_PAGE } from './md-slots.js';
import { MAX_MEMBERS } from '../protocol/msg.js';
import type { IoCallback, MetaStore } from './io-store.js';

export const MAP_DIR_MAGIC = 0x444d_4d52; // "RMMD"
export const MAP_DIR_VERSION = 1;
export const MAP_DIR_LOST = 0x01;

/** Bytes one bank needs for `MAX_MEMBERS` maps of `page_count` pages at worst. */
export function mapBankBytes(page_count: number): number {
  const per_map = 8 + page_count + page_count * PAGE_BYTES;
  return Math.ceil((MAX_MEMBERS * per_map) / MD_PAGE) * MD_PAGE;
}

/** Bytes of metadata space a map store needs (directory slots + two banks). */
export function mapStoreBytes(page_count: number): number {
  return 2 * MD_PAGE + 2 * mapBankBytes(page_count);
}

export function encodeMapImage(maps: Iterable<DirtyMap<unknown>>): Buffer {
  const parts: Buffer[] = [];
  const page = new Uint8Array(PAGE_BYTES);
  for (const m of maps) {
    const head = Buffer.alloc(8 + m.page_count);
    head[0] = m.member_id;
    head.writeUInt32LE(m.page_count, 4);
    const bitmaps: Buffer[] = [];
    for (let p = 0; p < m.page_count; p++) {
      const st = m.pageState(p);
      head[8 + p] = st;
      if (st === 2) bitmaps.push(Buffer.from(m.encodePage(p, page)));
    }
    parts.push(head, ...bitmaps);
  }
  return Buffer.concat(parts);
}

/** Restores maps from an image; returns the maps or the reason the image is unusable. */
export function decodeMapImage(img: Buffer, no_of_chunks: number): DirtyMap<unknown>[] | string {
  const out: DirtyMap<unknown>[] = [];
  let o = 0;
  while (o < img.length) {
    if (out.length >= MAX_MEMBERS) return 'more maps than members';
    if (o + 8 > img.length) return 'truncated map header';
    const member_id = img[o] as number;
    const page_count = img.readUInt32LE(o + 4);
    if (member_id === 0) return 'map of member 0';
    const m = new DirtyMap<unknown>(member_id, no_of_chunks);
    if (page_count !== m.page_count) return `map of ${page_count} pages, expected ${m.page_count}`;
    const states = img.subarray(o + 8, o + 8 + page_count);
    if (states.length !== page_count) return 'truncated page table';
    o += 8 + page_count;
    for (let p = 0; p < page_count; p++) {
      const st = states[p];
      if (st === 0) continue;
      if (st === 1) {
        const first = p * PAGE_BYTES * 8;
        m.setDirty(first, Math.min(PAGE_BYTES * 8, no_of_chunks - first));
      } else if (st === 2) {
        if (o + PAGE_BYTES > img.length) return 'truncated bitmap';
        const err = m.decodePage(p, img.subarray(o, o + PAGE_BYTES), 'overwrite');
        if (err !== null) return err;
        o += PAGE_BYTES;
      } else return `bad page state ${String(st)}`;
    }
    if (out.some((x) => x.member_id === member_id)) return `member ${member_id} twice`;
    out.push(m);
  }
  return out;
}

export class MapStore {
  private readonly meta: MetaStore;
  private readonly base: number;
  private readonly bank_bytes: number;
  private readonly dir: MetaSlots;
  private bank = -1;
  /** The image and version the directory points at, when known; an equal store costs no IO. */
  private durable: { img: Buffer; map_ver: number; lost: boolean } | null = null;
  private storing = 0;

  constructor(meta: MetaStore, base: number, page_count: number) {
    this.meta = meta;
    this.base = base;
    this.bank_bytes = mapBankBytes(page_count);
    this.dir = new MetaSlots(meta, base, MAP_DIR_MAGIC, MAP_DIR_VERSION);
  }

  /** Loads the last persisted maps: null when none were ever written; `lost` as stored with them. */
  load(no_of_chunks: number, cb: (status: number, maps: DirtyMap<unknown>[] | null, map_ver: number, reason: string | null, lost: boolean) => void): void {
    this.dir.load((status, rec) => {
      if (status !== 0) return cb(status, null, 0, 'map directory unreadable', false);
      if (rec === null) return cb(0, null, 0, null, false);
      const p = rec.payload;
      if (p.length !== 20 || (p[0] !== 0 && p[0] !== 1)) return cb(Errno.EBADMSG, null, 0, 'bad map directory', false);
      const bank = p[0] as number;
      const len = p.readUInt32LE(4);
      const crc = p.readUInt32LE(8);
      const map_ver = p.readUInt32LE(12) + p.readUInt32LE(16) * 0x1_0000_0000;
      if (len > this.bank_bytes) return cb(Errno.EBADMSG, null, 0, 'map image larger than its bank', false);
      this.meta.readMeta(this.bankOffset(bank), len, (s, img) => {
        if (s !== 0 || img === null) return cb(s !== 0 ? s : Errno.EIO, null, 0, 'map image unreadable', false);
        if (crc32c(img) !== crc) return cb(Errno.EBADMSG, null, 0, 'map image checksum mismatch', false);
        const maps = decodeMapImage(img, no_of_chunks);
        if (typeof maps === 'string') return cb(Errno.EBADMSG, null, 0, maps, false);
        this.bank = bank;
        const lost = ((p[1] as number) & MAP_DIR_LOST) !== 0;
        this.durable = { img, map_ver, lost };
        cb(0, maps, map_ver, null, lost);
      });
    });
  }

  /**
   * Writes the maps into the other bank, then points the directory at it. Maps equal to the
   * ones stored (same image, same version) are durable already: no IO, cb(0) at once.
   */
  store(maps: Iterable<DirtyMap<unknown>>, map_ver: number, cb: IoCallback, lost = false): void {
    const img = encodeMapImage(maps);
    if (img.length > this.bank_bytes) throw new Error(`invariant: map image ${img.length} > bank ${this.bank_bytes}`);
    const d = this.durable;
    if (this.storing === 0 && d !== null && d.map_ver === map_ver && d.lost === lost && d.img.equals(img)) return cb(0);
    const target = this.bank === 0 ? 1 : 0;
    this.storing++;
    this.durable = null;
    const done = (s: number): void => {
      this.storing--;
      if (s === 0 && this.storing === 0) this.durable = { img, map_ver, lost };
      cb(s);
    };
    this.meta.writeMeta(this.bankOffset(target), img, (s) => {
      if (s !== 0) return done(s);
      const rec = Buffer.alloc(20);
      rec[0] = target;
      rec[1] = lost ? MAP_DIR_LOST : 0;
      rec.writeUInt32LE(img.length, 4);
      rec.writeUInt32LE(crc32c(img), 8);
      rec.writeUInt32LE(map_ver % 0x1_0000_0000, 12);
      rec.writeUInt32LE(Math.floor(map_ver / 0x1_0000_0000), 16);
      this.dir.store(rec, (s2) => {
        if (s2 === 0) this.bank = target;
        done(s2);
      });
    });
  }

  private bankOffset(bank: number): number {
    return this.base + 2 * MD_PAGE + bank * this.bank_bytes;
  }
}
