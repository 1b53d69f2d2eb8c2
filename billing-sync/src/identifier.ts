import { createHash } from 'node:crypto';

/**
 * The meter event identifier of one ledger row: `ws:event_type:window_start:revision`, with the
 * currency after the event type for money meters (`ws:event_type:EUR:window_start:revision`). The
 * same row always yields the same identifier, so a re-send after a crash meets Stripe's identifier
 * dedupe. Stripe caps identifiers at 100 characters: a long event type is replaced by its hash.
 */
export function meterIdentifier(
  workspaceId: string,
  eventType: string,
  currency: string,
  windowStart: number,
  revision: number,
): string {
  const cur = currency === '' ? '' : `:${currency}`;
  const full = `${workspaceId}:${eventType}${cur}:${windowStart}:${revision}`;
  if (full.length <= 100) return full;
  const h = createHash('sha256').update(eventType).digest('hex').slice(0, 24);
  return `${workspaceId}:${h}${cur}:${windowStart}:${revision}`;
}
