import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit } from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { bucketSql, bucketStart, ROLLUP_TABLE, type Granularity } from '../rollups/granularity.js';
import { timeRangesSql, totalsFromEventsSql, windowsIn, workspacesIn } from '../rollups/sql.js';

export interface WindowRef {
  workspaceId: string;
  start: number;
}

export interface RecomputeOptions {
  closeAfterSeconds: number;
  /**
   * How far (seconds) from a closed hour its triples' other copies are looked for: every copy within
   * it is compared by the winner rule. This bound, not the history, sets what a close reads.
   */
  copyHorizonSeconds: number;
  /** Most windows per query. */
  chunk: number;
}

const INSERT_COLUMNS =
  'workspace_id, event_type, currency, window_start, events, quantity, gmv_cents, first_event_at, last_event_at, late_events, version, computed_at';

/**
 * Rewrites the rollups of the given hours, and of the days and months holding them, with `version`.
 * Closed hours are recomputed exactly from the distinct raw events; open hours are the sum of their
 * shipped batches' partials (the open tail, never read by billing). A day is then the sum of its
 * (now current) hours and a month the sum of its days. Order matters for a crash half-way: the
 * watermarks have not moved, so the next cycle redoes all three levels. Returns the closed hours
 * recomputed: the given ones plus the hours of their triples' other copies (the meters' recompute
 * takes the same set).
 */
export async function recomputeWindows(
  ch: ClickHouseClient,
  windows: { closed: readonly WindowRef[]; open: readonly WindowRef[] },
  version: bigint,
  opts: RecomputeOptions,
): Promise<WindowRef[]> {
  const { chunk } = opts;
  const closed = await withCopyHours(ch, windows.closed, opts);
  for (const part of timeOrderedChunks(closed, chunk)) await recomputeHours(ch, part, version, opts);
  for (const part of chunks(windows.open, chunk)) await foldOpenHours(ch, part, version);
  const days = uniqueBuckets('day', [...closed, ...windows.open]);
  for (const part of chunks(days, chunk)) await rollUp(ch, 'hour', 'day', part, version);
  const months = uniqueBuckets('month', days);
  for (const part of chunks(months, chunk)) await rollUp(ch, 'day', 'month', part, version);
  return closed;
}

/**
 * The hours plus every hour within the copy horizon holding another copy of a triple with a copy
 * in them. A copy shipped late can be the triple's winner (received first, by a backlogged thread)
 * while a retry's hour already closed counting the retry: recomputing only the late copy's hour
 * would count both, so the hour that loses its winner is recomputed too. Same workspaces, so the
 * same shards. Reads the hours' rows and the key columns of the horizon around them, never more.
 */
async function withCopyHours(
  ch: ClickHouseClient,
  hours: readonly WindowRef[],
  opts: RecomputeOptions,
): Promise<WindowRef[]> {
  const all = new Map(hours.map((h) => [`${h.workspaceId}|${h.start}`, h]));
  for (const part of timeOrderedChunks(hours, opts.chunk)) {
    const ws = workspacesIn(part.map((h) => h.workspaceId));
    const query = `SELECT DISTINCT workspace_id, toUInt32(toStartOfHour(occurred_at)) AS w FROM ${CH_TABLES.events}
      WHERE ${ws} AND ${timeRangesSql('occurred_at', 'hour', part, opts.copyHorizonSeconds * 1000)}
        AND (workspace_id, event_type, idempotency_key) IN (
        SELECT workspace_id, event_type, idempotency_key FROM ${CH_TABLES.events}
        WHERE ${ws} AND ${timeRangesSql('occurred_at', 'hour', part)} AND ${windowsIn('toStartOfHour(occurred_at)', part)})`;
    let rows: { workspace_id: string; w: number | string }[];
    try {
      rows = await (await ch.query({ query, format: 'JSONEachRow' })).json();
    } catch (err) {
      throw new ClickHouseQueryError(`finding the hours of every copy in ${part.length} hourly windows`, err);
    }
    for (const r of rows) {
      const start = Number(r.w) * 1000;
      all.set(`${r.workspace_id}|${start}`, { workspaceId: r.workspace_id, start });
    }
  }
  return [...all.values()];
}

/**
 * The current rows of these hours as zeros. A recompute adds them to its own rows, so a key that
 * has no event left (its only events were copies whose winner lies in another hour, counted here
 * while the hour was open) is written as 0 instead of keeping its old total: a row cannot be deleted.
 */
function zeroedCurrentSql(hours: readonly WindowRef[]): string {
  // materialize(): on a cluster this branch reads a Distributed table, whose remote streams carry
  // constants as full columns, and 18.16 refuses a UNION ALL of those with constant columns (Code
  // 171 "non constant in source stream but must be constant in result"). Same values everywhere.
  return `SELECT workspace_id, event_type, currency AS cur, window_start AS bucket, materialize(toUInt64(0)) AS n,
      materialize(toInt64(0)) AS qs, materialize(toInt64(0)) AS gs, materialize(toDateTime(4294967295, 'UTC')) AS fo,
      materialize(toDateTime(0, 'UTC')) AS lo, materialize(toUInt64(0)) AS late
    FROM ${ROLLUP_TABLE.hour} FINAL
    WHERE ${workspacesIn(hours.map((h) => h.workspaceId))} AND ${timeRangesSql('window_start', 'hour', hours)}
      AND ${windowsIn('window_start', hours)}`;
}

/** Adds the zero rows to `totals` (same columns) and writes the sum per key with `version`. */
function writeHoursSql(totals: string, hours: readonly WindowRef[], version: bigint): string {
  return `INSERT INTO ${ROLLUP_TABLE.hour} (${INSERT_COLUMNS})
    SELECT workspace_id, event_type, cur, bucket, sum(n), sum(qs), sum(gs),
      if(sum(n) = 0, bucket, min(fo)), if(sum(n) = 0, bucket, max(lo)), sum(late), toUInt64(${lit(version)}), now()
    FROM (${totals} UNION ALL ${zeroedCurrentSql(hours)})
    GROUP BY workspace_id, event_type, cur, bucket`;
}

async function recomputeHours(
  ch: ClickHouseClient,
  hours: readonly WindowRef[],
  version: bigint,
  opts: RecomputeOptions,
): Promise<void> {
  // The workspace and occurred_at bounds prune by primary key (workspace, hour) and partition; the
  // tuple IN is exact. Candidates are the triples with a copy in these hours; each counts in the
  // hour of its winning copy only, so an hour holding just a losing copy (a forgotten retry) does
  // not count it. The copy search reads these workspaces' copies within the copy horizon only.
  const ws = workspacesIn(hours.map((h) => h.workspaceId));
  const where = `${ws} AND ${timeRangesSql('occurred_at', 'hour', hours)} AND ${windowsIn('toStartOfHour(occurred_at)', hours)}`;
  const scope = `${ws} AND ${timeRangesSql('occurred_at', 'hour', hours, opts.copyHorizonSeconds * 1000)}`;
  const keep = (o: string): string => windowsIn(`toStartOfHour(${o})`, hours);
  const query = writeHoursSql(totalsFromEventsSql('hour', where, keep, opts.closeAfterSeconds, scope), hours, version);
  try {
    await ch.command({ query });
  } catch (err) {
    throw new ClickHouseQueryError(`recomputing ${hours.length} hourly windows`, err);
  }
}

/**
 * An open hour = the sum of its batches' partials, the latest attempt of each batch (a replayed
 * batch rewrites its partial, it never adds one). Reads one small row per batch × event_type ×
 * currency of these hours, not their events.
 */
async function foldOpenHours(ch: ClickHouseClient, hours: readonly WindowRef[], version: bigint): Promise<void> {
  const totals = `SELECT workspace_id, event_type, currency AS cur, window_start AS bucket, sum(bn) AS n, sum(bq) AS qs,
      sum(bg) AS gs, min(bf) AS fo, max(bl) AS lo, materialize(toUInt64(0)) AS late
    FROM (
      SELECT workspace_id, window_start, batch_id, event_type, currency, argMax(events, attempt) AS bn,
        argMax(quantity, attempt) AS bq, argMax(gmv_cents, attempt) AS bg, argMax(first_event_at, attempt) AS bf,
        argMax(last_event_at, attempt) AS bl
      FROM ${CH_TABLES.eventBatches}
      WHERE ${workspacesIn(hours.map((h) => h.workspaceId))} AND ${timeRangesSql('window_start', 'hour', hours)}
        AND ${windowsIn('window_start', hours)}
      GROUP BY workspace_id, window_start, batch_id, event_type, currency
    )
    GROUP BY workspace_id, event_type, cur, bucket`;
  try {
    await ch.command({ query: writeHoursSql(totals, hours, version) });
  } catch (err) {
    throw new ClickHouseQueryError(`folding the partials of ${hours.length} open hours`, err);
  }
}

/**
 * A day from its hours, a month from its days. A row written as 0 (its events turned out to be
 * losing copies) carries its bucket as first/last event time: it must not widen the span above.
 */
async function rollUp(
  ch: ClickHouseClient,
  from: Granularity,
  to: Granularity,
  windows: readonly WindowRef[],
  version: bigint,
): Promise<void> {
  const bucket = bucketSql(to, 'window_start');
  const query = `INSERT INTO ${ROLLUP_TABLE[to]} (${INSERT_COLUMNS})
    SELECT workspace_id, event_type, currency, ${bucket} AS b, sum(events), sum(quantity), sum(gmv_cents),
      if(sum(events) = 0, b, minIf(first_event_at, events > 0)), if(sum(events) = 0, b, maxIf(last_event_at, events > 0)),
      sum(late_events), toUInt64(${lit(version)}), now()
    FROM ${ROLLUP_TABLE[from]} FINAL
    WHERE ${workspacesIn(windows.map((w) => w.workspaceId))} AND ${timeRangesSql('window_start', to, windows)}
      AND ${windowsIn(bucket, windows)}
    GROUP BY workspace_id, event_type, currency, b`;
  try {
    await ch.command({ query });
  } catch (err) {
    throw new ClickHouseQueryError(`rolling ${windows.length} ${to} windows up from ${ROLLUP_TABLE[from]}`, err);
  }
}

function uniqueBuckets(g: Granularity, windows: readonly WindowRef[]): WindowRef[] {
  const seen = new Map<string, WindowRef>();
  for (const w of windows) {
    const start = bucketStart(g, w.start);
    seen.set(`${w.workspaceId}|${start}`, { workspaceId: w.workspaceId, start });
  }
  return [...seen.values()];
}

/**
 * Chunks of windows in time order, so a query's hours lie close together and its time ranges
 * (each hour ± the copy horizon, merged) cover about the chunk's span plus the horizon on each
 * side. Copies farther apart than the horizon can then still meet in one query (when both hours
 * are in it); within the horizon they always do.
 */
export function* timeOrderedChunks(windows: readonly WindowRef[], size: number): Generator<readonly WindowRef[]> {
  const sorted = [...windows].sort((a, b) => a.start - b.start || (a.workspaceId < b.workspaceId ? -1 : 1));
  yield* chunks(sorted, size);
}

export function* chunks<T>(items: readonly T[], size: number): Generator<readonly T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
