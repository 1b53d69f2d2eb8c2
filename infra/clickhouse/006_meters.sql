-- Meters (issue 20; docs/meters.md): event properties, and each meter's hourly rollups.
--
-- 1. `events` gets the event's string properties as two parallel arrays (the order sent). 18.16 has
--    no Map type; `prop_values[indexOf(prop_keys, 'k')]` reads one ('' when absent). Rows stored
--    before this migration read as events without properties.
-- 2. `meter_hourly`: one row per meter × bucket (workspace_id: a workspace or its test bucket) ×
--    hour × currency × group values, holding what every aggregation needs, so one row type serves
--    them all: `events` (count), the sum, max and latest (by occurred_at, then event_type and
--    idempotency_key: `latest_key` is `<event_type>\n<idempotency_key>`) of the usable values,
--    the distinct values (unique_count only: exact, the hour's distinct values stored once),
--    and `skipped`, the events whose value was absent or not an integer. `currency` is the
--    events' currency for a meter over gmv_cents (amounts of different currencies are never added)
--    and '' otherwise. ReplacingMergeTree(version) like usage_hourly: a recompute rewrites the
--    hour with a higher version; read with FINAL. Days and months are summed from the hours at
--    read time (in the reader's time zone).
-- 3. `meter_batches`: the shipper's partials per batch, the same columns per batch × meter × hour ×
--    currency × group: an open hour of a meter is the sum of its batches' latest attempts, like
--    `event_batches` for the built-in rollups. Written before the batch's `event_windows` record.
ALTER TABLE events ADD COLUMN prop_keys Array(String), ADD COLUMN prop_values Array(String);

CREATE TABLE IF NOT EXISTS meter_hourly (
  workspace_id  String,
  meter_id      String,
  window_start  DateTime('UTC'),
  currency      String,
  group_values  Array(String),
  events        UInt64,
  values_n      UInt64,
  value_sum     Int64,
  value_max     Int64,
  latest_at     DateTime('UTC'),
  latest_key    String,
  latest_value  Int64,
  uniq_values   Array(String),
  skipped       UInt64,
  version       UInt64,
  computed_at   DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (workspace_id, meter_id, window_start, currency, group_values);

CREATE TABLE IF NOT EXISTS meter_batches (
  workspace_id  String,
  window_start  DateTime('UTC'),
  meter_id      String,
  batch_id      String,
  currency      String,
  group_values  Array(String),
  events        UInt64,
  values_n      UInt64,
  value_sum     Int64,
  value_max     Int64,
  latest_at     DateTime('UTC'),
  latest_key    String,
  latest_value  Int64,
  uniq_values   Array(String),
  skipped       UInt64,
  attempt       UInt64
) ENGINE = ReplacingMergeTree(attempt)
PARTITION BY toYYYYMM(window_start)
ORDER BY (workspace_id, window_start, meter_id, batch_id, currency, group_values);
