// Small helpers on Buffers shared by the receive paths (transport frames, NBD payloads).

/**
 * True when `chunk` starts at byte `at` of `dest`: the bytes are already where they go (a
 * stream read them into the receiver's read target), so copying them would be a no-op.
 */
export function sameMemory(chunk: Uint8Array, dest: Uint8Array, at: number): boolean {
  return chunk.buffer === dest.buffer && chunk.byteOffset === dest.byteOffset + at;
}
