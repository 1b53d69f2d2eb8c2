import type { ClickHouseClient } from '@clickhouse/client';
import { UsageReadError } from '../errors.js';
import type { UsageTotal } from './source.js';

/**
 * Runs a totals query of either source. Its columns are workspace_id, event_type, cur, w (window
 * start, epoch s), tq and tg (sums as strings, so 64-bit money never passes through a double).
 * The aliases differ from every column name on purpose: in ClickHouse an alias shadows the column
 * inside sum(…).
 */
export async function queryTotals(ch: ClickHouseClient, query: string, action: string): Promise<UsageTotal[]> {
  try {
    const rs = await ch.query({ query, format: 'JSONEachRow' });
    const rows = await rs.json<{
      workspace_id: string;
      event_type: string;
      cur: string;
      w: number | string;
      tq: string;
      tg: string;
    }>();
    return rows.map((r) => ({
      workspace_id: r.workspace_id,
      event_type: r.event_type,
      currency: r.cur,
      window_start: Number(r.w),
      quantity: BigInt(r.tq),
      gmv_cents: BigInt(r.tg),
    }));
  } catch (err) {
    throw new UsageReadError(action, err);
  }
}
