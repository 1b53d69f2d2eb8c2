-- Raw meter events, one row per accepted event. ReplacingMergeTree on the idempotency triple:
-- a replayed spool segment (after a crash between insert and checkpoint) writes identical rows,
-- which merges collapse; readers that need exact totals before merges read with FINAL or group by
-- the triple. Partitioned by the month of occurred_at, the unit finance teams query by.
CREATE TABLE IF NOT EXISTS events (
  workspace_id    String,
  event_type      String,
  idempotency_key String,
  event_id        String,
  quantity        Int64,
  gmv_cents       Int64,
  currency        String,
  occurred_at     DateTime('UTC'),
  received_at     DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (workspace_id, event_type, idempotency_key);
