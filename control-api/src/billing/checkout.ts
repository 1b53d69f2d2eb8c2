import type Stripe from 'stripe';
import { ApiError, upstreamError } from '@meterd/core/errors';
import { type PaidPlan } from '@meterd/core/plans';
import { callStripe } from './stripe-client.js';

/**
 * Buying a paid plan: a Stripe Checkout Session in subscription mode for the plan's price. The plan
 * itself changes only when Stripe's signed webhook reports the subscription (plan-sync.ts), never
 * because a session was created. Prices are the operator's: one active price per paid plan, found
 * by `lookup_key` = the plan's name (growth, scale, enterprise); a missing one is a clear error.
 */
export interface CheckoutTarget {
  workspaceId: string;
  customerId: string;
  plan: PaidPlan;
  successUrl: string;
  cancelUrl: string;
}

export async function createPlanCheckout(stripe: Stripe, t: CheckoutTarget): Promise<{ id: string; url: string }> {
  const price = await priceOf(stripe, t.plan);
  const session = await callStripe('Stripe did not create a Checkout Session; nothing was changed, retry later', () =>
    stripe.checkout.sessions.create({
      mode: 'subscription',
      customer: t.customerId,
      client_reference_id: t.workspaceId,
      line_items: [{ price, quantity: 1 }],
      metadata: { workspace_id: t.workspaceId, plan: t.plan },
      // On the subscription too: its customer.subscription.* events then name the workspace.
      subscription_data: { metadata: { workspace_id: t.workspaceId } },
      success_url: t.successUrl,
      cancel_url: t.cancelUrl,
    }),
  );
  if (session.url === null) throw upstreamError('Stripe returned a Checkout Session without a URL');
  return { id: session.id, url: session.url };
}

async function priceOf(stripe: Stripe, plan: PaidPlan): Promise<string> {
  const prices = await callStripe("looking up the plan's Stripe price failed; retry later", () =>
    stripe.prices.list({ lookup_keys: [plan], active: true, limit: 1 }),
  );
  const price = prices.data[0];
  if (price === undefined) {
    throw new ApiError(
      'not_configured',
      `no active Stripe price has lookup_key "${plan}": the operator must create one for this plan`,
    );
  }
  return price.id;
}

/** Where Stripe sends the customer back: the dashboard's billing page, told how it went. */
export function returnUrls(publicBase: string, workspaceId: string): { successUrl: string; cancelUrl: string } {
  const at = (outcome: string) =>
    new URL(`/dashboard/billing?workspace=${workspaceId}&checkout=${outcome}`, publicBase).toString();
  return { successUrl: at('success'), cancelUrl: at('cancel') };
}
