import { ClickHouseQueryError, lit, type createClickHouse } from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { inTransaction, scanEveryPrimary, type Pool, type Redis } from '@meterd/core/store';
import type { FinanceService } from './finance.js';

type ClickHouseClient = ReturnType<typeof createClickHouse>;

/** ClickHouse tables that hold rows of a workspace (each has a workspace_id column). */
const CH_WORKSPACE_TABLES = [
  CH_TABLES.events,
  CH_TABLES.usageHourly,
  CH_TABLES.usageDaily,
  CH_TABLES.usageMonthly,
  CH_TABLES.eventBatches,
  CH_TABLES.eventWindows,
] as const;

/**
 * Postgres rows of a workspace that the purge deletes. The workspaces row stays as a tombstone and
 * billing_pushes stays as the record of what Stripe was told; provisions stay until deprovisioned
 * (their rows are how a running handler is found and stopped).
 */
const PG_DELETES = [
  'DELETE FROM webhook_deliveries WHERE workspace_id = ANY($1)',
  'DELETE FROM webhook_endpoints WHERE workspace_id = ANY($1)',
  'DELETE FROM outbox_events WHERE workspace_id = ANY($1)',
  'DELETE FROM api_keys WHERE workspace_id = ANY($1)',
  'DELETE FROM quota_warnings WHERE workspace_id = ANY($1)',
  // Firings go with their alerts (ON DELETE CASCADE), alerts before their meters.
  'DELETE FROM meter_alerts WHERE workspace_id = ANY($1)',
  'DELETE FROM meters WHERE workspace_id = ANY($1)',
  'DELETE FROM shopify_oauth_states WHERE workspace_id = ANY($1)',
  'DELETE FROM shopify_connections WHERE workspace_id = ANY($1)',
  // Stored replies are scoped `ws:<id>` (http/idempotency.ts).
  "DELETE FROM idempotency_keys WHERE scope = ANY(SELECT 'ws:' || x FROM unnest($1::text[]) AS x)",
];

/** The advisory lock that lets one purge run at a time across replicas. */
const LOCK = 'meterd:workspace-purge';

/** Redis keys SCANned per call: bounds each round trip, not the purge. */
const SCAN_COUNT = 1_000;

export interface PurgeResult {
  purged: string[];
}

/**
 * Purges workspaces whose grace period is over (docs/api.md §8): at most `batch` per run, oldest
 * purge_after first. Every step is idempotent and `purged_at` is set last, so a run that dies
 * half-way is finished by the next one:
 *
 * 1. the finance export is copied into workspace_final_exports (the first copy wins, so a rerun after
 *    ClickHouse was already emptied never overwrites it with zeros);
 * 2. Postgres rows are deleted and the contact email cleared, in one transaction;
 * 3. one `ALTER TABLE … DELETE` mutation per ClickHouse table for the whole batch: on 18.16 a
 *    mutation rewrites every part of the table in the background, so one per table per run, never
 *    one per workspace;
 * 4. the workspace's Redis keys (all under its `{workspace}` hash tag) are deleted;
 * 5. purged_at is set.
 */
export interface PurgeStores {
  /** The pool for the purge's own statements (may go through PgBouncer in transaction mode). */
  pool: Pool;
  /**
   * A pool on DATABASE_SESSION_URL (sessionUrl): the run's advisory lock is session-level, so it must
   * live on one server session from take to release, which a transaction-mode pooler does not keep.
   */
  lockPool: Pool;
  ch: ClickHouseClient;
  /** CLICKHOUSE_CLUSTER ('' on one server): the mutations then go to every shard's local tables. */
  chCluster: string;
  redis: Redis;
  redisPrefix: string;
  finance: FinanceService;
  batch: number;
}

export class PurgeService {
  constructor(private readonly s: PurgeStores) {}

  /**
   * One bounded run, with `now` the clock that decides what is due (tests move it instead of waiting
   * 30 days). Every control-api replica runs the loop; a session-level advisory lock (on the session
   * pool) lets one run at a time, so two replicas never issue the same ClickHouse mutations twice.
   */
  async run(now: Date = new Date()): Promise<PurgeResult> {
    const lock = await this.s.lockPool.connect();
    try {
      const { rows } = await lock.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [LOCK]);
      if (rows[0]!.ok !== true) return { purged: [] };
      try {
        return await this.purgeDue(now);
      } finally {
        await lock.query('SELECT pg_advisory_unlock(hashtext($1))', [LOCK]);
      }
    } finally {
      lock.release();
    }
  }

  private async purgeDue(now: Date): Promise<PurgeResult> {
    const { pool } = this.s;
    const { rows } = await pool.query<{ id: string }>(
      `SELECT id FROM workspaces WHERE deleted_at IS NOT NULL AND purged_at IS NULL AND purge_after <= $1
        ORDER BY purge_after, id LIMIT $2`,
      [now, this.s.batch],
    );
    const ids = rows.map((r) => r.id);
    if (ids.length === 0) return { purged: [] };
    for (const id of ids) await this.keepExport(id);
    await inTransaction(pool, async (c) => {
      for (const sql of PG_DELETES) await c.query(sql, [ids]);
      await c.query('UPDATE workspaces SET contact_email = NULL WHERE id = ANY($1)', [ids]);
    });
    const list = ids.map(lit).join(', ');
    for (const table of CH_WORKSPACE_TABLES) {
      try {
        await this.s.ch.command({ query: `${this.alterOf(table)} DELETE WHERE workspace_id IN (${list})` });
      } catch (err) {
        throw new ClickHouseQueryError(`deleting purged workspaces' rows from ${table}`, err);
      }
    }
    for (const id of ids) await this.deleteRedisKeys(id);
    await pool.query('UPDATE workspaces SET purged_at = $2 WHERE id = ANY($1)', [ids, now]);
    return { purged: ids };
  }

  private async keepExport(id: string): Promise<void> {
    // export() answers the kept copy once there is one, so a rerun writes nothing new.
    const { usage, billing } = await this.s.finance.export(id);
    await this.s.pool.query(
      `INSERT INTO workspace_final_exports (workspace_id, usage, billing) VALUES ($1, $2, $3)
       ON CONFLICT (workspace_id) DO NOTHING`,
      [id, JSON.stringify(usage), JSON.stringify(billing)],
    );
  }

  /**
   * `ALTER TABLE` of a workspace table. On a cluster the rows live in the Replicated `<table>_local`
   * tables (core/src/migrate/clickhouse-render.ts); a Distributed table takes no mutation, and
   * `ON CLUSTER` on a replicated table runs the mutation once per shard, replicated to its replicas.
   */
  private alterOf(table: string): string {
    return this.s.chCluster === ''
      ? `ALTER TABLE ${table}`
      : `ALTER TABLE ${table}_local ON CLUSTER ${this.s.chCluster}`;
  }

  /**
   * Every key under the workspace's hash tag: dedupe claims and tier, quota counters, epoch marker,
   * rejections. SCAN sees one node's keys: on a Redis Cluster every primary is scanned (the hash tag
   * puts them all in one slot, so they are on one primary, and one UNLINK on it takes them).
   */
  private async deleteRedisKeys(id: string): Promise<void> {
    // SCAN's MATCH is a glob: the braces of the hash tag are literal there, the id has no glob characters.
    const match = `${this.s.redisPrefix}:{${id}}:*`;
    await scanEveryPrimary(this.s.redis, match, SCAN_COUNT, async (keys, node) => {
      await node.unlink(...keys);
    });
  }
}
