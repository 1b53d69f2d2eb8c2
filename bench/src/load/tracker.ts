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
    if (n >= this.state.length) {
      const grown = new Uint8Array(this.state.length * 2);
      grown.set(this.state);
      this.state = grown;
    }
    this.state[n] = SENT;
    return n;
  }

  key(n: number): string {
    return `${this.tag}-${n}`;
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
