import { Loop } from '@meterd/core/loop';
import type { Logger } from '@meterd/core/log';
import type { Redis } from '@meterd/core/store';
import type { ShippedEverywhere, ShippedOriginals } from './deduper.js';

export interface ShippedMarksOptions {
  /** Redis hash every ingest thread of the deployment publishes in (contracts: dedupeShippedKey). */
  key: string;
  /** This thread's field in it: unique per running thread. */
  id: string;
  /** Marks what this thread has made durable so far; the check is true once that has shipped. */
  markSpool: () => () => boolean;
  /** When this thread last sent a claim to Redis (ms since the epoch; 0: never). */
  lastClaimAt: () => number;
  /**
   * Bound on how long after its claim was sent an event can still be acknowledged (a request
   * answers 503 past DEDUPE_PENDING_TTL_MS / 2; plus the spool write).
   */
  inFlightMs: number;
  hotSeconds: number;
  intervalMs: number;
  /** A thread whose heartbeat is older than this is gone: its field no longer holds anything back (30 s). */
  staleMs?: number;
  log: Logger;
}

const STALE_MS = 30_000;
/** Fields of threads gone this long are removed. */
const FORGET_MS = 86_400_000;
/** Marks kept while the spool lags: about an hour at one a second; past it the oldest lapse (conservative). */
const MAX_MARKS = 3_600;

interface Mark {
  /** When the spool's end was marked. */
  t: number;
  /** Every claim this thread sent before this time was settled (acknowledged or abandoned) by `t`. */
  settled: number;
  shipped: () => boolean;
}

/**
 * Each ingest thread publishes, once a second, in one Redis hash field `<shipped>:<heartbeat>:<settled>`:
 *
 * - `shipped`: everything it acknowledged before that time is in ClickHouse. A key whose hot row
 *   expired was committed more than DEDUPE_HOT_SECONDS ago; if every thread has shipped through that
 *   time, its original is in ClickHouse and a lookup that misses it was a hash collision. Otherwise
 *   (a ClickHouse backlog longer than the hot window) the miss may be an original still in a spool,
 *   and the key is answered 409 until it has shipped, rather than stored twice;
 * - `settled`: every event it acknowledged *on a claim sent* before that time is in ClickHouse (or
 *   will never be acknowledged). Recovery after Redis lost a workspace's state waits until every
 *   live thread's `settled` passes the moment the loss was noticed (docs/redis.md).
 *
 * Costs nothing per event: the other threads' times are read by the loop, this thread's from memory.
 */
export class ShippedMarks implements ShippedOriginals, ShippedEverywhere {
  /** Times this thread's spool end was marked, oldest first; marks[0] may already have shipped. */
  private marks: Mark[] = [];
  /** This thread's latest shipped and settled times. */
  private shippedAt = 0;
  /**
   * From the thread's start: rows its spool held then were acknowledged by a predecessor that died
   * (re-committed into Redis before requests), and fall under the dead-thread rule (docs/redis.md).
   */
  private settledAt = Date.now();
  /** The earliest `shipped` and `settled` of the other live threads (Infinity: none). */
  private others = Infinity;
  private othersSettled = Infinity;
  /** When the read behind `others` was sent (0: never). */
  private readAt = 0;
  private readonly loop: Loop;

  constructor(
    private readonly redis: Redis,
    private readonly o: ShippedMarksOptions,
  ) {
    this.loop = new Loop(() => this.publish(), {
      intervalMs: o.intervalMs,
      onError: (err, failures) => {
        // Stale times only make this thread answer 409 (or wait) where it could have stored: safe, but worth a look.
        if (failures === 1) o.log.warn({ err }, 'publishing the spool\'s "shipped through" time in Redis failed');
      },
    });
  }

  start(): this {
    this.loop.start();
    return this;
  }

  /** Leaves the field of a thread that stops with rows unshipped: it goes stale after staleMs. */
  async stop(): Promise<void> {
    await this.loop.stop();
    if (this.o.markSpool()()) await this.redis.hdel(this.o.key, this.o.id);
  }

  olderThanHotShipped(): boolean {
    const now = Date.now();
    const limit = now - this.o.hotSeconds * 1000;
    this.progress(now);
    return this.others >= limit && this.shippedAt >= limit;
  }

  /**
   * True once every event any live ingest thread acknowledged on a claim sent before `t` is in
   * ClickHouse (recovery after a loss waits for it, docs/redis.md). The other threads' times count
   * only from a read sent two intervals after `t`: by then every live thread has written its field
   * again, even into a Redis that lost the hash. A thread silent for `staleMs` is taken for dead and
   * not waited for.
   */
  allShippedThrough(t: number): boolean {
    this.progress(Date.now());
    return this.readAt >= t + 2 * this.o.intervalMs && this.othersSettled >= t && this.settledAt >= t;
  }

  /** Every claim sent before the returned time is settled now. */
  private settledNow(now: number): number {
    return now - this.o.lastClaimAt() >= this.o.inFlightMs ? now : now - this.o.inFlightMs;
  }

  /** Moves `shippedAt` and `settledAt` to the latest mark that has shipped. */
  private progress(now: number): void {
    if (this.o.markSpool()()) {
      this.marks.length = 0;
      this.shippedAt = now;
      this.settledAt = Math.max(this.settledAt, this.settledNow(now));
      return;
    }
    while (this.marks.length > 1 && this.marks[1]!.shipped()) this.marks.shift();
    const m = this.marks[0];
    if (m !== undefined && m.shipped()) {
      this.shippedAt = Math.max(this.shippedAt, m.t);
      this.settledAt = Math.max(this.settledAt, m.settled);
    }
  }

  private async publish(): Promise<void> {
    const now = Date.now();
    this.progress(now);
    if (this.shippedAt < now) {
      this.marks.push({ t: now, settled: this.settledNow(now), shipped: this.o.markSpool() });
      if (this.marks.length > MAX_MARKS) this.marks.splice(1, 1);
    }
    await this.redis.hset(this.o.key, this.o.id, `${this.shippedAt}:${now}:${this.settledAt}`);
    const readAt = Date.now();
    const all = await this.redis.hgetall(this.o.key);
    let min = Infinity;
    let minSettled = Infinity;
    const gone: string[] = [];
    for (const [id, v] of Object.entries(all)) {
      if (id === this.o.id) continue;
      const [shipped, beat, settled] = v.split(':').map(Number) as [number, number, number | undefined];
      if (now - beat > FORGET_MS) gone.push(id);
      else if (now - beat <= (this.o.staleMs ?? STALE_MS)) {
        min = Math.min(min, shipped);
        // A thread of an older version publishes no `settled`: its shipped time, less the in-flight bound.
        minSettled = Math.min(minSettled, settled ?? shipped - this.o.inFlightMs);
      }
    }
    this.others = min;
    this.othersSettled = minSettled;
    this.readAt = readAt;
    if (gone.length > 0) await this.redis.hdel(this.o.key, ...gone);
  }
}
