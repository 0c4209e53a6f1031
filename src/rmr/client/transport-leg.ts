// A leg's channel over the transport: RMR messages as the user header of a client session's
// requests. Several pools (and legs) share one session per storage node (§2.3). Transport
// failures come back as the TransportError's errno, which the pool logic treats as a leg
// failure.

import type { ClientSession, Permit, RequestKind, ResponseCallback } from '../../transport/client-session.js';
import { TransportError as TransportErrorClass, type TransportError } from '../../transport/errors.js';
import { Errno } from '../../util/errno.js';
import type { LegChannel } from './leg.js';
import { answerBytes, legCommandToWire, type LegCommand, type LegCommandCallback, type PeerMapCommand } from '../protocol/leg-commands.js';
import { CMD_RSP_BYTES, CmdRsp, CmdType, IO_OP_MASK, IoOp, encodeCmd, encodeIo, encodeMapAdd, encodeMapClear, type IoMsgValue, type MapAddValue } from '../protocol/msg.js';

const errnoOf = (e: TransportError): number => e.errno;

/**
 * session.send throws for requests outside the negotiated limits (a user header or payload
 * too large): turn that into a failed completion and give the permit back.
 */
function sendOrFail(session: ClientSession, p: Permit, kind: RequestKind, hdr: Buffer, data: Buffer | null, read_len: number, cb: ResponseCallback): void {
  try {
    session.send(p, kind, hdr, data, read_len, cb);
  } catch (e) {
    session.putPermit(p);
    cb(e instanceof TransportErrorClass ? e : new TransportErrorClass('EINVAL', String(e)), 0, null);
  }
}

export class TransportLeg implements LegChannel {
  constructor(
    readonly session: ClientSession,
    readonly group_id: number,
    readonly pool_name: string,
    readonly chunk_size: number,
    readonly sync: boolean,
  ) {}

  isConnected(): boolean {
    return this.session.state === 'CONNECTED';
  }

  sendIo(msg: IoMsgValue, data: Buffer | null, cb: (status: number, data: Buffer | null) => void): void {
    const is_read = (msg.flags & IO_OP_MASK) === IoOp.READ;
    const hdr = encodeIo(this.group_id, msg);
    this.session.getPermit((err, p) => {
      if (err !== null || p === null) return cb(err === null ? Errno.EIO : errnoOf(err), null);
      sendOrFail(this.session, p, is_read ? 'read' : 'write', hdr, is_read ? null : data, is_read ? msg.length : 0, (e, status, d) => {
        if (e !== null) return cb(errnoOf(e), null);
        cb(status, d);
      });
    });
  }

  private writeType(hdr: Buffer, data: Buffer | null, cb: (status: number) => void): void {
    this.session.getPermit((err, p) => {
      if (err !== null || p === null) return cb(err === null ? Errno.EIO : errnoOf(err));
      sendOrFail(this.session, p, 'write', hdr, data, 0, (e, status) => cb(e !== null ? errnoOf(e) : status));
    });
  }

  sendMapAdd(msg: MapAddValue, cb: (status: number) => void): void {
    this.writeType(encodeMapAdd(this.group_id, msg), null, cb);
  }

  sendMapClear(first_chunk: number, chunk_count: number, member_id: number, map_ver: number, cb: (status: number) => void): void {
    this.writeType(encodeMapClear(this.group_id, { first_chunk, chunk_count, member_id, map_ver }), null, cb);
  }

  sendPeerMap(cmd: PeerMapCommand, cb: (status: number) => void): void {
    const env = { cmd_type: cmd.kind === 'send_map_buf' ? CmdType.SEND_MAP_BUF : CmdType.MAP_BUF_DONE, sync: 1, pool_name: this.pool_name };
    const hdr =
      cmd.kind === 'send_map_buf'
        ? encodeCmd(this.group_id, env, { member_id: cmd.member_id, first_page: cmd.first_page, page_count: cmd.page_count, map_ver: cmd.map_ver })
        : encodeCmd(this.group_id, env, { map_ver: cmd.map_ver });
    this.writeType(hdr, cmd.kind === 'send_map_buf' ? cmd.pages : null, cb);
  }

  command(cmd: LegCommand, cb: LegCommandCallback): void {
    let hdr: Buffer;
    try {
      const w = legCommandToWire(cmd, this.chunk_size);
      hdr = encodeCmd(this.group_id, { cmd_type: w.cmd_type, sync: this.sync ? 1 : 0, pool_name: this.pool_name }, w.payload, w.tail ?? null);
    } catch (e) {
      // A command that does not encode is a caller's bug: it fails, it does not throw into
      // whatever callback issued it (a transport completion would drop its path).
      return cb(Errno.EINVAL, 0, `command ${cmd.kind} does not encode: ${e instanceof Error ? e.message : String(e)}`);
    }
    const read_len = CMD_RSP_BYTES + answerBytes(cmd);
    this.session.getPermit((err, p) => {
      if (err !== null || p === null) return cb(err === null ? Errno.EIO : errnoOf(err), 0, err?.message ?? 'no permit');
      sendOrFail(this.session, p, 'read', hdr, null, read_len, (e, status, d) => {
        if (e !== null) return cb(errnoOf(e), 0, e.message);
        if (d === null || d.length < CMD_RSP_BYTES) return cb(status !== 0 ? status : Errno.EBADMSG, 0, 'no command answer');
        const r = CmdRsp.decode(d.subarray(0, CMD_RSP_BYTES), 8);
        if (!r.ok) return cb(Errno.EBADMSG, 0, r.reason);
        cb(status, r.value.value, status === 0 ? null : `refused by member ${r.value.member_id}`, d.length > CMD_RSP_BYTES ? d.subarray(CMD_RSP_BYTES) : null);
      });
    });
  }
}
