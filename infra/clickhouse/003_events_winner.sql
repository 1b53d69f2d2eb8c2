-- One winner per (workspace_id, event_type, idempotency_key), the same for readers and merges.
-- 001 made `events` a ReplacingMergeTree without a version, so a merge kept the last inserted copy
-- while readers took the earliest: after a merge a triple could move to another hour (a retry that
-- Redis forgot gets a new received_at, and a new occurred_at when the client left it out).
-- `ver` orders copies: the earliest received second wins, ties broken by a hash of the event id.
-- ReplacingMergeTree(ver) keeps the highest `ver`, which is exactly the copy readers take
-- (core/src/clickhouse/events.ts), merged or not. It is MATERIALIZED: ingest's rows are unchanged.
--
-- The table is recreated, so part block numbers start again at 1: the aggregator's watermarks are
-- reset to 0 below and every window is recomputed once. Run this with the aggregator stopped (as
-- `npm run migrate` before starting the services does). Ingest may keep running: between the
-- RENAME and the CREATE its inserts fail and its spool ships them again.
-- If this migration stops after the RENAME, finish it by hand from the CREATE on.
RENAME TABLE events TO events_pre003;

CREATE TABLE IF NOT EXISTS events (
  workspace_id    String,
  event_type      String,
  idempotency_key String,
  event_id        String,
  quantity        Int64,
  gmv_cents       Int64,
  currency        String,
  occurred_at     DateTime('UTC'),
  received_at     DateTime('UTC'),
  ver             UInt64 MATERIALIZED bitOr(bitShiftLeft(toUInt64(4294967295 - toUInt32(received_at)), 32), bitAnd(cityHash64(event_id), 4294967295))
) ENGINE = ReplacingMergeTree(ver)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (workspace_id, event_type, idempotency_key);

INSERT INTO events (workspace_id, event_type, idempotency_key, event_id, quantity, gmv_cents, currency, occurred_at, received_at)
SELECT workspace_id, event_type, idempotency_key, event_id, quantity, gmv_cents, currency, occurred_at, received_at FROM events_pre003;

INSERT INTO aggregator_state (shard, block, version, as_of_ms, updated_ms)
SELECT shard, 0, argMax(version, updated_ms), argMax(as_of_ms, updated_ms), toUInt64(now()) * 1000 + 1 FROM aggregator_state GROUP BY shard;

DROP TABLE IF EXISTS events_pre003;
