-- Workspace lifecycle and idempotent creates (issue 21; docs/control-api.md).

-- Soft delete: a deleted workspace's keys stop authenticating at once (core's findKeyByHash reads
-- deleted_at), its rows stay for the grace period, during which the operator may restore it, and
-- its numbers (events, rollups, billing ledger) are kept for the finance export afterwards.
ALTER TABLE workspaces ADD COLUMN deleted_at timestamptz;
ALTER TABLE workspaces ADD COLUMN purge_after timestamptz;

-- Idempotency-Key on creates, kept 24 h like Stripe's. One row per (scope, key): the scope is the
-- caller (a workspace, the operator, or a signup's client address), so one tenant never sees
-- another's replay. `fingerprint` is the SHA-256 of method, route and body; `status` is NULL
-- while the first request runs (its lease is `locked_until`, so a caller that died frees the key).
CREATE TABLE idempotency_keys (
  scope        text        NOT NULL,
  key          text        NOT NULL,
  fingerprint  bytea       NOT NULL,
  status       integer,
  response     text,
  locked_until timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  PRIMARY KEY (scope, key)
);
-- The cleanup deletes the oldest expired rows a bounded batch at a time, by this index, so its cost
-- follows what expired, not how much history the table holds.
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
