// Framing of the plain-TCP baseline: a 16-byte header whose first u32 is the data length.
// Chunks are kept until a whole frame is present and joined once, the simplest fast way.

export const BASE_HDR = 16;

/** Calls `onFrames(buf, end)` with a buffer holding whole frames up to `end`. */
export class BaselineReader {
  private parts: Buffer[] = [];
  private have = 0;
  private need = 0;
  constructor(private readonly onFrames: (buf: Buffer, end: number) => void) {}

  push(chunk: Buffer): void {
    this.parts.push(chunk);
    this.have += chunk.length;
    if (this.need === 0) {
      if (this.have < BASE_HDR) return;
      if ((this.parts[0] as Buffer).length < BASE_HDR) this.parts = [Buffer.concat(this.parts, this.have)];
      this.need = BASE_HDR + (this.parts[0] as Buffer).readUInt32LE(0);
    }
    if (this.have < this.need) return;
    const buf = this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts, this.have);
    let end = 0;
    while (buf.length - end >= BASE_HDR && buf.length - end >= BASE_HDR + buf.readUInt32LE(end)) {
      end += BASE_HDR + buf.readUInt32LE(end);
    }
    this.onFrames(buf, end);
    const rest = buf.subarray(end);
    this.parts = rest.length > 0 ? [rest] : [];
    this.have = rest.length;
    this.need = rest.length >= BASE_HDR ? BASE_HDR + rest.readUInt32LE(0) : 0;
  }
}
