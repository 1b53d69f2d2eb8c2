import { lit } from '../clickhouse/sql.js';

/**
 * The shard of a workspace, the unit of the aggregator's leases and watermarks, as a ClickHouse
 * expression over `workspaceSql` (a column name or a literal). Whoever reads `aggregator_state`
 * for one workspace must use this same formula, or it reads another shard's progress.
 */
export function shardSql(workspaceSql: string, shards: number): string {
  return `cityHash64(${workspaceSql}) % ${lit(shards)}`;
}
