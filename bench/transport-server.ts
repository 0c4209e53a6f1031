// Server side of the transport benchmark, in its own process so client and server each get
// a core. Mode "baseline": the simplest fast length-prefixed request/response loop on
// node:net. Mode "transport": this project's TransportServer. Both answer at once from a
// static buffer, so the figures compare protocol machinery, not storage.
// Usage: node transport-server.js baseline|transport <secret-hex>; prints {"port":N}.
import net from 'node:net';
import { BASE_HDR, BaselineReader } from './baseline-framing.js';
import { TransportServer } from '../src/transport/server.js';
import { NodeNet } from '../src/node/net.js';
import { NodeClock, NodeRandom } from '../src/node/ports.js';

const [mode = 'baseline', secret = ''] = process.argv.slice(2);
const ZERO = Buffer.alloc(4 << 20, 0x5a);

// Baseline wire: request = u32 data_len | u32 id | u32 read_len | u32 kind, then data;
// response = u32 data_len | u32 id | i32 status | u32 0, then data.

function baseline(): Promise<number> {
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    const reader = new BaselineReader((buf, end) => {
      s.cork();
      for (let off = 0; off < end; off += BASE_HDR + buf.readUInt32LE(off)) {
        const id = buf.readUInt32LE(off + 4);
        const read_len = buf.readUInt32LE(off + 8);
        const h = Buffer.allocUnsafe(BASE_HDR);
        h.writeUInt32LE(read_len, 0);
        h.writeUInt32LE(id, 4);
        h.writeInt32LE(0, 8);
        h.writeUInt32LE(0, 12);
        s.write(h);
        if (read_len > 0) s.write(ZERO.subarray(0, read_len));
      }
      s.uncork();
    });
    s.on('data', (chunk: Buffer) => reader.push(chunk));
    s.on('error', () => undefined);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

async function transport(): Promise<number> {
  const server = new TransportServer(
    { secret: Buffer.from(secret, 'hex'), max_io_size: 4 << 20 },
    { net: new NodeNet(), clock: new NodeClock(), random: new NodeRandom() },
    {
      onRequest(req) {
        if (req.kind === 'read') req.respond(0, ZERO.subarray(0, req.read_len));
        else req.respond(0);
      },
    },
  );
  return (await server.listen({ host: '127.0.0.1', port: 0 })).port;
}

const port = mode === 'transport' ? await transport() : await baseline();
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.on('SIGTERM', () => process.exit(0));
