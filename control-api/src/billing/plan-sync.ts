import type Stripe from 'stripe';
import { isPaidPlan, type Plan } from '@meterd/core/plans';
import { inTransaction, type Pool } from '@meterd/core/store';

/** Subscription states in which the paid plan applies; others (canceled, unpaid, incomplete…) fall back to free. */
const LIVE = new Set(['active', 'trialing', 'past_due']);

export type SyncOutcome = 'applied' | 'duplicate' | 'stale' | 'ignored';

/** Reads a subscription from Stripe (checkout.session.completed names it by id only). */
export type FetchSubscription = (id: string) => Promise<Stripe.Subscription>;

function planOf(sub: Stripe.Subscription, deleted: boolean): Plan | null {
  if (deleted || !LIVE.has(sub.status)) return 'free';
  for (const item of sub.items?.data ?? []) {
    const key = item.price?.lookup_key;
    if (isPaidPlan(key)) return key;
  }
  return null;
}

const idOf = (x: string | { id: string } | null): string | null => (x === null || typeof x === 'string' ? x : x.id);

/** What an event says about a plan: the subscription, and the workspace it names besides its customer. */
interface Change {
  sub: Stripe.Subscription;
  deleted: boolean;
  workspaceId: string | null;
}

/**
 * The change an event carries, if any. `checkout.session.completed` names its subscription by id,
 * so it is read from Stripe first (outside the transaction: a failure answers 5xx and Stripe
 * retries the event). Only a paid subscription session counts.
 */
async function changeOf(event: Stripe.Event, fetchSubscription: FetchSubscription | null): Promise<Change | null> {
  if (event.type.startsWith('customer.subscription.')) {
    const sub = event.data.object as Stripe.Subscription;
    return {
      sub,
      deleted: event.type === 'customer.subscription.deleted',
      workspaceId: sub.metadata?.workspace_id ?? null,
    };
  }
  if (event.type === 'checkout.session.completed') {
    const s = event.data.object as Stripe.Checkout.Session;
    const subId = idOf(s.subscription);
    if (
      s.mode !== 'subscription' ||
      subId === null ||
      (s.payment_status !== 'paid' && s.payment_status !== 'no_payment_required')
    )
      return null;
    if (fetchSubscription === null) return null;
    const sub =
      typeof s.subscription === 'object' && s.subscription !== null ? s.subscription : await fetchSubscription(subId);
    return { sub, deleted: false, workspaceId: s.client_reference_id ?? sub.metadata?.workspace_id ?? null };
  }
  return null;
}

/**
 * Applies a verified Stripe event to a workspace's plan. The event id is recorded in the same
 * transaction, so a redelivered event changes nothing more; the plan is only written when the
 * event is not older than the one that last set it (Stripe does not deliver in order).
 */
export async function applyStripeEvent(
  pool: Pool,
  event: Stripe.Event,
  changed: string[] = [],
  fetchSubscription: FetchSubscription | null = null,
): Promise<SyncOutcome> {
  const change = await changeOf(event, fetchSubscription);
  return inTransaction(pool, async (c) => {
    const { rowCount } = await c.query(
      'INSERT INTO stripe_events (id, type, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [event.id, event.type, event.created],
    );
    if (rowCount === 0) return 'duplicate';
    if (change === null) return 'ignored';
    const plan = planOf(change.sub, change.deleted);
    if (plan === null) return 'ignored';
    const { rows } = await c.query<{ id: string }>(
      `UPDATE workspaces SET plan = $1, plan_event_created = $2
        WHERE (stripe_customer_id = $3 OR id = $4
               OR live_workspace_id IN (SELECT id FROM workspaces WHERE stripe_customer_id = $3 OR id = $4))
          AND (plan_event_created IS NULL OR plan_event_created <= $2)
        RETURNING id`,
      [plan, event.created, idOf(change.sub.customer), change.workspaceId],
    );
    for (const r of rows) changed.push(r.id);
    return rows.length === 0 ? 'stale' : 'applied';
  });
}
