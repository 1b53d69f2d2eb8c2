import { ApiError } from '@meterd/core';

/**
 * A token bucket per client address, in this process's memory: enough to blunt signup floods from
 * one address. With several replicas each keeps its own buckets (the effective limit multiplies by
 * the replica count); a shared limit would need Redis, which signup's low rate does not justify.
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly perMs: number;

  constructor(private readonly burst: number, perMinute: number, private readonly maxKeys = 100_000) {
    this.perMs = perMinute / 60_000;
  }

  /** Takes one token for `key`, or throws rate_limited with the seconds until one is available. */
  take(key: string, now = Date.now()): void {
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxKeys) this.sweep(now);
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs);
    b.at = now;
    if (b.tokens < 1) {
      const retryAfter = Math.ceil((1 - b.tokens) / this.perMs / 1000);
      throw Object.assign(new ApiError('rate_limited', `too many requests from this address; retry in ${retryAfter} s`), { retryAfter });
    }
    b.tokens -= 1;
  }

  /** Forgets buckets that have refilled completely (they hold no information). */
  private sweep(now: number): void {
    for (const [k, b] of this.buckets) if (b.tokens + (now - b.at) * this.perMs >= this.burst) this.buckets.delete(k);
    if (this.buckets.size >= this.maxKeys) this.buckets.clear();
  }
}
