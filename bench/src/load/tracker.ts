/**
 * What the load generator sent and what the server acknowledged, per idempotency key. Keys are
 * `<tag>-<n>` with n counting up, so a growable byte array indexed by n holds the state of millions
 * of keys in a few megabytes, and ClickHouse can be asked for count and sum(n) of what it holds.
 */
export const SENT = 1;
export const ACKED = 2;
/** Answered with a definitive refusal (4xx/5xx): must not be stored unless another send was acked. */
export const REFUSED = 4;

export class KeyTracker {
  private state = new Uint8Array(1 << 16);
  private next = 0;
  constructor(readonly tag: string) {}

  /** A new key index, marked sent. */
  fresh(): number {
    const n = this.next++;
    this.grow(n);
    this.state[n] = SENT;
    return n;
  }

  /**
   * Adds state bits to key n, as another process tracked them (wrk's threads each send their own
   * interleaved indexes): keys never marked stay unsent, so gaps are neither acked nor unanswered.
   */
  mark(n: number, bits: number): void {
    this.grow(n);
    this.state[n]! |= bits;
    if (n >= this.next) this.next = n + 1;
  }

  private grow(n: number): void {
    if (n < this.state.length) return;
    let size = this.state.length * 2;
    while (size <= n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.state);
    this.state = grown;
  }

  key(n: number): string {
    return `${this.tag}-${n}`;
  }

  /** Key n's state bits (SENT | ACKED | REFUSED), 0 for an index never sent. */
  stateOf(n: number): number {
    return this.state[n] ?? 0;
  }

  get issued(): number {
    return this.next;
  }

  ack(n: number): void {
    this.state[n]! |= ACKED;
  }

  refuse(n: number): void {
    this.state[n]! |= REFUSED;
  }

  /** Acknowledged keys: their count and the sum of their indexes (ClickHouse must show the same). */
  acked(): { count: number; sum: number } {
    let count = 0;
    let sum = 0;
    for (let n = 0; n < this.next; n++)
      if (this.state[n]! & ACKED) {
        count++;
        sum += n;
      }
    return { count, sum };
  }

  /** Sent, never acknowledged and never refused: the server may or may not have stored them. */
  unanswered(): number[] {
    const out: number[] = [];
    for (let n = 0; n < this.next; n++) if (this.state[n] === SENT) out.push(n);
    return out;
  }
}
