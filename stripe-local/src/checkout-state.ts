import type Stripe from 'stripe';

/** A Checkout Session and what Stripe keeps beside it (its line items are not part of the object unless expanded). */
export interface StoredSession {
  session: Stripe.Checkout.Session;
  items: { price: string; quantity: number }[];
  /** `subscription_data[metadata]`: copied onto the subscription the session creates. */
  subscriptionMetadata: Record<string, string>;
}

/** stripe-local's billing catalogue and subscriptions, stored as Stripe's own objects. */
export interface CheckoutState {
  products: Record<string, Stripe.Product>;
  prices: Record<string, Stripe.Price>;
  sessions: Record<string, StoredSession>;
  subscriptions: Record<string, Stripe.Subscription>;
}
