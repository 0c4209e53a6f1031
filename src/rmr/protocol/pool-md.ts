// Pool metadata (the reference's rmr_pool_md / rmr_srv_md, §3.6): what a pool is and who its
// members are, kept by every storage node and learned by the compute client on assemble.
// The client owns the header part; each storage node owns its own srv_md slot and merges the
// peers' slots. Persisted in alternating checksummed slots (server/pool-md-store.ts).
//
//   header: pool_name | pool_uuid[16] | group_id u32 | chunk_size u32 | mapped_size u64 (bytes)
//           | queue_depth u32 | map_ver u64
//   srv_md x MAX_MEMBERS: member_id u8 (0 = free) | srv_state u8 | store_state u8
//           | map_update_state u8 | discard_entries u8 | map_ver u64 | mapped_size u64 (bytes)
//   owner (version 2, docs/ownership.md §2.1; node-owned: never taken from a client's
//   SEND_MD_BUF): owner_epoch u64 | owner_id [16] | owner_name name | owner_flags u8
//           (bit0 released) | maps_epoch u64 | svc_epoch u64 | svc_ver u64 | svc_cnt u8
//           | svc_ids [4]

import { Layout, type ValuesOf } from './layout.js';
import { MAX_MEMBERS, OWNER_ID_BYTES, checkMembers, checkOwnerName, checkOwnerPair } from './msg.js';

export const POOL_MD_MAGIC = 0x504d_4d52; // "RMMP"
/** 2: the owner section. Version 1 still loads (legacyOwner); the first write stores 2, so a downgrade is impossible. */
export const POOL_MD_VERSION = 2;
/** Versions a node loads, newest first. */
export const POOL_MD_VERSIONS: readonly number[] = [2, 1];
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

const OwnerLayout = new Layout(
  'pool_md owner',
  {
    owner_epoch: 'u64',
    owner_id: { bytes: OWNER_ID_BYTES },
    owner_name: 'name',
    owner_flags: 'u8',
    maps_epoch: 'u64',
    svc_epoch: 'u64',
    svc_ver: 'u64',
    svc_cnt: 'u8',
    svc_ids: { bytes: MAX_MEMBERS },
  },
  (v) =>
    checkOwnerPair(v.owner_epoch, v.owner_id) ??
    checkOwnerName(v.owner_epoch, v.owner_name) ??
    ((v.owner_flags & ~1) !== 0 ? `owner flags 0x${v.owner_flags.toString(16)}` : null) ??
    (v.maps_epoch > v.owner_epoch ? `maps epoch ${v.maps_epoch} beyond the owner epoch ${v.owner_epoch}` : null) ??
    (v.svc_epoch > v.owner_epoch ? `service epoch ${v.svc_epoch} beyond the owner epoch ${v.owner_epoch}` : null) ??
    checkMembers(v.svc_cnt, v.svc_ids),
);

export type PoolMdHeader = ValuesOf<typeof Header.spec>;

/**
 * The pool's owner as this member has accepted it, and its service record (docs/ownership.md
 * §2.1). Epoch 0 with an all-zero id and an empty name: no owner yet (a legacy pool).
 */
export interface OwnerSection {
  epoch: number;
  id: Buffer;
  name: string;
  /** The owner let go of the pool (a handover): the next owner needs no takeover. */
  released: boolean;
  /** The owner epoch of this member's last complete reconciliation (its maps' epoch). */
  maps_epoch: number;
  svc_epoch: number;
  svc_ver: number;
  /** The service set: the data members the owner sends every write to. */
  svc: number[];
}

/**
 * The owner section a version-1 pool_md loads with: no owner, and a service record of every
 * listed member at (0, 0), the conservative value (a new owner then needs every member, as
 * Cases 3/4 do today).
 */
export function legacyOwner(srv_md: readonly SrvMd[]): OwnerSection {
  return { epoch: 0, id: Buffer.alloc(OWNER_ID_BYTES), name: '', released: false, maps_epoch: 0, svc_epoch: 0, svc_ver: 0, svc: srv_md.map((s) => s.member_id).filter((id) => id !== 0) };
}

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
  owner: OwnerSection;
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
    encodeOwner(md.owner),
  ]);
}

function encodeOwner(o: OwnerSection): Buffer {
  const ids = Buffer.alloc(MAX_MEMBERS);
  o.svc.forEach((id, i) => (ids[i] = id));
  return OwnerLayout.encode({
    owner_epoch: o.epoch,
    owner_id: o.id,
    owner_name: o.name,
    owner_flags: o.released ? 1 : 0,
    maps_epoch: o.maps_epoch,
    svc_epoch: o.svc_epoch,
    svc_ver: o.svc_ver,
    svc_cnt: o.svc.length,
    svc_ids: ids,
  });
}

/** A pool_md of format `version` (POOL_MD_VERSIONS), or the reason it is not a valid one. */
export function decodePoolMd(buf: Buffer, version = POOL_MD_VERSION): PoolMd | string {
  if (!POOL_MD_VERSIONS.includes(version)) return `pool_md version ${version}`;
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
  let owner = legacyOwner(srv_md);
  if (version >= 2) {
    const w = OwnerLayout.decode(buf, o);
    if (!w.ok) return w.reason;
    o += w.bytes;
    const v = w.value;
    owner = {
      epoch: v.owner_epoch,
      id: Buffer.from(v.owner_id),
      name: v.owner_name,
      released: v.owner_flags === 1,
      maps_epoch: v.maps_epoch,
      svc_epoch: v.svc_epoch,
      svc_ver: v.svc_ver,
      svc: [...v.svc_ids.subarray(0, v.svc_cnt)],
    };
  }
  if (o !== buf.length) return `${buf.length - o} trailing bytes in pool_md`;
  const ids = srv_md.map((s) => s.member_id).filter((id) => id !== 0);
  if (new Set(ids).size !== ids.length) return 'a member appears twice in srv_md';
  return { header: h.value, srv_md, owner };
}
