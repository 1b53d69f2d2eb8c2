import { type Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';

/**
 * A pass over the stores run every interval (and by tests on demand through `check`). One pass at a
 * time per instance: a `check` called while one runs returns 0 at once, as the running pass covers
 * the same rows. Replicas running at once are the subclass's to make safe (its insert-once rows).
 */
export abstract class Watch {
  private loop: Loop | undefined;
  private running = false;

  constructor(
    protected readonly log: Logger,
    /** Logged with a failed pass's error; the loop goes on. */
    private readonly failure: string,
  ) {}

  start(intervalMs: number): void {
    this.loop = new Loop(async () => void (await this.check()), {
      intervalMs,
      onError: (err) => this.log.warn({ err }, this.failure),
    }).start(intervalMs);
  }

  /** Resolves once a pass in flight has finished, so the stores it uses can be closed after. */
  async stop(): Promise<void> {
    await this.loop?.stop();
  }

  /** One pass now; returns what `pass` counted (0 when a pass was already running). */
  async check(now = Date.now()): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      return await this.pass(now);
    } finally {
      this.running = false;
    }
  }

  protected abstract pass(now: number): Promise<number>;
}
