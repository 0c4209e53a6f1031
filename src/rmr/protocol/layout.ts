// Fixed binary layouts defined once as data: the field list gives the wire order, sizes and
// types, and the same definition encodes, decodes and validates. Little-endian; u64 values
// are JavaScript numbers and must be safe integers (2^53: 8 PiB of bytes, far beyond any
// device). A decoder never throws and never allocates more than the layout's fixed size.

export type FieldType = 'u8' | 'u16' | 'u32' | 'i32' | 'u64' | { bytes: number } | 'name';

type ValueOf<F> = F extends 'name' ? string : F extends { bytes: number } ? Buffer : number;
export type FieldSpec = Readonly<Record<string, FieldType>>;
export type ValuesOf<S extends FieldSpec> = { -readonly [K in keyof S]: ValueOf<S[K]> };

export type Decoded<T> = { ok: true; value: T; bytes: number } | { ok: false; reason: string };

/** Longest name (pool names are at most NAME_MAX bytes, as in the reference). */
export const NAME_MAX = 255;

const TWO_32 = 0x1_0000_0000;

function fixedSize(t: FieldType): number {
  if (t === 'u8') return 1;
  if (t === 'u16') return 2;
  if (t === 'u32' || t === 'i32') return 4;
  if (t === 'u64') return 8;
  if (t === 'name') return 2; // length prefix; the bytes follow
  return t.bytes;
}

export class Layout<S extends FieldSpec> {
  readonly name: string;
  readonly spec: S;
  private readonly fields: [string, FieldType][];
  /** Size without the variable part of 'name' fields. */
  readonly min_size: number;
  private readonly check: ((v: ValuesOf<S>) => string | null) | null;

  constructor(name: string, spec: S, check: ((v: ValuesOf<S>) => string | null) | null = null) {
    this.name = name;
    this.spec = spec;
    this.fields = Object.entries(spec);
    this.min_size = this.fields.reduce((n, [, t]) => n + fixedSize(t), 0);
    this.check = check;
  }

  size(v: ValuesOf<S>): number {
    let n = this.min_size;
    for (const [k, t] of this.fields) if (t === 'name') n += Buffer.byteLength(v[k] as string, 'utf8');
    return n;
  }

  /** Encodes `v` at `off` of `buf` (or into a new buffer); throws RangeError on invalid values. */
  encode(v: ValuesOf<S>, buf: Buffer = Buffer.alloc(this.size(v)), off = 0): Buffer {
    const bad = this.validate(v);
    if (bad !== null) throw new RangeError(`${this.name}: ${bad}`);
    let o = off;
    for (const [k, t] of this.fields) {
      const x = v[k] as number | string | Buffer;
      if (t === 'u8') buf.writeUInt8(x as number, o);
      else if (t === 'u16') buf.writeUInt16LE(x as number, o);
      else if (t === 'u32') buf.writeUInt32LE(x as number, o);
      else if (t === 'i32') buf.writeInt32LE(x as number, o);
      else if (t === 'u64') {
        buf.writeUInt32LE((x as number) % TWO_32, o);
        buf.writeUInt32LE(Math.floor((x as number) / TWO_32), o + 4);
      } else if (t === 'name') {
        const b = Buffer.from(x as string, 'utf8');
        buf.writeUInt16LE(b.length, o);
        b.copy(buf, o + 2);
        o += b.length;
      } else (x as Buffer).copy(buf, o);
      o += fixedSize(t);
    }
    return buf;
  }

  /** Decodes from `off`; checks every field and the layout's own rule. */
  decode(buf: Buffer, off = 0): Decoded<ValuesOf<S>> {
    const v: Record<string, number | string | Buffer> = {};
    let o = off;
    for (const [k, t] of this.fields) {
      const need = fixedSize(t);
      if (o + need > buf.length) return { ok: false, reason: `${this.name}: truncated at ${k}` };
      if (t === 'u8') v[k] = buf.readUInt8(o);
      else if (t === 'u16') v[k] = buf.readUInt16LE(o);
      else if (t === 'u32') v[k] = buf.readUInt32LE(o);
      else if (t === 'i32') v[k] = buf.readInt32LE(o);
      else if (t === 'u64') {
        const hi = buf.readUInt32LE(o + 4);
        if (hi > 0x1f_ffff) return { ok: false, reason: `${this.name}: ${k} beyond 2^53` };
        v[k] = buf.readUInt32LE(o) + hi * TWO_32;
      } else if (t === 'name') {
        const len = buf.readUInt16LE(o);
        if (len > NAME_MAX) return { ok: false, reason: `${this.name}: ${k} of ${len} bytes > ${NAME_MAX}` };
        if (o + 2 + len > buf.length) return { ok: false, reason: `${this.name}: truncated in ${k}` };
        const raw = buf.subarray(o + 2, o + 2 + len);
        const s = raw.toString('utf8');
        if (!Buffer.from(s, 'utf8').equals(raw) || /\p{Cc}/u.test(s)) return { ok: false, reason: `${this.name}: ${k} is not printable utf-8` };
        v[k] = s;
        o += len;
      } else v[k] = Buffer.from(buf.subarray(o, o + t.bytes));
      o += need;
    }
    const value = v as ValuesOf<S>;
    const bad = this.check === null ? null : this.check(value);
    if (bad !== null) return { ok: false, reason: `${this.name}: ${bad}` };
    return { ok: true, value, bytes: o - off };
  }

  /**
   * Encodes a value whose type is only known at run time (command payloads chosen by a
   * command number): validate() checks every field's type before anything is written.
   */
  encodeUntyped(v: Readonly<Record<string, unknown>>): Buffer {
    return this.encode(v as ValuesOf<S>);
  }

  /** Field ranges and the layout's own rule; null when `v` may be encoded. */
  validate(v: ValuesOf<S>): string | null {
    for (const [k, t] of this.fields) {
      const x = v[k] as unknown;
      if (t === 'name') {
        if (typeof x !== 'string') return `${k} must be a string`;
        if (Buffer.byteLength(x, 'utf8') > NAME_MAX) return `${k} longer than ${NAME_MAX} bytes`;
        if (/\p{Cc}/u.test(x)) return `${k} has control characters`;
      } else if (typeof t === 'object') {
        if (!Buffer.isBuffer(x) || x.length !== t.bytes) return `${k} must be ${t.bytes} bytes`;
      } else {
        const [lo, hi] = t === 'u8' ? [0, 0xff] : t === 'u16' ? [0, 0xffff] : t === 'u32' ? [0, 0xffffffff] : t === 'i32' ? [-0x80000000, 0x7fffffff] : [0, Number.MAX_SAFE_INTEGER];
        if (typeof x !== 'number' || !Number.isInteger(x) || x < lo || x > hi) return `${k}=${String(x)} outside ${t}`;
      }
    }
    return this.check === null ? null : this.check(v);
  }
}

/** A layout seen without its field types (chosen at run time by a command number). */
export interface UntypedLayout {
  readonly name: string;
  readonly spec: FieldSpec;
  encodeUntyped(v: Readonly<Record<string, unknown>>): Buffer;
  decode(buf: Buffer, off?: number): Decoded<Record<string, number | string | Buffer>>;
  validate(v: Readonly<Record<string, unknown>>): string | null;
}
