import { ClickHouseQueryError, dateTimeLit, lit, type createClickHouse } from '@meterd/core/clickhouse';
import { CH_TABLES, shardSql } from '@meterd/core/contracts';

type ClickHouseClient = ReturnType<typeof createClickHouse>;

/**
 * The dashboard reads the aggregator's rollup tables (docs/rollups.md) straight from ClickHouse,
 * with FINAL as documented, instead of calling the aggregator's usage API: that API wants a
 * meter:read bearer key, and the dashboard holds a session, never a key. The tables are the
 * documented contract for readers other than the aggregator; freshness uses the aggregator's shard
 * formula (core's shardSql).
 */
export type ChartGranularity = 'hour' | 'day';

/** `?granularity=hour|day` of the dashboard's charts (the overview's and the meters'). */
export const granularityQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { granularity: { type: 'string', enum: ['hour', 'day'] } },
} as const;

const TABLE: Record<ChartGranularity, string> = { hour: CH_TABLES.usageHourly, day: CH_TABLES.usageDaily };
const STEP_MS: Record<ChartGranularity, number> = { hour: 3_600_000, day: 86_400_000 };
/** 48 hours or 30 days: enough bars to see a trend, few enough for a phone screen. */
const WINDOWS: Record<ChartGranularity, number> = { hour: 48, day: 30 };

export interface Point {
  t: number;
  currency: string;
  events: string;
  gmv_cents: string;
}
export interface TypeTotal {
  event_type: string;
  currency: string;
  events: string;
  gmv_cents: string;
  quantity: string;
}

const toMs = (s: string) => Date.parse(`${s.replace(' ', 'T')}Z`);

async function rows<T>(ch: ClickHouseClient, query: string, action: string): Promise<T[]> {
  try {
    return await (await ch.query({ query, format: 'JSONEachRow' })).json<T>();
  } catch (err) {
    throw new ClickHouseQueryError(action, err);
  }
}

export function chartRange(g: ChartGranularity, now: number): { from: number; to: number; step: number } {
  const step = STEP_MS[g];
  const to = Math.floor(now / step) * step + step;
  return { from: to - WINDOWS[g] * step, to, step };
}

/** Events and GMV per window and currency (summed over event types). 64-bit sums stay strings. */
export async function readSeries(
  ch: ClickHouseClient,
  workspaceId: string,
  g: ChartGranularity,
  from: number,
  to: number,
): Promise<Point[]> {
  const got = await rows<{ w: string; currency: string; e: string; g: string }>(
    ch,
    `SELECT window_start AS w, currency, sum(events) AS e, sum(gmv_cents) AS g FROM ${TABLE[g]} FINAL
      WHERE workspace_id = ${lit(workspaceId)} AND window_start >= toDateTime(${dateTimeLit(from)}, 'UTC') AND window_start < toDateTime(${dateTimeLit(to)}, 'UTC')
      GROUP BY w, currency ORDER BY w, currency`,
    `reading ${TABLE[g]} for the dashboard`,
  );
  return got.map((r) => ({ t: toMs(r.w), currency: r.currency, events: String(r.e), gmv_cents: String(r.g) }));
}

/** This calendar month's totals per event type and currency (usage_monthly). */
export async function readMonthTotals(
  ch: ClickHouseClient,
  workspaceId: string,
  monthStart: number,
): Promise<TypeTotal[]> {
  const got = await rows<{ event_type: string; currency: string; e: string; g: string; q: string }>(
    ch,
    `SELECT event_type, currency, sum(events) AS e, sum(gmv_cents) AS g, sum(quantity) AS q FROM usage_monthly FINAL
      WHERE workspace_id = ${lit(workspaceId)} AND window_start = toDateTime(${dateTimeLit(monthStart)}, 'UTC')
      GROUP BY event_type, currency ORDER BY event_type, currency`,
    'reading usage_monthly for the dashboard',
  );
  return got.map((r) => ({
    event_type: r.event_type,
    currency: r.currency,
    events: String(r.e),
    gmv_cents: String(r.g),
    quantity: String(r.q),
  }));
}

/** When the workspace's shard last caught up (epoch ms), or null before the aggregator's first cycle. */
export async function readFreshness(ch: ClickHouseClient, workspaceId: string, shards: number): Promise<number | null> {
  const got = await rows<{ a: string }>(
    ch,
    `SELECT argMax(as_of_ms, updated_ms) AS a FROM aggregator_state
      WHERE shard = ${shardSql(lit(workspaceId), shards)} GROUP BY shard`,
    'reading aggregator_state for the dashboard',
  );
  return got.length === 0 ? null : Number(got[0]!.a);
}

/** Whether any event of the workspace reached ClickHouse (onboarding's last step). */
export async function hasAnyEvent(ch: ClickHouseClient, workspaceId: string): Promise<boolean> {
  const got = await rows<{ one: number }>(
    ch,
    `SELECT 1 AS one FROM events WHERE workspace_id = ${lit(workspaceId)} LIMIT 1`,
    'looking for a first event',
  );
  return got.length > 0;
}
