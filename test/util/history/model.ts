// The history of a block-device workload, Jepsen style: every operation with its invoke and
// complete times (one clock: performance.now() of the recording process) and its outcome.
// Writes put unique values into blocks; a value is recognisable from the block's bytes
// alone, so a read tells exactly which write it returns (or that it returns garbage).
//
// Block layout (block_size bytes, little endian):
//   0  u32 magic 0x54534948 ("HIST")  4  u32 block index  8  u32 value id (> 0)
//  12  u32 word count   16..  32-bit words of a pattern derived from (block, value)
// An all-zero block is value 0 (never written, trimmed or zeroed).

export type OpKind = 'write' | 'zero' | 'trim' | 'read' | 'flush';

/**
 * ok: the server answered success. fail: it answered an error (a write may still have taken
 * effect, partly or wholly, before the answer). unknown: no answer (connection lost or op
 * timed out): it may take effect at any time after invoke, or never.
 */
export type Outcome = 'ok' | 'fail' | 'unknown';

export interface Op {
  /** Connection (process) that issued it. */
  conn: number;
  kind: OpKind;
  /** Block index; -1 for flush. */
  block: number;
  /**
   * write: the unique value written (> 0); zero/trim: 0; read: the value read back (0 for
   * zeroes), GARBAGE when the bytes are no value written to this block.
   */
  value: number;
  /** FUA write (durable when acknowledged). */
  fua: boolean;
  invoke: number;
  /** Infinity when the outcome is unknown. */
  complete: number;
  outcome: Outcome;
  /** The read-back after the workload. */
  final?: boolean;
  /** Why a read is garbage, or the server's error. */
  note?: string;
  /** A TORN read: the values its bytes hold, in byte order (0 for zeroes). */
  pieces?: number[];
}

export const GARBAGE = -1;
/**
 * A read whose bytes are pieces of several whole values of the block: what a read
 * concurrent with a write may return from a store whose copies are not atomic against it
 * (the page cache copies bytes while another thread reads them). Each piece is judged as a
 * read of its own.
 */
export const TORN = -2;
const MAGIC = 0x54534948;

function word(block: number, value: number, i: number): number {
  let x = (Math.imul(value, 0x9e3779b1) ^ Math.imul(block + 1, 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35)) >>> 0;
  x ^= x >>> 15;
  return Math.imul(x, 0x2c1b3c6d) >>> 0;
}

export function encodeBlock(block: number, value: number, block_size: number): Buffer {
  if (value <= 0 || value > 0xffffffff) throw new RangeError(`value ${value}`);
  const b = Buffer.alloc(block_size);
  const words = (block_size - 16) >> 2;
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(block >>> 0, 4);
  b.writeUInt32LE(value, 8);
  b.writeUInt32LE(words, 12);
  for (let i = 0; i < words; i++) b.writeUInt32LE(word(block, value, i), 16 + 4 * i);
  return b;
}

export interface Decoded {
  value: number;
  note?: string;
  pieces?: number[];
}

/**
 * The value a block holds (0 = zeroes), or GARBAGE with the reason. Given the values
 * written to the block so far (`written`), a block whose words change from one value's
 * pattern to another's is TORN with its pieces; bytes of no such value stay GARBAGE.
 */
export function decodeBlock(block: number, b: Buffer, written?: Iterable<number>): Decoded {
  if (b.length < 16) return { value: GARBAGE, note: `short block (${b.length} bytes)` };
  if (b.every((x) => x === 0)) return { value: 0 };
  const words = (b.length - 16) >> 2;
  let value: number;
  if (b.readUInt32LE(0) === MAGIC) {
    const owner = b.readUInt32LE(4);
    value = b.readUInt32LE(8);
    if (owner !== block >>> 0) return { value: GARBAGE, note: `holds value ${value} of block ${owner}` };
    if (b.readUInt32LE(12) !== words) return { value: GARBAGE, note: 'bad word count' };
  } else if (written !== undefined && b.subarray(0, 16).every((x) => x === 0)) {
    value = 0; // zeroes, torn by a write of a value
  } else {
    return { value: GARBAGE, note: 'no value header' };
  }
  const expect = (v: number, i: number): number => (v === 0 ? 0 : word(block, v, i));
  for (let i = 0; i < words; i++) {
    if (b.readUInt32LE(16 + 4 * i) === expect(value, i)) continue;
    const bad = { value: GARBAGE, note: `value ${value} torn or corrupt at byte ${16 + 4 * i}` };
    if (written === undefined) return bad;
    return tornPieces(b, i, value, [0, ...written], expect) ?? bad;
  }
  return value === 0 ? { value: GARBAGE, note: 'no value header' } : { value };
}

/** Explains a block from word `from` on as pieces of the candidate values, or null. */
function tornPieces(b: Buffer, from: number, first: number, candidates: number[], expect: (v: number, i: number) => number): Decoded | null {
  const words = (b.length - 16) >> 2;
  const pieces = [first];
  const at: number[] = [];
  let cur = first;
  for (let i = from; i < words; i++) {
    const got = b.readUInt32LE(16 + 4 * i);
    if (got === expect(cur, i)) continue;
    const next = candidates.find((v) => v !== cur && expect(v, i) === got);
    if (next === undefined) return null;
    pieces.push(next);
    at.push(16 + 4 * i);
    cur = next;
  }
  return { value: TORN, pieces, note: `torn: ${pieces.map((v, k) => `v${v} from byte ${k === 0 ? 0 : (at[k - 1] as number)}`).join(', ')}` };
}
