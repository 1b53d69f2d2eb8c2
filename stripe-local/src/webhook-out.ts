import { stripeSignature } from './signature.js';
import { stripeId } from './state.js';

/** Stripe's API version stripe-local speaks (also in every response's Stripe-Version header). */
export const API_VERSION = '2024-09-30.acacia';

/** One Stripe event as Stripe serialises it: `data.object` is the object after the change. */
export function stripeEventBody(type: string, object: unknown, previousAttributes?: Record<string, unknown>): { id: string; body: string } {
  const id = stripeId('evt');
  const body = JSON.stringify({
    id, object: 'event', api_version: API_VERSION, created: Math.floor(Date.now() / 1000), livemode: false,
    pending_webhooks: 1, request: { id: null, idempotency_key: null }, type,
    data: { object, ...(previousAttributes ? { previous_attributes: previousAttributes } : {}) },
  });
  return { id, body };
}

export interface Delivery { id: string; type: string; status: number | null; error?: string }

/** POSTs one event body signed as Stripe signs webhooks; a network failure is a status of null. */
export async function postSigned(url: string, secret: string, id: string, type: string, body: string): Promise<Delivery> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': stripeSignature(secret, body), 'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)' },
      body,
      signal: AbortSignal.timeout(10_000),
    });
    await res.arrayBuffer();
    return { id, type, status: res.status };
  } catch (err) {
    return { id, type, status: null, error: (err as Error).message };
  }
}

export interface WebhookEndpoint { url: string; secret: string }

const RETRY_DELAYS_MS = [250, 1_000, 4_000];

/**
 * The webhook endpoint stripe-local notifies of billing changes (STRIPE_LOCAL_WEBHOOK_URL), as a
 * Stripe account's endpoint: events leave one at a time in the order they happened, a failed
 * delivery is retried a few times (Stripe retries for days; locally the receiver is usually just
 * starting), and close() waits for what is queued. Without an endpoint nothing is sent.
 */
export class WebhookOut {
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  /** The last 100 outcomes, for /_state and tests. */
  readonly recent: Delivery[] = [];

  constructor(private readonly endpoint: WebhookEndpoint | null) {}

  /** Queues one event; resolves with its final delivery outcome, or null when no endpoint is set. */
  emit(type: string, object: unknown): Promise<Delivery | null> {
    const endpoint = this.endpoint;
    if (endpoint === null) return Promise.resolve(null);
    const { id, body } = stripeEventBody(type, object);
    const p = this.chain.then(() => this.deliver(endpoint, id, type, body));
    this.chain = p;
    return p;
  }

  private async deliver(e: WebhookEndpoint, id: string, type: string, body: string): Promise<Delivery> {
    let d = await postSigned(e.url, e.secret, id, type, body);
    for (const delay of RETRY_DELAYS_MS) {
      if (this.stopped || (d.status !== null && d.status < 500)) break;
      await new Promise((r) => setTimeout(r, delay));
      d = await postSigned(e.url, e.secret, id, type, body);
    }
    this.recent.push(d);
    if (this.recent.length > 100) this.recent.shift();
    return d;
  }

  /** Stops retrying and waits for the delivery in flight. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.chain;
  }
}
