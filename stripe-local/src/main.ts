import { ConfigError, createLogger } from '@meterd/core';
import { loadStripeLocalConfig, type StripeLocalConfig } from './config.js';
import { startStripeLocal } from './server.js';
import { parsePriceSeeds, type PriceSeed } from './routes-checkout.js';

/** stripe-local: a Stripe-compatible test double for the billing endpoints meterd uses. */
let cfg: StripeLocalConfig;
let faults: Record<string, unknown>;
let prices: PriceSeed[];
try {
  cfg = loadStripeLocalConfig();
  faults = JSON.parse(cfg.STRIPE_LOCAL_FAULTS) as Record<string, unknown>;
  prices = parsePriceSeeds(cfg.STRIPE_LOCAL_SEED_PRICES);
} catch (err) {
  console.error(
    err instanceof ConfigError
      ? `stripe-local: ${err.message}`
      : `stripe-local: STRIPE_LOCAL_FAULTS or STRIPE_LOCAL_SEED_PRICES: ${(err as Error).message}`,
  );
  process.exit(1);
}
const log = createLogger('stripe-local', cfg.LOG_LEVEL);
const server = await startStripeLocal({
  host: cfg.STRIPE_LOCAL_HOST,
  port: cfg.STRIPE_LOCAL_PORT,
  apiKey: cfg.STRIPE_LOCAL_API_KEY,
  stateFile: cfg.STRIPE_LOCAL_STATE_FILE,
  rateMeterEvents: cfg.STRIPE_LOCAL_RATE_METER_EVENTS,
  rateStream: cfg.STRIPE_LOCAL_RATE_STREAM,
  rateDefault: cfg.STRIPE_LOCAL_RATE_DEFAULT,
  identifierWindowHours: cfg.STRIPE_LOCAL_IDENTIFIER_WINDOW_HOURS,
  sessionTtlSeconds: cfg.STRIPE_LOCAL_SESSION_TTL_SECONDS,
  faults,
  rateTestMode: cfg.STRIPE_LOCAL_RATE_TEST_MODE,
  webhookUrl: cfg.STRIPE_LOCAL_WEBHOOK_URL,
  webhookSecret: cfg.STRIPE_LOCAL_WEBHOOK_SECRET,
  errorReportWindowMs: cfg.STRIPE_LOCAL_ERROR_REPORT_WINDOW_MS,
  checkCustomers: cfg.STRIPE_LOCAL_CHECK_CUSTOMERS,
  recordDir: cfg.STRIPE_LOCAL_RECORD_DIR,
  onWebhookError: (e) => log.warn(e, 'webhook delivery failed'),
  seedPrices: prices,
});
// The port line is parsed by tests that start this process with STRIPE_LOCAL_PORT=0.
log.info({ url: server.url }, 'stripe-local listening');

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping stripe-local');
  await server.close();
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
