// The rmr-server of a storage node on the transport: decodes every request's user header as
// an RMR message, finds the pool by group_id, and hands it to the pool. Malformed messages
// get -EBADMSG, unknown pools -ENOENT; nothing a peer sends can throw out of here.
//
// With per-node identities (the transport session's `peer`), a message is accepted only from
// a peer holding the role that sends it: compute clients send IO, MAP_ADD and commands
// without the sync flag; storage nodes (their sync pools) send sync IO, MAP_CLEAR and
// commands with it. Anything else is -EACCES. Without peers (the shared-secret mode) every
// session may send everything.
//
// Request kinds: IO reads and commands with an answer travel read-type (the answer is the
// read data, or an encoded CMD_RSP); IO writes, MAP_ADD, MAP_CLEAR and map buffers travel
// write-type (status only).

import { Errno } from '../../util/errno.js';
import type { Logger } from '../../util/ports.js';
import { nullLogger } from '../../util/ports.js';
import type { ServerHandler, ServerRequest, ServerSession } from '../../transport/server.js';
import { legCommandFromWire } from '../protocol/leg-commands.js';
import { CMD_RSP_BYTES, CmdType, IO_OP_MASK, IoOp, decodeMessage, encodeCmdRsp, CMD_NAMES } from '../protocol/msg.js';
import { applyPeerMapCommand, executeLegCommand } from './execute-command.js';
import type { ServerPool } from './server-pool.js';
import { PAGE_BYTES } from '../protocol/dirty-map.js';
import { ROLE_CLIENT, ROLE_STORAGE, senderRole } from '../protocol/roles.js';

export { ROLE_CLIENT, ROLE_STORAGE, senderRole };


export class RmrServerNode implements ServerHandler {
  private readonly pools = new Map<number, ServerPool>();
  private readonly log: Logger;
  /**
   * Pools a transport session joined as a compute client (non-sync), each with the owner
   * generation its join was accepted under (docs/ownership.md §3.1): a binding of an older
   * generation is stale, and every message on it gets ESTALE and changes nothing (M1).
   */
  private readonly joined = new WeakMap<ServerSession, Map<number, number>>();
  /** Pools a transport session joined as a peer's sync pool. */
  private readonly joined_sync = new WeakMap<ServerSession, Set<number>>();

  constructor(log: Logger = nullLogger) {
    this.log = log;
  }

  addPool(pool: ServerPool): void {
    if (this.pools.has(pool.group_id)) throw new RangeError(`a pool with group_id ${pool.group_id} exists (hash collision or duplicate)`);
    this.pools.set(pool.group_id, pool);
  }

  /** rmr-server leave_pool: requests for the pool get ENOENT from now on. */
  removePool(group_id: number): boolean {
    return this.pools.delete(group_id);
  }

  pool(group_id: number): ServerPool | undefined {
    return this.pools.get(group_id);
  }

  onSessionDisconnected(session: ServerSession): void {
    this.clientGone(session, 'lost its last path');
  }

  onSessionClose(session: ServerSession, reason: string): void {
    this.clientGone(session, reason);
  }

  /**
   * A compute client's session went away: its pools stop serving IO (peers' sync reads
   * included) until it rejoins with a map (§9.1), since this node may now miss writes.
   */
  private clientGone(session: ServerSession, reason: string): void {
    for (const [gid, gen] of this.joined.get(session) ?? []) {
      const p = this.pools.get(gid);
      // Only the current owner's session: a fenced owner's dead session must not take the
      // new owner's node out of service.
      if (p === undefined || gen !== p.ownerGen) continue;
      p.ownerSessionGone(session, session.closed);
      if (p.state === 'NORMAL') p.sm.change('NO_IO', `client session ${session.name}: ${reason}`);
    }
  }

  /** Messages a stale or missing binding does not block: they run the ownership protocol itself. */
  private static unbound(m: { type: string; env?: { cmd_type: number }; payload?: Record<string, number | string | Buffer> }): boolean {
    if (m.type !== 'CMD' || m.env === undefined) return false;
    const t = m.env.cmd_type;
    return t === CmdType.OWNER || t === CmdType.JOIN_POOL || t === CmdType.REJOIN_POOL || (t === CmdType.MD_SEND && m.payload?.read_full_md === 1);
  }

  onRequest(req: ServerRequest): void {
    const d = decodeMessage(req.user_hdr);
    if (!d.ok) {
      this.log.log('warn', 'malformed RMR message', { session: req.session.name, reason: d.reason });
      return req.respond(Errno.EBADMSG);
    }
    const m = d.msg;
    const roles = req.session.peer?.roles;
    if (roles !== undefined) {
      const role = senderRole(m);
      if (!roles.includes(role)) {
        this.log.log('warn', 'message refused: the peer lacks the role that sends it', { session: req.session.name, peer: req.session.peer?.name ?? null, type: m.type, needs: role });
        return req.respond(Errno.EACCES);
      }
    }
    const pool = this.pools.get(m.group_id);
    if (pool === undefined) return req.respond(Errno.ENOENT);
    // The fence (M1): on a session bound to an older owner, everything but the ownership
    // protocol's own messages is refused before any side effect.
    const gen = this.joined.get(req.session)?.get(pool.group_id);
    if (gen !== undefined && !RmrServerNode.unbound(m)) {
      if (gen !== pool.ownerGen) {
        this.stale_refusals++;
        return m.type === 'CMD' ? this.answerCmd(req, pool, m.env.cmd_type, Errno.ESTALE, pool.owner.epoch, null) : req.respond(Errno.ESTALE);
      }
      pool.ownerContact();
    } else if (gen === undefined && pool.owner.epoch > 0 && m.type === 'CMD' && m.env.sync === 0 && !RmrServerNode.unbound(m)) {
      // An owned pool takes a compute client's commands only on a session bound to its
      // owner: a fenced client's new session (after the old one expired) proves nothing, and
      // gets what an unjoined session's IO gets (ENOENT), never ESTALE (§3.2).
      return this.answerCmd(req, pool, m.env.cmd_type, Errno.ENOENT, 0, null);
    }
    // IO and map messages only on a session that joined the pool (§6.5), as a compute client
    // for client traffic (IO, MAP_ADD), as a client or a peer for peer traffic.
    if (m.type !== 'CMD') {
      const as_client = gen !== undefined;
      const as_peer = as_client || (this.joined_sync.get(req.session)?.has(pool.group_id) ?? false);
      const peer_traffic = m.type === 'MAP_CLEAR' || (m.type === 'IO' && m.body.sync === 1);
      if (!(peer_traffic ? as_peer : as_client)) return req.respond(Errno.ENOENT);
    }
    switch (m.type) {
      case 'IO': {
        const is_read = (m.body.flags & IO_OP_MASK) === IoOp.READ;
        if (is_read !== (req.kind === 'read') || (is_read && req.read_len < m.body.length)) return req.respond(Errno.EBADMSG);
        return pool.handleIo(m.body, req.data, m.body.sync === 1, (status, data) => req.respond(status, is_read && status === 0 ? data : null));
      }
      case 'MAP_ADD': {
        const st = pool.mapAdd(m.body);
        if (st !== 0) return req.respond(st);
        // Acknowledged only once durable: the client acknowledges the write on it.
        return pool.syncMaps((s) => req.respond(s));
      }
      case 'MAP_CLEAR':
        return req.respond(pool.mapClear(m.body));
      case 'CMD_RSP':
        return req.respond(Errno.EBADMSG);
      case 'CMD': {
        const from_sync = m.env.sync === 1;
        const t = m.env.cmd_type;
        if (m.env.pool_name !== pool.name) return req.respond(Errno.ENOENT);
        if (t === CmdType.SEND_MAP_BUF) {
          const p = m.payload;
          const pages = req.data;
          if (pages.length !== (p.page_count as number) * PAGE_BYTES) return req.respond(Errno.EBADMSG);
          return req.respond(
            applyPeerMapCommand(pool, { kind: 'send_map_buf', member_id: p.member_id as number, first_page: p.first_page as number, page_count: p.page_count as number, map_ver: p.map_ver as number, pages }),
          );
        }
        if (t === CmdType.MAP_BUF_DONE) return req.respond(applyPeerMapCommand(pool, { kind: 'map_buf_done', map_ver: m.payload.map_ver as number }));
        const cmd = legCommandFromWire(t, m.payload, m.tail, Math.max(0, req.read_len - CMD_RSP_BYTES));
        if (cmd === null) {
          this.log.log('info', 'command not supported yet', { pool: pool.name, cmd: CMD_NAMES.get(t) ?? String(t) });
          return req.respond(Errno.EOPNOTSUPP);
        }
        if (req.kind !== 'read' || req.read_len < CMD_RSP_BYTES) return req.respond(Errno.EBADMSG);
        // A join binds to the owner generation it was accepted under (a PREPARE that comes
        // while its metadata is persisted makes the binding stale at once).
        const bind_gen = pool.ownerGen;
        return executeLegCommand(pool, cmd, from_sync, (status, value, reason, data) => {
          if (status === 0 && (cmd.kind === 'join' || cmd.kind === 'rejoin')) {
            if (from_sync) {
              let set = this.joined_sync.get(req.session);
              if (set === undefined) this.joined_sync.set(req.session, (set = new Set()));
              set.add(pool.group_id);
            } else {
              let map = this.joined.get(req.session);
              if (map === undefined) this.joined.set(req.session, (map = new Map<number, number>()));
              map.set(pool.group_id, bind_gen);
              const session = req.session;
              if (bind_gen === pool.ownerGen) pool.ownerSessionBound(session, () => !session.closed && session.paths.size > 0);
            }
          }
          if (reason !== null) this.log.log('info', 'command refused', { pool: pool.name, cmd: cmd.kind, reason });
          this.answerCmd(req, pool, t, status, value, data ?? null);
        });
      }
    }
  }

  /** Messages refused because their session is bound to an older owner (metrics: rmr_server_stale_refusals_total). */
  stale_refusals = 0;

  private answerCmd(req: ServerRequest, pool: ServerPool, t: number, status: number, value: number, extra: Buffer | null): void {
    if (req.kind !== 'read' || req.read_len < CMD_RSP_BYTES) return req.respond(status === 0 ? Errno.EBADMSG : status);
    if (extra !== null && CMD_RSP_BYTES + extra.length > req.read_len) return req.respond(Errno.EMSGSIZE);
    const rsp = encodeCmdRsp(pool.group_id, { cmd_type: t, member_id: pool.member_id, err: status, value, chunk_size: pool.chunk_size, mapped_size: pool.mapped_size }, extra);
    req.respond(status, rsp);
  }
}
