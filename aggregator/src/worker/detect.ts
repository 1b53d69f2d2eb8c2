import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit } from '@meterd/core/clickhouse';
import { CH_TABLES, shardSql } from '@meterd/core/contracts';

/** An hour of one workspace to bring up to date. */
export interface Window {
  shard: number;
  workspaceId: string;
  start: number;
}

/** One `event_windows` record: a window a shipped batch (one attempt of it) touched. */
export interface BatchWindowRecord extends Window {
  /** `<batch id>|<attempt>|<workspace>|<hour>`: the same on every copy of the record. */
  key: string;
  batchId: string;
  attempt: number;
  /** Server second it was inserted. */
  insertedAt: number;
}

/**
 * Records are read again from this many seconds before a shard's `seenUntil`: a batch whose record
 * the server stamped with second T may become visible to a reader after that reader's clock passed
 * T (an insert still in flight at the same second). Records already folded are remembered by key
 * for this long and skipped, so the look-back costs a read, never a recompute.
 */
export const LOOKBACK_SECONDS = 10;

/**
 * The look-back on a cluster (CLICKHOUSE_CLUSTER). A record is stamped (inserted_at DEFAULT now())
 * by the node that receives the insert, and the aggregator compares with its own node's clock. A
 * shipped record is acknowledged only once it is on its shard's quorum of replicas (synchronous
 * Distributed insert, insert_quorum), within the recorder's 30 s request timeout, so a record
 * becomes readable at most 30 s after its stamp, plus the clock skew between the two nodes. A
 * record whose insert failed is shipped again with a new stamp. 60 s covers both with margin;
 * raise AGGREGATOR_LOOKBACK_SECONDS if node clocks may drift further apart.
 */
export const CLUSTER_LOOKBACK_SECONDS = 60;

/**
 * A window's records are inserted no earlier than this before the window starts (ingest refuses
 * occurred_at more than 5 minutes ahead); the rest is margin for clocks.
 */
const EARLIEST_RECORD_BEFORE_WINDOW_S = 3600;

/** The ClickHouse server's clock (seconds): the one clock records are stamped with. */
export async function serverNow(ch: ClickHouseClient): Promise<number> {
  try {
    const rs = await ch.query({ query: 'SELECT toUInt32(now()) AS t', format: 'JSONEachRow' });
    const [row] = await rs.json<{ t: number | string }>();
    return Number(row!.t);
  } catch (err) {
    throw new ClickHouseQueryError("reading the server's clock", err);
  }
}

/**
 * The batch records of the given shards inserted since each shard's `seenUntil` (minus
 * `lookbackSeconds`) and up to `nowS`. Reads only the newest records: `event_windows` is ordered by
 * insert time, so the cost follows what was shipped since, never the history.
 */
export async function readNewRecords(
  ch: ClickHouseClient,
  shards: number,
  seenUntil: ReadonlyMap<number, number>,
  nowS: number,
  lookbackSeconds = LOOKBACK_SECONDS,
): Promise<BatchWindowRecord[]> {
  if (seenUntil.size === 0) return [];
  const from = Math.max(0, Math.min(...seenUntil.values()) - lookbackSeconds);
  const query = `SELECT ${shardSql('workspace_id', shards)} AS shard, workspace_id, toUInt32(window_start) AS w, batch_id, attempt, toUInt32(inserted_at) AS t
    FROM ${CH_TABLES.eventWindows}
    WHERE inserted_at >= toDateTime(${lit(from)}, 'UTC') AND inserted_at <= toDateTime(${lit(nowS)}, 'UTC')
      AND ${shardSql('workspace_id', shards)} IN (${[...seenUntil.keys()].map((s) => lit(s)).join(', ')})`;
  let rows: {
    shard: number | string;
    workspace_id: string;
    w: number | string;
    batch_id: string;
    attempt: string;
    t: number | string;
  }[];
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    rows = await rs.json();
  } catch (err) {
    throw new ClickHouseQueryError('reading the batch records since the watermark', err);
  }
  const out: BatchWindowRecord[] = [];
  for (const r of rows) {
    const shard = Number(r.shard);
    const insertedAt = Number(r.t);
    if (insertedAt < (seenUntil.get(shard) ?? 0) - lookbackSeconds) continue;
    const start = Number(r.w) * 1000;
    out.push({
      shard,
      workspaceId: r.workspace_id,
      start,
      insertedAt,
      key: `${r.batch_id}|${r.attempt}|${r.workspace_id}|${start}`,
      batchId: r.batch_id,
      attempt: Number(r.attempt),
    });
  }
  return out;
}

/** Server second at which a window closes: its end plus the close delay. */
export function closesAt(startMs: number, closeAfterSeconds: number): number {
  return startMs / 1000 + 3600 + closeAfterSeconds;
}

/**
 * The windows of the given shards that reached their close time in (closedUntil, nowS]: every
 * window a batch touched while it was open, found from the records of the hours before its close.
 * Runs only when an hour boundary passed since a shard's closedUntil (about once an hour).
 */
export async function readClosingWindows(
  ch: ClickHouseClient,
  shards: number,
  closedUntil: ReadonlyMap<number, number>,
  nowS: number,
  closeAfterSeconds: number,
): Promise<Window[]> {
  const due = [...closedUntil].filter(([, c]) => hourOf(c, closeAfterSeconds) < hourOf(nowS, closeAfterSeconds));
  if (due.length === 0) return [];
  const floor = Math.min(...due.map(([, c]) => c));
  const lo = Math.max(0, floor - 3600 - closeAfterSeconds);
  const hi = nowS - 3600 - closeAfterSeconds;
  const query = `SELECT DISTINCT ${shardSql('workspace_id', shards)} AS shard, workspace_id, toUInt32(window_start) AS w
    FROM ${CH_TABLES.eventWindows}
    WHERE inserted_at >= toDateTime(${lit(Math.max(0, lo - EARLIEST_RECORD_BEFORE_WINDOW_S))}, 'UTC')
      AND window_start > toDateTime(${lit(lo)}, 'UTC') AND window_start <= toDateTime(${lit(Math.max(0, hi))}, 'UTC')
      AND ${shardSql('workspace_id', shards)} IN (${due.map(([s]) => lit(s)).join(', ')})`;
  let rows: { shard: number | string; workspace_id: string; w: number | string }[];
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    rows = await rs.json();
  } catch (err) {
    throw new ClickHouseQueryError('finding the windows that closed', err);
  }
  const out: Window[] = [];
  for (const r of rows) {
    const shard = Number(r.shard);
    const start = Number(r.w) * 1000;
    const at = closesAt(start, closeAfterSeconds);
    if (at > (closedUntil.get(shard) ?? 0) && at <= nowS) out.push({ shard, workspaceId: r.workspace_id, start });
  }
  return out;
}

/** Which hour-aligned close slot a second falls in: windows close only when it changes. */
function hourOf(s: number, closeAfterSeconds: number): number {
  return Math.floor((s - closeAfterSeconds) / 3600);
}
