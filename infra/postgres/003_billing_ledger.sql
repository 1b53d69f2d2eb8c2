-- Billing ledger: every meter event billing-sync sends (or would send, in dry run) to Stripe.
-- One row per (workspace, event type, window, revision). Revision 1 carries the window's total;
-- each later revision carries what changed since (a late event), so the sum of a window's live
-- rows is exactly what Stripe has been told. The identifier is deterministic, so re-sending a row
-- after a crash hits Stripe's identifier dedupe instead of counting twice.
-- No foreign key to workspaces: the ledger is an audit record and must outlive a deleted workspace.
CREATE TABLE billing_pushes (
  workspace_id       text        NOT NULL,
  event_type         text        NOT NULL,
  window_start       timestamptz NOT NULL,
  window_end         timestamptz NOT NULL,
  revision           integer     NOT NULL CHECK (revision >= 1),
  identifier         text        NOT NULL UNIQUE,
  stripe_customer_id text        NOT NULL,
  value_field        text        NOT NULL CHECK (value_field IN ('gmv_cents', 'quantity')),
  -- The window's total as read when this revision was planned, and what this row adds to Stripe's sum.
  total              bigint      NOT NULL,
  value              bigint      NOT NULL,
  -- A downward correction cancels earlier revisions (Stripe meter event adjustments) before it is sent.
  cancels            text[]      NOT NULL DEFAULT '{}',
  -- pending: planned, not yet confirmed by Stripe; sent: Stripe accepted it (or already had it);
  -- failed: Stripe refused it for good (kept for the reconciliation report); dry_run: never sent;
  -- superseded: a pending row a downward correction replaced before it was ever sent.
  status             text        NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dry_run', 'superseded')),
  -- The revision of the downward correction that cancelled this row at Stripe (it no longer counts).
  superseded_by      integer,
  via                text        CHECK (via IN ('v2_stream', 'v1', 'dry_run')),
  attempts           integer     NOT NULL DEFAULT 0,
  next_attempt_at    timestamptz NOT NULL DEFAULT now(),
  last_error         text,
  stripe_response    jsonb,
  created_at         timestamptz NOT NULL DEFAULT now(),
  sent_at            timestamptz,
  PRIMARY KEY (workspace_id, event_type, window_start, revision)
);

-- The pusher's queue: pending rows due for an attempt, oldest first.
CREATE INDEX billing_pushes_pending_idx ON billing_pushes (next_attempt_at) WHERE status = 'pending';
