import { type Counter } from '@meterd/core/metrics';
import type { Logger } from '@meterd/core/log';
import type { StoredEvent } from '@meterd/core/event';
import type { ClickHouseStoredRows } from './clickhouse.js';
import type { EpochRecovery, StoredRowQuery } from './deduper.js';
import type { RedisDeduper } from './redis.js';

export interface RecoveryOptions {
  windowSeconds: number;
  /**
   * Marks what this thread has made durable so far; the returned check is true once all of it
   * has reached ClickHouse (later rows need not have).
   */
  markSpool: () => () => boolean;
  /** How long a claim may wait for that before it is answered 503. */
  drainMs: number;
  log: Logger;
  /** Quota counters raised from ClickHouse after Redis lost its data (alerted on: a loss happened). */
  rebuilds?: Counter;
  /** Recoveries that failed and will be retried after a backoff (the workspace gets 503 meanwhile). */
  failures?: Counter;
}

/** Rows per tier insert while rebuilding. */
const CHUNK = 1_000;
const DAY_MS = 86_400_000;
/** Backoff after a failed recovery of a workspace: its claims answer 503 meanwhile, without a query. */
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 60_000;
/** Recoveries at once: after a loss every active workspace needs one, each a ClickHouse query. */
const PARALLEL = 4;

/**
 * What ingest does for a workspace whose Redis state is of another epoch: Redis restarted without
 * its data, failed over to an empty replica, or never saw the workspace (docs/redis.md).
 *
 * 1. If this thread saw the epoch change, wait until what its spool held then has reached
 *    ClickHouse, so ClickHouse holds every event this thread acknowledged (a claim meanwhile
 *    waits, at most DRAIN, then gets 503: nothing is accepted uncounted).
 * 2. Raise the period's quota counter to the events ClickHouse holds for it, before any quota
 *    decision is trusted again. A workspace ClickHouse has nothing of is done here.
 * 3. Mark the workspace `<epoch>:r`: claims go through again, and every key a claim calls new is
 *    also looked up in ClickHouse by its triple, so a retry of an event stored before the loss is
 *    answered as a duplicate, not stored twice.
 * 4. Rebuild the compact tier from ClickHouse a day of occurred hours at a time, then mark
 *    the workspace `<epoch>`: claims trust Redis alone again.
 *
 * Steps 2 and 4 read ranges of the events sort key through `scans`, a client with a longer
 * timeout than the hot path's lookups; a workspace whose recovery failed waits a growing backoff
 * before the next try, so retries of its requests do not relaunch the scans.
 */
export class DedupeRecovery implements EpochRecovery {
  private readonly inFlight = new Map<string, Promise<void>>();
  private closed = false;
  private running = 0;
  private readonly queue: (() => void)[] = [];
  /** Set when this thread saw Redis lose its data, until its spool of that moment has shipped. */
  private shippedSinceLoss: (() => boolean) | undefined;
  /** Workspaces whose last recovery failed: when, and how many times in a row. */
  private readonly failed = new Map<string, { at: number; times: number }>();

  constructor(
    private readonly deduper: RedisDeduper,
    private readonly rows: ClickHouseStoredRows,
    private readonly scans: ClickHouseStoredRows,
    private readonly o: RecoveryOptions,
  ) {}

  /** Steps 1–3, once at a time per workspace; the tier rebuild (4) goes on in the background. */
  recover(workspaceId: string, nowMs: number): Promise<void> {
    let p = this.inFlight.get(workspaceId);
    if (p !== undefined) return p;
    const f = this.failed.get(workspaceId);
    if (f !== undefined) {
      const wait = f.at + Math.min(BACKOFF_MIN_MS * 2 ** (f.times - 1), BACKOFF_MAX_MS) - Date.now();
      if (wait > 0) return Promise.reject(new Error(`recovery failed recently; next try in ${wait} ms`));
    }
    p = this.run(workspaceId, nowMs).then(
      () => {
        this.failed.delete(workspaceId);
        this.inFlight.delete(workspaceId);
      },
      (err: unknown) => {
        this.o.failures?.inc();
        this.failed.set(workspaceId, { at: Date.now(), times: (f?.times ?? 0) + 1 });
        this.inFlight.delete(workspaceId);
        throw err;
      },
    );
    this.inFlight.set(workspaceId, p);
    return p;
  }

  /** Exact lookups while the tier is rebuilt: each key's stored row, or undefined. */
  stored(workspaceId: string, items: StoredRowQuery[], nowMs: number): Promise<(StoredEvent | undefined)[]> {
    return this.rows.findAnyHour(workspaceId, items, nowMs - this.o.windowSeconds * 1000 - 3_600_000);
  }

  close(): void {
    this.closed = true;
  }

  private async run(workspaceId: string, nowMs: number): Promise<void> {
    if (this.running >= PARALLEL) await this.turn();
    this.running++;
    try {
      await this.recoverNow(workspaceId, nowMs);
    } finally {
      this.running--;
      this.queue.shift()?.();
    }
  }

  /** A place among the PARALLEL recoveries, waited for at most drainMs: the claim behind it answers 503. */
  private turn(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const go = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.queue.splice(this.queue.indexOf(go), 1);
        reject(new Error(`no recovery slot within ${this.o.drainMs} ms`));
      }, this.o.drainMs);
      this.queue.push(go);
    });
  }

  private async recoverNow(workspaceId: string, nowMs: number): Promise<void> {
    const known = this.deduper.knownEpoch;
    const epoch = await this.deduper.readEpoch();
    // Rows this thread acknowledged before the loss may still be in its spool, so ClickHouse
    // would not count or find them: wait until they have shipped. (At start-up there is nothing
    // to wait for: the unshipped rows were re-committed into this Redis before requests.)
    if (known !== undefined && known !== epoch) this.shippedSinceLoss = this.o.markSpool();
    // A local: another workspace's recovery on this thread may clear the field while this one waits.
    const shipped = this.shippedSinceLoss;
    if (shipped !== undefined) {
      const deadline = Date.now() + this.o.drainMs;
      while (!shipped()) {
        if (Date.now() > deadline) throw new Error('the spool has not reached ClickHouse yet');
        await new Promise((r) => setTimeout(r, 20));
      }
      if (this.shippedSinceLoss === shipped) this.shippedSinceLoss = undefined;
    }
    const d = new Date(nowMs);
    const monthStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    const period = `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
    const since = nowMs - this.o.windowSeconds * 1000 - DAY_MS;
    // An event received from `since` on occurred at most a window before it.
    const occurredFrom = Math.min(monthStart, since) - this.o.windowSeconds * 1000 - 3_600_000;
    if (!(await this.scans.hasAny(workspaceId, occurredFrom))) {
      // New to ClickHouse too: nothing to count or rebuild.
      await this.deduper.markRecovered(workspaceId, true, 600);
      await this.deduper.markRecovered(workspaceId, false);
      return;
    }
    const used = await this.scans.periodCount(workspaceId, monthStart, this.o.windowSeconds);
    await this.deduper.quotaAtLeast(workspaceId, period, used);
    this.o.rebuilds?.inc();
    // The `:r` mark lapses if this process dies mid-rebuild: another ingest then recovers again.
    await this.deduper.markRecovered(workspaceId, true, 600);
    this.o.log.warn(
      { workspace_id: workspaceId, events_this_period: used },
      'Redis holds no dedupe state of this epoch for the workspace: counters rebuilt from ClickHouse, rebuilding its dedupe tier',
    );
    const rebuildFrom = since - this.o.windowSeconds * 1000 - 3_600_000;
    void this.rebuild(workspaceId, nowMs, since, rebuildFrom).catch((err: unknown) =>
      // The mark lapses in 10 minutes and the next claim starts over; until then lookups stay exact.
      this.o.log.error({ err, workspace_id: workspaceId }, 'rebuilding the dedupe tier from ClickHouse failed'),
    );
  }

  private async rebuild(workspaceId: string, nowMs: number, since: number, occurredFrom: number): Promise<void> {
    for (let from = occurredFrom; from < nowMs + DAY_MS; from += DAY_MS) {
      if (this.closed) return;
      const { keys, hours } = await this.scans.storedKeys(workspaceId, from, from + DAY_MS, since);
      for (let i = 0; i < keys.length; i += CHUNK)
        await this.deduper.tierInsert(workspaceId, keys.slice(i, i + CHUNK), hours.slice(i, i + CHUNK));
    }
    await this.deduper.markRecovered(workspaceId, false);
    this.o.log.info({ workspace_id: workspaceId }, 'dedupe tier rebuilt from ClickHouse');
  }
}
