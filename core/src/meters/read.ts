import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError } from '../clickhouse/client.js';
import { lit } from '../clickhouse/sql.js';
import { CH_TABLES } from '../contracts/tables.js';
import { ApiError } from '../errors/api-error.js';
import type { MeterUsageQuery, MeterUsageRow } from './usage-types.js';
import { windowBoundaries } from './zone.js';

/** Most windows one read may return per group (2,000, like the usage API). */
export const MAX_METER_WINDOWS = 2_000;

/**
 * A meter's usage per window (and per group of `groupBy`, and currency for a meter over gmv_cents):
 * the hourly rows (`meter_hourly` FINAL) re-bucketed into the query's windows in its time zone,
 * keys filtered by `filter`, only hours closed by every aggregator shard when `closedOnly`. Values
 * are exact decimal strings: sum adds, count adds events, max and latest take the greatest /
 * newest valued row, unique_count counts the distinct values of all hours (uniqExact over the
 * hours' value sets). Windows and groups without events are left out. Cost: the meter's hour
 * rows in the range (744 per group for a month), however many events they summarise.
 * Bad groupBy/filter/tz throw ApiError naming the field (400).
 */
export async function readMeterUsage(ch: ClickHouseClient, q: MeterUsageQuery): Promise<MeterUsageRow[]> {
  const m = q.meter;
  const idx = (k: string, field: string): number => {
    const i = m.group_by.indexOf(k);
    if (i === -1) throw new ApiError('invalid_field', `${k} is not a group_by property of meter ${m.slug}`, field);
    return i + 1;
  };
  const groupIdx = q.groupBy.map((k) => idx(k, 'group_by'));
  if (new Set(q.groupBy).size !== q.groupBy.length)
    throw new ApiError('invalid_field', 'group_by names a property twice', 'group_by');
  const filters = Object.entries(q.filter).map(([k, v]) => `group_values[${idx(k, `filter[${k}]`)}] = ${lit(v)}`);
  const bounds = windowBoundaries(q.window, q.tz, q.fromMs, q.toMs, MAX_METER_WINDOWS);
  const secs = bounds.map((b) => b / 1000);
  const closed = q.closedOnly
    ? // Every shard's closed mark: an hour ending at or before it was recomputed exactly (docs/rollups.md).
      ` AND toUInt32(window_start) + 3600 <= (SELECT ifNull(min(b), 0) FROM (SELECT argMax(closed_before, updated_ms) AS b FROM ${CH_TABLES.aggregatorState} GROUP BY shard))`
    : '';
  const gv = groupIdx.length === 0 ? 'emptyArrayString()' : `[${groupIdx.map((i) => `group_values[${i}]`).join(', ')}]`;
  const value = {
    sum: 'toString(sum(value_sum))',
    count: 'toString(sum(events))',
    max: 'toString(maxIf(value_max, values_n > 0))',
    latest: 'toString(tupleElement(maxIf(tuple(latest_at, latest_key, latest_value), values_n > 0), 3))',
    unique_count: 'toString(uniqExactArray(uniq_values))',
  }[m.aggregation];
  const valued = m.aggregation === 'max' || m.aggregation === 'latest' ? 'sum(values_n) > 0' : 'sum(events) > 0';
  const query = `SELECT b, cur, g, v FROM (
      SELECT arrayReduce('max', arrayFilter(x -> x <= toUInt32(window_start), [${secs.slice(0, -1).join(', ')}])) AS b,
        currency AS cur, ${gv} AS g, ${value} AS v, ${valued} AS keep
      FROM ${CH_TABLES.meterHourly} FINAL
      WHERE workspace_id = ${lit(q.bucketId)} AND meter_id = ${lit(m.id)}
        AND window_start >= toDateTime(${lit(secs[0]!)}, 'UTC') AND window_start < toDateTime(${lit(secs[secs.length - 1]!)}, 'UTC')
        ${filters.map((f) => ` AND ${f}`).join('')}${closed}
      GROUP BY b, cur, g
    ) WHERE keep ORDER BY b, cur, g`;
  let rows: { b: number | string; cur: string; g: string[]; v: string }[];
  try {
    rows = await (await ch.query({ query, format: 'JSONEachRow' })).json();
  } catch (err) {
    throw new ClickHouseQueryError(`reading the usage of meter ${m.id}`, err);
  }
  const next = new Map(secs.slice(0, -1).map((s, i) => [s, secs[i + 1]!]));
  return rows.map((r) => {
    const b = Number(r.b);
    const row: MeterUsageRow = {
      startMs: b * 1000,
      endMs: next.get(b)! * 1000,
      group: Object.fromEntries(q.groupBy.map((k, i) => [k, r.g[i] ?? ''])),
      value: r.v,
    };
    if (m.value_field === 'gmv_cents') row.currency = r.cur;
    return row;
  });
}
