import {
  aggregatorShardsVar,
  commaSeparated,
  loadConfig,
  storeVars,
  str,
  int,
  bool,
  oneOf,
  url,
  type ConfigOf,
} from '@meterd/core/config';

export const VALUE_FIELDS = ['gmv_cents', 'quantity'] as const;
export type ValueField = (typeof VALUE_FIELDS)[number];

const meterValues = {
  doc: 'Per event type, which total is pushed as the meter value: `checkout.completed=gmv_cents,api.call=quantity`. Types not listed use BILLING_DEFAULT_VALUE.',
  default: '',
  parse(s: string): ReadonlyMap<string, ValueField> {
    const out = new Map<string, ValueField>();
    for (const part of commaSeparated(s)) {
      const [type, field] = part.split('=');
      if (!type || !field || !(VALUE_FIELDS as readonly string[]).includes(field))
        throw new Error(`"${part}" is not event_type=gmv_cents|quantity`);
      out.set(type, field as ValueField);
    }
    return out;
  },
};

export const billingVars = {
  ...storeVars,
  BILLING_SYNC_HOST: str("Address of billing-sync's health/metrics server.", '127.0.0.1'),
  BILLING_SYNC_PORT: int("Port of billing-sync's /healthz, /readyz and /metrics.", 8084, 0, 65535),
  STRIPE_SECRET_KEY: str(
    'Stripe secret key. Empty: dry run (the ledger is filled and each push is logged, nothing is sent).',
    '',
    true,
  ),
  STRIPE_API_BASE: url('Stripe API base URL (stripe-local: http://127.0.0.1:12111).', 'https://api.stripe.com', [
    'http:',
    'https:',
  ]),
  STRIPE_METER_EVENTS_BASE: str(
    "Base URL of the v2 meter event stream; empty: meter-events.stripe.com for api.stripe.com, else STRIPE_API_BASE. Must share STRIPE_API_BASE's protocol and port (the SDK sets those per client).",
    '',
  ),
  STRIPE_TRANSPORT: oneOf(
    '`v2`: meter event stream, 100 events per call (v1 for events the stream refuses). `v1`: one POST /v1/billing/meter_events per event.',
    'v2',
    ['v2', 'v1'] as const,
  ),
  STRIPE_TIMEOUT_MS: int('Timeout of one Stripe request.', 30_000, 100, 300_000),
  STRIPE_MAX_ATTEMPTS: int(
    'Attempts per batch within one pass (429/5xx/timeouts, with backoff and jitter) before the rows wait for the next pass.',
    6,
    1,
    50,
  ),
  STRIPE_RETRY_BASE_MS: int(
    'First retry delay; doubles each attempt (full jitter), capped by STRIPE_RETRY_MAX_MS.',
    500,
    1,
    60_000,
  ),
  STRIPE_RETRY_MAX_MS: int('Largest retry delay.', 30_000, 1, 600_000),
  STRIPE_STREAM_RATE: int(
    'Most meter event stream calls per second from this process (Stripe documents 10,000/s in live mode).',
    5_000,
    1,
    10_000,
  ),
  STRIPE_V1_RATE: int(
    'Most POST /v1/billing/meter_events per second from this process (Stripe documents 1,000/s in live mode).',
    500,
    1,
    1_000,
  ),
  STRIPE_API_RATE: int(
    'Most other Stripe calls per second (sessions, meters, adjustments, summaries; Stripe documents 100/s live, 25/s test).',
    20,
    1,
    100,
  ),
  BILLING_USAGE_SOURCE: oneOf(
    "Where usage totals come from. `rollups`: the aggregator's usage_hourly/usage_daily (read with FINAL), a window pushed only once every aggregator shard has CLOSED it (aggregator_state.closed_before: hours recomputed exactly after AGGREGATOR_CLOSE_AFTER_SECONDS; open hours may still hold duplicates). `raw`: the deduplicated raw events table (no aggregator needed; reads every event of the look-back each pass).",
    'rollups',
    ['rollups', 'raw'] as const,
  ),
  ...aggregatorShardsVar,
  BILLING_WINDOW: oneOf(
    'Size of a pushed window: usage of one workspace, event type and currency (money meters) per hour or per day becomes one meter event.',
    'hour',
    ['hour', 'day'] as const,
  ),
  BILLING_CLOSE_DELAY_SECONDS: int(
    'A window is pushed this long after it ends, so late-shipped events are in it (later arrivals become corrections). With BILLING_USAGE_SOURCE=rollups it is also pushed no earlier than the aggregator closes it (AGGREGATOR_CLOSE_AFTER_SECONDS, default the same 300 s).',
    300,
    0,
    86_400,
  ),
  STRIPE_RESEND_CHECK_HOURS: int(
    "A pending row planned more than this many hours ago is checked against Stripe's meter event summaries before it is sent (again): Stripe dedupes identifiers for at least 24 h only, and an attempt that reached Stripe may have left no trace in the ledger (killed, or COMMIT failed, after Stripe accepted).",
    20,
    1,
    23,
  ),
  BILLING_INTERVAL_MS: int('Pause between passes (plan, then push everything pending).', 30_000, 100, 3_600_000),
  BILLING_BATCH_SIZE: int('Ledger rows claimed per batch (the stream takes at most 100 events per call).', 100, 1, 100),
  BILLING_CONCURRENCY: int('Batches pushed in parallel.', 4, 1, 64),
  BILLING_CLAIM_LEASE_MS: int(
    "How long a batch of ledger rows stays claimed by the replica pushing it (no transaction is held across Stripe calls). Rows of a replica that died are claimed again after it and re-sent under the same identifiers, which Stripe deduplicates. Keep it above a batch's longest push: STRIPE_TIMEOUT_MS × STRIPE_MAX_ATTEMPTS plus backoff.",
    600_000,
    1_000,
    3_600_000,
  ),
  BILLING_DEFAULT_VALUE: oneOf('Meter value of event types not in BILLING_METER_VALUES.', 'gmv_cents', VALUE_FIELDS),
  BILLING_METER_VALUES: meterValues,
  BILLING_ENSURE_METERS: bool(
    'Create a sum meter in Stripe for each pushed event name that has none (`checkout.completed.eur` for money meters; handy with stripe-local; in production meters are set up with their prices). Off: rows for a missing meter are rejected with no_meter and retried once it exists.',
    false,
  ),
  BILLING_RUN_ONCE: bool('Run one pass and exit (cron-style) instead of looping.', false),
} as const;

export type BillingConfig = ConfigOf<typeof billingVars>;

export function loadBillingConfig(env: NodeJS.ProcessEnv = process.env): BillingConfig {
  const cfg = loadConfig(billingVars, env);
  const stream = meterEventsBase(cfg);
  if (stream.protocol !== cfg.STRIPE_API_BASE.protocol || stream.port !== cfg.STRIPE_API_BASE.port) {
    throw new Error('STRIPE_METER_EVENTS_BASE must use the same protocol and port as STRIPE_API_BASE');
  }
  return cfg;
}

export function meterEventsBase(cfg: Pick<BillingConfig, 'STRIPE_METER_EVENTS_BASE' | 'STRIPE_API_BASE'>): URL {
  if (cfg.STRIPE_METER_EVENTS_BASE !== '') return new URL(cfg.STRIPE_METER_EVENTS_BASE);
  if (cfg.STRIPE_API_BASE.hostname === 'api.stripe.com') return new URL('https://meter-events.stripe.com');
  return cfg.STRIPE_API_BASE;
}

export function valueFieldOf(
  cfg: Pick<BillingConfig, 'BILLING_METER_VALUES' | 'BILLING_DEFAULT_VALUE'>,
  eventType: string,
): ValueField {
  return cfg.BILLING_METER_VALUES.get(eventType) ?? cfg.BILLING_DEFAULT_VALUE;
}
