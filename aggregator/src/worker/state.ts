import type { ClickHouseClient } from '@clickhouse/client';
import { CH_TABLES, ClickHouseQueryError, lit } from '@meterd/core';

/** Progress of one workspace shard (table aggregator_state, docs/rollups.md). */
export interface ShardState {
  shard: number;
  /** Every events part whose max block is at most this has been folded into the rollups. */
  block: bigint;
  /** Highest rollup version written for the shard; a new holder continues above it. */
  version: bigint;
  /** Everything committed to `events` before this time (epoch ms) is in the rollups. */
  asOfMs: number;
}

export async function readShardStates(
  ch: ClickHouseClient,
  shards?: readonly number[],
): Promise<Map<number, ShardState>> {
  const where = shards === undefined ? '' : `WHERE shard IN (${shards.map((s) => lit(s)).join(', ')})`;
  // argMax rather than FINAL: the newest write wins whether or not a merge has happened yet.
  const query = `SELECT shard, argMax(block, updated_ms) AS b, argMax(version, updated_ms) AS v, argMax(as_of_ms, updated_ms) AS a
    FROM ${CH_TABLES.aggregatorState} ${where} GROUP BY shard`;
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    const rows = await rs.json<{ shard: number | string; b: string; v: string; a: string }>();
    return new Map(
      rows.map((r) => [
        Number(r.shard),
        { shard: Number(r.shard), block: BigInt(r.b), version: BigInt(r.v), asOfMs: Number(r.a) },
      ]),
    );
  } catch (err) {
    throw new ClickHouseQueryError('reading aggregator_state', err);
  }
}

export async function writeShardStates(
  ch: ClickHouseClient,
  states: readonly ShardState[],
  updatedMs: number,
): Promise<void> {
  if (states.length === 0) return;
  const values = states
    .map((s) => `(${lit(s.shard)}, ${lit(s.block)}, ${lit(s.version)}, ${lit(s.asOfMs)}, ${lit(updatedMs)})`)
    .join(', ');
  try {
    await ch.command({
      query: `INSERT INTO ${CH_TABLES.aggregatorState} (shard, block, version, as_of_ms, updated_ms) VALUES ${values}`,
    });
  } catch (err) {
    throw new ClickHouseQueryError('advancing aggregator_state', err);
  }
}
