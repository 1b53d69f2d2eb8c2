import type { ClickHouseClient } from '@clickhouse/client';
import { lit, winningEventsSql } from '@meterd/core/clickhouse';
import type { UsageSource, UsageTotal, WindowSize } from './source.js';
import { queryTotals } from './totals-query.js';

/**
 * Totals straight from the raw `events` table, by the same winner rule as the aggregator
 * (core's winningEventsSql): each (workspace_id, event_type, idempotency_key) is one event, taken
 * from its winning copy and counted in that copy's window, merged or not, so replays and forgotten
 * retries never count twice and a copy whose winner lies outside the range never counts.
 * Reads every raw event of the look-back on each pass: `BILLING_USAGE_SOURCE=raw` is for
 * deployments without the aggregator; both sources give the same numbers.
 */
export class ClickHouseRawUsage implements UsageSource {
  constructor(private readonly ch: ClickHouseClient) {}

  /** The raw table is its own truth: whatever is committed is counted at once. */
  asOf(nowS: number): Promise<number | null> {
    return Promise.resolve(nowS);
  }

  totals(fromS: number, toS: number, window: WindowSize): Promise<UsageTotal[]> {
    const inRange = (t: string): string =>
      `${t} >= toDateTime(${lit(fromS)}, 'UTC') AND ${t} < toDateTime(${lit(toS)}, 'UTC')`;
    const bucket = window === 'hour' ? 'toStartOfHour(o)' : 'toStartOfDay(o)';
    const query = `
      SELECT workspace_id, event_type, c AS cur, toUInt32(${bucket}) AS w, toString(sum(q)) AS tq, toString(sum(g)) AS tg
      FROM (${winningEventsSql(inRange('occurred_at'), inRange)})
      GROUP BY workspace_id, event_type, cur, w`;
    return queryTotals(this.ch, query, 'reading usage totals from events');
  }
}
