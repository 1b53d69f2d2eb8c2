import Stripe from 'stripe';
import { meterEventsBase, type BillingConfig } from '../config.js';

/**
 * The real SDK pointed at STRIPE_API_BASE through its host/port/protocol options. Its own retries
 * are off (maxNetworkRetries 0): the sender retries with its own pacing and reads
 * Stripe-Should-Retry itself, and the SDK does not retry 429s anyway.
 */
export function createStripe(cfg: BillingConfig): Stripe {
  const api = cfg.STRIPE_API_BASE;
  const https = api.protocol === 'https:';
  return new Stripe(cfg.STRIPE_SECRET_KEY, {
    host: api.hostname,
    port: api.port === '' ? (https ? 443 : 80) : Number(api.port),
    protocol: https ? 'https' : 'http',
    maxNetworkRetries: 0,
    timeout: cfg.STRIPE_TIMEOUT_MS,
    telemetry: false,
  });
}

/** The SDK sends the stream to meter-events.stripe.com; a per-request `host` redirects it (e.g. to stripe-local). */
export function streamHost(cfg: BillingConfig): string {
  return meterEventsBase(cfg).hostname;
}
