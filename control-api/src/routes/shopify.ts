import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { ApiError, inTransaction } from '@meterd/core';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { SHOP_DOMAIN, verifyShopifyHmac } from '../shopify/oauth.js';
import { emitEvent } from '../webhooks/outbox.js';

const STATE_TTL_MINUTES = 10;

/** Shopify connect: start returns the authorize URL; the callback checks HMAC and state, stores the token encrypted. */
export function shopifyRoutes(app: FastifyInstance, ctx: Ctx): void {
  const cfg = ctx.cfg;
  const callbackUrl = new URL('/api/v1/shopify/callback', cfg.PUBLIC_BASE_URL).toString();
  const configured = () => {
    if (cfg.SHOPIFY_API_KEY === '' || cfg.SHOPIFY_API_SECRET === '')
      throw new ApiError('not_configured', 'Shopify is not configured on this server');
  };

  app.post<{ Params: { id: string }; Body: { shop_domain: string } }>(
    '/api/v1/workspaces/:id/shopify/connect',
    {
      schema: {
        tags: ['shopify'],
        summary: 'Start connecting a Shopify store: returns the OAuth URL to redirect the merchant to.',
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } },
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
      configured();
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const shop = req.body.shop_domain.toLowerCase();
      if (!SHOP_DOMAIN.test(shop))
        throw new ApiError('invalid_field', 'shop_domain must be <store>.myshopify.com', 'shop_domain');
      const state = randomBytes(24).toString('base64url');
      await ctx.pool.query(
        `INSERT INTO shopify_oauth_states (state, workspace_id, shop_domain, expires_at) VALUES ($1, $2, $3, now() + make_interval(mins => $4))`,
        [state, wsId, shop, STATE_TTL_MINUTES],
      );
      const u = new URL(`https://${shop}/admin/oauth/authorize`);
      u.search = new URLSearchParams({
        client_id: cfg.SHOPIFY_API_KEY,
        scope: cfg.SHOPIFY_SCOPES,
        redirect_uri: callbackUrl,
        state,
      }).toString();
      return { authorize_url: u.toString(), state_expires_in: STATE_TTL_MINUTES * 60 };
    },
  );

  app.get<{ Querystring: Record<string, string> }>(
    '/api/v1/shopify/callback',
    { schema: { tags: ['shopify'], summary: 'Shopify OAuth callback (HMAC and state checked).' } },
    async (req, reply) => {
      configured();
      const q = req.query;
      if (!verifyShopifyHmac(q, cfg.SHOPIFY_API_SECRET))
        throw new ApiError('invalid_signature', 'the Shopify HMAC does not verify');
      const shop = q.shop ?? '';
      if (!SHOP_DOMAIN.test(shop) || typeof q.code !== 'string' || typeof q.state !== 'string')
        throw new ApiError('invalid_signature', 'the callback lacks shop, code or state');
      // Single use: the state row is consumed whether or not the rest succeeds.
      const { rows } = await ctx.pool.query<{ workspace_id: string }>(
        'DELETE FROM shopify_oauth_states WHERE state = $1 AND shop_domain = $2 AND expires_at > now() RETURNING workspace_id',
        [q.state, shop],
      );
      if (rows.length === 0) throw new ApiError('invalid_signature', 'unknown, expired or already used state');
      const wsId = rows[0]!.workspace_id;
      const token = await exchangeCode(
        cfg.SHOPIFY_TOKEN_URL_TEMPLATE.replace('{shop}', shop),
        cfg.SHOPIFY_API_KEY,
        cfg.SHOPIFY_API_SECRET,
        q.code,
      );
      await inTransaction(ctx.pool, async (c) => {
        await c.query(
          `INSERT INTO shopify_connections (workspace_id, shop_domain, access_token_enc, scopes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id, shop_domain) DO UPDATE SET access_token_enc = EXCLUDED.access_token_enc, scopes = EXCLUDED.scopes, connected_at = now()`,
          [wsId, shop, ctx.box.seal(token.access_token), token.scope ?? null],
        );
        await emitEvent(c, wsId, 'shopify.connected', { shop_domain: shop, scopes: token.scope ?? null });
      });
      return reply.redirect(new URL('/dashboard/onboarding?shopify=connected', cfg.PUBLIC_BASE_URL).toString(), 302);
    },
  );
}

async function exchangeCode(
  url: string,
  clientId: string,
  secret: string,
  code: string,
): Promise<{ access_token: string; scope?: string }> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ client_id: clientId, client_secret: secret, code }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new ApiError('upstream_error', 'exchanging the Shopify code failed', undefined, {
      retryable: true,
      cause: err,
    });
  }
  const body = (await res.json().catch(() => ({}))) as { access_token?: string; scope?: string };
  if (!res.ok || typeof body.access_token !== 'string')
    throw new ApiError('upstream_error', `Shopify refused the code (${res.status})`);
  return { access_token: body.access_token, ...(body.scope ? { scope: body.scope } : {}) };
}
