import type Stripe from 'stripe';

/** Creates a sum meter for each event type that has no active meter (BILLING_ENSURE_METERS). */
export async function ensureMeters(stripe: Stripe, eventTypes: Iterable<string>, known: Set<string>): Promise<string[]> {
  const wanted = [...eventTypes].filter((t) => !known.has(t));
  if (wanted.length === 0) return [];
  for await (const m of stripe.billing.meters.list({ status: 'active', limit: 100 })) known.add(m.event_name);
  const created: string[] = [];
  for (const t of wanted) {
    if (known.has(t)) continue;
    await stripe.billing.meters.create({ display_name: t, event_name: t, default_aggregation: { formula: 'sum' } });
    known.add(t);
    created.push(t);
  }
  return created;
}

/** event_name → meter id, for the active meters (reconciliation reads summaries per meter). */
export async function meterIds(stripe: Stripe): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const m of stripe.billing.meters.list({ status: 'active', limit: 100 })) out.set(m.event_name, m.id);
  return out;
}
