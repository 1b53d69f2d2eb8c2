import type { FastifyInstance } from 'fastify';
import type Stripe from 'stripe';
import { ApiError, METER_ERROR_EVENTS, PLAN_CHANGED_CHANNEL } from '@meterd/core';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { stripeOffline } from '../billing/stripe-client.js';
import { applyStripeEvent } from '../billing/plan-sync.js';
import { applyMeterErrorEvent, type ThinEvent } from '../billing/meter-errors.js';

/** Registered in its own scope: the webhook needs the raw bytes that Stripe signed. */
export function stripeRoutes(app: FastifyInstance, ctx: Ctx): void {
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.post(
    '/webhooks/stripe',
    {
      schema: {
        tags: ['billing'],
        summary:
          'Stripe webhooks: checkout.session.completed and customer.subscription.* set the plan from the price lookup_key (growth/scale/enterprise; canceled or deleted is free); meter error reports (thin events) mark billing ledger rows rejected.',
      },
    },
    async (req) => {
      if (ctx.cfg.STRIPE_WEBHOOK_SECRET === '')
        throw new ApiError('not_configured', 'STRIPE_WEBHOOK_SECRET is not set');
      const sig = req.headers['stripe-signature'];
      if (typeof sig !== 'string' || !Buffer.isBuffer(req.body))
        throw new ApiError('invalid_signature', 'missing Stripe-Signature header or body');
      let event: Stripe.Event;
      try {
        event = stripeOffline.webhooks.constructEvent(req.body, sig, ctx.cfg.STRIPE_WEBHOOK_SECRET);
      } catch {
        throw new ApiError('invalid_signature', 'the Stripe signature does not verify');
      }
      if ((event as { object?: string }).object === 'v2.core.event') {
        const thin = event as unknown as ThinEvent;
        if (!METER_ERROR_EVENTS.has(thin.type)) return { received: true, outcome: 'ignored' };
        const r = await applyMeterErrorEvent(ctx.pool, ctx.stripe, thin);
        if (r !== 'duplicate') {
          ctx.metrics.meterErrorReports.inc();
          ctx.metrics.meterEventsRejected.inc(r.reported);
          ctx.metrics.ledgerRowsRejected.inc(r.marked);
          ctx.log.error(
            { stripe_event: thin.id, type: thin.type, reported: r.reported, marked: r.marked },
            'Stripe rejected meter events: ledger rows marked rejected',
          );
        }
        return { received: true, outcome: r === 'duplicate' ? r : 'applied' };
      }
      const changed: string[] = [];
      const stripe = ctx.stripe;
      const fetchSubscription =
        stripe === null
          ? null
          : (id: string) =>
              stripe.subscriptions.retrieve(id).catch((err: unknown) => {
                // Nothing is recorded yet: the 502 makes Stripe redeliver the event, and it applies then.
                throw new ApiError(
                  'upstream_error',
                  'reading the subscription from Stripe failed; the event will be retried',
                  undefined,
                  { retryable: true, cause: err },
                );
              });
      const outcome = await applyStripeEvent(ctx.pool, event, changed, fetchSubscription);
      // After the commit: ingest and the other services drop the cached plan of these workspaces now.
      for (const ws of changed) await ctx.redis.publish(PLAN_CHANGED_CHANNEL, ws);
      ctx.log.info({ stripe_event: event.id, type: event.type, outcome }, 'stripe webhook');
      return { received: true, outcome };
    },
  );

  app.post<{ Params: { id: string }; Body: Buffer | undefined }>(
    '/api/v1/workspaces/:id/billing/portal-session',
    {
      schema: {
        tags: ['billing'],
        summary: 'A one-time Stripe Customer Portal URL.',
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } },
      },
      preHandler: requireAuth(ctx.auth, ['admin']),
    },
    async (req) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      if (ctx.stripe === null) throw new ApiError('not_configured', 'Stripe is not configured on this server');
      let returnUrl = new URL(`/dashboard/billing?workspace=${wsId}`, ctx.cfg.PUBLIC_BASE_URL).toString();
      if (Buffer.isBuffer(req.body) && req.body.length > 0) {
        let b: unknown;
        try {
          b = JSON.parse(req.body.toString('utf8'));
        } catch {
          throw new ApiError('invalid_json', 'the body is not valid JSON');
        }
        const r = (b as { return_url?: unknown }).return_url;
        if (r !== undefined) {
          if (typeof r !== 'string' || !/^https?:\/\//.test(r))
            throw new ApiError('invalid_field', 'return_url must be an http(s) URL', 'return_url');
          returnUrl = r;
        }
      }
      const { rows } = await ctx.pool.query<{ stripe_customer_id: string | null }>(
        'SELECT stripe_customer_id FROM workspaces WHERE id = $1',
        [wsId],
      );
      const customer = rows[0]?.stripe_customer_id;
      if (!customer) throw new ApiError('no_billing_customer', 'this workspace has no Stripe customer');
      try {
        const session = await ctx.stripe.billingPortal.sessions.create({ customer, return_url: returnUrl });
        return { url: session.url };
      } catch (err) {
        throw new ApiError('upstream_error', 'Stripe did not create a portal session; retry later', undefined, {
          retryable: true,
          cause: err,
        });
      }
    },
  );
}
