// Waiting in tests: on a condition or an event, always with a deadline, never a bare sleep.

/** Polls `cond` (synchronous or async) until it holds, or fails at the deadline. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeout_ms = 10_000, poll_ms = 5): Promise<void> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > timeout_ms) throw new Error(`timed out after ${timeout_ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, poll_ms));
  }
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
