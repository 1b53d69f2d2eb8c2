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
  /** Per-shard progress of the aggregator (seen, closed, as-of); billing reads the closed mark, the dashboard freshness. */
  aggregatorState: 'aggregator_state',
  /** One partial per shipped batch × workspace × hour × type × currency: written by ingest's shipper, folded by the aggregator. */
  eventBatches: 'event_batches',
  /** The windows each shipped batch changed, by insert time: the aggregator's change detection. */
  eventWindows: 'event_windows',
  /** Each meter's hourly rollups (006): written by the aggregator, read by core/meters' readMeterUsage. */
  meterHourly: 'meter_hourly',
  /** One partial per shipped batch × meter × hour × currency × group (006): written by ingest's shipper, folded by the aggregator. */
  meterBatches: 'meter_batches',
} as const;

export const PG_TABLES = {
  workspaces: 'workspaces',
  apiKeys: 'api_keys',
  /** Billing-sync's ledger of meter events sent to Stripe; the control API marks rows Stripe reported. */
  billingPushes: 'billing_pushes',
  /** Aggregator replicas' heartbeats (008): the live ones share the shards. */
  aggregatorReplicas: 'aggregator_replicas',
  /** Aggregator shard leases with their epoch (008). */
  aggregatorShardLeases: 'aggregator_shard_leases',
} as const;
