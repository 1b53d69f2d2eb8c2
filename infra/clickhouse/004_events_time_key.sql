-- Aggregation whose cost follows new events, not history (docs/rollups.md, "How the totals stay exact").
--
-- 1. `events` puts time right after the tenant in its sort key, so reading one workspace's hour
--    reads that hour's granules only, however much history the workspace holds. ReplacingMergeTree
--    now collapses copies of a triple only within one hour: copies in different hours (a retry that
--    Redis forgot, stored with a new occurred_at) stay apart on disk. That never changed a total:
--    every reader already takes argMax(…, ver) over all copies of a triple (core's
--    winningEventsSql), and a merge keeps, within an hour, the same highest-ver copy readers take.
-- 2. Change detection without part names or block numbers: each ingest shipper records what it
--    shipped. `event_batches` holds, per shipped batch, its totals per workspace × hour ×
--    event_type × currency (the open hour's partials); `event_windows` logs the (workspace, hour)
--    windows of each batch with the server's insert time, which the aggregator reads from its
--    watermark on. Both are written after the batch's events and before the spool checkpoint
--    moves, so a crash in between re-ships the batch and writes the same rows again.
-- 3. The aggregator's state gets its new watermarks; `block` is no longer read.
--
-- Procedure (the aggregator stopped, as `npm run migrate` before starting the services does):
-- upgrade ingest first or stop it. A new ingest running before this migration cannot record its
-- batches yet (the tables are missing), retries them and keeps its spool; an old ingest running
-- after it would ship events without recording them. ClickHouse has no transactions: the RENAME
-- is atomic, the copy is not. If this migration stops after the RENAME, finish it by hand from the
-- CREATE of `events` on (TRUNCATE `events` first if the copy had started). 18.16 has no ADD COLUMN IF NOT
-- EXISTS: if it stops before the RENAME, run it again from the statement after the one that failed.
CREATE TABLE IF NOT EXISTS event_batches (
  workspace_id   String,
  window_start   DateTime('UTC'),
  batch_id       String,
  event_type     String,
  currency       String,
  events         UInt64,
  quantity       Int64,
  gmv_cents      Int64,
  first_event_at DateTime('UTC'),
  last_event_at  DateTime('UTC'),
  attempt        UInt64
) ENGINE = ReplacingMergeTree(attempt)
PARTITION BY toYYYYMM(window_start)
ORDER BY (workspace_id, window_start, batch_id, event_type, currency);

CREATE TABLE IF NOT EXISTS event_windows (
  inserted_at  DateTime('UTC') DEFAULT now(),
  workspace_id String,
  window_start DateTime('UTC'),
  batch_id     String,
  attempt      UInt64
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(inserted_at)
ORDER BY (inserted_at, workspace_id, window_start);

ALTER TABLE aggregator_state ADD COLUMN seen_until UInt64 DEFAULT 0, ADD COLUMN closed_until UInt64 DEFAULT 0;

RENAME TABLE events TO events_pre004;

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
ORDER BY (workspace_id, toStartOfHour(occurred_at), event_type, idempotency_key);

-- Windows the old aggregator had not folded in yet (parts above the lowest shard watermark, every
-- part when there is no state), and every window of the last two days, whose hour may still be
-- open and needs its close: recorded once, under a batch id of their own, before the state reset.
INSERT INTO event_windows (workspace_id, window_start, batch_id, attempt)
SELECT DISTINCT workspace_id, toStartOfHour(occurred_at), 'migration-004', 0 FROM events_pre004
WHERE toUInt64(splitByChar('_', _part)[3]) > (SELECT ifNull(min(b), 0) FROM (SELECT argMax(block, updated_ms) AS b FROM aggregator_state GROUP BY shard))
   OR occurred_at >= now() - 172800;

-- The hours that may still be open get their pre-migration events as one partial of their own,
-- so the open tail the aggregator adds up from partials starts from them (their close recomputes
-- them exactly from `events` in any case).
INSERT INTO event_batches (workspace_id, window_start, batch_id, event_type, currency, events, quantity, gmv_cents, first_event_at, last_event_at, attempt)
SELECT workspace_id, toStartOfHour(o), 'migration-004', event_type, c, count(), sum(q), sum(g), min(o), max(o), 0
FROM (
  SELECT workspace_id, event_type, idempotency_key, argMax(currency, ver) AS c, argMax(quantity, ver) AS q, argMax(gmv_cents, ver) AS g, argMax(occurred_at, ver) AS o
  FROM events_pre004 WHERE occurred_at >= now() - 172800
  GROUP BY workspace_id, event_type, idempotency_key
)
GROUP BY workspace_id, toStartOfHour(o), event_type, c;

INSERT INTO events (workspace_id, event_type, idempotency_key, event_id, quantity, gmv_cents, currency, occurred_at, received_at)
SELECT workspace_id, event_type, idempotency_key, event_id, quantity, gmv_cents, currency, occurred_at, received_at FROM events_pre004;

-- Every shard starts reading the window log from its beginning (it holds only the rows above) and
-- counts every window that closed before now as closed: the old aggregator recomputed those.
INSERT INTO aggregator_state (shard, block, version, as_of_ms, updated_ms, seen_until, closed_until)
SELECT shard, 0, argMax(version, updated_ms), argMax(as_of_ms, updated_ms), toUInt64(now()) * 1000 + 1, 0, toUInt64(now()) FROM aggregator_state GROUP BY shard;

DROP TABLE IF EXISTS events_pre004;
