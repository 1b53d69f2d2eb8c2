import type { FastifyInstance } from 'fastify';
import { ApiError, SCOPES, currencyExponents, insertApiKey, revokeApiKey, type Scope } from '@meterd/core';
import { reactivateEndpoint, resendDelivery } from '../webhooks/actions.js';
import { hidden, type DashCtx } from './context.js';

const idParam = (name: string) => ({
  type: 'object',
  required: [name],
  properties: { [name]: { type: 'string', maxLength: 100 } },
});

/**
 * Keys, webhooks and billing for the signed-in workspace. The same operations as the bearer API
 * (routes/keys.ts, routes/webhooks.ts, routes/stripe.ts) over the same tables and core functions,
 * authorised by the session instead of a bearer key.
 */
export function manageRoutes(app: FastifyInstance, d: DashCtx): void {
  app.get('/dashboard/api/keys', { schema: hidden, preHandler: d.guard }, async (req) => {
    const { rows } = await d.pool.query(
      `SELECT id, name, display_prefix AS prefix, scopes, created_at, revoked_at FROM api_keys WHERE workspace_id = $1 ORDER BY created_at DESC, id`,
      [req.dash!.workspace.id],
    );
    return { data: rows, current_key_id: req.dash!.session.keyId, scopes: SCOPES };
  });

  app.post<{ Body: { name?: string; scopes?: Scope[] } }>(
    '/dashboard/api/keys',
    {
      schema: {
        ...hidden,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            name: { type: 'string', maxLength: 200 },
            scopes: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: [...SCOPES] } },
          },
        },
      },
      preHandler: d.guard,
    },
    async (req, reply) => {
      const scopes = req.body?.scopes ?? ['meter:write', 'meter:read'];
      const name = req.body?.name?.trim() || null;
      const key = await insertApiKey(d.pool, req.dash!.workspace.id, scopes, name);
      reply.header('cache-control', 'no-store');
      return reply
        .status(201)
        .send({ api_key: { id: key.id, token: key.token, prefix: key.display_prefix, scopes: key.scopes, name } });
    },
  );

  app.delete<{ Params: { key_id: string } }>(
    '/dashboard/api/keys/:key_id',
    { schema: { ...hidden, params: idParam('key_id') }, preHandler: d.guard },
    async (req) => {
      const { workspace, session } = req.dash!;
      if (req.params.key_id === session.keyId)
        throw new ApiError(
          'invalid_field',
          'this session signed in with that key: sign in with another admin key to revoke it',
          'key_id',
        );
      if (!(await revokeApiKey(d.pool, d.redis, workspace.id, req.params.key_id)))
        throw new ApiError('resource_not_found', `no live API key ${req.params.key_id} in this workspace`);
      return { api_key: { id: req.params.key_id, revoked: true } };
    },
  );

  app.get('/dashboard/api/webhooks', { schema: hidden, preHandler: d.guard }, async (req) => {
    const ws = req.dash!.workspace.id;
    const [endpoints, deliveries] = await Promise.all([
      d.pool.query(
        `SELECT id, url, description, events, status, consecutive_failures, disabled_at, created_at FROM webhook_endpoints WHERE workspace_id = $1 ORDER BY created_at, id`,
        [ws],
      ),
      d.pool.query<{ id: string }>(
        `SELECT d.id, e.event, d.event_id, d.endpoint_id, d.status, d.attempts, d.last_status_code, d.last_error, d.created_at, d.completed_at
           FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id
          WHERE d.workspace_id = $1 ORDER BY d.created_at DESC, d.id LIMIT 50`,
        [ws],
      ),
    ]);
    const ids = deliveries.rows.map((r) => r.id);
    const { rows: attempts } = await d.pool.query<{ delivery_id: string }>(
      'SELECT delivery_id, attempt, status_code, latency_ms, error, attempted_at FROM webhook_attempts WHERE delivery_id = ANY ($1) ORDER BY delivery_id, attempt',
      [ids],
    );
    const byDelivery = new Map<string, unknown[]>();
    for (const a of attempts) byDelivery.set(a.delivery_id, [...(byDelivery.get(a.delivery_id) ?? []), a]);
    return {
      endpoints: endpoints.rows,
      deliveries: deliveries.rows.map((r) => ({ ...r, attempts_log: byDelivery.get(r.id) ?? [] })),
    };
  });

  app.post<{ Params: { webhook_id: string } }>(
    '/dashboard/api/webhooks/:webhook_id/reactivate',
    { schema: { ...hidden, params: idParam('webhook_id') }, preHandler: d.guard },
    async (req) => {
      return { webhook: await reactivateEndpoint(d.pool, req.dash!.workspace.id, req.params.webhook_id) };
    },
  );

  app.post<{ Params: { delivery_id: string } }>(
    '/dashboard/api/deliveries/:delivery_id/resend',
    { schema: { ...hidden, params: idParam('delivery_id') }, preHandler: d.guard },
    async (req, reply) => {
      const id = await resendDelivery(d.pool, req.dash!.workspace.id, req.params.delivery_id);
      return reply.status(202).send({ delivery: { id, resent_from: req.params.delivery_id, status: 'pending' } });
    },
  );

  // Usage Stripe did not bill: ledger rows billing-sync recorded as unbillable (past Stripe's
  // 35-day limit) or rejected (Stripe's error reports, a missing meter), with their reason.
  app.get('/dashboard/api/billing/unbilled', { schema: hidden, preHandler: d.guard }, async (req) => {
    const { rows } = await d.pool.query<{
      identifier: string;
      event_name: string;
      event_type: string;
      currency: string;
      value_field: string;
      window_start: Date;
      value: string;
      status: string;
      reason: string | null;
    }>(
      `SELECT identifier, event_name, event_type, currency, value_field, window_start, value::text, status, reason FROM billing_pushes
        WHERE workspace_id = $1 AND status IN ('unbillable', 'rejected') ORDER BY window_start DESC, identifier LIMIT 200`,
      [req.dash!.workspace.id],
    );
    return {
      rows: rows.map((r) => ({ ...r, window_start: r.window_start.getTime() })),
      currency_exponents: currencyExponents(new Set(rows.map((r) => r.currency).filter((c) => c !== ''))),
    };
  });

  app.post('/dashboard/api/billing/portal', { schema: hidden, preHandler: d.guard }, async (req) => {
    const ws = req.dash!.workspace;
    if (d.stripe === null) throw new ApiError('not_configured', 'Stripe is not configured on this server');
    if (ws.stripe_customer_id === null)
      throw new ApiError('no_billing_customer', 'this workspace has no Stripe customer');
    try {
      const session = await d.stripe.billingPortal.sessions.create({
        customer: ws.stripe_customer_id,
        return_url: new URL('/dashboard/billing', d.cfg.PUBLIC_BASE_URL).toString(),
      });
      return { url: session.url };
    } catch (err) {
      throw new ApiError('upstream_error', 'Stripe did not create a portal session; retry later', undefined, {
        retryable: true,
        cause: err,
      });
    }
  });
}
