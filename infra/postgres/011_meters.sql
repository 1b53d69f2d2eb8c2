-- Meters and usage alerts (issue 20; docs/meters.md). A meter is what a workspace bills or watches:
-- an aggregation over its events' quantity, gmv_cents or one of their string properties, optionally
-- grouped by up to 3 properties. Definitions belong to the live workspace and apply to its test
-- bucket's events too (core/src/meters/definition.ts resolves a test bucket to its live row); the
-- rollups stay per bucket, keyed by the events' workspace id.
--
-- What a meter computes (event_types, aggregation, value_field, group_by) never changes after
-- creation: its rollups were computed with it, and Stripe meters are immutable the same way. A
-- different computation is a new meter (a new id, so its rollups start clean); the old one is
-- deleted (soft: deleted_at, its slug freed for a new meter).
CREATE TABLE meters (
  id text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  slug text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  name text NOT NULL DEFAULT '',
  description text NOT NULL DEFAULT '',
  event_types text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 10),
  aggregation text NOT NULL CHECK (aggregation IN ('sum', 'count', 'max', 'unique_count', 'latest')),
  -- 'quantity', 'gmv_cents' or 'properties.<key>'; NULL exactly when aggregation is count.
  value_field text CHECK ((aggregation = 'count') = (value_field IS NULL)),
  group_by text[] NOT NULL DEFAULT '{}' CHECK (cardinality(group_by) <= 3),
  -- The Stripe meter's event_name billing-sync pushes this meter's closed totals to; NULL: not billed.
  stripe_event_name text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  -- Backfill of the hours before the meter existed, from the raw events (bounded: the 35-day
  -- window events are accepted in). `backfill_until` is the first hour the live path covers;
  -- `backfill_done_before` moves down from it to `backfill_from` as the backfill proceeds.
  backfill_state text NOT NULL DEFAULT 'pending' CHECK (backfill_state IN ('pending', 'running', 'done', 'failed')),
  backfill_from timestamptz,
  backfill_until timestamptz,
  backfill_done_before timestamptz,
  backfill_error text
);
CREATE UNIQUE INDEX meters_workspace_slug_key ON meters (workspace_id, slug) WHERE deleted_at IS NULL;
CREATE INDEX meters_workspace_idx ON meters (workspace_id) WHERE deleted_at IS NULL;
-- At most one live meter per workspace pushes to a given Stripe event_name: two would bill twice.
CREATE UNIQUE INDEX meters_workspace_stripe_event_key ON meters (workspace_id, stripe_event_name)
  WHERE deleted_at IS NULL AND stripe_event_name IS NOT NULL;

CREATE TABLE meter_alerts (
  id text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  meter_id text NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
  -- absolute: `threshold` in the meter's unit; quota_percent: `threshold` percent of the plan's
  -- included quota (docs/meters.md).
  threshold_kind text NOT NULL CHECK (threshold_kind IN ('absolute', 'quota_percent')),
  threshold numeric NOT NULL CHECK (threshold > 0),
  period text NOT NULL CHECK (period IN ('day', 'month')),
  -- For a meter with group_by: the group this alert watches ({"model": "gpt-4"}); NULL: the total.
  group_value jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz
);
CREATE INDEX meter_alerts_workspace_idx ON meter_alerts (workspace_id) WHERE deleted_at IS NULL;
CREATE INDEX meter_alerts_meter_idx ON meter_alerts (meter_id) WHERE deleted_at IS NULL;

-- One row per alert, period and threshold that fired: the primary key is what makes
-- `meter.threshold.reached` fire once per period and threshold, however many evaluators race.
CREATE TABLE meter_alert_firings (
  alert_id text NOT NULL REFERENCES meter_alerts (id) ON DELETE CASCADE,
  period_start timestamptz NOT NULL,
  threshold numeric NOT NULL,
  value numeric NOT NULL,
  fired_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (alert_id, period_start, threshold)
);
