import {
  aggregatorShardsVar,
  authVars,
  loadConfig,
  storeVars,
  str,
  int,
  bool,
  type ConfigOf,
} from '@meterd/core/config';

export const aggregatorVars = {
  ...storeVars,
  AGGREGATOR_HOST: str('Address the aggregator (usage API, /healthz, /readyz, /metrics) listens on.', '127.0.0.1'),
  AGGREGATOR_PORT: int('Port of the usage API (GET /api/v1/workspaces/:id/usage) and health/metrics.', 8083, 0, 65535),
  AGGREGATOR_WORKER: bool('Run the rollup worker in this process (false: serve the usage API only).', true),
  AGGREGATOR_POLL_MS: int(
    'How often the worker looks for newly recorded batches when no ingest process announced any (ingest wakes it after each ship round); bounds the rollup lag together with the cycle time.',
    200,
    10,
    60_000,
  ),
  ...aggregatorShardsVar,
  AGGREGATOR_LEASE_TTL_MS: int(
    "How long a replica's heartbeat and shard leases last without renewal: a replica that died (or stalled this long) loses its shards to the others after it. Renewed every TTL/5 and before each write; keep it well above a cycle's duration and a Postgres failover.",
    15_000,
    1_000,
    600_000,
  ),
  AGGREGATOR_WINDOWS_PER_QUERY: int('Most (workspace, hour) windows recomputed per ClickHouse query.', 200, 1, 5_000),
  AGGREGATOR_METER_BACKFILL_HOURS: int(
    'Hours of a new meter backfilled from the raw events per meter and cycle (docs/meters.md): a meter created after its events arrived gets the 35 days before its creation hour in chunks this size, progress in meters.backfill_*.',
    24,
    1,
    840,
  ),
  AGGREGATOR_CLOSE_AFTER_SECONDS: int(
    "An hour is closed (recomputed exactly by the winner rule) this long after it ends; billing pushes only closed hours, so keep it near billing-sync's BILLING_CLOSE_DELAY_SECONDS (both 300 s by default). Events received later recompute their closed hour, are flagged as late_events and reach Stripe as a correction.",
    300,
    0,
    90 * 86_400,
  ),
  AGGREGATOR_COPY_HORIZON_SECONDS: int(
    "How far apart two copies of one idempotency triple may be stored (by occurred_at) and still count once. Copies within it come from retries that reached ingest after Redis forgot the key; each hour's close reads its own rows plus the key columns of this horizon around it, so this bound, not the history, sets a close's cost. Copies farther apart may count as separate events (reconcile, which compares over its whole range, reports them).",
    172_800,
    0,
    35 * 86_400,
  ),
  AGGREGATOR_LOOKBACK_SECONDS: int(
    'How far before its watermark the worker reads shipped-batch records again, for records that became readable after its clock passed their insert stamp (an insert in flight; on a cluster, the quorum insert and the clock skew between nodes). 0: 10 s on one server, 60 s with CLICKHOUSE_CLUSTER. Records already folded are skipped, so a larger value costs a read, never a recompute.',
    0,
    0,
    3_600,
  ),
  AGGREGATOR_FRESHNESS_TARGET_MS: int(
    'Freshness target reported by the usage API next to the measured lag (the rollup lag SLO).',
    2_000,
    1,
    3_600_000,
  ),
  ...authVars,
} as const;

export type AggregatorConfig = ConfigOf<typeof aggregatorVars>;

export function loadAggregatorConfig(env: NodeJS.ProcessEnv = process.env): AggregatorConfig {
  return loadConfig(aggregatorVars, env);
}
