/**
 * Key lookups per client address, as token buckets that only failures drain: a lookup takes a
 * token when it starts (so concurrent requests cannot overshoot the budget) and a lookup that finds
 * a live key gives it back. Each address may thus fail `burst` times at once and then `perSecond`
 * times a second. A cached key never gets here, so a flood of random `sks_` tokens from one address
 * costs at most its budget in Postgres lookups, and valid keys keep the lookup capacity.
 *
 * Bounded: at most `capacity` addresses are remembered; a full table forgets the address touched
 * longest ago (Map insertion order, refreshed on every take), so memory cannot grow with the
 * number of attacking addresses.
 */
export class AuthFailureLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly burst: number, private readonly perSecond: number, private readonly capacity = 65_536) {}

  /** Takes a token for one lookup: 0 when admitted, else the whole seconds until one is available. */
  take(addr: string, now: number): number {
    const b = this.buckets.get(addr);
    const tokens = b === undefined ? this.burst : this.refilled(b, now);
    if (tokens < 1) return Math.ceil((1 - tokens) / this.perSecond);
    this.buckets.delete(addr);
    if (this.buckets.size >= this.capacity) {
      const oldest = this.buckets.keys().next();
      if (oldest.done !== true) this.buckets.delete(oldest.value);
    }
    this.buckets.set(addr, { tokens: tokens - 1, at: now });
    return 0;
  }

  /** Gives back the token of a lookup that found a live key: only failures count. */
  refund(addr: string, now: number): void {
    const b = this.buckets.get(addr);
    if (b === undefined) return;
    b.tokens = Math.min(this.burst, this.refilled(b, now) + 1);
    b.at = now;
  }

  get size(): number {
    return this.buckets.size;
  }

  private refilled(b: { tokens: number; at: number }, now: number): number {
    return Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
  }
}
