import { ConfigError, loadConfig, str, int, bool, oneOf, type ConfigOf } from '@meterd/core/config';

export const stripeLocalVars = {
  STRIPE_LOCAL_HOST: str('Address stripe-local listens on.', '127.0.0.1'),
  STRIPE_LOCAL_PORT: int(
    'Port of stripe-local (Stripe API v1 and v2, and meter-events stream, on one port).',
    12111,
    0,
    65535,
  ),
  STRIPE_LOCAL_API_KEY: str('Secret key clients must send; empty accepts any `sk_test_…`/`sk_live_…` key.', '', true),
  STRIPE_LOCAL_STATE_FILE: str(
    'JSON file the state is loaded from at start and saved to (every 2 s when changed, and on SIGTERM); empty keeps state in memory only.',
    '',
  ),
  STRIPE_LOCAL_RATE_METER_EVENTS: int(
    'Requests per second accepted on POST /v1/billing/meter_events (Stripe documents 1,000/s in live mode); beyond: 429 rate_limit.',
    1000,
    1,
    1_000_000,
  ),
  STRIPE_LOCAL_RATE_STREAM: int(
    'Requests per second accepted on POST /v2/billing/meter_event_stream (Stripe documents 10,000/s in live mode).',
    10_000,
    1,
    1_000_000,
  ),
  STRIPE_LOCAL_RATE_DEFAULT: int(
    'Requests per second accepted on every other API route (Stripe documents 100/s in live mode, 25/s in test mode).',
    100,
    1,
    1_000_000,
  ),
  STRIPE_LOCAL_RATE_TEST_MODE: int(
    'Requests per second for test keys (`sk_test_…`/`rk_test_…`) on every route but the stream, meter events included (Stripe documents 25/s in test mode); 0 gives test keys the live-mode limits above (load benchmark, scale tests).',
    25,
    0,
    1_000_000,
  ),
  STRIPE_LOCAL_WEBHOOK_URL: str(
    "Endpoint stripe-local POSTs the events it emits to, like a Stripe account's webhook endpoint (e.g. the control API's /webhooks/stripe): v1 snapshot events (customer.*, checkout.session.completed, customer.subscription.*) and v2 thin events (v1.billing.meter.error_report_triggered); empty: events are only stored (GET /v1/events, /v2/core/events).",
    '',
  ),
  STRIPE_LOCAL_WEBHOOK_SECRET: str(
    'Signing secret (`whsec_…`) of those deliveries; the receiver verifies with the same value. Required with STRIPE_LOCAL_WEBHOOK_URL.',
    '',
    true,
  ),
  STRIPE_LOCAL_ERROR_REPORT_WINDOW_MS: int(
    'Validation window of a meter error report: events rejected asynchronously within it are reported together, one event per meter, when it ends (Stripe: about 10 s).',
    10_000,
    10,
    600_000,
  ),
  STRIPE_LOCAL_CHECK_CUSTOMERS: bool(
    'Reject (asynchronously, reported as meter_event_customer_not_found) meter events for customers stripe-local does not know, as Stripe does; false accepts synthetic customer ids (scale tests).',
    true,
  ),
  STRIPE_LOCAL_RECORD_DIR: str(
    'Directory where every JSON object stripe-local returns is appended, one file per process (conformance test); empty: off.',
    '',
  ),
  STRIPE_LOCAL_IDENTIFIER_WINDOW_HOURS: int(
    'How long a meter event identifier is remembered for dedupe (Stripe: at least 24 hours).',
    24,
    1,
    24 * 40,
  ),
  STRIPE_LOCAL_SESSION_TTL_SECONDS: int(
    'Lifetime of a v2 meter event session token (Stripe: 15 minutes).',
    900,
    1,
    86_400,
  ),
  STRIPE_LOCAL_FAULTS: str(
    'Initial fault switches as JSON, same shape as POST /_faults (e.g. {"error_rate":0.1}).',
    '{}',
  ),
  STRIPE_LOCAL_SEED_PRICES: str(
    'Monthly USD prices created at start unless an active price has the lookup key, as lookup_key:cents pairs (e.g. growth:4900,scale:29900).',
    '',
  ),
  LOG_LEVEL: oneOf('pino log level.', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
} as const;

export type StripeLocalConfig = ConfigOf<typeof stripeLocalVars>;

export function loadStripeLocalConfig(env: NodeJS.ProcessEnv = process.env): StripeLocalConfig {
  const cfg = loadConfig(stripeLocalVars, env);
  if (cfg.STRIPE_LOCAL_WEBHOOK_URL !== '' && cfg.STRIPE_LOCAL_WEBHOOK_SECRET === '') {
    throw new ConfigError([
      'STRIPE_LOCAL_WEBHOOK_SECRET is required when STRIPE_LOCAL_WEBHOOK_URL is set: webhooks are always signed',
    ]);
  }
  return cfg;
}
