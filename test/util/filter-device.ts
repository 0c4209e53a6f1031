// A BlockDevice in front of another, in the spirit of nbdkit filters: it can fail operations
// with a chosen status, corrupt read data (to prove the data checks catch a broken server)
// and hold completions until the test releases them (to observe in-flight bounds).

import type { BlockDevice, Extent, WriteFlags, ZeroFlags } from '../../src/util/block-device.js';
import { ForwardingDevice } from '../../src/nbd/forwarding-device.js';

export type OpName = 'read' | 'write' | 'trim' | 'zero' | 'flush' | 'status';

export interface FilterOptions {
  /** Status returned instead of calling the inner device. */
  fail?: Partial<Record<OpName, number>>;
  /** Flip one bit in every read's data. */
  corrupt_reads?: boolean;
  /** Keep completions until release(). */
  hold?: boolean;
}

export class FilterDevice extends ForwardingDevice {
  /** Operations started and not completed; the highest value seen. */
  active = 0;
  max_active = 0;
  started = 0;
  private held: (() => void)[] = [];

  constructor(
    inner: BlockDevice,
    public opts: FilterOptions = {},
  ) {
    super(inner);
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Completes up to `n` held operations (all by default), in order. */
  release(n = Infinity): number {
    const take = this.held.splice(0, Math.min(n, this.held.length));
    for (const f of take) f();
    return take.length;
  }

  override read(offset: number, length: number, cb: (status: number, data: Buffer | null) => void): void {
    const fail = this.opts.fail?.read;
    this.run(
      (done) => (fail !== undefined ? queueMicrotask(() => done(fail, null)) : this.inner.read(offset, length, done)),
      (status: number, data: Buffer | null) => {
        if (status === 0 && data !== null && data.length > 0 && this.opts.corrupt_reads === true) {
          const i = data.length >> 1;
          data[i] = (data[i] as number) ^ 0x01;
        }
        cb(status, data);
      },
    );
  }

  override write(offset: number, data: Buffer, flags: WriteFlags, cb: (status: number) => void): void {
    this.simple('write', (done) => this.inner.write(offset, data, flags, done), cb);
  }

  override trim(offset: number, length: number, flags: WriteFlags, cb: (status: number) => void): void {
    this.simple('trim', (done) => this.inner.trim(offset, length, flags, done), cb);
  }

  override writeZeroes(offset: number, length: number, flags: ZeroFlags, cb: (status: number) => void): void {
    this.simple('zero', (done) => this.inner.writeZeroes(offset, length, flags, done), cb);
  }

  override flush(cb: (status: number) => void): void {
    this.simple('flush', (done) => this.inner.flush(done), cb);
  }

  override blockStatus(context: string, offset: number, length: number, cb: (status: number, extents: Extent[] | null) => void): void {
    const fail = this.opts.fail?.status;
    this.run((done) => (fail !== undefined ? queueMicrotask(() => done(fail, null)) : this.inner.blockStatus(context, offset, length, done)), cb);
  }

  private simple(op: OpName, call: (done: (status: number) => void) => void, cb: (status: number) => void): void {
    const fail = this.opts.fail?.[op];
    this.run((done: (status: number) => void) => (fail !== undefined ? queueMicrotask(() => done(fail)) : call(done)), cb);
  }

  private run<A extends unknown[]>(start: (done: (...a: A) => void) => void, cb: (...a: A) => void): void {
    this.started++;
    this.active++;
    this.max_active = Math.max(this.max_active, this.active);
    start((...a: A) => {
      const finish = (): void => {
        this.active--;
        cb(...a);
      };
      if (this.opts.hold === true) this.held.push(finish);
      else finish();
    });
  }
}
