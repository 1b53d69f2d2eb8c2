/**
 * Client-side pacing: at most `rate` calls per second, evenly spaced, so this process stays inside
 * Stripe's documented limits instead of discovering them through 429s. Callers await `take()`.
 * Several replicas each have their own pacer: set the rates to limit ÷ replicas.
 */
export class Pacer {
  private next = 0;
  constructor(private readonly rate: number) {}

  async take(): Promise<void> {
    const now = performance.now();
    const at = Math.max(now, this.next);
    this.next = at + 1000 / this.rate;
    if (at > now) await new Promise((r) => setTimeout(r, at - now));
  }
}
