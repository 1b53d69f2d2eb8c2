import type Stripe from 'stripe';
import { upstreamError, type Workspace } from '@meterd/core';

/** The workspace's Stripe customer. Idempotent per workspace, so a retried request never makes two. */
export async function createStripeCustomer(
  stripe: Stripe,
  w: Pick<Workspace, 'id' | 'slug' | 'display_name' | 'contact_email'>,
): Promise<string> {
  try {
    const customer = await stripe.customers.create(
      {
        name: w.display_name,
        ...(w.contact_email ? { email: w.contact_email } : {}),
        metadata: { workspace_id: w.id, slug: w.slug },
      },
      { idempotencyKey: `meterd-signup-${w.id}` },
    );
    return customer.id;
  } catch (err) {
    throw upstreamError('creating the Stripe customer failed; nothing was created, retry later', err);
  }
}
