import type { FastifyInstance } from 'fastify';
import type Stripe from 'stripe';
import {
  ApiError,
  PAID_PLANS,
  PLANS,
  PLAN_CHANGED_CHANNEL,
  isPaidPlan,
  type PaidPlan,
  type Plan,
  type Workspace,
} from '@meterd/core';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { createPlanCheckout, returnUrls } from '../billing/checkout.js';
import { createStripeCustomer } from '../billing/customer.js';
import { publicWorkspace } from './signup.js';

const wsParams = { type: 'object', required: ['id'], properties: { id: { type: 'string' } } } as const;
const httpUrl = { type: 'string', maxLength: 2_000, pattern: '^https?://' } as const;

/**
 * Plans: a workspace buys one through Stripe Checkout (the plan applies when Stripe's webhook
 * reports the subscription); the operator can set any plan directly, e.g. without Stripe or for a
 * contract invoiced elsewhere.
 */
export function billingRoutes(app: FastifyInstance, ctx: Ctx): void {
  app.post<{ Params: { id: string }; Body: { plan: PaidPlan; success_url?: string; cancel_url?: string } }>(
    '/api/v1/workspaces/:id/billing/checkout-session',
    {
      schema: {
        tags: ['billing'],
        summary: 'A Stripe Checkout URL to buy a paid plan; the plan changes when Stripe reports the payment.',
        params: wsParams,
        body: {
          type: 'object',
          required: ['plan'],
          additionalProperties: false,
          properties: { plan: { type: 'string', enum: [...PAID_PLANS] }, success_url: httpUrl, cancel_url: httpUrl },
        },
      },
      preHandler: requireAuth(ctx.auth, ['admin']),
    },
    async (req, reply) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const stripe = ctx.stripe;
      if (stripe === null)
        throw new ApiError(
          'payment_required',
          'Stripe is not configured on this server: only the operator can set a paid plan',
        );
      const { rows } = await ctx.pool.query<Workspace>(
        'SELECT id, slug, display_name, contact_email, plan, stripe_customer_id, created_at FROM workspaces WHERE id = $1',
        [wsId],
      );
      const ws = rows[0]!;
      if (isPaidPlan(ws.plan))
        throw new ApiError(
          'already_subscribed',
          `the workspace is on the ${ws.plan} plan: change it in the billing portal`,
        );
      const customerId = ws.stripe_customer_id ?? (await linkCustomer(stripe, ctx, ws));
      const urls = returnUrls(ctx.cfg.PUBLIC_BASE_URL.toString(), wsId);
      const session = await createPlanCheckout(stripe, {
        workspaceId: wsId,
        customerId,
        plan: req.body.plan,
        successUrl: req.body.success_url ?? urls.successUrl,
        cancelUrl: req.body.cancel_url ?? urls.cancelUrl,
      });
      return reply.status(201).send({ id: session.id, url: session.url, plan: req.body.plan });
    },
  );

  app.patch<{ Params: { id: string }; Body: { plan: Plan } }>(
    '/api/v1/workspaces/:id',
    {
      schema: {
        tags: ['billing'],
        summary: "Operator only: set a workspace's plan directly (ingest applies it within a second).",
        params: wsParams,
        body: {
          type: 'object',
          required: ['plan'],
          additionalProperties: false,
          properties: { plan: { type: 'string', enum: [...PLANS] } },
        },
      },
      preHandler: requireAuth(ctx.auth, []),
    },
    async (req) => {
      if (req.principal!.workspaceId !== null)
        throw new ApiError(
          'operator_only',
          'only the operator key may set a plan; a workspace buys one through POST /api/v1/workspaces/:id/billing/checkout-session',
        );
      const { rows } = await ctx.pool.query<Workspace>(
        'UPDATE workspaces SET plan = $2 WHERE id = $1 RETURNING id, slug, display_name, contact_email, plan, stripe_customer_id, created_at',
        [req.params.id, req.body.plan],
      );
      if (rows.length === 0) throw new ApiError('workspace_not_found', `no workspace ${req.params.id}`);
      await ctx.redis.publish(PLAN_CHANGED_CHANNEL, req.params.id);
      ctx.log.info({ workspace: req.params.id, plan: req.body.plan }, 'plan set by the operator');
      return { workspace: publicWorkspace(rows[0]!) };
    },
  );
}

/** A workspace from before Stripe was configured has no customer yet: create and link one. */
async function linkCustomer(stripe: Stripe, ctx: Ctx, ws: Workspace): Promise<string> {
  const id = await createStripeCustomer(stripe, ws);
  await ctx.pool.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL', [
    ws.id,
    id,
  ]);
  return id;
}
