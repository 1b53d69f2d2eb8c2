import type { Pool } from '../store/postgres.js';
import { METER_COLUMNS, meterFromRow, type MeterAggregation, type MeterDefinition } from './definition.js';

/**
 * How a meter with a `stripe_event_name` is billed (docs/meters.md "Billing a meter", docs/billing.md).
 * Stripe's meters aggregate a billing period with one of three formulas: `sum`, `count` (of meter
 * events, not of their values) and `last`. billing-sync pushes one meter event per closed window
 * and group, and corrects a window later by pushing the difference: only an aggregation whose
 * period value is the sum of its windows' values can be billed that way.
 *
 * - `sum` → Stripe `sum`: a period is the sum of its windows; a correction is the difference.
 * - `count` → Stripe `sum` too: billing-sync sends each window's number of events as the value,
 *   so corrections add up; Stripe's `count` would count billing-sync's meter events instead.
 * - `max`, `unique_count`, `latest` are refused: a month's maximum (or distinct count) is not the
 *   sum of its hours', `last` would need exactly one event per billing period, sent after the
 *   period closes, and Stripe has no `max` or distinct count. billing-sync cannot know customers'
 *   billing periods (subscriptions are Stripe's), so it cannot send them correctly.
 */
export const STRIPE_FORMULA: Readonly<Partial<Record<MeterAggregation, 'sum'>>> = Object.freeze({
  sum: 'sum',
  count: 'sum',
});

/** Payload keys billing-sync already uses in every meter event: a group_by property may not take them. */
export const STRIPE_RESERVED_PAYLOAD_KEYS: readonly string[] = ['stripe_customer_id', 'value'];

/** Why a meter cannot be pushed to Stripe, with the field to name in a 400; undefined when it can. */
export function stripeBillingProblem(
  m: Pick<MeterDefinition, 'aggregation' | 'group_by'>,
): { field: string; message: string } | undefined {
  if (STRIPE_FORMULA[m.aggregation] === undefined)
    return {
      field: 'stripe_event_name',
      message: `a ${m.aggregation} meter cannot be billed to Stripe: Stripe meters sum, count or take the last value of a billing period, and a ${m.aggregation} over a period is not the sum of its windows (docs/meters.md); only sum and count meters take a stripe_event_name`,
    };
  const reserved = m.group_by.find((k) => STRIPE_RESERVED_PAYLOAD_KEYS.includes(k));
  if (reserved !== undefined)
    return {
      field: 'group_by',
      message: `group_by property ${reserved} would collide with the meter event payload key ${reserved} billing-sync sends to Stripe; rename the property to bill this meter`,
    };
  return undefined;
}

/** The live meters that push to Stripe (a stripe_event_name), every workspace, ordered by id. */
export async function billedMeters(db: Pool): Promise<MeterDefinition[]> {
  const { rows } = await db.query<Parameters<typeof meterFromRow>[0]>(
    `SELECT ${METER_COLUMNS} FROM meters WHERE deleted_at IS NULL AND stripe_event_name IS NOT NULL ORDER BY id`,
  );
  return rows.map(meterFromRow);
}
