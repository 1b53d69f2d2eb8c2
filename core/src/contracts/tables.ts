/**
 * Tables more than one service reads or writes (columns in the infra/clickhouse and infra/postgres migrations, docs/rollups.md).
 * The migrations own their shape; these constants are how code names them, so a search for a
 * table finds every reader.
 */
export const CH_TABLES = {
  /** Raw events, written by ingest's spool shipper; read by the aggregator and billing-sync's raw source. */
  events: 'events',
  usageHourly: 'usage_hourly',
  usageDaily: 'usage_daily',
  usageMonthly: 'usage_monthly',
  /** Per-shard progress of the aggregator (as-of time); billing and the dashboard read freshness from it. */
  aggregatorState: 'aggregator_state',
} as const;

export const PG_TABLES = {
  workspaces: 'workspaces',
  apiKeys: 'api_keys',
  /** Billing-sync's ledger of meter events sent to Stripe; the control API marks rows Stripe reported. */
  billingPushes: 'billing_pushes',
} as const;
