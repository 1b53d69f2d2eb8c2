/**
 * The registry of wire error codes: what a client sees in `{ "error": { "code" } }` and the HTTP
 * status each maps to. One table for every HTTP service, so the same code never means two statuses.
 * docs/errors.md documents each code; core/src/errors/codes.test.ts fails when one is missing there.
 */
export const ERROR_CODES = {
  // request shape
  invalid_json: { status: 400, summary: 'The body is not valid JSON.' },
  invalid_body: { status: 400, summary: 'The body is valid JSON but not an object of the expected shape.' },
  missing_field: { status: 400, summary: 'A required field is absent.' },
  invalid_field: { status: 400, summary: 'A field has the wrong type or an invalid value.' },
  unknown_field: {
    status: 400,
    summary: 'The body has a field the endpoint does not define (rejected so typos never drop data silently).',
  },
  integer_out_of_range: {
    status: 400,
    summary: 'An integer is not whole or is beyond ±(2^53−1), where JSON parsers lose precision.',
  },
  invalid_timestamp: { status: 400, summary: '`occurred_at` is not an RFC 3339 date-time.' },
  timestamp_out_of_window: {
    status: 400,
    summary: '`occurred_at` is more than 35 days in the past or more than 5 minutes in the future.',
  },
  invalid_currency: { status: 400, summary: '`currency` is not an ISO 4217 code.' },
  batch_too_large: { status: 400, summary: 'A batch holds more than 100 events.' },
  payload_too_large: { status: 413, summary: "The body exceeds the endpoint's size cap." },
  unsupported_media_type: { status: 415, summary: 'The Content-Type is not application/json.' },
  // auth
  missing_api_key: { status: 401, summary: 'No `Authorization: Bearer …` header.' },
  invalid_api_key: { status: 401, summary: 'The key is malformed, unknown or revoked.' },
  too_many_auth_failures: {
    status: 429,
    summary:
      'Ingest: this client address sent too many unknown API keys; keys that need a lookup are refused until Retry-After (keys already verified keep working).',
  },
  insufficient_scope: { status: 403, summary: 'The key lacks the scope the endpoint requires (e.g. `meter:write`).' },
  workspace_mismatch: { status: 403, summary: "`workspace_id` is not the API key's workspace." },
  // state
  idempotency_key_in_use: {
    status: 409,
    summary:
      'Another request with the same idempotency key is being stored right now; retry after the Retry-After seconds. Without Retry-After (control API creates): the first request stopped before its answer was stored, so whether it created anything is unknown; check, then use a new key.',
  },
  idempotency_key_reused: {
    status: 409,
    summary:
      'This Idempotency-Key was already used (within 24 h, by this caller) for a request with another method, path or body; use a new key.',
  },
  restore_window_closed: {
    status: 409,
    summary:
      "The deleted workspace's grace period is over: it can no longer be restored (its finance export stays available).",
  },
  plan_quota_exceeded: {
    status: 429,
    summary: 'The workspace has used all events its plan allows this billing period.',
  },
  plan_limit_exceeded: { status: 429, summary: "The workspace has reached its plan's handler limit." },
  workspace_not_found: { status: 404, summary: 'The operator key named a workspace that does not exist.' },
  // control API
  slug_taken: { status: 409, summary: 'Signup: another workspace already uses this slug.' },
  endpoint_limit_exceeded: {
    status: 409,
    summary: 'The workspace already has WEBHOOK_MAX_ENDPOINTS webhook endpoints (16 by default); delete one first.',
  },
  host_taken: {
    status: 409,
    summary: 'Provisioning: the ingress host this provision would get is already in use by another provision.',
  },
  meter_slug_taken: {
    status: 409,
    summary: 'Meters: the workspace already has a live meter with this slug (a deleted one frees its slug).',
  },
  stripe_event_name_taken: {
    status: 409,
    summary:
      'Meters: another live meter of the workspace already pushes to this Stripe `stripe_event_name`; two would bill the same usage twice.',
  },
  meter_limit_exceeded: {
    status: 409,
    summary: 'Meters: the workspace already has the most live meters it may have (50); delete one first.',
  },
  meter_immutable: {
    status: 409,
    summary:
      "Meters: `event_types`, `aggregation`, `value_field` and `group_by` never change after creation (the meter's rollups were computed with them); create a new meter instead.",
  },
  alert_limit_exceeded: {
    status: 409,
    summary: 'Alerts: the workspace already has the most live usage alerts it may have (100); delete one first.',
  },
  rate_limited: {
    status: 429,
    summary: 'Too many requests from this client address; retry after the Retry-After seconds.',
  },
  resource_not_found: {
    status: 404,
    summary:
      'The API key, webhook endpoint, delivery, provision, meter or alert named in the path (or a meter named in an alert) does not exist in this workspace.',
  },
  invalid_signature: {
    status: 400,
    summary: 'A signed callback (Stripe webhook, Shopify OAuth callback) failed its signature, HMAC or state check.',
  },
  upstream_error: {
    status: 502,
    summary: 'A provider the control API called (Stripe, Kubernetes) failed; nothing was changed, retry later.',
  },
  not_configured: {
    status: 501,
    summary: 'The server is not configured for this feature (e.g. Stripe or Shopify credentials are unset).',
  },
  payment_required: {
    status: 402,
    summary:
      'A paid plan was asked for where it cannot be paid: this server has no Stripe configured, so only the operator can set a paid plan (`PATCH /api/v1/workspaces/:id`).',
  },
  already_subscribed: {
    status: 409,
    summary:
      'The workspace is already on a paid plan: change or cancel it in the Stripe billing portal, not with a new Checkout.',
  },
  operator_only: {
    status: 403,
    summary: "Only the operator key (DEPLOY_API_KEY) may do this, e.g. set a workspace's plan directly.",
  },
  no_billing_customer: { status: 409, summary: 'The workspace has no Stripe customer, so it has no billing portal.' },
  session_required: {
    status: 401,
    summary:
      'Dashboard: no valid sign-in session (absent, expired, signed out, or its API key was revoked); sign in again.',
  },
  csrf_token_invalid: {
    status: 403,
    summary: "Dashboard: a state-changing call lacked the session's X-CSRF-Token header or sent a wrong one.",
  },
  // routing
  not_found: { status: 404, summary: 'No such route.' },
  method_not_allowed: { status: 405, summary: 'The route exists but not for this method.' },
  // server
  service_unavailable: {
    status: 503,
    summary:
      'A dependency (Redis, Postgres or the durable spool) is unavailable or full; nothing was stored, retry with backoff.',
  },
  internal_error: { status: 500, summary: 'An unexpected error; logged on the server, no details in the body.' },
} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function statusOf(code: string): number {
  return (ERROR_CODES as Record<string, { status: number }>)[code]?.status ?? 500;
}
