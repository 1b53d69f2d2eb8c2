-- Billing user-defined meters (issue 20; docs/billing.md "Meters"). billing_pushes also holds one
-- ledger row per meter × workspace × currency × group × window × revision:
--   meter_id   the meter (meters.id); '' for the built-in per-event-type totals;
--   group_key  the meter's group values in group_by order, as a JSON array ('' for built-in rows);
--   dimensions the meter event payload keys and values sent with them (group_by → value).
-- event_type holds 'meter:<slug>' for a meter row (a readable label; the key is meter_id) and
-- value_field 'meter'. The primary key takes the meter and the group, so each group of each meter
-- has its own revisions; identifiers stay unique (they name the meter and a hash of the group).
ALTER TABLE billing_pushes ADD COLUMN meter_id text NOT NULL DEFAULT '',
  ADD COLUMN group_key text NOT NULL DEFAULT '',
  ADD COLUMN dimensions jsonb NOT NULL DEFAULT '{}';
ALTER TABLE billing_pushes DROP CONSTRAINT billing_pushes_pkey;
ALTER TABLE billing_pushes ADD PRIMARY KEY (workspace_id, event_type, currency, window_start, meter_id, group_key, revision);
ALTER TABLE billing_pushes DROP CONSTRAINT billing_pushes_value_field_check;
ALTER TABLE billing_pushes ADD CONSTRAINT billing_pushes_value_field_check CHECK (value_field IN ('gmv_cents', 'quantity', 'meter'));
