// Bob Jenkins' lookup3 hash (hashlittle, identical to the Linux kernel's jhash() on
// little-endian machines), written from the public algorithm. RMR derives a pool's group_id
// from it: group_id = jhash(pool_name bytes, seed 0).

const rol32 = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

export function jhash(key: Uint8Array, initval = 0): number {
  let length = key.length;
  let a = (0xdeadbeef + length + initval) | 0;
  let b = a;
  let c = a;
  let k = 0;
  const u32 = (o: number): number => ((key[o] as number) | ((key[o + 1] as number) << 8) | ((key[o + 2] as number) << 16) | ((key[o + 3] as number) << 24)) | 0;
  while (length > 12) {
    a = (a + u32(k)) | 0;
    b = (b + u32(k + 4)) | 0;
    c = (c + u32(k + 8)) | 0;
    // mix(a, b, c)
    a = (a - c) | 0; a ^= rol32(c, 4); c = (c + b) | 0;
    b = (b - a) | 0; b ^= rol32(a, 6); a = (a + c) | 0;
    c = (c - b) | 0; c ^= rol32(b, 8); b = (b + a) | 0;
    a = (a - c) | 0; a ^= rol32(c, 16); c = (c + b) | 0;
    b = (b - a) | 0; b ^= rol32(a, 19); a = (a + c) | 0;
    c = (c - b) | 0; c ^= rol32(b, 4); b = (b + a) | 0;
    length -= 12;
    k += 12;
  }
  if (length === 0) return c >>> 0;
  // The tail: up to 12 bytes, little-endian into a (bytes 0-3), b (4-7), c (8-11).
  for (let i = 0; i < length; i++) {
    const v = ((key[k + i] as number) << (8 * (i & 3))) | 0;
    if (i < 4) a = (a + v) | 0;
    else if (i < 8) b = (b + v) | 0;
    else c = (c + v) | 0;
  }
  // final(a, b, c)
  c ^= b; c = (c - rol32(b, 14)) | 0;
  a ^= c; a = (a - rol32(c, 11)) | 0;
  b ^= a; b = (b - rol32(a, 25)) | 0;
  c ^= b; c = (c - rol32(b, 16)) | 0;
  a ^= c; a = (a - rol32(c, 4)) | 0;
  b ^= a; b = (b - rol32(a, 14)) | 0;
  c ^= b; c = (c - rol32(b, 24)) | 0;
  return c >>> 0;
}

/** The pool's group_id: jhash of the pool name's bytes with seed 0. */
export function groupId(pool_name: string): number {
  return jhash(Buffer.from(pool_name, 'utf8'), 0);
}
