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

/**
 * The ledger key of a meter's group: its values in group_by order as a JSON array (exact, any
 * characters). '' is the built-in totals' key, which no meter group takes (`[]` for no group_by).
 */
export const meterGroupKey = (group: readonly string[]): string => JSON.stringify(group);

/**
 * What a meter event carries for an event that lacked a group_by property (its group value '').
 * Stripe requires every dimension_payload_key in the payload, and an empty form value reads as
 * absent on v1; such events are billed under this value instead.
 */
export const NO_GROUP_VALUE = '(none)';

/** A group's meter event dimensions: each group_by property (a dimension_payload_key) → its value. */
export function meterDimensions(groupBy: readonly string[], group: readonly string[]): Record<string, string> {
  return Object.fromEntries(
    groupBy.map((k, i) => [k, group[i] === '' || group[i] === undefined ? NO_GROUP_VALUE : group[i]!]),
  );
}

/**
 * Creates a sum meter for each event name that has no active meter (BILLING_ENSURE_METERS), with
 * its dimension_payload_keys (a user-defined meter's group_by); adds it to `known`.
 */
export async function ensureMeters(
  stripe: Stripe,
  eventNames: ReadonlyMap<string, readonly string[]>,
  known: Map<string, string>,
): Promise<string[]> {
  const created: string[] = [];
  for (const [name, dimensions] of eventNames) {
    if (known.has(name)) continue;
    const params: Stripe.Billing.MeterCreateParams & { dimension_payload_keys?: string[] } = {
      display_name: name,
      event_name: name,
      default_aggregation: { formula: 'sum' },
    };
    // stripe-node 17's types predate dimension_payload_keys; the SDK sends any parameter it is given.
    if (dimensions.length > 0) params.dimension_payload_keys = [...dimensions];
    const m = await stripe.billing.meters.create(params);
    known.set(name, m.id);
    created.push(name);
  }
  return created;
}
