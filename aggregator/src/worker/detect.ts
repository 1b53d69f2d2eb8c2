import type { ClickHouseClient } from '@clickhouse/client';
import { CH_TABLES, ClickHouseQueryError, lit, shardSql } from '@meterd/core';
import { parseChDateTime } from '../rollups/granularity.js';

/** An hour of one workspace whose raw events changed. */
export interface Window {
  shard: number;
  workspaceId: string;
  start: number;
}

export interface Detection {
  windows: Window[];
  /** Highest block number among the parts read; undefined when no part was newer than the watermarks. */
  maxBlock: bigint | undefined;
}

/**
 * The highest insert block number of the part a row lives in. A non-replicated MergeTree numbers an
 * insert's part when it commits, under the table's parts lock, so every part committed later gets a
 * higher number than every part visible now: "parts whose max block is above W" is exactly "rows
 * inserted since W" plus, harmlessly, older rows merged together with them. Part names are
 * `<partition>_<min_block>_<max_block>_<level>[_<mutation>]` on 18.16 and current servers.
 */
const PART_MAX_BLOCK = "toUInt64(splitByChar('_', _part)[3])";

/**
 * Finds the (workspace, hour) windows of the given shards that gained rows since each shard's
 * watermark. One read of the new parts only; current servers prune parts on the `_part` condition.
 */
export async function detectChangedWindows(
  ch: ClickHouseClient,
  shards: number,
  watermarks: ReadonlyMap<number, bigint>,
): Promise<Detection> {
  if (watermarks.size === 0) return { windows: [], maxBlock: undefined };
  let floor = -1n;
  for (const w of watermarks.values()) if (floor < 0n || w < floor) floor = w;
  const query = `SELECT ${shardSql('workspace_id', shards)} AS shard, workspace_id, toStartOfHour(occurred_at) AS hour, max(${PART_MAX_BLOCK}) AS blk
    FROM ${CH_TABLES.events}
    WHERE ${PART_MAX_BLOCK} > ${lit(floor)} AND ${shardSql('workspace_id', shards)} IN (${[...watermarks.keys()].map((s) => lit(s)).join(', ')})
    GROUP BY shard, workspace_id, hour`;
  let rows: { shard: number | string; workspace_id: string; hour: string; blk: string }[];
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    rows = await rs.json();
  } catch (err) {
    throw new ClickHouseQueryError('finding event windows changed since the watermark', err);
  }
  const windows: Window[] = [];
  let maxBlock: bigint | undefined;
  for (const r of rows) {
    const blk = BigInt(r.blk);
    const shard = Number(r.shard);
    if (maxBlock === undefined || blk > maxBlock) maxBlock = blk;
    if (blk > (watermarks.get(shard) ?? -1n))
      windows.push({ shard, workspaceId: r.workspace_id, start: parseChDateTime(r.hour) });
  }
  return { windows, maxBlock };
}
