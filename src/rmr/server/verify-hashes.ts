// Online verify on a storage node (ARCHITECTURE.md §2.9): the hashes of the chunks it holds
// clean (CHUNK_HASH), and, as the source, the comparison with its peers' (VERIFY). Hashes
// cross the network, data does not.

import { createHash } from 'node:crypto';
import { Errno } from '../../util/errno.js';
import { CHUNK_HASH_BYTES, VERIFY_DIFFERS, VERIFY_SKIPPED } from '../protocol/leg-commands.js';
import type { ServerPoolCore } from './server-core.js';

export class VerifyHashes {
  private readonly core: ServerPoolCore;

  constructor(core: ServerPoolCore) {
    this.core = core;
  }

  /**
   * CHUNK_HASH (online verify): the SHA-256 of each chunk this node holds clean; a chunk dirty
   * here is reported as such (not compared). Only a NORMAL node answers.
   */
  chunkHashes(first: number, count: number, cb: (status: number, data: Buffer | null) => void): void {
    const core = this.core;
    const store = core.store;
    const own = core.ownMap();
    if (store === null || own === undefined || core.sm.state !== 'NORMAL') return cb(Errno.EIO, null);
    if (!Number.isSafeInteger(first) || first < 0 || count < 1 || first + count > core.no_of_chunks) return cb(Errno.EINVAL, null);
    const out = Buffer.alloc(count * CHUNK_HASH_BYTES);
    let pending = count;
    let err = 0;
    for (let i = 0; i < count; i++) {
      const c = first + i;
      const at = i * CHUNK_HASH_BYTES;
      if (own.isDirty(c)) {
        out[at] = 1;
        if (--pending === 0) cb(err, err === 0 ? out : null);
        continue;
      }
      const start = c * core.chunk_size;
      store.block.read(start, Math.min(core.chunk_size, core.mapped_size - start), (status, data) => {
        if (status !== 0 || data === null) err = status !== 0 ? status : Errno.EIO;
        // Dirtied while it was read (a failed write, a MAP_ADD): not compared.
        else if (own.isDirty(c)) out[at] = 1;
        else createHash('sha256').update(data).digest().copy(out, at + 1);
        if (--pending === 0) cb(err, err === 0 ? out : null);
      });
    }
  }

  /**
   * VERIFY: this node (the source) compares its chunks with each listed peer's through the
   * sync pool; one byte per chunk says which members differ (bit i) or were not compared
   * (bit 4+i: dirty on either side, or the peer did not answer). Nothing is marked here: the
   * compute client, which holds the chunks' range lock, marks the differences on every
   * member.
   */
  verifyChunks(first: number, count: number, members: readonly number[], cb: (status: number, data: Buffer | null, reason: string | null) => void): void {
    const src = this.core.sync_source;
    if (src === null) return cb(Errno.ENOTCONN, null, 'no sync pool attached');
    this.chunkHashes(first, count, (s0, mine) => {
      if (s0 !== 0 || mine === null) return cb(s0 !== 0 ? s0 : Errno.EIO, null, `source hashes failed (${s0})`);
      const out = Buffer.alloc(count);
      let pending = members.length;
      if (pending === 0) return cb(0, out, null);
      members.forEach((m, mi) => {
        src.peerQuery(m, { kind: 'chunk_hash', first_chunk: first, chunk_count: count }, (status, theirs) => {
          for (let i = 0; i < count; i++) {
            const at = i * CHUNK_HASH_BYTES;
            const skip = status !== 0 || theirs === null || theirs.length !== count * CHUNK_HASH_BYTES || mine[at] !== 0 || theirs[at] !== 0;
            if (skip) out[i] = (out[i] as number) | (VERIFY_SKIPPED << mi);
            else if (!mine.subarray(at + 1, at + CHUNK_HASH_BYTES).equals(theirs.subarray(at + 1, at + CHUNK_HASH_BYTES))) out[i] = (out[i] as number) | (VERIFY_DIFFERS << mi);
          }
          if (--pending === 0) cb(0, out, null);
        });
      });
    });
  }
}
