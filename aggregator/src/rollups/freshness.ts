import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit } from '@meterd/core/clickhouse';
import { CH_TABLES, shardSql } from '@meterd/core/contracts';

export interface Freshness {
  /** Everything committed to `events` before this time (epoch ms) is in the rollups; null before the first cycle. */
  asOfMs: number | null;
  lagMs: number | null;
}

/** Freshness of one workspace's rollups: the as-of time of the shard that holds it. */
export async function workspaceFreshness(
  ch: ClickHouseClient,
  workspaceId: string,
  shards: number,
  now: number,
): Promise<Freshness> {
  const query = `SELECT argMax(as_of_ms, updated_ms) AS a FROM ${CH_TABLES.aggregatorState}
    WHERE shard = ${shardSql(lit(workspaceId), shards)} GROUP BY shard`;
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    const rows = await rs.json<{ a: string }>();
    if (rows.length === 0) return { asOfMs: null, lagMs: null };
    const asOfMs = Number(rows[0]!.a);
    return { asOfMs, lagMs: Math.max(0, now - asOfMs) };
  } catch (err) {
    throw new ClickHouseQueryError('reading aggregator_state for freshness', err);
  }
}

/** Everything committed before the returned time is in the rollups of every shard (min over shards). */
export async function overallAsOf(ch: ClickHouseClient, shards: number): Promise<number | null> {
  const query = `SELECT count() AS n, min(a) AS m FROM (SELECT shard, argMax(as_of_ms, updated_ms) AS a FROM ${CH_TABLES.aggregatorState} GROUP BY shard)`;
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    const row = (await rs.json<{ n: string; m: string }>())[0]!;
    return Number(row.n) < shards ? null : Number(row.m);
  } catch (err) {
    throw new ClickHouseQueryError('reading aggregator_state', err);
  }
}
