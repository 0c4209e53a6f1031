// Resuming what a daemon held before it stopped (objects.ts): steps that need a peer (a
// session to a storage node that is not up yet, a store on a disk that is not attached
// yet) are retried with a growing delay until they succeed, their object is removed by the
// operator, or the role stops. Each failure and the success are events.

import type { Clock, Logger, TimerId } from '../util/ports.js';
import type { EventLog } from './events.js';

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;

export class Resumer {
  private readonly timers = new Set<TimerId>();
  private stopped = false;
  /** Steps not done yet, by name (status view). */
  readonly pending = new Map<string, string>();

  constructor(
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly events: EventLog,
  ) {}

  /**
   * Runs `step` until it resolves; `wanted` is checked before each try (false: the object
   * was removed meanwhile, give up). Resolves when the step succeeded or was given up.
   */
  run(what: string, wanted: () => boolean, step: () => Promise<unknown>): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      let delay = FIRST_DELAY_MS;
      let tries = 0;
      const attempt = (): void => {
        if (this.stopped || !wanted()) {
          this.pending.delete(what);
          return resolve(false);
        }
        tries++;
        step().then(
          () => {
            this.pending.delete(what);
            if (tries > 1) this.events.emit({ kind: 'resume', subject: what, to: 'done', detail: { tries } });
            resolve(true);
          },
          (err: unknown) => {
            const reason = err instanceof Error ? err.message : String(err);
            this.pending.set(what, reason);
            if (tries === 1 || tries % 10 === 0) {
              this.logger.log('warn', 'resume step failed; retrying', { step: what, reason, tries });
              this.events.emit({ kind: 'resume', subject: what, to: 'retrying', detail: { reason, tries } });
            }
            if (this.stopped) return resolve(false);
            const t = this.clock.setTimer(delay, () => {
              this.timers.delete(t);
              attempt();
            });
            this.timers.add(t);
            delay = Math.min(MAX_DELAY_MS, delay * 2);
          },
        );
      };
      attempt();
    });
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) this.clock.cancel(t);
    this.timers.clear();
  }
}
