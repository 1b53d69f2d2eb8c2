import type { ClickHouseClient } from '@clickhouse/client';
import { lit, winningEventsSql } from '@meterd/core';
import { UsageReadError } from '../errors.js';
import type { UsageSource, UsageTotal, WindowSize } from './source.js';

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

  async totals(fromS: number, toS: number, window: WindowSize): Promise<UsageTotal[]> {
    const inRange = (t: string): string =>
      `${t} >= toDateTime(${lit(fromS)}, 'UTC') AND ${t} < toDateTime(${lit(toS)}, 'UTC')`;
    const bucket = window === 'hour' ? 'toStartOfHour(o)' : 'toStartOfDay(o)';
    const query = `
      SELECT workspace_id, event_type, c AS cur, toUInt32(${bucket}) AS window_start, toString(sum(q)) AS quantity, toString(sum(g)) AS gmv_cents
      FROM (${winningEventsSql(inRange('occurred_at'), inRange)})
      GROUP BY workspace_id, event_type, cur, window_start`;
    try {
      const rs = await this.ch.query({ query, format: 'JSONEachRow' });
      const rows = await rs.json<{
        workspace_id: string;
        event_type: string;
        cur: string;
        window_start: number | string;
        quantity: string;
        gmv_cents: string;
      }>();
      return rows.map((r) => ({
        workspace_id: r.workspace_id,
        event_type: r.event_type,
        currency: r.cur,
        window_start: Number(r.window_start),
        quantity: BigInt(r.quantity),
        gmv_cents: BigInt(r.gmv_cents),
      }));
    } catch (err) {
      throw new UsageReadError('reading usage totals from events', err);
    }
  }
}
