-- Environments (issue 21; docs/api.md §13). Every workspace has `live` and `test`. The test
-- environment is a bucket of its own: a workspaces row with its own id (`ws_test…`, which still
-- matches the event contract's ws_ + alphanumerics), linked to its live workspace. Every store
-- (ClickHouse events and rollups, Redis dedupe and quota keys, webhooks, the billing ledger) is
-- keyed by workspace id, so giving test its own id isolates it everywhere without touching the hot
-- path. A test bucket never has a Stripe customer, and billing-sync only reads live rows, so test
-- usage is never pushed to Stripe.
ALTER TABLE workspaces ADD COLUMN environment text NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test'));
ALTER TABLE workspaces ADD COLUMN live_workspace_id text UNIQUE REFERENCES workspaces (id) ON DELETE CASCADE;
ALTER TABLE workspaces ADD CONSTRAINT workspaces_environment_link
  CHECK ((environment = 'live') = (live_workspace_id IS NULL));
ALTER TABLE workspaces ADD CONSTRAINT workspaces_test_has_no_customer
  CHECK (environment = 'live' OR stripe_customer_id IS NULL);

-- The test bucket shares its workspace's slug: slugs are unique per environment.
ALTER TABLE workspaces DROP CONSTRAINT workspaces_slug_key;
CREATE UNIQUE INDEX workspaces_slug_environment_key ON workspaces (slug, environment);

-- Every existing workspace gets its test bucket, with the live one's plan and lifecycle.
INSERT INTO workspaces (id, slug, display_name, contact_email, plan, environment, live_workspace_id, created_at,
                        deleted_at, purge_after)
SELECT 'ws_test' || substr(md5(random()::text || id), 1, 20), slug, display_name, contact_email, plan, 'test', id,
       created_at, deleted_at, purge_after
  FROM workspaces WHERE environment = 'live';

-- Purge after the grace period (docs/api.md §8). A purged workspace keeps its row as a tombstone
-- (contact email cleared) and its billing ledger (the record of what Stripe was told); everything
-- else of it is deleted: keys, webhooks, outbox, quota warnings, Shopify, idempotency records, its
-- ClickHouse events and rollups, its Redis keys. The finance export's numbers are copied here first,
-- so GET …/export answers the same after the purge.
ALTER TABLE workspaces ADD COLUMN purged_at timestamptz;
CREATE TABLE workspace_final_exports (
  workspace_id text        PRIMARY KEY REFERENCES workspaces (id),
  usage        jsonb       NOT NULL,
  billing      jsonb       NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
-- The purge's selection: deleted, not yet purged, by purge_after.
CREATE INDEX workspaces_purge_due_idx ON workspaces (purge_after) WHERE deleted_at IS NOT NULL AND purged_at IS NULL;
