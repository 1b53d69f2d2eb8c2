import { dateTimeLit, ident, lit, winningEventsSql } from '@meterd/core/clickhouse';
import { bucketEnd, bucketSql, type Granularity } from './granularity.js';

/** A DateTime('UTC') literal expression; values reach SQL only through core's escaping helpers. */
export function dt(ms: number): string {
  return `toDateTime(${dateTimeLit(ms)}, 'UTC')`;
}

/** `(workspace_id, <bucket>) IN ((…), …)` for a list of windows. */
export function windowsIn(bucketExpr: string, windows: readonly { workspaceId: string; start: number }[]): string {
  return `(workspace_id, ${bucketExpr}) IN (${windows.map((w) => `(${lit(w.workspaceId)}, ${dt(w.start)})`).join(', ')})`;
}

/**
 * `(col >= a AND col < b) OR …`: the windows' buckets, each widened by `padMs` on both sides,
 * overlapping intervals merged. `events` and the rollup tables are ordered time right after the
 * workspace, so this reads only those intervals, however far apart the windows of one query lie
 * (a late batch's hour from last month next to the hour closing now) and however much history
 * lies between them.
 */
export function timeRangesSql(col: string, g: Granularity, windows: readonly { start: number }[], padMs = 0): string {
  const spans = windows.map((w) => [w.start - padMs, bucketEnd(g, w.start) + padMs] as [number, number]);
  spans.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [a, b] of spans) {
    const last = merged[merged.length - 1];
    if (last !== undefined && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  return `(${merged.map(([a, b]) => `(${col} >= ${dt(Math.max(0, a))} AND ${col} < ${dt(b)})`).join(' OR ')})`;
}

export function workspacesIn(ids: Iterable<string>): string {
  return `workspace_id IN (${[...new Set(ids)].map((id) => lit(id)).join(', ')})`;
}

/**
 * Exact totals per workspace × event_type × currency × bucket of the distinct events: one row per
 * (workspace_id, event_type, idempotency_key), its winning copy (core's winningEventsSql: the
 * same rule merges apply), counted in the bucket of the winner's occurred_at. `where` picks the
 * candidate rows and `keep` bounds the winner (given its occurred_at expression): a copy inside
 * the range whose winner lies outside never counts here, whatever hour it was stored in.
 * An event is late when it was received more than `closeAfterSeconds` after the end of its hour,
 * i.e. after billing may already have pushed that hour (docs/rollups.md).
 * Output columns: workspace_id, event_type, cur, bucket, n, qs, gs, fo, lo, late.
 */
export function totalsFromEventsSql(
  g: Granularity,
  where: string,
  keep: (o: string) => string,
  closeAfterSeconds: number,
  scope?: string,
): string {
  return `SELECT workspace_id, event_type, c AS cur, ${bucketSql(g, 'o')} AS bucket,
      count() AS n, sum(q) AS qs, sum(g) AS gs, min(o) AS fo, max(o) AS lo,
      countIf(r >= toStartOfHour(o) + ${lit(3600 + closeAfterSeconds)}) AS late
    FROM (${winningEventsSql(where, keep, scope)})
    GROUP BY workspace_id, event_type, cur, bucket`;
}

export const ROLLUP_COLUMNS =
  'workspace_id, event_type, currency, window_start, events, quantity, gmv_cents, first_event_at, last_event_at, late_events, version, computed_at';

/** The current row of every key of a rollup table (FINAL: the highest version wins, merged or not). */
export function currentRollupsSql(table: string, where: string): string {
  return `SELECT ${ROLLUP_COLUMNS} FROM ${ident(table)} FINAL WHERE ${where} ORDER BY window_start, workspace_id, event_type, currency`;
}
