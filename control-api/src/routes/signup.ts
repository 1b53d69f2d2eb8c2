import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import { PLANS, type Plan } from '@meterd/core/plans';
import type { Ctx } from '../context.js';
import { RedisTokenBuckets } from '../http/rate-limit.js';
import { publicWorkspace } from '../services/workspaces.js';

/** DNS-safe: a label of 3–40 lowercase letters, digits and inner hyphens. */
export const SLUG_PATTERN = '^[a-z0-9](?:[a-z0-9-]{1,38})[a-z0-9]$';

const signupSchema = {
  tags: ['signup'],
  idempotent: true,
  public: true,
  errors: ['rate_limited', 'slug_taken', 'payment_required', 'not_configured', 'upstream_error', 'service_unavailable'],
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
      const wanted = b.plan ?? 'free';
      const { workspace, testWorkspaceId, key, checkoutUrl } = await ctx.services.workspaces.signup({
        slug: b.slug,
        display_name: b.display_name,
        contact_email: b.contact_email ?? null,
        plan: wanted,
      });
      ctx.metrics.signups.inc();
      return reply.status(201).send({
        workspace: { ...publicWorkspace(workspace), environments: { live: workspace.id, test: testWorkspaceId } },
        api_key: key,
        dashboard_url: new URL(`/dashboard/onboarding?workspace=${workspace.id}`, ctx.cfg.PUBLIC_BASE_URL).toString(),
        ...(checkoutUrl === null ? {} : { requested_plan: wanted, checkout_url: checkoutUrl }),
      });
    },
  );
}
