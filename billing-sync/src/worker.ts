import type Stripe from 'stripe';
import { PG_TABLES } from '@meterd/core/contracts';
import { type Logger } from '@meterd/core/log';
import { type Pool } from '@meterd/core/store';
import type { BillingConfig } from './config.js';
import { pendingCount, rejectedCauses, rejectedCount, retryRejected } from './ledger.js';
import { activeMeters, ensureMeters } from './meters.js';
import type { BillingMetrics } from './metrics.js';
import { plan } from './planner.js';
import { drain } from './pusher.js';
import type { Pacer } from './stripe/pacer.js';
import { StripeSender } from './stripe/sender.js';
import type { MeterUsageSource } from './usage/meters.js';
import type { UsageSource } from './usage/source.js';

export interface PassResult {
  planned: number;
  corrections: number;
  unbillable: number;
  stale: number;
  retried: number;
  pushed: number;
  pending: number;
  rejected: number;
  asOf: number | null;
}

/** Distinct (meter, customer) causes of rejected rows re-checked per pass: bounds the Stripe calls. */
const RECHECKS_PER_PASS = 50;

/**
 * One pass: re-check rejected rows, plan the differences between usage and the ledger, then push
 * everything pending. Without a Stripe client (no STRIPE_SECRET_KEY) it is a dry run: rows are
 * recorded as dry_run and logged.
 */
export class BillingWorker {
  private readonly sender: StripeSender | undefined;
  private stopped = false;

  constructor(
    private readonly pool: Pool,
    private readonly source: UsageSource,
    private readonly stripe: Stripe | undefined,
    private readonly cfg: BillingConfig,
    private readonly metrics: BillingMetrics,
    private readonly log: Logger,
    /** User-defined meters to bill (docs/billing.md "Meters"); without it only the built-in totals. */
    private readonly meters?: MeterUsageSource,
  ) {
    this.sender = stripe === undefined ? undefined : new StripeSender(stripe, pool, cfg, metrics, log);
  }

  stop(): void {
    this.stopped = true;
  }

  async pass(nowS = Math.floor(Date.now() / 1000)): Promise<PassResult> {
    const customers = await this.customers();
    const meters = this.stripe === undefined ? undefined : await activeMeters(this.stripe);
    const retried =
      this.stripe === undefined || this.sender === undefined || meters === undefined
        ? 0
        : await this.recheckRejected(this.stripe, this.sender.apiPacer, meters);
    const p = await plan(
      this.pool,
      this.source,
      this.cfg,
      customers,
      nowS,
      this.sender === undefined,
      this.log,
      this.meters,
    );
    this.metrics.planned.inc(p.planned);
    this.metrics.corrections.inc(p.corrections);
    this.metrics.unbillable.inc(p.unbillable);
    this.metrics.stale.inc(p.stale);
    this.metrics.usageAsOfAge.set(p.asOf === null ? -1 : nowS - p.asOf);
    if (p.asOf === null)
      this.log.warn(
        'usage source reports nothing complete yet (the aggregator has not reported every shard): no window is closed',
      );
    let pushed = 0;
    if (this.sender !== undefined && this.stripe !== undefined && meters !== undefined) {
      if (this.cfg.BILLING_ENSURE_METERS && p.eventNames.size > 0)
        await this.ensureLogged(this.stripe, p.eventNames, meters);
      const sender = this.sender;
      const stripe = this.stripe;
      let live = meters;
      pushed = await drain(
        this.pool,
        async (rows) => {
          // With several replicas, rows are often planned (and their meters created) by another
          // one after this pass read the meter list: a stale list must not reject them as no_meter.
          const missing = new Map(
            rows.filter((r) => !live.has(r.event_name)).map((r) => [r.event_name, Object.keys(r.dimensions)]),
          );
          if (missing.size > 0) {
            live = await activeMeters(stripe);
            // A meter the other replica is creating this very moment may be created twice; Stripe's
            // refusal fails this batch, its rows are released and the next pass finds the meter.
            if (this.cfg.BILLING_ENSURE_METERS) await this.ensureLogged(stripe, missing, live);
          }
          return sender.push(rows, nowS, live);
        },
        this.cfg.BILLING_BATCH_SIZE,
        this.cfg.BILLING_CONCURRENCY,
        nowS,
        this.cfg.BILLING_CLAIM_LEASE_MS,
        () => this.stopped,
      );
    }
    const [pending, rejected] = await Promise.all([pendingCount(this.pool), rejectedCount(this.pool)]);
    this.metrics.pending.set(pending);
    this.metrics.rejectedRows.set(rejected);
    this.metrics.passes.inc();
    return {
      planned: p.planned,
      corrections: p.corrections,
      unbillable: p.unbillable,
      stale: p.stale,
      retried,
      pushed,
      pending,
      rejected,
      asOf: p.asOf,
    };
  }

  private async ensureLogged(
    stripe: Stripe,
    names: ReadonlyMap<string, readonly string[]>,
    known: Map<string, string>,
  ): Promise<void> {
    const created = await ensureMeters(stripe, names, known);
    if (created.length > 0) this.log.info({ event_names: created }, 'created Stripe meters');
  }

  /**
   * Rejected rows whose cause was a missing meter or customer are retried once both exist: the
   * meter is active and the workspace's current customer is not deleted. They become `retried`
   * and the planner sends the amount again under a new revision (a new identifier). A customer
   * Stripe cannot be asked about now (a restricted key's 403, a 5xx, a timeout) leaves that cause
   * for the next pass; it must not stop the planning and pushing of everyone else.
   */
  private async recheckRejected(stripe: Stripe, pacer: Pacer, meters: ReadonlyMap<string, string>): Promise<number> {
    let retried = 0;
    const failing = new Set<string>();
    for (const cause of await rejectedCauses(this.pool, RECHECKS_PER_PASS)) {
      if (!meters.has(cause.event_name)) continue;
      if (!(await this.customerExists(stripe, pacer, cause.customer, failing))) continue;
      const n = await retryRejected(this.pool, cause);
      retried += n;
      this.metrics.retriedRejected.inc(n);
      this.log.info(
        { event_name: cause.event_name, customer: cause.customer, rows: n },
        'the meter and customer of rejected rows exist now: their amounts are planned again',
      );
    }
    return retried;
  }

  /**
   * Whether Stripe has the customer (not deleted). An error other than 404 counts as "not known
   * yet": it is logged once per customer and pass (`failing`) and counted, and the pass goes on.
   */
  private async customerExists(stripe: Stripe, pacer: Pacer, id: string, failing: Set<string>): Promise<boolean> {
    if (failing.has(id)) return false;
    await pacer.take();
    try {
      const customer = await stripe.customers.retrieve(id);
      return !('deleted' in customer && customer.deleted === true);
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false;
      failing.add(id);
      this.metrics.recheckErrors.inc();
      this.log.error(
        { err, customer: id },
        'reading the customer of rejected rows from Stripe failed: they are re-checked next pass',
      );
      return false;
    }
  }

  private async customers(): Promise<Map<string, string>> {
    const { rows } = await this.pool.query<{ id: string; stripe_customer_id: string }>(
      // Live workspaces only: test buckets' usage is never pushed (docs/api.md §13).
      `SELECT id, stripe_customer_id FROM ${PG_TABLES.workspaces} WHERE stripe_customer_id IS NOT NULL AND environment = 'live'`,
    );
    return new Map(rows.map((r) => [r.id, r.stripe_customer_id]));
  }
}
