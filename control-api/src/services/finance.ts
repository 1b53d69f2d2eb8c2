import { ClickHouseQueryError, lit, type createClickHouse } from '@meterd/core/clickhouse';
import { CH_TABLES, PG_TABLES } from '@meterd/core/contracts';
import { type Pool } from '@meterd/core/store';

type ClickHouseClient = ReturnType<typeof createClickHouse>;

export interface MonthUsage {
  month: string;
  event_type: string;
  currency: string;
  events: string;
  quantity: string;
  gmv_cents: string;
}

export interface MonthBilling {
  month: string;
  event_name: string;
  currency: string;
  status: string;
  rows: number;
  value: string;
}

/**
 * A workspace's final numbers for finance: usage per month × event type × currency from the
 * aggregator's usage_monthly (FINAL, docs/rollups.md) and what the billing ledger told Stripe (or
 * recorded as unbillable) per month × meter × status. Amounts stay per currency and 64-bit sums
 * stay strings. It reads the same way for a deleted workspace: nothing of its numbers is removed
 * during the grace period, and the purge after it keeps a copy (workspace_final_exports).
 */
export class FinanceService {
  constructor(
    private readonly pool: Pool,
    private readonly ch: ClickHouseClient,
  ) {}

  async export(workspaceId: string): Promise<{ usage: MonthUsage[]; billing: MonthBilling[] }> {
    // A purged workspace's events and rollups are gone: its numbers were copied before (services/purge.ts).
    const { rows } = await this.pool.query<{ usage: MonthUsage[]; billing: MonthBilling[] }>(
      'SELECT usage, billing FROM workspace_final_exports WHERE workspace_id = $1',
      [workspaceId],
    );
    if (rows.length > 0) return rows[0]!;
    const [usage, billing] = await Promise.all([this.usage(workspaceId), this.billing(workspaceId)]);
    return { usage, billing };
  }

  private async usage(workspaceId: string): Promise<MonthUsage[]> {
    try {
      const rs = await this.ch.query({
        query: `SELECT formatDateTime(window_start, '%Y-%m') AS month, event_type, currency,
                  toString(sum(events)) AS events, toString(sum(quantity)) AS quantity, toString(sum(gmv_cents)) AS gmv_cents
                FROM ${CH_TABLES.usageMonthly} FINAL WHERE workspace_id = ${lit(workspaceId)}
                GROUP BY month, event_type, currency ORDER BY month, event_type, currency`,
        format: 'JSONEachRow',
      });
      return await rs.json<MonthUsage>();
    } catch (err) {
      throw new ClickHouseQueryError('reading usage_monthly for the finance export', err);
    }
  }

  private async billing(workspaceId: string): Promise<MonthBilling[]> {
    const { rows } = await this.pool.query<MonthBilling>(
      `SELECT to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM') AS month, event_name, currency, status,
              count(*)::int AS rows, sum(value)::text AS value
         FROM ${PG_TABLES.billingPushes} WHERE workspace_id = $1
        GROUP BY 1, event_name, currency, status ORDER BY 1, event_name, currency, status`,
      [workspaceId],
    );
    return rows;
  }
}
