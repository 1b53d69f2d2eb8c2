import type Stripe from 'stripe';
import { type Workspace } from '@meterd/core/store';
import { callStripe } from './stripe-client.js';

/** The workspace's Stripe customer. Idempotent per workspace, so a retried request never makes two. */
export async function createStripeCustomer(
  stripe: Stripe,
  w: Pick<Workspace, 'id' | 'slug' | 'display_name' | 'contact_email'>,
): Promise<string> {
  const customer = await callStripe('creating the Stripe customer failed; nothing was created, retry later', () =>
    stripe.customers.create(
      {
        name: w.display_name,
        ...(w.contact_email ? { email: w.contact_email } : {}),
        metadata: { workspace_id: w.id, slug: w.slug },
      },
      { idempotencyKey: `meterd-signup-${w.id}` },
    ),
  );
  return customer.id;
}
