import type Stripe from 'stripe';
import { type Logger } from '@meterd/core/log';
import { type Pool } from '@meterd/core/store';
import { sentValue, stalePendingValue, type Outcome, type PushRow } from '../ledger.js';
import type { BillingMetrics } from '../metrics.js';
import type { Pacer } from './pacer.js';

/** A row the check could not settle waits this long before it is checked again. */
const UNSETTLED_DELAY_MS = 3_600_000;

/**
 * Stripe dedupes meter event identifiers for at least 24 hours only. A row planned long ago
 * (an outage, a stuck batch, a process killed after Stripe accepted it) may have reached Stripe even though its answer never came back, and
 * a re-send with the same identifier may no longer be recognised: it would count twice. So before
 * such a re-send, Stripe's meter event summary of the row's customer × meter × window is compared
 * with what the ledger says Stripe holds there (the sent rows):
 * - Stripe holds exactly that: none of the waiting rows arrived; they are sent.
 * - Stripe holds that plus all the waiting rows: they arrived; they are marked sent (via `summary`).
 * - anything else: the row is not sent, it is logged and counted and checked again an hour later
 *   (reconcile:stripe shows the window).
 * "The waiting rows" are every stale pending row of the customer × meter × window, not only those
 * of this batch: one group's rows split across batches, lanes or replicas would otherwise never
 * match the summary in any of them and stay pending forever.
 */
export class ResendCheck {
  constructor(
    private readonly stripe: Stripe,
    private readonly pool: Pool,
    private readonly pacer: Pacer,
    private readonly metrics: BillingMetrics,
    private readonly log: Logger,
  ) {}

  /** `plannedBeforeS`: rows planned before it (epoch s) are stale, as the sender decided for `rows`. */
  async check(
    rows: PushRow[],
    meters: ReadonlyMap<string, string>,
    plannedBeforeS: number,
  ): Promise<{ outcomes: Outcome[]; send: PushRow[] }> {
    const groups = new Map<string, PushRow[]>();
    for (const r of rows) {
      const k = `${r.stripe_customer_id}\n${r.event_name}\n${r.window_start}`;
      const g = groups.get(k);
      if (g) g.push(r);
      else groups.set(k, [r]);
    }
    const outcomes: Outcome[] = [];
    const send: PushRow[] = [];
    for (const g of groups.values()) {
      const { stripe_customer_id: customer, event_name: eventName, window_start: start, window_end: end } = g[0]!;
      this.metrics.resendChecks.inc();
      let atStripe = 0n;
      try {
        await this.pacer.take();
        const s = await this.stripe.billing.meters.listEventSummaries(meters.get(eventName)!, {
          customer,
          start_time: start,
          end_time: end,
        });
        for (const row of s.data) atStripe += BigInt(Math.round(row.aggregated_value));
      } catch (err) {
        for (const r of g)
          outcomes.push({
            identifier: r.identifier,
            status: 'retry',
            error: `reading Stripe's summary before a re-send: ${(err as Error).message}`,
            delayMs: 60_000,
          });
        continue;
      }
      const told = await sentValue(this.pool, customer, eventName, start);
      const waiting = await stalePendingValue(this.pool, customer, eventName, start, plannedBeforeS);
      if (atStripe === told) {
        send.push(...g);
      } else if (atStripe === told + waiting) {
        this.metrics.resendSettled.inc(g.length);
        for (const r of g)
          outcomes.push({
            identifier: r.identifier,
            status: 'sent',
            via: 'summary',
            response: { summary: String(atStripe), ledger: String(told) },
          });
      } else {
        this.metrics.resendUnsettled.inc(g.length);
        this.log.error(
          {
            customer,
            event_name: eventName,
            window_start: start,
            stripe: String(atStripe),
            ledger_sent: String(told),
            waiting: String(waiting),
          },
          "Stripe's summary matches neither the rows sent nor those plus the waiting ones: not re-sending",
        );
        for (const r of g)
          outcomes.push({
            identifier: r.identifier,
            status: 'retry',
            error: `summary ${atStripe} ≠ sent ${told} (+ waiting ${waiting}): not re-sent`,
            delayMs: UNSETTLED_DELAY_MS,
          });
      }
    }
    return { outcomes, send };
  }
}
