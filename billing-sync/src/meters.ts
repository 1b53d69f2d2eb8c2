import type Stripe from 'stripe';

/**
 * The Stripe meter a billed key goes to. Money meters (gmv_cents) are per currency: the event type,
 * a dot and the lowercase ISO 4217 code (`checkout.completed.eur`), so amounts in different
 * currencies never add up in one meter. Unit meters (quantity) have no currency (''): the event type.
 */
export function meterEventName(eventType: string, currency: string): string {
  return currency === '' ? eventType : `${eventType}.${currency.toLowerCase()}`;
}

/** event_name → meter id, for the active meters. */
export async function activeMeters(stripe: Stripe): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const m of stripe.billing.meters.list({ status: 'active', limit: 100 })) out.set(m.event_name, m.id);
  return out;
}

/** Creates a sum meter for each event name that has no active meter (BILLING_ENSURE_METERS); adds it to `known`. */
export async function ensureMeters(
  stripe: Stripe,
  eventNames: Iterable<string>,
  known: Map<string, string>,
): Promise<string[]> {
  const created: string[] = [];
  for (const name of eventNames) {
    if (known.has(name)) continue;
    const m = await stripe.billing.meters.create({
      display_name: name,
      event_name: name,
      default_aggregation: { formula: 'sum' },
    });
    known.set(name, m.id);
    created.push(name);
  }
  return created;
}
