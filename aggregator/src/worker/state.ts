import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit } from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';

/** Progress of one workspace shard (table aggregator_state, docs/rollups.md). */
export interface ShardState {
  shard: number;
  /**
   * Server second up to which the shard's `event_windows` records have been folded in; records are
   * read again from a look-back before it (batches whose record became visible late).
   */
  seenUntil: number;
  /** Server second up to which every window that reached its close time has been closed. */
  closedUntil: number;
  /**
   * Every hour ending at or before this server second is closed (closedUntil minus the close
   * delay): billing's completeness mark, readable without knowing the aggregator's close delay.
   */
  closedBefore: number;
  /** Highest rollup version written for the shard; a new holder continues above it. */
  version: bigint;
  /** Every batch recorded before this time (epoch ms) is in the rollups. */
  asOfMs: number;
}

export function initialState(shard: number): ShardState {
  return { shard, seenUntil: 0, closedUntil: 0, closedBefore: 0, version: 0n, asOfMs: 0 };
}

export async function readShardStates(
  ch: ClickHouseClient,
  shards?: readonly number[],
): Promise<Map<number, ShardState>> {
  const where = shards === undefined ? '' : `WHERE shard IN (${shards.map((s) => lit(s)).join(', ')})`;
  // argMax rather than FINAL: the newest write (highest version) wins whether or not a merge has happened yet.
  const query = `SELECT shard, argMax(seen_until, updated_ms) AS s, argMax(closed_until, updated_ms) AS c,
      argMax(closed_before, updated_ms) AS b, argMax(version, updated_ms) AS v, argMax(as_of_ms, updated_ms) AS a
    FROM ${CH_TABLES.aggregatorState} ${where} GROUP BY shard`;
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    const rows = await rs.json<{ shard: number | string; s: string; c: string; b: string; v: string; a: string }>();
    return new Map(
      rows.map((r) => [
        Number(r.shard),
        {
          shard: Number(r.shard),
          seenUntil: Number(r.s),
          closedUntil: Number(r.c),
          closedBefore: Number(r.b),
          version: BigInt(r.v),
          asOfMs: Number(r.a),
        },
      ]),
    );
  } catch (err) {
    throw new ClickHouseQueryError('reading aggregator_state', err);
  }
}

/**
 * Appends the shards' new progress. The row's `updated_ms` (the column readers take argMax by, and
 * the table's ReplacingMergeTree key) is the cycle's rollup version, not a wall clock: versions come
 * from one Postgres sequence and a shard's successor always draws a higher one (leases.ts), so a
 * former holder that writes late can never roll a shard's progress back. Sequence versions start
 * at 10^16, above every wall-clock millisecond stored before.
 */
export async function writeShardStates(ch: ClickHouseClient, states: readonly ShardState[]): Promise<void> {
  if (states.length === 0) return;
  const values = states
    .map(
      (s) =>
        `(${lit(s.shard)}, ${lit(s.seenUntil)}, ${lit(s.closedUntil)}, ${lit(s.closedBefore)}, ${lit(s.version)}, ${lit(s.asOfMs)}, ${lit(s.version)})`,
    )
    .join(', ');
  try {
    await ch.command({
      query: `INSERT INTO ${CH_TABLES.aggregatorState} (shard, seen_until, closed_until, closed_before, version, as_of_ms, updated_ms) VALUES ${values}`,
    });
  } catch (err) {
    throw new ClickHouseQueryError('advancing aggregator_state', err);
  }
}
