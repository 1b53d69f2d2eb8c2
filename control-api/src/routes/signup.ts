import type { FastifyInstance } from 'fastify';
import {
  ApiError,
  DEFAULT_SCOPES,
  PLANS,
  inTransaction,
  insertApiKey,
  insertWorkspace,
  isPaidPlan,
  type Plan,
  type Workspace,
} from '@meterd/core';
import { createPlanCheckout, returnUrls } from '../billing/checkout.js';
import { createStripeCustomer } from '../billing/customer.js';
import type { Ctx } from '../context.js';
import { RedisTokenBuckets } from '../http/rate-limit.js';
import { emitEvent } from '../webhooks/outbox.js';

/** DNS-safe: a label of 3–40 lowercase letters, digits and inner hyphens. */
export const SLUG_PATTERN = '^[a-z0-9](?:[a-z0-9-]{1,38})[a-z0-9]$';

const signupSchema = {
  tags: ['signup'],
  summary:
    'Create a workspace on the free plan and mint its first API key (public, rate-limited per client address across all replicas). A paid `plan` answers with a `checkout_url`: the plan applies once Stripe reports the payment.',
  body: {
    type: 'object',
    required: ['slug', 'display_name'],
    additionalProperties: false,
    properties: {
      slug: { type: 'string', minLength: 3, maxLength: 40, pattern: SLUG_PATTERN },
      display_name: { type: 'string', minLength: 1, maxLength: 200 },
      contact_email: { type: 'string', format: 'email', maxLength: 320 },
      plan: { type: 'string', enum: [...PLANS] },
    },
  },
} as const;

interface SignupBody {
  slug: string;
  display_name: string;
  contact_email?: string;
  plan?: Plan;
}

export function publicWorkspace(w: Workspace) {
  return {
    id: w.id,
    slug: w.slug,
    display_name: w.display_name,
    contact_email: w.contact_email,
    plan: w.plan,
    stripe_customer_id: w.stripe_customer_id,
    created_at: w.created_at,
  };
}

export function signupRoutes(app: FastifyInstance, ctx: Ctx): void {
  // Keyed on req.ip: the socket address, or the client address a TRUSTED_PROXIES proxy reported.
  const buckets = new RedisTokenBuckets(
    ctx.redis,
    ctx.cfg.REDIS_KEY_PREFIX,
    'signup',
    ctx.cfg.SIGNUP_BURST,
    ctx.cfg.SIGNUP_RATE_PER_MINUTE,
  );

  app.post<{ Body: SignupBody }>(
    '/api/v1/signup',
    { schema: signupSchema, preValidation: async (req) => buckets.take(req.ip) },
    async (req, reply) => {
      const b = req.body;
      if (b.slug.includes('--'))
        throw new ApiError('invalid_field', 'slug must not contain consecutive hyphens', 'slug');
      // Anyone may sign up, so nobody gets a paid plan by asking: every workspace starts on free.
      const wanted = b.plan ?? 'free';
      if (isPaidPlan(wanted) && ctx.stripe === null) {
        throw new ApiError(
          'payment_required',
          `the ${wanted} plan is paid through Stripe, which this server has not configured: sign up on free (the operator can set a paid plan)`,
          'plan',
        );
      }
      let customerId: string | null = null;
      try {
        const { workspace, key, checkoutUrl } = await inTransaction(ctx.pool, async (c) => {
          let workspace: Workspace;
          try {
            workspace = await insertWorkspace(c, {
              slug: b.slug,
              display_name: b.display_name,
              contact_email: b.contact_email ?? null,
              plan: 'free',
            });
          } catch (err) {
            if ((err as { code?: string }).code === '23505')
              throw new ApiError('slug_taken', `the slug ${b.slug} is taken`, 'slug');
            throw err;
          }
          const key = await insertApiKey(c, workspace.id, DEFAULT_SCOPES, 'first key');
          let checkoutUrl: string | null = null;
          if (ctx.stripe !== null) {
            // Inside the transaction: if Stripe fails, the workspace and key roll back with it.
            customerId = await createStripeCustomer(ctx.stripe, workspace);
            await c.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1', [workspace.id, customerId]);
            workspace = { ...workspace, stripe_customer_id: customerId };
            if (isPaidPlan(wanted)) {
              const urls = returnUrls(ctx.cfg.PUBLIC_BASE_URL.toString(), workspace.id);
              checkoutUrl = (
                await createPlanCheckout(ctx.stripe, { workspaceId: workspace.id, customerId, plan: wanted, ...urls })
              ).url;
            }
          }
          await emitEvent(c, workspace.id, 'workspace.signup', { workspace: publicWorkspace(workspace) });
          return { workspace, key, checkoutUrl };
        });
        ctx.metrics.signups.inc();
        return await reply.status(201).send({
          workspace: publicWorkspace(workspace),
          api_key: { id: key.id, token: key.token, prefix: key.display_prefix, scopes: key.scopes },
          dashboard_url: new URL(`/dashboard/onboarding?workspace=${workspace.id}`, ctx.cfg.PUBLIC_BASE_URL).toString(),
          ...(checkoutUrl === null ? {} : { requested_plan: wanted, checkout_url: checkoutUrl }),
        });
      } catch (err) {
        // The Stripe customer exists but the workspace does not (the commit failed): remove it too.
        if (customerId !== null && ctx.stripe !== null) await ctx.stripe.customers.del(customerId).catch(() => {});
        throw err;
      }
    },
  );
}
