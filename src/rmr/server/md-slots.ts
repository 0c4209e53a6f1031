// A metadata record kept in two alternating checksummed page slots (ARCHITECTURE.md §7): an
// update goes to the slot not holding the newest good copy, so a torn write can never
// destroy the last good one. The record is checked before it is written and after it is read.
//
//   page (4096 bytes)
//   0  u32 magic | 4 u16 format_version | 6 u16 payload_len | 8 u64 seq | 16 u32 crc32c
//   20 payload (payload_len bytes) | zero padding
//   crc32c covers bytes 0..16 and the payload.

import { crc32c } from '../../util/crc32c.js';
import { Errno } from '../../util/errno.js';
import type { IoCallback, MetaStore } from './io-store.js';

export const MD_PAGE = 4096;
export const MD_HEADER = 20;
export const MD_MAX_PAYLOAD = MD_PAGE - MD_HEADER;

export interface SlotRecord {
  seq: number;
  /** The record's format version (one of those the reader accepts). */
  version: number;
  payload: Buffer;
}

function checksum(page: Buffer, payload_len: number): number {
  return crc32c(page.subarray(MD_HEADER, MD_HEADER + payload_len), crc32c(page.subarray(0, 16)));
}

export function encodeSlotPage(magic: number, version: number, seq: number, payload: Buffer): Buffer {
  if (payload.length > MD_MAX_PAYLOAD) throw new RangeError(`metadata payload ${payload.length} > ${MD_MAX_PAYLOAD}`);
  if (!Number.isSafeInteger(seq) || seq < 1) throw new RangeError(`bad sequence number ${seq}`);
  const page = Buffer.alloc(MD_PAGE);
  page.writeUInt32LE(magic >>> 0, 0);
  page.writeUInt16LE(version, 4);
  page.writeUInt16LE(payload.length, 6);
  page.writeUInt32LE(seq % 0x1_0000_0000, 8);
  page.writeUInt32LE(Math.floor(seq / 0x1_0000_0000), 12);
  payload.copy(page, MD_HEADER);
  page.writeUInt32LE(checksum(page, payload.length), 16);
  return page;
}

/**
 * The record in a page, or the reason it is not a valid one. `version`: the format version
 * the reader accepts, or a list of them (an older format a newer reader still loads).
 */
export function decodeSlotPage(page: Buffer, magic: number, version: number | readonly number[]): SlotRecord | string {
  if (page.length !== MD_PAGE) return `page of ${page.length} bytes`;
  if (page.readUInt32LE(0) !== magic >>> 0) return 'bad magic';
  const accepted = typeof version === 'number' ? [version] : version;
  const v = page.readUInt16LE(4);
  if (!accepted.includes(v)) return `format version ${v}, expected ${accepted.join(' or ')}`;
  const len = page.readUInt16LE(6);
  if (len > MD_MAX_PAYLOAD) return `payload length ${len}`;
  if (page.readUInt32LE(16) !== checksum(page, len)) return 'checksum mismatch';
  const hi = page.readUInt32LE(12);
  if (hi > 0x1f_ffff) return 'sequence number out of range';
  const seq = page.readUInt32LE(8) + hi * 0x1_0000_0000;
  if (seq < 1) return 'sequence number 0';
  return { seq, version: v, payload: Buffer.from(page.subarray(MD_HEADER, MD_HEADER + len)) };
}

/**
 * What a load of two slots means when the newest valid record is missing or a slot is bad.
 * A crash tears at most the one slot being written (updates alternate), so: both slots
 * damaged is corruption (refuse the record); one damaged beside a blank one is a first write
 * torn by a crash, or the only copy damaged (accept as never written, but say so); one
 * damaged beside a valid one is recovered from the valid one (say so).
 */
export function slotVerdict(slots: MetaSlots, rec: SlotRecord | null): 'ok' | 'recovered' | 'torn_first' | 'damaged' {
  if (slots.damaged_slots === 0) return 'ok';
  if (rec !== null) return 'recovered';
  return slots.damaged_slots >= 2 ? 'damaged' : 'torn_first';
}

/**
 * One record in two slots at `base` and `base + MD_PAGE`. Stores are serialised: while one
 * is being written, later payloads coalesce into the next write (only the newest matters).
 * A payload equal to the newest good copy is durable already and costs no IO: periodic
 * persistence of unchanged metadata must not turn into a flush of the store every tick.
 */
export class MetaSlots {
  private readonly meta: MetaStore;
  private readonly base: number;
  private readonly magic: number;
  /** The version records are written with. */
  private readonly version: number;
  /** The versions a load accepts (the written one among them). */
  private readonly accepted: readonly number[];
  /** Slot holding the newest good copy (-1: none yet) and its sequence number. */
  private slot = -1;
  private seq = 0;
  /** Payload of the newest good copy, when known (loaded or written by us). */
  private durable: Buffer | null = null;
  private writing = false;
  private next: { payload: Buffer; cbs: IoCallback[] } | null = null;
  /** Why the last load ignored a slot (for operators); blank (never written) slots are not noted. */
  readonly load_notes: string[] = [];
  /** Slots the last load found written but invalid (damaged or torn), and blank ones. */
  damaged_slots = 0;
  blank_slots = 0;

  /** `accepted`: older versions a load also takes (their payloads are the caller's to convert). */
  constructor(meta: MetaStore, base: number, magic: number, version: number, accepted: readonly number[] = [version]) {
    if (!accepted.includes(version)) throw new RangeError(`the written version ${version} must be accepted`);
    this.meta = meta;
    this.base = base;
    this.magic = magic;
    this.version = version;
    this.accepted = accepted;
  }

  /** Reads both slots; yields the newest valid record (or null if neither is valid). */
  load(cb: (status: number, rec: SlotRecord | null) => void): void {
    this.meta.readMeta(this.base, 2 * MD_PAGE, (status, data) => {
      if (status !== 0 || data === null) return cb(status === 0 ? Errno.EIO : status, null);
      let best: SlotRecord | null = null;
      let best_slot = -1;
      this.load_notes.length = 0;
      this.damaged_slots = 0;
      this.blank_slots = 0;
      for (let s = 0; s < 2; s++) {
        const page = data.subarray(s * MD_PAGE, (s + 1) * MD_PAGE);
        const r = decodeSlotPage(page, this.magic, this.accepted);
        if (typeof r === 'string') {
          if (page.every((b) => b === 0)) this.blank_slots++;
          else {
            this.damaged_slots++;
            this.load_notes.push(`slot ${s}: ${r}`);
          }
          continue;
        }
        if (best === null || r.seq > best.seq) {
          best = r;
          best_slot = s;
        }
      }
      this.slot = best_slot;
      this.seq = best?.seq ?? 0;
      // An older format is not the durable copy of anything we would write: the first store
      // writes the current version even if the payload bytes compare equal.
      this.durable = best !== null && best.version === this.version ? best.payload : null;
      cb(0, best);
    });
  }

  /** Durably stores `payload` as the newest record (cb(0) at once when it is already). */
  store(payload: Buffer, cb: IoCallback): void {
    if (payload.length > MD_MAX_PAYLOAD) throw new RangeError(`metadata payload ${payload.length} > ${MD_MAX_PAYLOAD}`);
    // At once, not later: the simulator runs on a synchronous clock, where a microtask would
    // wait for the end of the run.
    if (!this.writing && this.next === null && this.durable !== null && this.durable.equals(payload)) return cb(0);
    if (this.next === null) this.next = { payload, cbs: [cb] };
    else {
      this.next.payload = payload;
      this.next.cbs.push(cb);
    }
    if (!this.writing) this.writeNext();
  }

  get lastSeq(): number {
    return this.seq;
  }

  private writeNext(): void {
    const job = this.next;
    if (job === null) return;
    this.next = null;
    this.writing = true;
    const target = this.slot === 0 ? 1 : 0;
    const seq = this.seq + 1;
    const page = encodeSlotPage(this.magic, this.version, seq, job.payload);
    // Assert on our side of the boundary before the page leaves.
    const back = decodeSlotPage(page, this.magic, this.version);
    if (typeof back === 'string' || back.seq !== seq) throw new Error(`invariant: metadata page does not verify: ${typeof back === 'string' ? back : `seq ${back.seq}`}`);
    this.meta.writeMeta(this.base + target * MD_PAGE, page, (status) => {
      this.writing = false;
      if (status === 0) {
        this.slot = target;
        this.seq = seq;
        this.durable = Buffer.from(job.payload);
      } else this.durable = null;
      for (const c of job.cbs) c(status);
      this.writeNext();
    });
  }
}
