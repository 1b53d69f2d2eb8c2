import type { Pool, PoolClient } from '../store/postgres.js';
import { PG_TABLES } from '../contracts/tables.js';

/**
 * The `data` of Stripe's `v1.billing.meter.error_report_triggered` and
 * `v1.billing.meter.no_meter_found` thin events (fetched from /v2/core/events/:id): per error code,
 * a count and a sample of the rejected events' identifiers.
 */
export interface MeterErrorReport {
  reason: {
    error_count: number;
    error_types: Array<{
      code: string;
      error_count: number;
      sample_errors: Array<{ error_message: string; request?: { identifier?: string } }>;
    }>;
  };
}

export interface MeterErrorOutcome {
  /** Events Stripe says it rejected. */
  reported: number;
  /** Ledger rows marked rejected (billing-sync's identifiers among the samples). */
  marked: number;
}

/** Thin event types that report meter events Stripe rejected after accepting them. */
export const METER_ERROR_EVENTS: ReadonlySet<string> = new Set([
  'v1.billing.meter.error_report_triggered',
  'v1.billing.meter.no_meter_found',
]);

/**
 * Marks the ledger rows (billing_pushes, written by billing-sync) a meter error report names as
 * `rejected`, with Stripe's code and message as the reason. They stop counting as billed, and
 * billing-sync re-plans their amount once the cause is fixed (a missing meter or customer: by
 * itself; any other cause: `reconcile:stripe --retry-rejected`). Stripe names a sample of the
 * rejected identifiers, not all of them; the rest show as drift in `reconcile:stripe`.
 */
export async function markRejectedRows(c: Pool | PoolClient, report: MeterErrorReport): Promise<MeterErrorOutcome> {
  let marked = 0;
  for (const t of report.reason.error_types) {
    for (const s of t.sample_errors) {
      const identifier = s.request?.identifier;
      if (typeof identifier !== 'string' || identifier === '') continue;
      const res = await c.query(
        `UPDATE ${PG_TABLES.billingPushes} SET status = 'rejected', reason = $2, rejected_at = now()
          WHERE identifier = $1 AND status IN ('pending', 'sent')`,
        [identifier, `${t.code}: ${s.error_message}`.slice(0, 1_000)],
      );
      marked += res.rowCount ?? 0;
    }
  }
  return { reported: report.reason.error_count, marked };
}
