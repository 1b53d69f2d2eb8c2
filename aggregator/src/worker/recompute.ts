import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit } from '@meterd/core';
import { bucketSql, bucketStart, bucketEnd, ROLLUP_TABLE, type Granularity } from '../rollups/granularity.js';
import { dt, totalsFromEventsSql, windowsIn, workspacesIn } from '../rollups/sql.js';

export interface WindowRef {
  workspaceId: string;
  start: number;
}

const INSERT_COLUMNS =
  'workspace_id, event_type, currency, window_start, events, quantity, gmv_cents, first_event_at, last_event_at, late_events, version, computed_at';

/**
 * Rewrites the rollups of the given hours, and of the days and months holding them, with `version`.
 * Hours are recomputed from the distinct raw events; a day is then the sum of its (now current)
 * hours and a month the sum of its days, which is exact because every hour is, and reads 24 or 31
 * small rows instead of a month of raw events. Order matters for a crash half-way: the watermark
 * has not moved, so the next cycle redoes all three levels.
 */
export async function recomputeWindows(
  ch: ClickHouseClient,
  hours: readonly WindowRef[],
  version: bigint,
  closeAfterSeconds: number,
  chunk: number,
): Promise<void> {
  for (const part of chunks(hours, chunk)) await recomputeHours(ch, part, version, closeAfterSeconds);
  const days = uniqueBuckets('day', hours);
  for (const part of chunks(days, chunk)) await rollUp(ch, 'hour', 'day', part, version);
  const months = uniqueBuckets('month', days);
  for (const part of chunks(months, chunk)) await rollUp(ch, 'day', 'month', part, version);
}

async function recomputeHours(
  ch: ClickHouseClient,
  hours: readonly WindowRef[],
  version: bigint,
  closeAfterSeconds: number,
): Promise<void> {
  const { lo, hi } = span('hour', hours);
  // The workspace and occurred_at bounds prune by primary key and partition; the tuple IN is exact.
  // Candidates are the triples with a copy in these hours; each counts in the hour of its winning
  // copy only, so an hour holding just a losing copy (a forgotten retry) does not count it.
  const where = `${workspacesIn(hours.map((h) => h.workspaceId))} AND occurred_at >= ${dt(lo)} AND occurred_at < ${dt(hi)}
      AND ${windowsIn('toStartOfHour(occurred_at)', hours)}`;
  const keep = (o: string): string => windowsIn(`toStartOfHour(${o})`, hours);
  const query = `INSERT INTO ${ROLLUP_TABLE.hour} (${INSERT_COLUMNS})
    SELECT workspace_id, event_type, cur, bucket, n, qs, gs, fo, lo, late, toUInt64(${lit(version)}), now()
    FROM (${totalsFromEventsSql('hour', where, keep, closeAfterSeconds)})`;
  try {
    await ch.command({ query });
  } catch (err) {
    throw new ClickHouseQueryError(`recomputing ${hours.length} hourly windows`, err);
  }
}

async function rollUp(
  ch: ClickHouseClient,
  from: Granularity,
  to: Granularity,
  windows: readonly WindowRef[],
  version: bigint,
): Promise<void> {
  const { lo, hi } = span(to, windows);
  const bucket = bucketSql(to, 'window_start');
  const query = `INSERT INTO ${ROLLUP_TABLE[to]} (${INSERT_COLUMNS})
    SELECT workspace_id, event_type, currency, ${bucket} AS b, sum(events), sum(quantity), sum(gmv_cents),
      min(first_event_at), max(last_event_at), sum(late_events), toUInt64(${lit(version)}), now()
    FROM ${ROLLUP_TABLE[from]} FINAL
    WHERE ${workspacesIn(windows.map((w) => w.workspaceId))} AND window_start >= ${dt(lo)} AND window_start < ${dt(hi)}
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

function span(g: Granularity, windows: readonly WindowRef[]): { lo: number; hi: number } {
  let lo = Infinity;
  let hi = -Infinity;
  for (const w of windows) {
    lo = Math.min(lo, w.start);
    hi = Math.max(hi, bucketEnd(g, w.start));
  }
  return { lo, hi };
}

function* chunks<T>(items: readonly T[], size: number): Generator<readonly T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
