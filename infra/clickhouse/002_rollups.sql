-- Usage rollups per workspace × event_type × currency, one table per granularity, all the same
-- shape. The aggregator recomputes a whole window exactly from the deduplicated raw events and
-- writes its totals with a higher `version`; ReplacingMergeTree(version) keeps the newest row per
-- key, so a recompute replaces the previous value instead of adding to it. Readers must use FINAL
-- (or argMax(…, version)) because merges happen in the background. Documented in docs/rollups.md.
CREATE TABLE IF NOT EXISTS usage_hourly (
  workspace_id   String,
  event_type     String,
  currency       String,
  window_start   DateTime('UTC'),
  events         UInt64,
  quantity       Int64,
  gmv_cents      Int64,
  first_event_at DateTime('UTC'),
  last_event_at  DateTime('UTC'),
  late_events    UInt64,
  version        UInt64,
  computed_at    DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (workspace_id, event_type, currency, window_start);

CREATE TABLE IF NOT EXISTS usage_daily (
  workspace_id   String,
  event_type     String,
  currency       String,
  window_start   DateTime('UTC'),
  events         UInt64,
  quantity       Int64,
  gmv_cents      Int64,
  first_event_at DateTime('UTC'),
  last_event_at  DateTime('UTC'),
  late_events    UInt64,
  version        UInt64,
  computed_at    DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (workspace_id, event_type, currency, window_start);

CREATE TABLE IF NOT EXISTS usage_monthly (
  workspace_id   String,
  event_type     String,
  currency       String,
  window_start   DateTime('UTC'),
  events         UInt64,
  quantity       Int64,
  gmv_cents      Int64,
  first_event_at DateTime('UTC'),
  last_event_at  DateTime('UTC'),
  late_events    UInt64,
  version        UInt64,
  computed_at    DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(window_start)
ORDER BY (workspace_id, event_type, currency, window_start);

-- The aggregator's progress per workspace shard: every `events` part whose highest block number
-- is at most `block` has been folded into the rollups, and everything committed before `as_of_ms`
-- is in them (the freshness the usage API and /metrics report). Written only after the rollups.
CREATE TABLE IF NOT EXISTS aggregator_state (
  shard      UInt16,
  block      UInt64,
  version    UInt64,
  as_of_ms   UInt64,
  updated_ms UInt64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY shard;
