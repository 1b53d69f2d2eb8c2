import type { Logger } from '@meterd/core/log';
import type { StoredEvent } from '@meterd/core/event';
import type { ClickHouseStoredRows } from './clickhouse.js';
import type { EpochRecovery, StoredRowQuery } from './deduper.js';
import type { RedisDeduper } from './redis.js';

export interface RecoveryOptions {
  windowSeconds: number;
  /** Bytes this thread has acknowledged but not yet shipped to ClickHouse. */
  unshippedBytes: () => number;
  /** How long to wait for this thread's spool to reach ClickHouse before counting from it. */
  drainMs: number;
  log: Logger;
}

/** Rows per tier insert while rebuilding. */
const CHUNK = 1_000;
const DAY_MS = 86_400_000;

/**
 * What ingest does for a workspace whose Redis state is of another epoch: Redis restarted without
 * its data, failed over to an empty replica, or never saw the workspace (docs/redis.md).
 *
 * 1. Wait until this thread's spool has reached ClickHouse, so ClickHouse holds every event this
 *    thread acknowledged (a claim meanwhile gets 503: nothing is accepted uncounted).
 * 2. Raise the period's quota counter to the events ClickHouse holds for it, before any quota
 *    decision is trusted again.
 * 3. Mark the workspace `<epoch>:r`: claims go through again, and every key a claim calls new is
 *    also looked up in ClickHouse by its triple, so a retry of an event stored before the loss is
 *    answered as a duplicate, not stored twice.
 * 4. Rebuild the compact tier from ClickHouse, a day at a time, then mark the workspace `<epoch>`:
 *    claims trust Redis alone again.
 */
export class DedupeRecovery implements EpochRecovery {
  private readonly inFlight = new Map<string, Promise<void>>();
  private closed = false;

  constructor(
    private readonly deduper: RedisDeduper,
    private readonly rows: ClickHouseStoredRows,
    private readonly o: RecoveryOptions,
  ) {}

  /** Steps 1–3, once at a time per workspace; the tier rebuild (4) goes on in the background. */
  recover(workspaceId: string, nowMs: number): Promise<void> {
    let p = this.inFlight.get(workspaceId);
    if (p === undefined) {
      p = this.run(workspaceId, nowMs).finally(() => this.inFlight.delete(workspaceId));
      this.inFlight.set(workspaceId, p);
    }
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
    await this.deduper.readEpoch();
    const deadline = Date.now() + this.o.drainMs;
    while (this.o.unshippedBytes() > 0) {
      if (Date.now() > deadline) throw new Error('the spool has not reached ClickHouse yet');
      await new Promise((r) => setTimeout(r, 20));
    }
    const d = new Date(nowMs);
    const monthStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    const period = `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
    const n = await this.rows.countReceived(workspaceId, monthStart, this.o.windowSeconds);
    await this.deduper.quotaAtLeast(workspaceId, period, n);
    // The `:r` mark lapses if this process dies mid-rebuild: another ingest then recovers again.
    await this.deduper.markRecovered(workspaceId, true, 600);
    this.o.log.warn(
      { workspace_id: workspaceId, events_this_period: n },
      'Redis holds no dedupe state of this epoch for the workspace: counters rebuilt from ClickHouse, rebuilding its dedupe tier',
    );
    void this.rebuild(workspaceId, nowMs).catch((err: unknown) =>
      // The mark lapses in 10 minutes and the next claim starts over; until then lookups stay exact.
      this.o.log.error({ err, workspace_id: workspaceId }, 'rebuilding the dedupe tier from ClickHouse failed'),
    );
  }

  private async rebuild(workspaceId: string, nowMs: number): Promise<void> {
    const window = this.o.windowSeconds;
    for (let from = nowMs - window * 1000 - DAY_MS; from < nowMs + DAY_MS; from += DAY_MS) {
      if (this.closed) return;
      const { keys, hours } = await this.rows.storedKeys(workspaceId, from, from + DAY_MS, window);
      for (let i = 0; i < keys.length; i += CHUNK)
        await this.deduper.tierInsert(workspaceId, keys.slice(i, i + CHUNK), hours.slice(i, i + CHUNK));
    }
    await this.deduper.markRecovered(workspaceId, false, window + 40 * 86_400);
    this.o.log.info({ workspace_id: workspaceId }, 'dedupe tier rebuilt from ClickHouse');
  }
}
