// The workload and the oracle of one seed: workers issue reads, writes, discards,
// write-zeroes and flushes through the compute client; every write's blocks go into a
// register history per block, every read is checked against it (read validity and
// durability), stability probes compare a quiet block across the NORMAL members, and at the
// end the members are compared byte for byte (convergence) and the whole device is read once
// more. The invariants are listed at the top of pool-sim.ts.

import { BLOCK, BLOCKS, SIZE, Violation, type SimNode, type SimWorld } from './world.js';

/**
 * Block content for write `id` at block `b`: id and block in the first 8 bytes, then a
 * pattern that depends on (id * 131 + b * 7) mod 256 only, so the 256 patterns are made once.
 */
const PATTERNS: Buffer[] = Array.from({ length: 256 }, (_, k) => {
  const buf = Buffer.alloc(BLOCK);
  for (let i = 8; i < BLOCK; i++) buf[i] = (k + i) & 0xff;
  return buf;
});
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** Writes the content of write `id` for blocks first..first+count into one buffer. */
function blockValues(id: number, first: number, count: number): Buffer {
  const buf = Buffer.allocUnsafe(count * BLOCK);
  for (let i = 0; i < count; i++) {
    const b = first + i;
    (PATTERNS[(id * 131 + b * 7) & 0xff] as Buffer).copy(buf, i * BLOCK);
    buf.writeUInt32LE(id, i * BLOCK);
    buf.writeUInt32LE(b, i * BLOCK + 4);
  }
  return buf;
}

function valueOf(buf: Buffer, b: number): number | null {
  const id = buf.readUInt32LE(0);
  if (id === 0) return buf.equals(ZERO_BLOCK) ? 0 : null;
  if (buf.readUInt32LE(4) !== b) return null;
  const pat = PATTERNS[(id * 131 + b * 7) & 0xff] as Buffer;
  return buf.compare(pat, 8, BLOCK, 8, BLOCK) === 0 ? id : null;
}

export interface WriteRec {
  id: number; // 0: zeroes (discard / write-zeroes)
  block: number;
  inv: number;
  end: number; // ack or failure time; Infinity while pending
  acked: boolean;
  /** When it became durable (acknowledged FUA, or a later flush acknowledged); Infinity until then. */
  durable_at: number;
}

// Workers: each issues an op, and the next one a little after it completes. A client
// crash stops them; the new client starts them again.
const WORKERS = 4;

export class Workload {
  private readonly w: SimWorld;
  private history: WriteRec[][] = Array.from({ length: BLOCKS }, () => []);
  /** Acknowledged writes not yet durable (a flush makes them durable). */
  private undurable: WriteRec[] = [];
  /** Writes the current client has in flight (a client crash leaves them undecided). */
  private readonly pending_writes = new Set<WriteRec[]>();
  /** Times of storage-node crashes. */
  readonly crashes: number[] = [];
  inflight = 0;
  /** Invocation times of the reads in flight (the oldest bounds what may leave the history). */
  private readonly reads_inflight: number[] = [];
  next_id = 0;
  reads_checked = 0;
  probes = 0;
  /** When the workers stop issuing (set when the workload starts). */
  end_at = Infinity;

  constructor(w: SimWorld) {
    this.w = w;
  }

  /**
   * A write that became durable with no crash between its acknowledgement and then
   * supersedes each write that ended before it was invoked, for every read invoked after it
   * was acknowledged: once no read in flight is older, those writes leave the history (it
   * stays short, and the check stays linear).
   */
  private prune(b: number): void {
    const clock = this.w.clock;
    const horizon = Math.min(clock.now(), ...this.reads_inflight);
    const h = this.history[b] as WriteRec[];
    let latest = -Infinity;
    for (const u of h) {
      if (!u.acked || u.end >= horizon || u.durable_at > clock.now() || u.inv <= latest) continue;
      if (this.crashes.some((tc) => tc > u.end && tc < u.durable_at)) continue;
      latest = u.inv;
    }
    if (latest === -Infinity) return;
    const keep = h.filter((x) => !(x.end < latest));
    if (keep.length < h.length) this.history[b] = keep;
  }

  private check(b: number, got: Buffer, inv: number, end: number): void {
    this.reads_checked++;
    const v = valueOf(got, b);
    if (v === null) return this.w.violate(`read validity: block ${b} holds no whole written value (id ${got.readUInt32LE(0)})`);
    const h = this.history[b] as WriteRec[];
    // Candidates: writes not superseded before the read began. A write is superseded when
    // another acknowledged write was invoked after it ended and acknowledged before `inv`,
    // unless a storage node crashed after that acknowledgement and before the write was
    // durable (a crash may lose acknowledged writes that no flush or FUA covered). A crash
    // while the read is in flight counts too: the read may be served after it. So an
    // acknowledged durable write is never lost: the durability invariant.
    const lost = (u: WriteRec): boolean => this.crashes.some((tc) => tc > u.end && tc < end && u.durable_at > tc);
    // The latest invocation among superseding writes: everything that ended before it is out.
    let latest = -Infinity;
    for (const u of h) if (u.acked && u.end < inv && u.inv > latest && !lost(u)) latest = u.inv;
    const allowed: number[] = latest > -1 ? [] : [0];
    for (const w of h) if (w.inv < end && !(latest > w.end)) allowed.push(w.id);
    if (!allowed.includes(v)) this.w.violate(`read validity: block ${b} read value ${v} in [${inv.toFixed(3)}, ${end.toFixed(3)}], allowed ${allowed.join(',')}`);
  }

  private after(gen: number): void {
    const w = this.w;
    if (gen !== w.client.gen) return;
    this.inflight--;
    if (w.clock.now() < this.end_at) w.clock.setTimer(w.random.float(), () => this.issue(gen));
  }

  private issue(gen: number): void {
    const w = this.w;
    const clock = w.clock;
    if (gen !== w.client.gen || !w.client.up) return;
    const pool = w.client.pool;
    const r = w.random.float();
    const first = w.random.int(BLOCKS);
    const count = 1 + w.random.int(Math.min(8, BLOCKS - first));
    const inv = clock.now();
    this.inflight++;
    const kind = r < 0.45 ? 'write' : r < 0.8 ? 'read' : r < 0.87 ? 'discard' : r < 0.93 ? 'write_zeroes' : 'flush';
    if (kind === 'flush') {
      pool.submit('flush', 0, 0, null, {}, (s) => {
        if (gen !== w.client.gen) return;
        w.t(`flush -> ${s}`);
        // Everything acknowledged before the flush was issued is durable now.
        if (s === 0) {
          const now = this.undurable.filter((x) => x.end <= inv);
          this.undurable = this.undurable.filter((x) => x.end > inv);
          for (const x of now) {
            x.durable_at = clock.now();
            this.prune(x.block);
          }
        }
        this.after(gen);
      });
      return;
    }
    if (kind === 'read') {
      this.reads_inflight.push(inv);
      pool.submit('read', first * BLOCK, count * BLOCK, null, {}, (s, d) => {
        if (gen !== w.client.gen) return;
        this.reads_inflight.splice(this.reads_inflight.indexOf(inv), 1);
        w.t(`read ${first}+${count} -> ${s}`);
        if (s === 0 && d !== null) for (let i = 0; i < count; i++) this.check(first + i, d.subarray(i * BLOCK, (i + 1) * BLOCK), inv, clock.now());
        this.after(gen);
      });
      return;
    }
    const id = kind === 'write' ? ++this.next_id : 0;
    if (id === 0) this.next_id++;
    const recs: WriteRec[] = [];
    for (let i = 0; i < count; i++) {
      const x: WriteRec = { id, block: first + i, inv, end: Infinity, acked: false, durable_at: Infinity };
      (this.history[first + i] as WriteRec[]).push(x);
      recs.push(x);
    }
    this.pending_writes.add(recs);
    const data = kind === 'write' ? blockValues(id, first, count) : null;
    const fua = kind === 'write' && w.random.float() < 0.2;
    pool.submit(kind, first * BLOCK, count * BLOCK, data, { fua }, (s) => {
      if (gen !== w.client.gen) return;
      this.pending_writes.delete(recs);
      for (const x of recs) {
        x.end = clock.now();
        x.acked = s === 0;
        if (x.acked && fua) x.durable_at = x.end;
        else if (x.acked) this.undurable.push(x);
        this.prune(x.block);
      }
      w.t(`${kind}${fua ? '+fua' : ''} ${first}+${count} id ${id} -> ${s}`);
      this.after(gen);
    });
  }

  startWorkers(): void {
    const gen = this.w.client.gen;
    for (let i = 0; i < WORKERS; i++) this.issue(gen);
  }

  /** Writes touching block b right now. */
  private busy(b: number): boolean {
    return (this.history[b] as WriteRec[]).some((x) => x.end === Infinity);
  }

  /** Stability probe: a block no write touches reads the same from every NORMAL member. */
  probe(): void {
    const w = this.w;
    const client = w.client;
    const gen = client.gen;
    if (!client.up) return;
    const normal = w.legs().filter((l) => l.state === 'NORMAL');
    if (normal.length < 2) return;
    const b = w.random.int(BLOCKS);
    if (this.busy(b)) return;
    const started = w.clock.now();
    const got = new Map<number, Buffer>();
    let pending = normal.length;
    for (const l of normal) {
      client.pool.readFrom(l.member_id, b * BLOCK, BLOCK, (s, d) => {
        if (gen !== w.client.gen) return;
        if (s === 0 && d !== null) got.set(l.member_id, d);
        if (--pending > 0) return;
        // A write that began meanwhile makes the comparison moot.
        if ((this.history[b] as WriteRec[]).some((x) => x.inv >= started || x.end === Infinity) || got.size < 2) return;
        this.probes++;
        const vals = [...got.entries()].map(([m, d2]) => [m, valueOf(d2, b)] as const);
        if (vals.some(([, v]) => v !== vals[0]?.[1])) w.violate(`stability: block ${b} reads ${vals.map(([m, v]) => `${v ?? 'garbage'} from member ${m}`).join(', ')}`);
      });
    }
  }

  /** The client crashed: its writes in flight are undecided (they may have landed anywhere, or nowhere). */
  clientCrashed(): void {
    for (const recs of this.pending_writes) for (const x of recs) x.end = this.w.clock.now();
    this.pending_writes.clear();
    this.reads_inflight.length = 0;
    this.inflight = 0;
  }

  /** Convergence: the same bytes on every member. */
  checkConvergence(): void {
    const members = this.w.members();
    const ref_node = members[0] as SimNode;
    const ref = ref_node.data.contents();
    for (const n of this.w.members()) {
      if (!n.data.contents().equals(ref)) {
        let b = 0;
        while (b < BLOCKS && n.data.contents(b * BLOCK, BLOCK).equals(ref.subarray(b * BLOCK, (b + 1) * BLOCK))) b++;
        const ids = this.w
          .members()
          .map((x) => `node${x.member}=${x.data.contents(b * BLOCK, 4).readUInt32LE(0)}`)
          .join(' ');
        const h = (this.history[b] as WriteRec[])
          .slice(-4)
          .map((x) => `${x.id}[${x.inv.toFixed(1)}-${x.end.toFixed(1)}${x.acked ? '' : ' failed'}]`)
          .join(' ');
        throw new Violation(`convergence: node${n.member} differs from node${ref_node.member} at block ${b} (${ids}; last writes ${h})`);
      }
    }
  }

  /** Final read of everything: each block is a valid value of the register model. */
  finalRead(): void {
    const w = this.w;
    let done = false;
    const inv = w.clock.now();
    w.client.pool.submit('read', 0, SIZE, null, {}, (s, d) => {
      done = true;
      if (s !== 0 || d === null) return w.violate(`liveness: final read failed ${s}`);
      for (let b = 0; b < BLOCKS; b++) this.check(b, d.subarray(b * BLOCK, (b + 1) * BLOCK), inv, w.clock.now());
    });
    w.wait('final read', () => done, 10_000);
  }
}
