import { inTransaction, type Logger, type Pool } from '@meterd/core';
import { valueFieldOf, type BillingConfig } from './config.js';
import { meterIdentifier } from './identifier.js';
import { insertRows, keyOf, readWindowStates, supersede, type PushRow } from './ledger.js';
import { WINDOW_SECONDS, type UsageSource } from './usage/source.js';

/** Stripe cancels a meter event only within 24 hours of receiving it; keep a margin. */
const CANCEL_LIMIT_S = 23 * 3_600;

export interface PlanResult {
  planned: number;
  corrections: number;
  /** Downward corrections that could not be made (prior events older than Stripe's cancel window). */
  blocked: number;
  eventTypes: Set<string>;
  /** The source's as-of (epoch s) windows were closed against; null: nothing complete yet, nothing planned. */
  asOf: number | null;
}

/**
 * Compares usage totals of closed windows with what the ledger says Stripe has been told, and
 * records the difference as new ledger rows (status pending, or dry_run). It is the only writer of
 * new rows and runs under a transaction-level advisory lock, so replicas never plan the same
 * revision twice; the primary key (workspace, type, window, revision) backs that up.
 *
 * - First push of a window: revision 1 with the whole total.
 * - More usage arrived later: one new revision whose value is the increase.
 * - Less usage (data removed): Stripe meters only add, and values are whole non-negative numbers,
 *   so the correction cancels every counted earlier revision (meter event adjustments) and sends
 *   the full new total as a new revision. Stripe cancels only within 24 hours of receipt; past that
 *   the window is left as it is, logged and counted, and the reconciliation report shows it.
 */
export async function plan(pool: Pool, source: UsageSource, cfg: BillingConfig, customers: ReadonlyMap<string, string>, nowS: number, dryRun: boolean, log: Logger): Promise<PlanResult> {
  const size = WINDOW_SECONDS[cfg.BILLING_WINDOW];
  const asOf = await source.asOf(nowS);
  const result: PlanResult = { planned: 0, corrections: 0, blocked: 0, eventTypes: new Set(), asOf };
  if (asOf === null) return result;
  // A window is closed once its end plus the close delay has passed, measured on the source's
  // as-of rather than the wall clock: events committed before the close must already be in the
  // totals (a lagging aggregator delays the push instead of sending a half-computed window).
  const lastClosedEnd = Math.floor((Math.min(nowS, asOf) - cfg.BILLING_CLOSE_DELAY_SECONDS) / size) * size;
  const fromS = Math.ceil((nowS - cfg.BILLING_LOOKBACK_DAYS * 86_400) / size) * size;
  if (lastClosedEnd <= fromS) return result;
  const totals = await source.totals(fromS, lastClosedEnd, cfg.BILLING_WINDOW);

  await inTransaction(pool, async (c) => {
    await c.query(`SELECT pg_advisory_xact_lock(hashtext('meterd:billing:plan'))`);
    const states = await readWindowStates(c, fromS, dryRun);
    const rows: PushRow[] = [];
    for (const t of totals) {
      const customer = customers.get(t.workspace_id);
      if (customer === undefined) continue;
      const field = valueFieldOf(cfg, t.event_type);
      const total = t[field];
      const s = states.get(keyOf(t.workspace_id, t.event_type, t.window_start));
      const counted = s?.counted ?? 0n;
      if (total === counted) continue;
      const revision = (s?.maxRevision ?? 0) + 1;
      const base = {
        workspace_id: t.workspace_id, event_type: t.event_type, window_start: t.window_start, window_end: t.window_start + size, revision,
        identifier: meterIdentifier(t.workspace_id, t.event_type, t.window_start, revision), stripe_customer_id: customer, value_field: field, total, attempts: 0,
      };
      if (total > counted) {
        rows.push({ ...base, value: total - counted, cancels: [] });
        if (counted > 0n) result.corrections++;
        continue;
      }
      const live = s!.live;
      const tooOld = live.some((l) => l.status === 'sent' && l.sent_at !== null && nowS - l.sent_at > CANCEL_LIMIT_S);
      if (tooOld && !dryRun) {
        result.blocked++;
        log.warn({ workspace_id: t.workspace_id, event_type: t.event_type, window_start: t.window_start, total: String(total), counted: String(counted) },
          'usage went down after Stripe accepted the window more than 23 h ago; Stripe can no longer cancel it: left for reconciliation');
        continue;
      }
      // Only events Stripe may hold need cancelling; never-sent pending rows are simply superseded.
      const cancels = live.filter((l) => l.status === 'sent').map((l) => l.identifier);
      await supersede(c, t.workspace_id, t.event_type, t.window_start, live.map((l) => l.revision), revision);
      if (total > 0n || cancels.length > 0) rows.push({ ...base, value: total, cancels });
      result.corrections++;
    }
    result.planned = await insertRows(c, rows, dryRun ? 'dry_run' : 'pending');
    for (const r of rows) result.eventTypes.add(r.event_type);
    if (dryRun) for (const r of rows) log.info({ identifier: r.identifier, customer: r.stripe_customer_id, event_name: r.event_type, value: String(r.value), timestamp: r.window_start, cancels: r.cancels }, 'dry run: would push meter event');
  });
  return result;
}
