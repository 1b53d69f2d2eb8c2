-- Control plane: outgoing webhooks with their outbox and delivery log, provisioning, Stripe plan
-- sync, quota warnings and Shopify connections. Workspaces and api_keys come from 001.

-- Stripe's `created` (unix seconds) of the subscription event that last set the plan: an older
-- event arriving late must never override a newer one.
ALTER TABLE workspaces ADD COLUMN plan_event_created bigint;

-- Outbox: one row per emitted event, written in the same transaction as its cause. `body` is the
-- exact JSON that is signed and sent, kept verbatim so every attempt and resend carries the same bytes.
CREATE TABLE outbox_events (
  id           text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  event        text NOT NULL,
  body         text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_events_workspace_idx ON outbox_events (workspace_id, created_at);

CREATE TABLE webhook_endpoints (
  id                   text PRIMARY KEY,
  workspace_id         text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  url                  text NOT NULL,
  description          text,
  -- NULL: every event.
  events               text[],
  -- AES-256-GCM under SECRETS_KEY (see control-api/src/crypto/secret-box.ts).
  secret_enc           text NOT NULL,
  status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  consecutive_failures integer NOT NULL DEFAULT 0,
  disabled_at          timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_workspace_idx ON webhook_endpoints (workspace_id);

-- One delivery of one event to one endpoint. A worker claims due rows with FOR UPDATE SKIP LOCKED
-- and a lease (`lease_until`), so replicas never send the same attempt twice and a crashed
-- worker's claim expires and is taken again.
CREATE TABLE webhook_deliveries (
  id               text PRIMARY KEY,
  event_id         text NOT NULL REFERENCES outbox_events (id) ON DELETE CASCADE,
  endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
  workspace_id     text NOT NULL,
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  lease_until      timestamptz,
  last_status_code integer,
  last_latency_ms  integer,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  completed_at     timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE webhook_attempts (
  delivery_id  text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
  attempt      integer NOT NULL,
  status_code  integer,
  latency_ms   integer NOT NULL,
  error        text,
  attempted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (delivery_id, attempt)
);

-- Provisioned catalog services. `config_enc` may hold secrets (e.g. METER_API_KEY): encrypted.
CREATE TABLE provisions (
  id           text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  service      text NOT NULL,
  customer_id  text NOT NULL,
  driver       text NOT NULL,
  status       text NOT NULL CHECK (status IN ('pending', 'running', 'failed', 'deprovisioned')),
  config_enc   text NOT NULL,
  url          text,
  error        text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provisions_workspace_idx ON provisions (workspace_id, status);

-- Stripe event ids already applied: the same event twice changes nothing more.
CREATE TABLE stripe_events (
  id          text PRIMARY KEY,
  type        text NOT NULL,
  created     bigint NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);

-- meter.quota.warning is emitted once per (workspace, period, threshold): the insert decides.
CREATE TABLE quota_warnings (
  workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  period       text NOT NULL,
  threshold    integer NOT NULL,
  sent_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, period, threshold)
);

CREATE TABLE shopify_oauth_states (
  state        text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  shop_domain  text NOT NULL,
  expires_at   timestamptz NOT NULL
);

CREATE TABLE shopify_connections (
  workspace_id     text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  shop_domain      text NOT NULL,
  access_token_enc text NOT NULL,
  scopes           text,
  connected_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, shop_domain)
);
