import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { wsParams } from '../http/schemas.js';

/** Registered in its own scope: the webhook needs the raw bytes that Stripe signed. */
export function stripeRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { billing, workspaces } = ctx.services;
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.post(
    '/webhooks/stripe',
    {
      schema: {
        tags: ['billing'],
        summary:
          'Stripe webhooks: checkout.session.completed and customer.subscription.* set the plan from the price lookup_key (growth/scale/enterprise; canceled or deleted is free); meter error reports (thin events) mark billing ledger rows rejected.',
        public: true,
        errors: ['invalid_signature', 'not_configured', 'upstream_error'],
      },
    },
    async (req) => billing.receiveWebhook(req.body, req.headers['stripe-signature']),
  );

  app.post<{ Params: { id: string }; Body: Buffer | undefined }>(
    '/api/v1/workspaces/:id/billing/portal-session',
    {
      schema: {
        tags: ['billing'],
        summary: 'A one-time Stripe Customer Portal URL.',
        params: wsParams,
        errors: ['not_configured', 'no_billing_customer', 'upstream_error'],
      },
      preHandler: requireAuth(ctx.auth, ['admin']),
    },
    async (req) => billing.portalSession(await workspaceAccess(workspaces, req, req.params.id), returnUrlOf(req.body)),
  );
}

/** The optional `{ "return_url": "http(s)://…" }` body, read by hand: this scope keeps bodies raw. */
function returnUrlOf(body: Buffer | undefined): string | undefined {
  if (!Buffer.isBuffer(body) || body.length === 0) return undefined;
  let b: unknown;
  try {
    b = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ApiError('invalid_json', 'the body is not valid JSON');
  }
  const r = (b as { return_url?: unknown }).return_url;
  if (r === undefined) return undefined;
  if (typeof r !== 'string' || !/^https?:\/\//.test(r))
    throw new ApiError('invalid_field', 'return_url must be an http(s) URL', 'return_url');
  return r;
}
