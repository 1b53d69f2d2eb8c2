-- Money path (issue 13): a currency in every billed key, signed values, and statuses for what
-- Stripe can no longer apply or has rejected. docs/billing.md describes each.

-- The currency of a money meter (gmv_cents), '' for unit meters (quantity: no currency to mix).
-- Rows written before this migration are '' and were sums over currencies: the planner leaves
-- their windows alone (they age out of the look-back) instead of re-billing them per currency.
ALTER TABLE billing_pushes ADD COLUMN currency text NOT NULL DEFAULT '';
-- The Stripe meter's event_name the row is sent to: the event type, plus `.` and the lowercase
-- currency for money meters (checkout.completed.eur).
ALTER TABLE billing_pushes ADD COLUMN event_name text;
UPDATE billing_pushes SET event_name = event_type;
ALTER TABLE billing_pushes ALTER COLUMN event_name SET NOT NULL;
ALTER TABLE billing_pushes DROP CONSTRAINT billing_pushes_pkey;
ALTER TABLE billing_pushes ADD PRIMARY KEY (workspace_id, event_type, currency, window_start, revision);

-- The usage source's as-of the revision was planned from: a replica reading older totals never
-- plans a downward correction of a window planned from newer ones.
ALTER TABLE billing_pushes ADD COLUMN as_of timestamptz;
-- When the row was first sent: a re-send more than ~20 h later (past Stripe's 24 h identifier
-- dedupe, with a margin) first asks Stripe's meter event summaries whether it already counted.
ALTER TABLE billing_pushes ADD COLUMN first_attempt_at timestamptz;
-- Why a row is unbillable or rejected (Stripe's error code and message, or meterd's reason).
ALTER TABLE billing_pushes ADD COLUMN reason text;
ALTER TABLE billing_pushes ADD COLUMN rejected_at timestamptz;

-- unbillable: a difference Stripe can no longer apply (its window is past Stripe's timestamp
--   limit); recorded, never sent, and shown by reconcile and the dashboard.
-- rejected: Stripe refused it asynchronously (a v1.billing.meter.error_report_triggered sample)
--   or its meter does not exist; it does not count, and its window is not re-planned until the
--   cause is fixed.
-- retried: a rejected row whose cause is fixed; the planner sends its amount again as a new revision.
ALTER TABLE billing_pushes DROP CONSTRAINT billing_pushes_status_check;
ALTER TABLE billing_pushes ADD CONSTRAINT billing_pushes_status_check
  CHECK (status IN ('pending', 'sent', 'failed', 'dry_run', 'superseded', 'unbillable', 'rejected', 'retried'));
ALTER TABLE billing_pushes DROP CONSTRAINT billing_pushes_via_check;
ALTER TABLE billing_pushes ADD CONSTRAINT billing_pushes_via_check CHECK (via IN ('v2_stream', 'v1', 'dry_run', 'summary'));

CREATE INDEX billing_pushes_rejected_idx ON billing_pushes (event_name, stripe_customer_id) WHERE status = 'rejected';

-- Rollup versions for the aggregator: one sequence for every replica, so a former lease holder's
-- late write always carries a lower version than its successor's. Starts above the wall-clock
-- microsecond versions written before (≈1.8e15 in 2026).
CREATE SEQUENCE rollup_version_seq START WITH 10000000000000000;
