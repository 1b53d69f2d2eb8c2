import { Loop } from '@meterd/core/loop';
import type { Logger } from '@meterd/core/log';
import type { Redis } from '@meterd/core/store';
import type { ShippedOriginals } from './deduper.js';

export interface ShippedMarksOptions {
  /** Redis hash every ingest thread of the deployment publishes in (contracts: dedupeShippedKey). */
  key: string;
  /** This thread's field in it: unique per running thread. */
  id: string;
  /** As for recovery: marks what this thread has made durable; the check is true once it has shipped. */
  markSpool: () => () => boolean;
  hotSeconds: number;
  intervalMs: number;
  log: Logger;
}

/** A thread whose heartbeat is older than this is gone: its field no longer holds anything back. */
const STALE_MS = 30_000;
/** Fields of threads gone this long are removed. */
const FORGET_MS = 86_400_000;
/** Marks kept while the spool lags: about an hour at one a second; past it the oldest lapse (conservative). */
const MAX_MARKS = 3_600;

/**
 * Each ingest thread publishes, once a second, the time through which everything it acknowledged
 * is in ClickHouse, and reads the others'. A key whose hot row expired was committed more than
 * DEDUPE_HOT_SECONDS ago; if every thread has shipped through that time, its original is in
 * ClickHouse and a lookup that misses it was a hash collision. Otherwise (a ClickHouse backlog
 * longer than the hot window) the miss may be an original still in a spool, and the key is
 * answered 409 until it has shipped, rather than stored twice (docs/redis.md). Costs nothing per
 * event: the other threads' times are read by the loop, this thread's from memory.
 */
export class ShippedMarks implements ShippedOriginals {
  /** Times this thread's spool end was marked, oldest first; marks[0] may already have shipped. */
  private marks: { t: number; shipped: () => boolean }[] = [];
  /** Last time this thread's spool had shipped everything it held. */
  private allShippedAt = 0;
  /** The earliest "shipped through" of the other live threads (Infinity: none). */
  private others = Infinity;
  private readonly loop: Loop;

  constructor(
    private readonly redis: Redis,
    private readonly o: ShippedMarksOptions,
  ) {
    this.loop = new Loop(() => this.publish(), {
      intervalMs: o.intervalMs,
      onError: (err, failures) => {
        // Stale times only make this thread answer 409 where it could have stored: safe, but worth a look.
        if (failures === 1) o.log.warn({ err }, 'publishing the spool\'s "shipped through" time in Redis failed');
      },
    });
  }

  start(): this {
    this.loop.start();
    return this;
  }

  /** Leaves the field of a thread that stops with rows unshipped: it goes stale after STALE_MS. */
  async stop(): Promise<void> {
    await this.loop.stop();
    if (this.o.markSpool()()) await this.redis.hdel(this.o.key, this.o.id);
  }

  olderThanHotShipped(): boolean {
    const now = Date.now();
    const limit = now - this.o.hotSeconds * 1000;
    return this.others >= limit && this.through(now) >= limit;
  }

  /** Every event this thread acknowledged before the returned time is in ClickHouse. */
  private through(now: number): number {
    if (this.o.markSpool()()) {
      this.marks.length = 0;
      return (this.allShippedAt = now);
    }
    while (this.marks.length > 1 && this.marks[1]!.shipped()) this.marks.shift();
    const m = this.marks[0];
    return m !== undefined && m.shipped() ? Math.max(m.t, this.allShippedAt) : this.allShippedAt;
  }

  private async publish(): Promise<void> {
    const now = Date.now();
    const t = this.through(now);
    if (t < now) {
      this.marks.push({ t: now, shipped: this.o.markSpool() });
      if (this.marks.length > MAX_MARKS) this.marks.splice(1, 1);
    }
    await this.redis.hset(this.o.key, this.o.id, `${t}:${now}`);
    const all = await this.redis.hgetall(this.o.key);
    let min = Infinity;
    const gone: string[] = [];
    for (const [id, v] of Object.entries(all)) {
      if (id === this.o.id) continue;
      const colon = v.indexOf(':');
      const beat = Number(v.slice(colon + 1));
      if (now - beat > FORGET_MS) gone.push(id);
      else if (now - beat <= STALE_MS) min = Math.min(min, Number(v.slice(0, colon)));
    }
    this.others = min;
    if (gone.length > 0) await this.redis.hdel(this.o.key, ...gone);
  }
}
