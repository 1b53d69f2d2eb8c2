import { ConfigError } from '@meterd/core/config';
import type { ServiceSpec } from '@meterd/core/service';
import { loadStripeLocalConfig, type StripeLocalConfig } from './config.js';
import { parsePriceSeeds, type PriceSeed } from './routes-checkout.js';
import { startStripeLocal, type StripeLocal } from './server.js';

type Config = StripeLocalConfig & { faults: Record<string, unknown>; prices: PriceSeed[] };

/** stripe-local: a Stripe-compatible test double for the billing endpoints meterd uses. */
export const stripeLocalService: ServiceSpec<Config, StripeLocal> = {
  name: 'stripe-local',
  loadConfig(env) {
    const cfg = loadStripeLocalConfig(env);
    try {
      const faults = JSON.parse(cfg.STRIPE_LOCAL_FAULTS) as Record<string, unknown>;
      return { ...cfg, faults, prices: parsePriceSeeds(cfg.STRIPE_LOCAL_SEED_PRICES) };
    } catch (err) {
      throw new ConfigError([`STRIPE_LOCAL_FAULTS or STRIPE_LOCAL_SEED_PRICES: ${(err as Error).message}`]);
    }
  },
  start: async (cfg, { log, draining }) => {
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
      faults: cfg.faults,
      rateTestMode: cfg.STRIPE_LOCAL_RATE_TEST_MODE,
      webhookUrl: cfg.STRIPE_LOCAL_WEBHOOK_URL,
      webhookSecret: cfg.STRIPE_LOCAL_WEBHOOK_SECRET,
      errorReportWindowMs: cfg.STRIPE_LOCAL_ERROR_REPORT_WINDOW_MS,
      checkCustomers: cfg.STRIPE_LOCAL_CHECK_CUSTOMERS,
      recordDir: cfg.STRIPE_LOCAL_RECORD_DIR,
      onWebhookError: (e) => log.warn(e, 'webhook delivery failed'),
      seedPrices: cfg.prices,
      draining,
    });
    // The port line is parsed by tests that start this process with STRIPE_LOCAL_PORT=0.
    log.info({ url: server.url }, 'stripe-local listening');
    return server;
  },
};
