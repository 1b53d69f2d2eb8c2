-- The billing readiness check reads a workspace's ledger rows of the last 35 days. The primary key
-- starts (workspace_id, event_type, …), so without this index that read walks every row the
-- workspace was ever billed for: its cost would grow with the months behind it.
CREATE INDEX billing_pushes_workspace_recent_idx ON billing_pushes (workspace_id, created_at);
