import Stripe from 'stripe';
import { upstreamError } from '@meterd/core/errors';
import type { ControlConfig } from '../config.js';

/** The real SDK, pointed at STRIPE_API_BASE (stripe-local in development and tests). */
export function createStripe(cfg: Pick<ControlConfig, 'STRIPE_SECRET_KEY' | 'STRIPE_API_BASE'>): Stripe | null {
  if (cfg.STRIPE_SECRET_KEY === '') return null;
  const u = cfg.STRIPE_API_BASE;
  const protocol = u.protocol === 'http:' ? 'http' : 'https';
  return new Stripe(cfg.STRIPE_SECRET_KEY, {
    host: u.hostname,
    port: u.port === '' ? (protocol === 'http' ? 80 : 443) : Number(u.port),
    protocol,
    maxNetworkRetries: 2,
    timeout: 10_000,
    telemetry: false,
  });
}

/** Only for verifying incoming webhooks, which needs no key and no network. */
export const stripeOffline = new Stripe('sk_offline_verification_only');

/**
 * Runs a call to Stripe; a failure becomes a retryable 502 `upstream_error` saying what did not
 * happen, with Stripe's error as the cause (logged, never sent to the client).
 */
export async function callStripe<T>(failure: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw upstreamError(failure, err);
  }
}
