import type { FastifyInstance } from 'fastify';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { wsParams } from '../http/schemas.js';

/** Shopify connect: start returns the authorize URL; the callback checks HMAC and state, stores the token encrypted. */
export function shopifyRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { shopify, workspaces } = ctx.services;

  app.post<{ Params: { id: string }; Body: { shop_domain: string } }>(
    '/api/v1/workspaces/:id/shopify/connect',
    {
      schema: {
        tags: ['shopify'],
        summary: 'Start connecting a Shopify store: returns the OAuth URL to redirect the merchant to.',
        errors: ['not_configured', 'upstream_error'],
        params: wsParams,
        body: {
          type: 'object',
          required: ['shop_domain'],
          additionalProperties: false,
          properties: { shop_domain: { type: 'string', maxLength: 100 } },
        },
      },
      preHandler: requireAuth(ctx.auth, ['admin']),
    },
    async (req) => {
      shopify.requireConfigured();
      const ws = await workspaceAccess(workspaces, req, req.params.id);
      const { authorizeUrl, stateTtlSeconds } = await shopify.start(ws, req.body.shop_domain);
      return { authorize_url: authorizeUrl, state_expires_in: stateTtlSeconds };
    },
  );

  app.get<{ Querystring: Record<string, string> }>(
    '/api/v1/shopify/callback',
    {
      schema: {
        tags: ['shopify'],
        summary: 'Shopify OAuth callback (HMAC and state checked).',
        public: true,
        errors: ['invalid_signature', 'invalid_field', 'not_configured', 'upstream_error'],
      },
    },
    async (req, reply) => {
      await shopify.complete(req.query);
      return reply.redirect(
        new URL('/dashboard/onboarding?shopify=connected', ctx.cfg.PUBLIC_BASE_URL).toString(),
        302,
      );
    },
  );
}
