import { MAX_EVENT_AGE_MS } from '@meterd/core/event';
import { type Logger } from '@meterd/core/log';
import { inTransaction, type Pool } from '@meterd/core/store';
import { valueFieldOf, type BillingConfig, type ValueField } from './config.js';
import { STRIPE_MAX_AGE_S } from './horizon.js';
import { meterGroupIdentifier, meterIdentifier } from './identifier.js';
import { insertRows, keyOf, legacyKeyOf, readLedger, type NewRow } from './ledger.js';
import { meterEventName, meterGroupKey, meterDimensions } from './meters.js';
import type { MeterTotal, MeterUsageSource } from './usage/meters.js';
import { lastClosedEnd, WINDOW_SECONDS, type UsageSource, type UsageTotal } from './usage/source.js';

export interface PlanResult {
  planned: number;
  corrections: number;
  /** Differences recorded as unbillable (their window is past what Stripe accepts). */
  unbillable: number;
  /** Downward corrections not planned because this pass read totals older than the ledger's. */
  stale: number;
  /** Event names (Stripe meters) of the rows planned to be sent, with their dimension payload keys. */
  eventNames: Map<string, string[]>;
  /** The source's as-of (epoch s) windows were closed against; null: nothing complete yet, nothing planned. */
  asOf: number | null;
}

/**
 * One billed key: a workspace's event type in one currency ('' for unit meters) and window; or a
 * user-defined meter's group in one currency ('' unless over gmv_cents) and window.
 */
export interface Billed {
  workspace_id: string;
  /** The event type; `meter:<slug>` for a meter's key (a label: the meter id is the key). */
  event_type: string;
  currency: string;
  window_start: number;
  total: bigint;
  field: ValueField | 'meter';
  /** A money window billed before per-currency meters: its currencies summed, never sent again. */
  legacy: boolean;
  event_name: string;
  /** '' for the built-in totals. */
  meter_id: string;
  group_key: string;
  dimensions: Record<string, string>;
}

/**
 * Compares usage totals of closed windows with what the ledger says Stripe has been told, and
 * records the difference as a new ledger row (pending, dry_run, or unbillable). It is the only
 * writer of new rows and runs under a transaction-level advisory lock; the totals are read inside
 * the lock, so two replicas never plan from reads made in a different order than they write.
 *
 * - The look-back equals ingest's horizon (35 days, plus the window and the close delay), so every
 *   accepted event's window is compared. A difference in a window older than Stripe accepts is
 *   recorded as `unbillable` with the reason, never silently dropped.
 * - Money meters are per currency (meters.ts); unit meters (quantity) sum every currency.
 * - The difference is sent as it is, negative included: refunds and downward corrections are
 *   negative meter event values, which Stripe's sum meters add like any other.
 * - A downward correction is never planned from an as-of older than the one the window was last
 *   planned from: a replica with stale totals would otherwise take back usage that exists.
 * - A key with a rejected or failed row waits until the cause is fixed (worker.ts re-checks rejected ones).
 * - A money window still holding pre-005 rows (currencies summed) records its differences as
 *   unbillable with the reason (mergeLegacy).
 */
export async function plan(
  pool: Pool,
  source: UsageSource,
  cfg: BillingConfig,
  customers: ReadonlyMap<string, string>,
  nowS: number,
  dryRun: boolean,
  log: Logger,
  meters?: MeterUsageSource,
): Promise<PlanResult> {
  const size = WINDOW_SECONDS[cfg.BILLING_WINDOW];
  const result: PlanResult = { planned: 0, corrections: 0, unbillable: 0, stale: 0, eventNames: new Map(), asOf: null };
  const fromS = Math.floor((nowS - MAX_EVENT_AGE_MS / 1000 - cfg.BILLING_CLOSE_DELAY_SECONDS) / size) * size - size;
  const stripeFloor = nowS - STRIPE_MAX_AGE_S;

  await inTransaction(pool, async (c) => {
    await c.query(`SELECT pg_advisory_xact_lock(hashtext('meterd:billing:plan'))`);
    const asOf = await source.asOf(nowS);
    result.asOf = asOf;
    if (asOf === null) return;
    // A window is pushed once the source says it is final (the aggregator closed it) and its end
    // plus the close delay has passed: a lagging aggregator delays the push instead of sending a
    // window still being computed.
    const closedEnd = lastClosedEnd(asOf, nowS, cfg.BILLING_CLOSE_DELAY_SECONDS, size);
    if (closedEnd <= fromS) return;
    const { states, legacy } = await readLedger(c, fromS, dryRun);
    const billed = mergeLegacy(billedKeys(await source.totals(fromS, closedEnd, cfg.BILLING_WINDOW), cfg), legacy);
    if (meters !== undefined) {
      const m = await meters.totals(fromS, closedEnd, cfg.BILLING_WINDOW, new Set(customers.keys()));
      for (const r of m.refused)
        log.error(
          { meter_id: r.meter.id, workspace_id: r.meter.workspace_id, stripe_event_name: r.meter.stripe_event_name },
          `meter not billed: ${r.reason}`,
        );
      billed.push(...meterKeys(m.totals));
    }
    const rows: NewRow[] = [];
    for (const t of billed) {
      const customer = customers.get(t.workspace_id);
      if (customer === undefined) continue;
      const s = states.get(keyOf(t.workspace_id, t.event_type, t.currency, t.window_start, t.meter_id, t.group_key));
      const counted = s?.counted ?? 0n;
      if (t.total === counted || s?.held === true) continue;
      const plannedAsOf = s?.maxAsOf ?? null;
      if (t.total < counted && plannedAsOf !== null && asOf < plannedAsOf) {
        result.stale++;
        log.warn(
          {
            workspace_id: t.workspace_id,
            event_type: t.event_type,
            meter_id: t.meter_id || undefined,
            currency: t.currency,
            window_start: t.window_start,
            as_of: asOf,
            ledger_as_of: plannedAsOf,
          },
          'totals are older than those the window was last planned from; no downward correction from them',
        );
        continue;
      }
      const revision = (s?.maxRevision ?? 0) + 1;
      const value = t.total - counted;
      const unbillable = t.legacy || t.window_start < stripeFloor;
      rows.push({
        workspace_id: t.workspace_id,
        event_type: t.event_type,
        currency: t.currency,
        event_name: t.event_name,
        window_start: t.window_start,
        window_end: t.window_start + size,
        revision,
        identifier:
          t.meter_id === ''
            ? meterIdentifier(t.workspace_id, t.event_type, t.currency, t.window_start, revision)
            : meterGroupIdentifier(t.workspace_id, t.meter_id, t.group_key, t.currency, t.window_start, revision),
        stripe_customer_id: customer,
        value_field: t.field,
        meter_id: t.meter_id,
        group_key: t.group_key,
        dimensions: t.dimensions,
        total: t.total,
        value,
        cancels: [],
        attempts: 0,
        as_of: asOf,
        status: unbillable ? 'unbillable' : dryRun ? 'dry_run' : 'pending',
        reason: !unbillable
          ? null
          : t.legacy
            ? `window billed as one sum of every currency before per-currency meters (migration 005): ${value} (mixed currencies) not billed`
            : `window older than the 35 days Stripe accepts: ${value} not billed`,
      });
      if (unbillable) {
        result.unbillable++;
        log.error(
          {
            workspace_id: t.workspace_id,
            event_type: t.event_type,
            currency: t.currency,
            window_start: t.window_start,
            value: String(value),
          },
          t.legacy
            ? 'usage changed in a window billed before per-currency meters: recorded as unbillable'
            : 'usage changed in a window Stripe no longer accepts: recorded as unbillable',
        );
      } else if (s !== undefined) {
        result.corrections++;
      }
    }
    result.planned = await insertRows(c, rows);
    for (const r of rows) if (r.status !== 'unbillable') result.eventNames.set(r.event_name, Object.keys(r.dimensions));
    if (dryRun)
      for (const r of rows)
        log.info(
          {
            identifier: r.identifier,
            customer: r.stripe_customer_id,
            event_name: r.event_name,
            value: String(r.value),
            timestamp: r.window_start,
          },
          'dry run: would push meter event',
        );
  });
  return result;
}

/** Usage totals → billed keys: money meters keep their currency, unit meters sum every currency into ''. */
function billedKeys(totals: UsageTotal[], cfg: BillingConfig): Billed[] {
  const out = new Map<string, Billed>();
  for (const t of totals) {
    const field = valueFieldOf(cfg, t.event_type);
    const currency = field === 'gmv_cents' ? t.currency : '';
    const k = keyOf(t.workspace_id, t.event_type, currency, t.window_start);
    const b = out.get(k);
    if (b === undefined)
      out.set(k, {
        workspace_id: t.workspace_id,
        event_type: t.event_type,
        currency,
        window_start: t.window_start,
        total: t[field],
        field,
        legacy: false,
        event_name: meterEventName(t.event_type, currency),
        meter_id: '',
        group_key: '',
        dimensions: {},
      });
    else b.total += t[field];
  }
  return [...out.values()];
}

/**
 * Money windows that still hold rows from before per-currency meters (005: one sum of every
 * currency, currency '') stay one key with that sum: their differences can be neither split by
 * currency nor sent to the old mixed meter, so they are recorded as unbillable, never skipped.
 */
function mergeLegacy(billed: Billed[], legacy: ReadonlySet<string>): Billed[] {
  const out: Billed[] = [];
  const merged = new Map<string, Billed>();
  for (const b of billed) {
    const lk = legacyKeyOf(b.workspace_id, b.event_type, b.window_start);
    if (b.currency === '' || b.meter_id !== '' || !legacy.has(lk)) {
      out.push(b);
      continue;
    }
    const m = merged.get(lk);
    if (m === undefined) merged.set(lk, { ...b, currency: '', legacy: true });
    else m.total += b.total;
  }
  return out.concat([...merged.values()]);
}

/**
 * A billed meter's closed windows → billed keys: one per workspace × meter × currency × group ×
 * window. The meter event goes to the meter's stripe_event_name (per currency for a meter over
 * gmv_cents, like the built-in money meters) and carries the group as its dimensions.
 */
export function meterKeys(totals: readonly MeterTotal[]): Billed[] {
  return totals.map((t) => ({
    workspace_id: t.workspace_id,
    event_type: `meter:${t.meter.slug}`,
    currency: t.currency,
    window_start: t.window_start,
    total: t.total,
    field: 'meter',
    legacy: false,
    event_name: meterEventName(t.meter.stripe_event_name!, t.currency),
    meter_id: t.meter.id,
    group_key: meterGroupKey(t.group),
    dimensions: meterDimensions(t.meter.group_by, t.group),
  }));
}
