import type { FastifyInstance } from 'fastify';
import { PAID_PLANS, type PaidPlan } from '@meterd/core/plans';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { httpUrl, wsParams } from '../http/schemas.js';

/**
 * Plans: a workspace buys one through Stripe Checkout (the plan applies when Stripe's webhook
 * reports the subscription); the operator can set any plan directly (PATCH /api/v1/workspaces/:id),
 * e.g. without Stripe or for a contract invoiced elsewhere.
 */
export function billingRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { billing, workspaces } = ctx.services;

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
        idempotent: true,
        errors: ['payment_required', 'already_subscribed', 'not_configured', 'upstream_error'],
      },
      preHandler: requireAuth(ctx.auth, ['admin']),
    },
    async (req, reply) => {
      const ws = await workspaces.get(await workspaceAccess(workspaces, req, req.params.id));
      const { plan, success_url, cancel_url } = req.body;
      const session = await billing.checkout(ws, plan, {
        ...(success_url === undefined ? {} : { successUrl: success_url }),
        ...(cancel_url === undefined ? {} : { cancelUrl: cancel_url }),
      });
      return reply.status(201).send({ id: session.id, url: session.url, plan });
    },
  );
}
