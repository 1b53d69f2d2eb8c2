import type Stripe from 'stripe';
import { markRejectedRows, type MeterErrorOutcome, type MeterErrorReport } from '@meterd/core/billing';
import { ApiError } from '@meterd/core/errors';
import { inTransaction, type Pool } from '@meterd/core/store';
import { callStripe } from './stripe-client.js';

/** A v2 thin event as delivered: a reference only; the `data` is fetched from /v2/core/events/:id. */
export interface ThinEvent {
  id: string;
  object: 'v2.core.event';
  type: string;
  created: string;
}

/**
 * Applies a meter error report delivered as a thin event: fetches the full event (Stripe sends
 * only its id and type, and the fetch is what proves it came from Stripe's account rather than a
 * replayed body) and marks the ledger rows it names rejected, once per event id.
 */
export async function applyMeterErrorEvent(
  pool: Pool,
  stripe: Stripe | null,
  thin: ThinEvent,
): Promise<MeterErrorOutcome | 'duplicate'> {
  if (stripe === null)
    throw new ApiError(
      'not_configured',
      'Stripe is not configured on this server: meter error reports cannot be fetched',
    );
  const full = await callStripe('Stripe did not return the reported event; it will be delivered again', () =>
    stripe.v2.core.events.retrieve(thin.id),
  );
  const data = (full as unknown as { data?: MeterErrorReport }).data;
  if (data?.reason?.error_types === undefined)
    throw new ApiError('invalid_field', 'the meter error report has no reason.error_types', 'data');
  return inTransaction(pool, async (c) => {
    const created = Math.floor(Date.parse(thin.created) / 1000) || 0;
    const { rowCount } = await c.query(
      'INSERT INTO stripe_events (id, type, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [thin.id, thin.type, created],
    );
    if (rowCount === 0) return 'duplicate';
    return markRejectedRows(c, data);
  });
}
