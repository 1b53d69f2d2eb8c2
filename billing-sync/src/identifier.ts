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

/**
 * The identifier of one meter ledger row: `ws:m:<meter id>:<group hash>[:CUR]:window_start:revision`.
 * The group is hashed (sha256 of its group_key, 16 hex): group values are free text of up to 256
 * characters each, and two groups of one window must never share an identifier, or Stripe would
 * drop the second as a duplicate. Past 100 characters the workspace and meter are hashed too.
 */
export function meterGroupIdentifier(
  workspaceId: string,
  meterId: string,
  groupKey: string,
  currency: string,
  windowStart: number,
  revision: number,
): string {
  const cur = currency === '' ? '' : `:${currency}`;
  const g = createHash('sha256').update(groupKey).digest('hex').slice(0, 16);
  const full = `${workspaceId}:m:${meterId}:${g}${cur}:${windowStart}:${revision}`;
  if (full.length <= 100) return full;
  const h = createHash('sha256').update(`${workspaceId}\n${meterId}`).digest('hex').slice(0, 32);
  return `m:${h}:${g}${cur}:${windowStart}:${revision}`;
}
