// Pool metadata (the reference's rmr_pool_md / rmr_srv_md, §3.6): what a pool is and who its
// members are, kept by every storage node and learned by the compute client on assemble.
// The client owns the header part; each storage node owns its own srv_md slot and merges the
// peers' slots. Persisted in alternating checksummed slots (server/pool-md-store.ts).
//
//   header: pool_name | pool_uuid[16] | group_id u32 | chunk_size u32 | mapped_size u64 (bytes)
//           | queue_depth u32 | map_ver u64
//   srv_md x MAX_MEMBERS: member_id u8 (0 = free) | srv_state u8 | store_state u8
//           | map_update_state u8 | discard_entries u8 | map_ver u64 | mapped_size u64 (bytes)

import { Layout, type ValuesOf } from './layout.js';
import { MAX_MEMBERS } from './msg.js';

export const POOL_MD_MAGIC = 0x504d_4d52; // "RMMP"
export const POOL_MD_VERSION = 1;
/** A storage server pool's state (server/server-pool-state.ts), as srv_state encodes it. */
export const SERVER_POOL_STATES = ['EMPTY', 'REGISTERED', 'CREATED', 'NORMAL', 'NO_IO'] as const;
export type ServerPoolState = (typeof SERVER_POOL_STATES)[number];
export const MAP_UPDATE_STATES = ['DISABLED', 'READY', 'DONE'] as const;
export type MapUpdateState = (typeof MAP_UPDATE_STATES)[number];

/** Chunk sizes a pool may use (reference: power of two, 128 KiB - 1 MiB on the server; we allow 4 KiB up). */
export function checkChunkSize(chunk_size: number): string | null {
  if (!Number.isInteger(chunk_size) || chunk_size < 4096 || chunk_size > 1 << 30 || (chunk_size & (chunk_size - 1)) !== 0) {
    return `chunk_size ${chunk_size} must be a power of two from 4096`;
  }
  return null;
}

/** A pool UUID of all zeroes: not assigned yet (the first BRMR map assigns one). */
export function uuidUnset(u: Buffer): boolean {
  return u.every((x) => x === 0);
}

/** 32 hex digits with dashes (as brmr's uuidText; RMR sits below BRMR and keeps its own). */
export function poolUuidText(u: Buffer): string {
  const h = u.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * Why two pool UUIDs name different pools, or null when they agree or either is not
 * assigned yet (issue 19, item 6). `a` and `b` say whose each is, for the message.
 */
export function uuidConflict(a: Buffer, a_is: string, b: Buffer, b_is: string): string | null {
  if (uuidUnset(a) || uuidUnset(b) || a.equals(b)) return null;
  return `pool UUID ${poolUuidText(a)} (${a_is}) differs from ${poolUuidText(b)} (${b_is}): a store or node of another pool of the same name`;
}

const Header = new Layout(
  'pool_md',
  {
    pool_name: 'name',
    pool_uuid: { bytes: 16 },
    group_id: 'u32',
    chunk_size: 'u32',
    mapped_size: 'u64',
    queue_depth: 'u32',
    map_ver: 'u64',
  },
  (v) => checkChunkSize(v.chunk_size) ?? (v.mapped_size % 512 !== 0 ? 'mapped_size must be a multiple of 512' : null),
);

const Slot = new Layout(
  'srv_md',
  { member_id: 'u8', srv_state: 'u8', store_state: 'u8', map_update_state: 'u8', discard_entries: 'u8', map_ver: 'u64', mapped_size: 'u64' },
  (v) =>
    v.srv_state >= SERVER_POOL_STATES.length
      ? `server state ${v.srv_state}`
      : v.map_update_state >= MAP_UPDATE_STATES.length
        ? `map update state ${v.map_update_state}`
        : v.store_state > 1 || v.discard_entries > 1
          ? 'flag out of range'
          : null,
);

export type PoolMdHeader = ValuesOf<typeof Header.spec>;

export interface SrvMd {
  member_id: number;
  srv_state: ServerPoolState;
  store_state: boolean;
  map_update_state: MapUpdateState;
  discard_entries: boolean;
  map_ver: number;
  mapped_size: number;
}

export interface PoolMd {
  header: PoolMdHeader;
  /** MAX_MEMBERS slots; member_id 0 marks a free one. */
  srv_md: SrvMd[];
}

export function emptySrvMd(): SrvMd {
  return { member_id: 0, srv_state: 'EMPTY', store_state: false, map_update_state: 'DISABLED', discard_entries: false, map_ver: 0, mapped_size: 0 };
}

export function encodePoolMd(md: PoolMd): Buffer {
  if (md.srv_md.length !== MAX_MEMBERS) throw new RangeError(`pool_md needs ${MAX_MEMBERS} srv_md slots`);
  const ids = md.srv_md.map((s) => s.member_id).filter((id) => id !== 0);
  if (new Set(ids).size !== ids.length) throw new RangeError('a member appears twice in srv_md');
  return Buffer.concat([
    Header.encode(md.header),
    ...md.srv_md.map((s) =>
      Slot.encode({
        member_id: s.member_id,
        srv_state: SERVER_POOL_STATES.indexOf(s.srv_state),
        store_state: s.store_state ? 1 : 0,
        map_update_state: MAP_UPDATE_STATES.indexOf(s.map_update_state),
        discard_entries: s.discard_entries ? 1 : 0,
        map_ver: s.map_ver,
        mapped_size: s.mapped_size,
      }),
    ),
  ]);
}

export function decodePoolMd(buf: Buffer): PoolMd | string {
  const h = Header.decode(buf);
  if (!h.ok) return h.reason;
  let o = h.bytes;
  const srv_md: SrvMd[] = [];
  for (let i = 0; i < MAX_MEMBERS; i++) {
    const s = Slot.decode(buf, o);
    if (!s.ok) return s.reason;
    o += s.bytes;
    srv_md.push({
      member_id: s.value.member_id,
      srv_state: SERVER_POOL_STATES[s.value.srv_state] as ServerPoolState,
      store_state: s.value.store_state === 1,
      map_update_state: MAP_UPDATE_STATES[s.value.map_update_state] as MapUpdateState,
      discard_entries: s.value.discard_entries === 1,
      map_ver: s.value.map_ver,
      mapped_size: s.value.mapped_size,
    });
  }
  if (o !== buf.length) return `${buf.length - o} trailing bytes in pool_md`;
  const ids = srv_md.map((s) => s.member_id).filter((id) => id !== 0);
  if (new Set(ids).size !== ids.length) return 'a member appears twice in srv_md';
  return { header: h.value, srv_md };
}
