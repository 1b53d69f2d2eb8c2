import type Stripe from 'stripe';
import type { Logger, Pool } from '@meterd/core';
import type { BillingConfig } from './config.js';
import { pendingCount } from './ledger.js';
import { ensureMeters } from './meters.js';
import type { BillingMetrics } from './metrics.js';
import { plan } from './planner.js';
import { drain } from './pusher.js';
import { StripeSender } from './stripe/sender.js';
import type { UsageSource } from './usage/source.js';

export interface PassResult { planned: number; corrections: number; blocked: number; pushed: number; pending: number; asOf: number | null }

/**
 * One pass: plan the differences between usage and the ledger, then push everything pending.
 * Without a Stripe client (no STRIPE_SECRET_KEY) it is a dry run: rows are recorded as dry_run and logged.
 */
export class BillingWorker {
  private readonly sender: StripeSender | undefined;
  private readonly knownMeters = new Set<string>();
  private stopped = false;

  constructor(
    private readonly pool: Pool,
    private readonly source: UsageSource,
    private readonly stripe: Stripe | undefined,
    private readonly cfg: BillingConfig,
    private readonly metrics: BillingMetrics,
    private readonly log: Logger,
  ) {
    this.sender = stripe === undefined ? undefined : new StripeSender(stripe, cfg, metrics, log);
  }

  stop(): void { this.stopped = true; }

  async pass(nowS = Math.floor(Date.now() / 1000)): Promise<PassResult> {
    const customers = await this.customers();
    const p = await plan(this.pool, this.source, this.cfg, customers, nowS, this.sender === undefined, this.log);
    this.metrics.planned.inc(p.planned);
    this.metrics.corrections.inc(p.corrections);
    this.metrics.blocked.inc(p.blocked);
    this.metrics.usageAsOfAge.set(p.asOf === null ? -1 : nowS - p.asOf);
    if (p.asOf === null) this.log.warn('usage source reports nothing complete yet (the aggregator has not reported every shard): no window is closed');
    let pushed = 0;
    if (this.sender !== undefined && this.stripe !== undefined) {
      if (this.cfg.BILLING_ENSURE_METERS && p.eventTypes.size > 0) {
        const created = await ensureMeters(this.stripe, p.eventTypes, this.knownMeters);
        if (created.length > 0) this.log.info({ event_names: created }, 'created Stripe meters');
      }
      pushed = await drain(this.pool, this.sender, this.cfg.BILLING_BATCH_SIZE, this.cfg.BILLING_CONCURRENCY, () => this.stopped);
    }
    const pending = await pendingCount(this.pool);
    this.metrics.pending.set(pending);
    this.metrics.passes.inc();
    return { planned: p.planned, corrections: p.corrections, blocked: p.blocked, pushed, pending, asOf: p.asOf };
  }

  private async customers(): Promise<Map<string, string>> {
    const { rows } = await this.pool.query<{ id: string; stripe_customer_id: string }>(`SELECT id, stripe_customer_id FROM workspaces WHERE stripe_customer_id IS NOT NULL`);
    return new Map(rows.map((r) => [r.id, r.stripe_customer_id]));
  }
}
