// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every metadata page
// (ARCHITECTURE.md §7). Table-driven, slice-by-4: metadata pages are small and rare, so
// clarity wins over the last factor of speed.

const POLY = 0x82f63b78;
const T = Array.from({ length: 4 }, () => new Uint32Array(256));
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  (T[0] as Uint32Array)[n] = c >>> 0;
}
for (let n = 0; n < 256; n++) {
  for (let t = 1; t < 4; t++) {
    const prev = (T[t - 1] as Uint32Array)[n] as number;
    (T[t] as Uint32Array)[n] = ((prev >>> 8) ^ ((T[0] as Uint32Array)[prev & 0xff] as number)) >>> 0;
  }
}
const [T0, T1, T2, T3] = T as [Uint32Array, Uint32Array, Uint32Array, Uint32Array];

/** CRC32C of `data`, continuing from `crc` (pass a previous result to checksum in parts). */
export function crc32c(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 4 <= n; i += 4) {
    c ^= (data[i] as number) | ((data[i + 1] as number) << 8) | ((data[i + 2] as number) << 16) | ((data[i + 3] as number) << 24);
    c = (T3[c & 0xff] as number) ^ (T2[(c >>> 8) & 0xff] as number) ^ (T1[(c >>> 16) & 0xff] as number) ^ (T0[c >>> 24] as number);
  }
  for (; i < n; i++) c = (T0[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}
