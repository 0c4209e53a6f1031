// A transport request handler for tests. The user header drives it:
//   byte 0: seed of the answer pattern (read-type answers byte i = seed + i)
//   byte 1: answer after this many ms (0: on the next turn of the event loop)
//   byte 2: if non-zero, answer status -byte2
// It counts executions per (session, request id) so tests can prove at-most-once.
import type { ServerHandler, ServerRequest, ServerSession } from '../../src/transport/server.js';

export function pattern(seed: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (seed + i) & 0xff;
  return b;
}

export function hdr(seed: number, delay_ms = 0, fail = 0): Buffer {
  return Buffer.from([seed & 0xff, delay_ms, fail]);
}

export class TestHandler implements ServerHandler {
  readonly executions = new Map<string, number>();
  readonly written_bytes = { n: 0 };
  opened: string[] = [];
  closed: { name: string; reason: string }[] = [];
  /** When set, requests are held here instead of being answered. */
  hold: ServerRequest[] | null = null;

  onRequest(req: ServerRequest): void {
    const key = `${req.session.name}/${req.id}`;
    this.executions.set(key, (this.executions.get(key) ?? 0) + 1);
    if (this.hold !== null) {
      this.hold.push(req);
      return;
    }
    const delay = req.user_hdr[1] ?? 0;
    const answer = () => this.answer(req);
    if (delay === 0) setImmediate(answer);
    else setTimeout(answer, delay);
  }

  answer(req: ServerRequest): void {
    const fail = req.user_hdr[2] ?? 0;
    if (fail !== 0) return req.respond(-fail);
    if (req.kind === 'read') return req.respond(0, pattern(req.user_hdr[0] ?? 0, req.read_len));
    this.written_bytes.n += req.data.length;
    req.respond(0);
  }

  onSessionOpen(s: ServerSession): void {
    this.opened.push(s.name);
  }

  onSessionClose(s: ServerSession, reason: string): void {
    this.closed.push({ name: s.name, reason });
  }

  /** Request ids executed more than once. */
  duplicates(): string[] {
    return [...this.executions].filter(([, n]) => n > 1).map(([k]) => k);
  }
}
