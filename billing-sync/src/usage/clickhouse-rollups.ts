import type { ClickHouseClient } from '@clickhouse/client';
import { lit } from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { UsageReadError } from '../errors.js';
import type { UsageSource, UsageTotal, WindowSize } from './source.js';
import { queryTotals } from './totals-query.js';

/** The aggregator's tables this source reads (infra/clickhouse/002_rollups.sql, docs/rollups.md). */
export const ROLLUP_TABLES = [CH_TABLES.usageHourly, CH_TABLES.usageDaily, CH_TABLES.aggregatorState] as const;
const TABLE: Record<WindowSize, string> = { hour: CH_TABLES.usageHourly, day: CH_TABLES.usageDaily };

/**
 * Totals from the aggregator's rollups: one small row per workspace × event type × currency ×
 * window instead of every raw event of the look-back. The tables are ReplacingMergeTree(version)
 * and every recompute of a window adds a row with a higher version, so they are read with FINAL
 * (the newest version per key, merged or not), as docs/rollups.md prescribes. Each currency stays
 * its own total, exactly as the raw source gives it.
 *
 * Completeness comes from the aggregator's CLOSED mark, never from its progress: an open hour is
 * the sum of its batches' partials, where a forgotten retry in another batch still counts twice
 * until the hour closes and is recomputed by the winner rule. `closed_before` of a shard in
 * `aggregator_state` (server seconds, written after the rollups of that cycle) says every hour of
 * that shard ending at or before it is closed; a window is complete once every shard's mark has
 * reached its end. Until every shard (`AGGREGATOR_SHARDS`, the same value as the aggregator's) has
 * reported once, nothing counts as complete.
 */
export class ClickHouseRollupUsage implements UsageSource {
  constructor(
    private readonly ch: ClickHouseClient,
    private readonly shards: number,
  ) {}

  totals(fromS: number, toS: number, window: WindowSize): Promise<UsageTotal[]> {
    const query = `
      SELECT workspace_id, event_type, currency AS cur, toUInt32(window_start) AS w, toString(sum(quantity)) AS tq, toString(sum(gmv_cents)) AS tg
      FROM ${TABLE[window]} FINAL
      WHERE window_start >= toDateTime(${lit(fromS)}, 'UTC') AND window_start < toDateTime(${lit(toS)}, 'UTC')
      GROUP BY workspace_id, event_type, cur, w`;
    return queryTotals(this.ch, query, `reading usage totals from ${TABLE[window]}`);
  }

  async asOf(nowS: number): Promise<number | null> {
    // argMax rather than FINAL: the newest state row wins whether or not a merge has happened.
    // Shards at or above the count are leftovers of an earlier AGGREGATOR_SHARDS and never advance.
    const query = `SELECT count() AS n, toString(min(b)) AS m
      FROM (SELECT shard, argMax(closed_before, updated_ms) AS b FROM ${CH_TABLES.aggregatorState} WHERE shard < ${lit(this.shards)} GROUP BY shard)`;
    try {
      const rs = await this.ch.query({ query, format: 'JSONEachRow' });
      const row = (await rs.json<{ n: string | number; m: string }>())[0];
      if (row === undefined || Number(row.n) < this.shards) return null;
      return Math.min(nowS, Number(row.m));
    } catch (err) {
      throw new UsageReadError(`reading the aggregator's closed mark from ${CH_TABLES.aggregatorState}`, err);
    }
  }
}

/** Which of the rollup tables exist in the connected database. */
export async function missingRollupTables(ch: ClickHouseClient): Promise<string[]> {
  const query = `SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN (${ROLLUP_TABLES.map((t) => lit(t)).join(', ')})`;
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    const present = new Set((await rs.json<{ name: string }>()).map((r) => r.name));
    return ROLLUP_TABLES.filter((t) => !present.has(t));
  } catch (err) {
    throw new UsageReadError('looking for the rollup tables', err);
  }
}
