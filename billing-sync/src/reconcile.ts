import type Stripe from 'stripe';
import { PG_TABLES } from '@meterd/core/contracts';
import { type Pool } from '@meterd/core/store';
import { valueFieldOf, type BillingConfig } from './config.js';
import { activeMeters, meterEventName } from './meters.js';
import { Pacer } from './stripe/pacer.js';
import type { UsageSource } from './usage/source.js';

export interface Difference {
  workspace_id: string;
  stripe_customer_id: string;
  /** The Stripe meter's event_name (per currency for money meters). */
  event_name: string;
  start_time: number;
  end_time: number;
  stripe: bigint;
  clickhouse: bigint;
}

export interface ReconcileReport {
  compared: number;
  differences: Difference[];
}

/** Stripe's summed meter value of one customer over [startS, endS). */
async function stripeSum(
  stripe: Stripe,
  pacer: Pacer,
  meterId: string,
  customer: string,
  startS: number,
  endS: number,
): Promise<bigint> {
  await pacer.take();
  const s = await stripe.billing.meters.listEventSummaries(meterId, { customer, start_time: startS, end_time: endS });
  return s.data.reduce((a, row) => a + BigInt(Math.round(row.aggregated_value)), 0n);
}

/**
 * Compares, per customer and meter over [startS, endS), Stripe's meter event summary with the
 * usage totals of the same windows (money meters per currency, as billed). Both bounds must be
 * window-aligned (and Stripe wants them minute-aligned). Stripe aggregates asynchronously in
 * production: run this after the push settles.
 */
export async function reconcile(
  stripe: Stripe,
  source: UsageSource,
  cfg: BillingConfig,
  customers: ReadonlyMap<string, string>,
  startS: number,
  endS: number,
): Promise<ReconcileReport> {
  const expected = new Map<string, bigint>();
  for (const t of await source.totals(startS, endS, cfg.BILLING_WINDOW)) {
    if (!customers.has(t.workspace_id)) continue;
    const field = valueFieldOf(cfg, t.event_type);
    const k = `${t.workspace_id}\n${meterEventName(t.event_type, field === 'gmv_cents' ? t.currency : '')}`;
    expected.set(k, (expected.get(k) ?? 0n) + t[field]);
  }
  const meters = await activeMeters(stripe);
  const pairs = new Set(expected.keys());
  // Also ask Stripe about every customer × meter with no usage here: Stripe holding usage we do not is a mismatch too.
  for (const ws of customers.keys()) for (const name of meters.keys()) pairs.add(`${ws}\n${name}`);
  // Paced like every other Stripe call: a 10,000-customer report must not trip Stripe's 100/s limit.
  const pacer = new Pacer(cfg.STRIPE_API_RATE);
  const differences: Difference[] = [];
  let compared = 0;
  for (const k of pairs) {
    const [ws, name] = k.split('\n') as [string, string];
    const customer = customers.get(ws)!;
    const want = expected.get(k) ?? 0n;
    const meter = meters.get(name);
    const got = meter === undefined ? 0n : await stripeSum(stripe, pacer, meter, customer, startS, endS);
    compared++;
    if (got !== want)
      differences.push({
        workspace_id: ws,
        stripe_customer_id: customer,
        event_name: name,
        start_time: startS,
        end_time: endS,
        stripe: got,
        clickhouse: want,
      });
  }
  return { compared, differences };
}

export interface LedgerDrift {
  stripe_customer_id: string;
  event_name: string;
  start_time: number;
  end_time: number;
  stripe: bigint;
  ledger: bigint;
}
export interface HeldRow {
  identifier: string;
  workspace_id: string;
  event_name: string;
  window_start: number;
  value: bigint;
  status: 'unbillable' | 'rejected' | 'failed';
  reason: string;
}
export interface LedgerReport {
  periods: number;
  compared: number;
  drifts: LedgerDrift[];
  held: HeldRow[];
}

/** UTC calendar months cut at [fromS, toS): the periods finance closes (docs/rollups.md, month close). */
export function monthPeriods(fromS: number, toS: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let a = fromS; a < toS;) {
    const d = new Date(a * 1000);
    const b = Math.min(toS, Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000);
    out.push([a, b]);
    a = b;
  }
  return out;
}

/**
 * The ledger against Stripe, per month of [fromS, toS) and per customer × meter: what billing-sync
 * recorded as sent must be exactly what Stripe's summaries hold. Any drift (an event sent outside
 * billing-sync, a lost or double-counted push, a rejection nobody recorded) is listed. Rows Stripe
 * never billed (unbillable, rejected, failed) are listed with their reason, period by period.
 */
export async function reconcileLedger(
  stripe: Stripe,
  pool: Pool,
  cfg: BillingConfig,
  fromS: number,
  toS: number,
  workspaceId?: string,
): Promise<LedgerReport> {
  const meters = await activeMeters(stripe);
  const pacer = new Pacer(cfg.STRIPE_API_RATE);
  const periods = monthPeriods(fromS, toS);
  const drifts: LedgerDrift[] = [];
  let compared = 0;
  for (const [a, b] of periods) {
    const { rows } = await pool.query<{ customer: string; event_name: string; v: string }>(
      `SELECT stripe_customer_id AS customer, event_name, sum(value) FILTER (WHERE status = 'sent' AND superseded_by IS NULL)::text AS v
         FROM ${PG_TABLES.billingPushes}
        WHERE window_start >= to_timestamp($1) AND window_start < to_timestamp($2) AND ($3::text IS NULL OR workspace_id = $3)
        GROUP BY stripe_customer_id, event_name`,
      [a, b, workspaceId ?? null],
    );
    for (const r of rows) {
      const ledger = BigInt(r.v ?? '0');
      const meter = meters.get(r.event_name);
      const got = meter === undefined ? 0n : await stripeSum(stripe, pacer, meter, r.customer, a, b);
      compared++;
      if (got !== ledger)
        drifts.push({
          stripe_customer_id: r.customer,
          event_name: r.event_name,
          start_time: a,
          end_time: b,
          stripe: got,
          ledger,
        });
    }
  }
  const { rows: held } = await pool.query<{
    identifier: string;
    workspace_id: string;
    event_name: string;
    ws: string;
    value: string;
    status: 'unbillable' | 'rejected' | 'failed';
    reason: string | null;
  }>(
    `SELECT identifier, workspace_id, event_name, extract(epoch FROM window_start)::bigint AS ws, value::text, status, COALESCE(reason, last_error) AS reason
       FROM ${PG_TABLES.billingPushes}
      WHERE status IN ('unbillable', 'rejected', 'failed') AND window_start >= to_timestamp($1) AND window_start < to_timestamp($2) AND ($3::text IS NULL OR workspace_id = $3)
      ORDER BY window_start, identifier`,
    [fromS, toS, workspaceId ?? null],
  );
  return {
    periods: periods.length,
    compared,
    drifts,
    held: held.map((h) => ({
      identifier: h.identifier,
      workspace_id: h.workspace_id,
      event_name: h.event_name,
      window_start: Number(h.ws),
      value: BigInt(h.value),
      status: h.status,
      reason: h.reason ?? '',
    })),
  };
}
