import type Stripe from 'stripe';

/** How a failed Stripe call is handled. */
export type Verdict =
  | { kind: 'duplicate' }
  | { kind: 'already_cancelled' }
  | { kind: 'session_expired' }
  | { kind: 'retry' }
  | { kind: 'permanent'; message: string };

/**
 * Stripe's guidance: retry 429 and 5xx and network errors with backoff; obey Stripe-Should-Retry
 * when present. "An event already exists with identifier …" means Stripe has this event: it is
 * delivered, not failed (it comes with Stripe-Should-Retry: false, so it is checked first).
 */
export function classify(err: unknown): Verdict {
  const e = err as Partial<Stripe.errors.StripeError> & { message?: string };
  const message = e?.message ?? String(err);
  if (/already exists with identifier/i.test(message) || e?.code === 'duplicate_meter_event')
    return { kind: 'duplicate' };
  if (/already been cancel/i.test(message) || e?.code === 'meter_event_already_canceled')
    return { kind: 'already_cancelled' };
  if (e?.code === 'billing_meter_event_session_expired') return { kind: 'session_expired' };
  const should = e?.headers?.['stripe-should-retry'];
  if (should === 'true') return { kind: 'retry' };
  if (should === 'false') return { kind: 'permanent', message };
  const status = e?.statusCode;
  if (status === undefined || status === 429 || status === 409 || status >= 500) return { kind: 'retry' };
  return { kind: 'permanent', message };
}

/**
 * Error-report codes of the refusals whose cause billing-sync can see fixed by itself (ledger.ts
 * SELF_CHECKED): a missing customer, a missing or archived meter.
 */
export type SelfCheckedCause = 'meter_event_customer_not_found' | 'no_meter' | 'archived_meter';

/**
 * The cause of a synchronous refusal that names a missing customer or meter, in the code Stripe's
 * error reports use for it, so the row is rejected (and retried once the cause is fixed) rather than
 * failed. Stripe says so with that code (v2's synchronous API), or with v1's generic
 * `resource_missing` on the customer parameter ("No such customer"), or in v1's message for a
 * missing meter ("No active meter was found for event_name …").
 */
export function selfCheckedCause(err: unknown): SelfCheckedCause | undefined {
  const e = err as Partial<Stripe.errors.StripeError> & { message?: string };
  const code = e?.code;
  if (code === 'meter_event_customer_not_found' || code === 'no_meter' || code === 'archived_meter') return code;
  const message = e?.message ?? '';
  if (
    code === 'resource_missing' &&
    (/stripe_customer_id|customer/i.test(e?.param ?? '') || /no such customer/i.test(message))
  )
    return 'meter_event_customer_not_found';
  if (/no active meter/i.test(message)) return 'no_meter';
  return undefined;
}

/** Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt)]. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number): number {
  return Math.random() * Math.min(maxMs, baseMs * 2 ** attempt);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
