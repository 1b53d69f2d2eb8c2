import type Stripe from 'stripe';
import { valueFieldOf, type BillingConfig } from './config.js';
import { meterIds } from './meters.js';
import { Pacer } from './stripe/pacer.js';
import type { UsageSource } from './usage/source.js';

export interface Difference {
  workspace_id: string;
  stripe_customer_id: string;
  event_type: string;
  start_time: number;
  end_time: number;
  stripe: bigint;
  clickhouse: bigint;
}

export interface ReconcileReport { compared: number; differences: Difference[] }

/**
 * Compares, per customer and meter over [startS, endS), Stripe's meter event summary with the
 * usage totals of the same windows. Both bounds must be window-aligned (and Stripe wants them
 * minute-aligned). Stripe aggregates asynchronously in production: run this after the push settles.
 */
export async function reconcile(stripe: Stripe, source: UsageSource, cfg: BillingConfig, customers: ReadonlyMap<string, string>, startS: number, endS: number): Promise<ReconcileReport> {
  const expected = new Map<string, bigint>();
  for (const t of await source.totals(startS, endS, cfg.BILLING_WINDOW)) {
    if (!customers.has(t.workspace_id)) continue;
    const k = `${t.workspace_id}\n${t.event_type}`;
    expected.set(k, (expected.get(k) ?? 0n) + t[valueFieldOf(cfg, t.event_type)]);
  }
  const meters = await meterIds(stripe);
  const pairs = new Set(expected.keys());
  // Also ask Stripe about every customer × meter with no usage here: Stripe holding usage we do not is a mismatch too.
  for (const ws of customers.keys()) for (const type of meters.keys()) pairs.add(`${ws}\n${type}`);
  // Paced like every other Stripe call: a 10,000-customer report must not trip Stripe's 100/s limit.
  const pacer = new Pacer(cfg.STRIPE_API_RATE);
  const differences: Difference[] = [];
  let compared = 0;
  for (const k of pairs) {
    const [ws, type] = k.split('\n') as [string, string];
    const customer = customers.get(ws)!;
    const want = expected.get(k) ?? 0n;
    const meter = meters.get(type);
    let got = 0n;
    if (meter !== undefined) {
      await pacer.take();
      const s = await stripe.billing.meters.listEventSummaries(meter, { customer, start_time: startS, end_time: endS });
      for (const row of s.data) got += BigInt(Math.round(row.aggregated_value));
    }
    compared++;
    if (got !== want) differences.push({ workspace_id: ws, stripe_customer_id: customer, event_type: type, start_time: startS, end_time: endS, stripe: got, clickhouse: want });
  }
  return { compared, differences };
}
