import type Stripe from 'stripe';
import { METER_ERROR_EVENTS } from '@meterd/core/billing';
import { PLAN_CHANGED_CHANNEL } from '@meterd/core/contracts';
import { ApiError } from '@meterd/core/errors';
import { type Logger } from '@meterd/core/log';
import { currencyExponents } from '@meterd/core/money';
import { isPaidPlan, type PaidPlan, type Plan } from '@meterd/core/plans';
import { type Pool, type PoolClient, type Redis, type Workspace } from '@meterd/core/store';
import { createPlanCheckout, returnUrls } from '../billing/checkout.js';
import { createStripeCustomer } from '../billing/customer.js';
import { applyMeterErrorEvent, type ThinEvent } from '../billing/meter-errors.js';
import { applyStripeEvent } from '../billing/plan-sync.js';
import { callStripe, stripeOffline } from '../billing/stripe-client.js';
import type { ControlMetrics } from '../metrics.js';
import { WORKSPACE_COLS } from './workspaces.js';

export interface BillingDeps {
  pool: Pool;
  redis: Redis;
  /** null when STRIPE_SECRET_KEY is unset. */
  stripe: Stripe | null;
  log: Logger;
  metrics: ControlMetrics;
  publicBaseUrl: URL;
  /** STRIPE_WEBHOOK_SECRET; '' when unset. */
  /** Every destination's signing secret (STRIPE_WEBHOOK_SECRET). */
  webhookSecrets: readonly string[];
}

/** A ledger row Stripe did not bill, with its reason. */
export interface UnbilledRow {
  identifier: string;
  event_name: string;
  event_type: string;
  currency: string;
  value_field: string;
  window_start: number;
  value: string;
  status: string;
  reason: string | null;
}

/**
 * Plans and Stripe: a workspace buys a paid plan through Stripe Checkout and the plan applies when
 * Stripe's signed webhook reports the subscription; the operator may set any plan directly.
 */
export class BillingService {
  constructor(private readonly d: BillingDeps) {}

  /** Whether the dashboard can offer the Stripe Customer Portal to this workspace. */
  portalAvailable(w: Pick<Workspace, 'stripe_customer_id'>): boolean {
    return this.d.stripe !== null && w.stripe_customer_id !== null;
  }

  /** At signup: refuses a paid plan up front when there is no Stripe to pay it through. */
  requireStripeFor(plan: Plan, field?: string): void {
    if (isPaidPlan(plan) && this.d.stripe === null)
      throw new ApiError(
        'payment_required',
        `the ${plan} plan is paid through Stripe, which this server has not configured: sign up on free (the operator can set a paid plan)`,
        field,
      );
  }

  /**
   * Gives a new workspace its Stripe customer inside the signup transaction (a Stripe failure rolls
   * the workspace back) and, for a paid plan, the Checkout URL to pay it. `onCustomer` learns the
   * customer as soon as it exists, so the caller can delete it if the transaction then fails.
   */
  async openAccount(
    c: PoolClient,
    w: Workspace,
    plan: Plan,
    onCustomer: (id: string) => void,
  ): Promise<{ workspace: Workspace; checkoutUrl: string | null }> {
    const stripe = this.d.stripe;
    if (stripe === null) return { workspace: w, checkoutUrl: null };
    const customerId = await this.linkCustomer(stripe, c, w);
    onCustomer(customerId);
    const workspace = { ...w, stripe_customer_id: customerId };
    if (!isPaidPlan(plan)) return { workspace, checkoutUrl: null };
    const urls = returnUrls(this.d.publicBaseUrl.toString(), w.id);
    const session = await createPlanCheckout(stripe, { workspaceId: w.id, customerId, plan, ...urls });
    return { workspace, checkoutUrl: session.url };
  }

  /** Removes a Stripe customer whose workspace was never committed. */
  async dropCustomer(customerId: string): Promise<void> {
    await this.d.stripe?.customers.del(customerId).catch((err: unknown) => {
      this.d.log.warn({ err, customer: customerId }, 'deleting the Stripe customer of a failed signup failed');
    });
  }

  /** A Stripe Checkout Session to buy `plan`; the plan changes only when Stripe reports the payment. */
  async checkout(
    w: Workspace,
    plan: PaidPlan,
    o: { successUrl?: string; cancelUrl?: string },
  ): Promise<{ id: string; url: string }> {
    const stripe = this.d.stripe;
    if (stripe === null)
      throw new ApiError(
        'payment_required',
        'Stripe is not configured on this server: only the operator can set a paid plan',
      );
    // A test bucket has no Stripe customer (docs/api.md §13): plans are bought by the live workspace.
    if (w.environment === 'test')
      throw new ApiError('workspace_mismatch', 'a plan is bought through the live workspace, with a live key');
    if (isPaidPlan(w.plan))
      throw new ApiError(
        'already_subscribed',
        `the workspace is on the ${w.plan} plan: change it in the billing portal`,
      );
    // A workspace from before Stripe was configured has no customer yet.
    const customerId = w.stripe_customer_id ?? (await this.linkCustomer(stripe, this.d.pool, w));
    const urls = returnUrls(this.d.publicBaseUrl.toString(), w.id);
    return createPlanCheckout(stripe, {
      workspaceId: w.id,
      customerId,
      plan,
      successUrl: o.successUrl ?? urls.successUrl,
      cancelUrl: o.cancelUrl ?? urls.cancelUrl,
    });
  }

  /** The operator sets a plan directly; ingest and the other services drop the cached plan at once. */
  async setPlan(workspaceId: string, plan: Plan): Promise<Workspace> {
    // The test bucket follows its workspace's plan, so test traffic meets the same limits (docs/api.md §13).
    const { rows } = await this.d.pool.query<Workspace>(
      `UPDATE workspaces SET plan = $2 WHERE id = $1 OR live_workspace_id = $1 RETURNING ${WORKSPACE_COLS}`,
      [workspaceId, plan],
    );
    const w = rows.find((r) => r.id === workspaceId);
    if (w === undefined) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
    for (const r of rows) await this.d.redis.publish(PLAN_CHANGED_CHANNEL, r.id);
    this.d.log.info({ workspace: workspaceId, plan }, 'plan set by the operator');
    return w;
  }

  /** A one-time Stripe Customer Portal URL; by default it returns to the dashboard's billing page. */
  async portalSession(workspaceId: string, returnUrl?: string): Promise<{ url: string }> {
    const stripe = this.d.stripe;
    if (stripe === null) throw new ApiError('not_configured', 'Stripe is not configured on this server');
    const { rows } = await this.d.pool.query<{ stripe_customer_id: string | null }>(
      'SELECT stripe_customer_id FROM workspaces WHERE id = $1',
      [workspaceId],
    );
    const customer = rows[0]?.stripe_customer_id;
    if (!customer) throw new ApiError('no_billing_customer', 'this workspace has no Stripe customer');
    const session = await callStripe('Stripe did not create a portal session; retry later', () =>
      stripe.billingPortal.sessions.create({
        customer,
        return_url:
          returnUrl ?? new URL(`/dashboard/billing?workspace=${workspaceId}`, this.d.publicBaseUrl).toString(),
      }),
    );
    return { url: session.url };
  }

  /**
   * Usage Stripe did not bill: ledger rows billing-sync recorded as unbillable (past Stripe's
   * 35-day limit), rejected (Stripe's error reports, a missing meter or customer) or failed (any
   * other refusal), with their reason.
   */
  async unbilled(workspaceId: string): Promise<{ rows: UnbilledRow[]; currency_exponents: Record<string, number> }> {
    const { rows } = await this.d.pool.query<Omit<UnbilledRow, 'window_start'> & { window_start: Date }>(
      `SELECT identifier, event_name, event_type, currency, value_field, window_start, value::text, status, COALESCE(reason, last_error) AS reason FROM billing_pushes
        WHERE workspace_id = $1 AND status IN ('unbillable', 'rejected', 'failed') ORDER BY window_start DESC, identifier LIMIT 200`,
      [workspaceId],
    );
    return {
      rows: rows.map((r) => ({ ...r, window_start: r.window_start.getTime() })),
      currency_exponents: currencyExponents(new Set(rows.map((r) => r.currency).filter((c) => c !== ''))),
    };
  }

  /**
   * A Stripe webhook, verified against STRIPE_WEBHOOK_SECRET: subscription events set the plan,
   * meter error reports (thin events) mark billing ledger rows rejected.
   */
  async receiveWebhook(body: unknown, signature: unknown): Promise<{ received: true; outcome: string }> {
    if (this.d.webhookSecrets.length === 0) throw new ApiError('not_configured', 'STRIPE_WEBHOOK_SECRET is not set');
    if (typeof signature !== 'string' || !Buffer.isBuffer(body))
      throw new ApiError('invalid_signature', 'missing Stripe-Signature header or body');
    const event = this.verified(body, signature);
    if ((event as { object?: string }).object === 'v2.core.event')
      return this.meterErrorReport(event as unknown as ThinEvent);
    const changed: string[] = [];
    const stripe = this.d.stripe;
    const fetchSubscription =
      stripe === null
        ? null
        : (id: string) =>
            // Nothing is recorded yet: the 502 makes Stripe redeliver the event, and it applies then.
            callStripe('reading the subscription from Stripe failed; the event will be retried', () =>
              stripe.subscriptions.retrieve(id),
            );
    const outcome = await applyStripeEvent(this.d.pool, event, changed, fetchSubscription);
    // After the commit: ingest and the other services drop the cached plan of these workspaces now.
    for (const ws of changed) await this.d.redis.publish(PLAN_CHANGED_CHANNEL, ws);
    this.d.log.info({ stripe_event: event.id, type: event.type, outcome }, 'stripe webhook');
    return { received: true, outcome };
  }

  /** The event, if it verifies with one of the destinations' secrets (the SDK compares in constant time). */
  private verified(body: Buffer, signature: string): Stripe.Event {
    for (const secret of this.d.webhookSecrets) {
      try {
        return stripeOffline.webhooks.constructEvent(body, signature, secret);
      } catch {
        // Signed for another destination, or forged: the next secret decides.
      }
    }
    throw new ApiError('invalid_signature', 'the Stripe signature does not verify');
  }

  private async meterErrorReport(thin: ThinEvent): Promise<{ received: true; outcome: string }> {
    if (!METER_ERROR_EVENTS.has(thin.type)) return { received: true, outcome: 'ignored' };
    const r = await applyMeterErrorEvent(this.d.pool, this.d.stripe, thin);
    if (r === 'duplicate') return { received: true, outcome: r };
    const m = this.d.metrics;
    m.meterErrorReports.inc();
    m.meterEventsRejected.inc(r.reported);
    m.ledgerRowsRejected.inc(r.marked);
    this.d.log.error(
      { stripe_event: thin.id, type: thin.type, reported: r.reported, marked: r.marked },
      'Stripe rejected meter events: ledger rows marked rejected',
    );
    return { received: true, outcome: 'applied' };
  }

  /** Creates the workspace's Stripe customer and links it, unless another request linked one first. */
  private async linkCustomer(stripe: Stripe, db: Pool | PoolClient, w: Workspace): Promise<string> {
    const id = await createStripeCustomer(stripe, w);
    await db.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL', [
      w.id,
      id,
    ]);
    return id;
  }
}
