/**
 * A task that runs, waits and runs again until it is stopped.
 *
 * Hand-written loops re-arm their timer after an await, and so race `stop()`: stop clears the
 * timer while a tick is still awaiting a store, then the tick re-arms it and the process never
 * exits. Here the stopped flag is checked at the one place a timer is armed, and `stop()` resolves
 * only once the tick in flight has finished, so whatever the tick holds can be closed after it.
 */
export interface LoopOptions {
  /** Delay between the end of one tick and the start of the next, unless the tick returns its own. */
  intervalMs: number;
  /** Called with a tick's error; the loop goes on after `intervalMs` (or `errorDelayMs`). */
  onError: (err: unknown, failures: number) => void;
  /** Delay after a failed tick, from the number of failures in a row (backoff). */
  errorDelayMs?: (failures: number) => number;
  /** Keep the process alive while waiting for the next tick. Off by default: a loop alone never holds an exiting process. */
  ref?: boolean;
}

/** What a tick may return: the delay before the next tick, nothing for `intervalMs`, or null when its work is done for good. */
export type Tick = (signal: AbortSignal) => Promise<number | null | void>;

export class Loop {
  private timer: NodeJS.Timeout | undefined;
  private inflight: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private failures = 0;
  private readonly abort = new AbortController();

  constructor(
    private readonly tick: Tick,
    private readonly opts: LoopOptions,
  ) {}

  /** Starts the first tick after `delayMs`. */
  start(delayMs = 0): this {
    this.arm(delayMs);
    return this;
  }

  /** Runs a tick now, or right after the one in flight. */
  wake(): void {
    if (this.stopped) return;
    if (this.inflight !== undefined) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.run();
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Aborted on stop(): a tick passes it to what it awaits, so a long wait ends at once. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Stops for good; resolves when the tick in flight (if any) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    await this.inflight;
  }

  private arm(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => this.run(), ms);
    if (this.opts.ref !== true) this.timer.unref();
  }

  private run(): void {
    this.timer = undefined;
    this.again = false;
    this.inflight = this.tick(this.abort.signal)
      .then(
        (next) => {
          this.failures = 0;
          if (next === null) return null;
          return this.again ? 0 : (next ?? this.opts.intervalMs);
        },
        (err: unknown) => {
          this.failures++;
          this.opts.onError(err, this.failures);
          return this.again ? 0 : (this.opts.errorDelayMs?.(this.failures) ?? this.opts.intervalMs);
        },
      )
      .then((next) => {
        this.inflight = undefined;
        if (next === null) this.stopped = true;
        else this.arm(next);
      });
  }
}
