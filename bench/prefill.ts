// Pre-filled backing files for the benchmarks: the same pseudo-random bytes in every file
// (replicas start identical), written through, so no test reads holes or allocates blocks.
import { closeSync, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

/** Writes the same pseudo-random bytes into [offset, offset + size) of each file. */
export function prefill(files: string[], offset: number, size: number): void {
  const block = randomBytes(1 << 20);
  const fds = files.map((f) => openSync(f, 'w'));
  for (let at = 0; at < size; at += block.length) {
    // Vary each block a little so no two blocks are identical.
    block.writeUInt32LE(at / block.length, 0);
    for (const fd of fds) writeSync(fd, block, 0, Math.min(block.length, size - at), offset + at);
  }
  for (const fd of fds) closeSync(fd);
}
