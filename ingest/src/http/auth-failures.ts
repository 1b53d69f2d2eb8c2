/**
 * Key lookups per client address, rationed once the address has sent unknown keys. An address
 * with no recent failure is not tracked at all: its lookups are never refused, so a busy client
 * (or a proxy) with many keys whose cache entries expire together is not limited. After a failure
 * its bucket exists, and every lookup takes a token when it starts (so concurrent requests cannot
 * overshoot) and gives it back if the key was live: the address may fail `burst` times and then
 * `perSecond` times a second. A refilled bucket is dropped, and the address is untracked again.
 * A cached key never gets here, so a flood of random `sks_` tokens from one address costs its
 * first wave of concurrent requests plus its budget in Postgres lookups, and no more.
 *
 * Bounded: at most `capacity` addresses are tracked; a full table forgets the one touched longest
 * ago (Map insertion order, refreshed on every take), so memory cannot grow with the number of
 * attacking addresses.
 */
export class AuthFailureLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    private readonly capacity = 65_536,
  ) {}

  /**
   * Before a lookup: the whole seconds to wait (> 0, refused), `TOKEN_TAKEN` (0) or `UNTRACKED`
   * (-1, admitted without a token). Pass the result to `settle` when the lookup is done.
   */
  take(addr: string, now: number): number {
    const b = this.buckets.get(addr);
    if (b === undefined) return UNTRACKED;
    const tokens = this.refilled(b, now);
    if (tokens >= this.burst) {
      this.buckets.delete(addr);
      return UNTRACKED;
    }
    if (tokens < 1) return Math.ceil((1 - tokens) / this.perSecond);
    this.put(addr, tokens - 1, now);
    return TOKEN_TAKEN;
  }

  /** After a lookup admitted by `take`: a live key returns its token, an unknown key costs one. */
  settle(addr: string, admission: number, found: boolean, now: number): void {
    if (found === (admission === UNTRACKED)) return; // live and untracked, or unknown and already paid for
    const b = this.buckets.get(addr);
    if (found) {
      if (b !== undefined) this.put(addr, Math.min(this.burst, this.refilled(b, now) + 1), now);
      return;
    }
    this.put(addr, (b === undefined ? this.burst : this.refilled(b, now)) - 1, now);
  }

  get size(): number {
    return this.buckets.size;
  }

  private put(addr: string, tokens: number, now: number): void {
    this.buckets.delete(addr);
    if (this.buckets.size >= this.capacity) {
      const oldest = this.buckets.keys().next();
      if (oldest.done !== true) this.buckets.delete(oldest.value);
    }
    this.buckets.set(addr, { tokens: Math.max(0, tokens), at: now });
  }

  private refilled(b: { tokens: number; at: number }, now: number): number {
    return Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
  }
}

export const TOKEN_TAKEN = 0;
export const UNTRACKED = -1;
