import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit, winningEventsSql } from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { meterValueSql, type MeterDefinition } from '@meterd/core/meters';
import { timeRangesSql, windowsIn, workspacesIn } from '../rollups/sql.js';

/** An hour of one bucket (a workspace or its test bucket). */
export interface MeterWindow {
  workspaceId: string;
  start: number;
}

const COLUMNS =
  'workspace_id, meter_id, window_start, currency, group_values, events, values_n, value_sum, value_max, latest_at, latest_key, latest_value, uniq_values, skipped, version, computed_at';

/**
 * Rewrites `meter_hourly` for the given hours of one bucket's meters, exactly from the raw events:
 * each triple once, by its winning copy (core's winningEventsSql, the rule of the built-in rollups),
 * counted in the hour of the winner. Used for hours that closed (the aggregator's cycle) and for
 * the backfill of a new meter. One query for all the meters: the winners are computed once and
 * each is fanned out to the meters of its event type (ARRAY JOIN over the meters' numbers, each
 * meter's expressions picked by number). It reads the hours' events and, for the copy search, the
 * key columns within `copyHorizonSeconds` around them.
 */
export async function recomputeMeterHours(
  ch: ClickHouseClient,
  meters: readonly MeterDefinition[],
  hours: readonly MeterWindow[],
  version: bigint,
  copyHorizonSeconds: number,
): Promise<void> {
  if (hours.length === 0 || meters.length === 0) return;
  const ws = workspacesIn(hours.map((h) => h.workspaceId));
  const types = [...new Set(meters.flatMap((m) => m.event_types))];
  const where = `${ws} AND event_type IN (${types.map((t) => lit(t)).join(', ')})
      AND ${timeRangesSql('occurred_at', 'hour', hours)} AND ${windowsIn('toStartOfHour(occurred_at)', hours)}`;
  const scope = `${ws} AND ${timeRangesSql('occurred_at', 'hour', hours, copyHorizonSeconds * 1000)}`;
  const keep = (o: string): string => windowsIn(`toStartOfHour(${o})`, hours);
  const xs = meters.map(meterValueSql);
  // One expression per column: meter number i (1-based) picks the i-th meter's expression.
  const pick = (f: (x: (typeof xs)[number], i: number) => string): string =>
    xs.length === 1
      ? f(xs[0]!, 0)
      : `multiIf(${xs.map((x, i) => `mi = ${i + 1}, ${f(x, i)}`).join(', ')}, ${f(xs[0]!, 0)})`;
  const matches = meters
    .map((m, i) => `(mi = ${i + 1} AND event_type IN (${m.event_types.map((t) => lit(t)).join(', ')}))`)
    .join(' OR ');
  const unique = meters.map((m) => (m.aggregation === 'unique_count' ? 1 : 0)).join(', ');
  const totals = `SELECT workspace_id, meter_id, bucket, cur, gv, n, vn, vs, vm, tupleElement(lt, 1) AS la,
        tupleElement(lt, 2) AS lk, tupleElement(lt, 3) AS lv, uv, sk
      FROM (
        SELECT workspace_id, meter_id, toStartOfHour(o) AS bucket, cur, gv,
          toUInt64(count()) AS n, toUInt64(countIf(ok)) AS vn, toInt64(sumIf(v, ok)) AS vs, toInt64(maxIf(v, ok)) AS vm,
          maxIf(tuple(o, concat(event_type, '\\n', idempotency_key), v), ok) AS lt,
          groupUniqArrayIf(us, ok AND uq) AS uv, toUInt64(countIf(skip)) AS sk
        FROM (
          SELECT workspace_id, event_type, idempotency_key, o, [${meters.map((m) => lit(m.id)).join(', ')}][mi] AS meter_id,
            [${unique}][mi] = 1 AS uq, ${pick((x) => x.cur)} AS cur, ${pick((x) => x.gv)} AS gv, ${pick((x) => x.v)} AS v,
            ${pick((x) => x.ok)} AS ok, ${pick((x) => x.us)} AS us, ${pick((x) => x.skip)} AS skip
          FROM (${winningEventsSql(where, keep, scope, true)})
          ARRAY JOIN arrayEnumerate([${meters.map(() => 0).join(', ')}]) AS mi
          WHERE ${matches}
        )
        GROUP BY workspace_id, meter_id, bucket, cur, gv
      )`;
  try {
    await ch.command({
      query: writeSql(
        totals,
        hours,
        meters.map((m) => m.id),
        version,
      ),
    });
  } catch (err) {
    throw new ClickHouseQueryError(`recomputing ${meters.length} meters over ${hours.length} hours`, err);
  }
}

/**
 * Combines `totals` rows (one per hour and key, or one per batch partial) with the current rows of
 * these hours as zeros, and writes one row per key with `version`. The zeros make a key whose
 * events turned out to be losing copies (counted while the hour was open) read as 0 instead of
 * keeping its old total: a row cannot be deleted. Sums add, max and latest take the greatest of the
 * rows holding a value, the distinct values are merged.
 */
function writeSql(
  totals: string,
  hours: readonly MeterWindow[],
  meterIds: readonly string[] | undefined,
  version: bigint,
): string {
  const onlyMeters = meterIds === undefined ? '' : ` AND meter_id IN (${meterIds.map((id) => lit(id)).join(', ')})`;
  // materialize(): on a cluster the zero branch reads a Distributed table, and 18.16 refuses a
  // UNION ALL mixing its full columns with constant ones (see the built-in rollups' recompute).
  const zeros = `SELECT workspace_id, meter_id, window_start AS bucket, currency AS cur, group_values AS gv,
      materialize(toUInt64(0)) AS n, materialize(toUInt64(0)) AS vn, materialize(toInt64(0)) AS vs,
      materialize(toInt64(0)) AS vm, materialize(toDateTime(0, 'UTC')) AS la, materialize('') AS lk,
      materialize(toInt64(0)) AS lv, materialize(emptyArrayString()) AS uv, materialize(toUInt64(0)) AS sk
    FROM ${CH_TABLES.meterHourly} FINAL
    WHERE ${workspacesIn(hours.map((h) => h.workspaceId))} AND ${timeRangesSql('window_start', 'hour', hours)}
      AND ${windowsIn('window_start', hours)}${onlyMeters}`;
  return `INSERT INTO ${CH_TABLES.meterHourly} (${COLUMNS})
    SELECT workspace_id, meter_id, bucket, cur, gv, tn, tvn, tvs, tvm, tupleElement(tlt, 1), tupleElement(tlt, 2),
      tupleElement(tlt, 3), tuv, tsk, toUInt64(${lit(version)}), now()
    FROM (
      SELECT workspace_id, meter_id, bucket, cur, gv, sum(n) AS tn, sum(vn) AS tvn, sum(vs) AS tvs,
        maxIf(vm, vn > 0) AS tvm, maxIf(tuple(la, lk, lv), vn > 0) AS tlt, groupUniqArrayArray(uv) AS tuv, sum(sk) AS tsk
      FROM (${totals} UNION ALL ${zeros})
      GROUP BY workspace_id, meter_id, bucket, cur, gv
    )`;
}
