-- Workspaces and their API keys: what ingest needs to authenticate a request and know its plan.
CREATE TABLE workspaces (
  id                 text PRIMARY KEY,
  slug               text NOT NULL UNIQUE,
  display_name       text NOT NULL,
  contact_email      text,
  plan               text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'growth', 'scale', 'enterprise')),
  stripe_customer_id text UNIQUE,
  created_at         timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a key is stored; the token is shown once at creation.
CREATE TABLE api_keys (
  id             text PRIMARY KEY,
  workspace_id   text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  display_prefix text NOT NULL,
  key_hash       bytea NOT NULL UNIQUE,
  scopes         text[] NOT NULL,
  name           text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  revoked_at     timestamptz
);
CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id);
