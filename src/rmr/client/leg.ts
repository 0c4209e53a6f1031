// A leg: one client pool session, i.e. one replica of a pool as the compute client sees it
// (the reference's rmr_clt_pool_sess, §4.1), and its way to the storage node. The pool's core
// (pool-core.ts) owns the legs; their state changes only through its gatekeeper.

import type { LegCommand, LegCommandCallback } from '../protocol/leg-commands.js';
import type { IoMsgValue, MapAddValue } from '../protocol/msg.js';
import type { LegState, LegStateHolder } from './leg-state.js';

/** One leg's way to its storage node (over the client session shared by the pools). */
export interface LegChannel {
  sendIo(msg: IoMsgValue, data: Buffer | null, cb: (status: number, data: Buffer | null) => void): void;
  sendMapAdd(msg: MapAddValue, cb: (status: number) => void): void;
  command(cmd: LegCommand, cb: LegCommandCallback): void;
  /** Whether the link to the node is up (a FAILED leg with a live link may only need a store check). */
  isConnected(): boolean;
}

export class Leg implements LegStateHolder {
  readonly member_id: number;
  readonly sync: boolean;
  /** Written only by the gatekeeper (ClientPoolCore.setLegState). */
  state: LegState;
  /** Written only by ClientPoolCore.setMaintenance (the gatekeeper reads it). */
  maintenance = false;
  /** Written by the gatekeeper, and cleared by ClientPoolCore.revokeAuthority. */
  was_last_authoritative = false;
  /**
   * Times the leg entered FAILED. A write's answer from a leg counts only if the leg did not
   * fail between sending and the write's completion: a failure may be its node's crash,
   * which loses what it had not flushed.
   */
  failures = 0;
  /**
   * POOL_INFO the node missed while FAILED, replayed in order before it gets maps again
   * (§12.1). Written only by ClientPoolCore.queuePoolInfo and poolInfoDelivered.
   */
  pending_info: LegCommand[] = [];
  /** The node's store was replaced (its pool_md says so): peers mark it fully dirty first (§9.8). */
  replaced = false;
  /**
   * The node's maps were lost (MAP_GET_VER says so, issue 19 item 3): its data may be the
   * newest, but its maps know nothing, so it is never the map source or recovery base until
   * a map update gives it maps or the operator trusts its data.
   */
  maps_lost = false;
  /**
   * Members other than itself whose discard flag (a replaced store, §9.8) the node's pool_md
   * still carried when the client last read it. One left over from a replacement that has
   * finished (the member's own flag goes last) is cleared before the node gets maps or is a
   * recovery's base: ClientRecovery.clearStaleDiscards.
   */
  discard_flags: number[] = [];
  /** LEAVE_POOL was answered (a re-run of del_sess skips it). */
  left = false;
  readonly channel: LegChannel;
  readonly name: string;
  constructor(name: string, member_id: number, sync: boolean, channel: LegChannel, state: LegState) {
    this.name = name;
    this.member_id = member_id;
    this.sync = sync;
    this.channel = channel;
    this.state = state;
  }
}

export type ClientOp = 'read' | 'write' | 'discard' | 'write_zeroes' | 'flush';

/** The answer of a lifecycle operation: 0 or -errno, with a reason when it failed. */
export type OpCallback = (status: number, reason: string | null) => void;
