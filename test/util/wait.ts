// Waiting in tests: on a condition or an event, always with a deadline, never a bare sleep.

export interface WaitOptions {
  /** Give up after this long (default 10 s). */
  timeout_ms?: number;
  /** Pause between probes (default 5 ms); 0 probes once per event-loop turn (setImmediate). */
  poll_ms?: number;
  /** What the failure should show besides `what` (the last state seen, a log tail), computed at the deadline. */
  explain?: () => string | Promise<string>;
}

/**
 * Polls `probe` (synchronous or async) until it returns a value other than null, and returns
 * that value; fails at the deadline with "timed out after T ms waiting for <what>: <explain()>".
 * An exception from the probe fails the wait at once (a daemon that exited, a closed
 * connection: no point waiting on). The probe gets the whole milliseconds left (0 once the
 * deadline has passed: it runs once more then), for a long poll that should not outlast it.
 */
export async function waitUntil<T>(what: string, probe: (left_ms: number) => T | null | Promise<T | null>, o: WaitOptions = {}): Promise<T> {
  const timeout_ms = o.timeout_ms ?? 10_000;
  const poll_ms = o.poll_ms ?? 5;
  const end = performance.now() + timeout_ms;
  for (;;) {
    const v = await probe(Math.max(0, Math.ceil(end - performance.now())));
    if (v !== null) return v;
    if (performance.now() > end) {
      let why = '';
      const explain = o.explain;
      if (explain !== undefined) why = `: ${await (async () => explain())().catch((e: unknown) => `(explain failed: ${String(e)})`)}`;
      throw new Error(`timed out after ${timeout_ms} ms waiting for ${what}${why}`);
    }
    await new Promise<void>((r) => (poll_ms === 0 ? setImmediate(r) : setTimeout(r, poll_ms)));
  }
}

/** Polls `cond` (synchronous or async) until it holds, or fails at the deadline (see waitUntil). */
export async function waitFor(
  what: string,
  cond: (left_ms: number) => boolean | Promise<boolean>,
  timeout_ms = 10_000,
  poll_ms = 5,
  explain?: () => string | Promise<string>,
): Promise<void> {
  await waitUntil(what, async (left_ms) => ((await cond(left_ms)) ? true : null), { timeout_ms, poll_ms, explain });
}

/** Resolves with the first value `subscribe` delivers that satisfies `pred`, or rejects at the deadline. */
export function nextEvent<T>(
  what: string,
  subscribe: (fn: (v: T) => void) => () => void,
  pred: (v: T) => boolean = () => true,
  timeout_ms = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let unsub: () => void = () => undefined;
    const timer = setTimeout(() => {
      unsub();
      reject(new Error(`timed out after ${timeout_ms} ms waiting for ${what}`));
    }, timeout_ms);
    unsub = subscribe((v) => {
      if (!pred(v)) return;
      clearTimeout(timer);
      unsub();
      resolve(v);
    });
  });
}

/** Rejects if `p` does not settle within the deadline. */
export function within<T>(what: string, p: Promise<T>, timeout_ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeout_ms} ms waiting for ${what}`)), timeout_ms);
    }),
  ]);
}
