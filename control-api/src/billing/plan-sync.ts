import type Stripe from 'stripe';
import { inTransaction, isPlan, type Plan, type Pool } from '@meterd/core';

/** Price lookup keys that name a paid plan; anything else leaves the plan alone. */
const PAID = new Set<Plan>(['growth', 'scale', 'enterprise']);
/** Subscription states in which the paid plan applies; others fall back to free. */
const LIVE = new Set(['active', 'trialing', 'past_due']);

export type SyncOutcome = 'applied' | 'duplicate' | 'stale' | 'ignored';

function planOf(sub: Stripe.Subscription, deleted: boolean): Plan | null {
  if (deleted || !LIVE.has(sub.status)) return 'free';
  for (const item of sub.items?.data ?? []) {
    const key = item.price?.lookup_key;
    if (isPlan(key) && PAID.has(key)) return key;
  }
  return null;
}

/**
 * Applies a verified Stripe event to a workspace's plan. The event id is recorded in the same
 * transaction, so a redelivered event changes nothing more; the plan is only written when the
 * event is not older than the one that last set it (Stripe does not deliver in order).
 */
export async function applyStripeEvent(pool: Pool, event: Stripe.Event, changed: string[] = []): Promise<SyncOutcome> {
  return inTransaction(pool, async (c) => {
    const { rowCount } = await c.query('INSERT INTO stripe_events (id, type, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [event.id, event.type, event.created]);
    if (rowCount === 0) return 'duplicate';
    if (!event.type.startsWith('customer.subscription.')) return 'ignored';
    const sub = event.data.object as Stripe.Subscription;
    const plan = planOf(sub, event.type === 'customer.subscription.deleted');
    if (plan === null) return 'ignored';
    const customer = typeof sub.customer === 'string' ? sub.customer : sub.customer.id;
    const { rowCount: updated, rows } = await c.query<{ id: string }>(
      `UPDATE workspaces SET plan = $1, plan_event_created = $2
        WHERE (stripe_customer_id = $3 OR id = $4) AND (plan_event_created IS NULL OR plan_event_created <= $2)
        RETURNING id`,
      [plan, event.created, customer, sub.metadata?.workspace_id ?? null],
    );
    for (const r of rows) changed.push(r.id);
    return updated === 0 && rows.length === 0 ? 'stale' : 'applied';
  });
}
