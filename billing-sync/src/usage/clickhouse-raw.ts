import type { ClickHouseClient } from '@clickhouse/client';
import { lit } from '@meterd/core';
import { UsageReadError } from '../errors.js';
import type { UsageSource, UsageTotal, WindowSize } from './source.js';

/**
 * Totals straight from the raw `events` table. The table is a ReplacingMergeTree on the
 * idempotency triple, but rows replayed after a crash stay duplicated until a merge, so the inner
 * query collapses each triple to one row before summing: duplicates never count twice, merged or
 * not. Reads every raw event of the look-back on each pass: `BILLING_USAGE_SOURCE=raw` is for
 * deployments without the aggregator; both sources give the same numbers.
 */
export class ClickHouseRawUsage implements UsageSource {
  constructor(private readonly ch: ClickHouseClient) {}

  /** The raw table is its own truth: whatever is committed is counted at once. */
  asOf(nowS: number): Promise<number | null> {
    return Promise.resolve(nowS);
  }

  async totals(fromS: number, toS: number, window: WindowSize): Promise<UsageTotal[]> {
    const bucket = window === 'hour' ? 'toStartOfHour(t)' : 'toStartOfDay(t)';
    const query = `
      SELECT workspace_id, event_type, toUInt32(${bucket}) AS window_start, toString(sum(q)) AS quantity, toString(sum(g)) AS gmv_cents
      FROM (
        SELECT workspace_id, event_type, idempotency_key, any(quantity) AS q, any(gmv_cents) AS g, any(occurred_at) AS t
        FROM events
        WHERE occurred_at >= toDateTime(${lit(fromS)}, 'UTC') AND occurred_at < toDateTime(${lit(toS)}, 'UTC')
        GROUP BY workspace_id, event_type, idempotency_key
      )
      GROUP BY workspace_id, event_type, window_start`;
    try {
      const rs = await this.ch.query({ query, format: 'JSONEachRow' });
      const rows = await rs.json<{ workspace_id: string; event_type: string; window_start: number | string; quantity: string; gmv_cents: string }>();
      return rows.map((r) => ({
        workspace_id: r.workspace_id, event_type: r.event_type, window_start: Number(r.window_start),
        quantity: BigInt(r.quantity), gmv_cents: BigInt(r.gmv_cents),
      }));
    } catch (err) {
      throw new UsageReadError('reading usage totals from events', err);
    }
  }
}
