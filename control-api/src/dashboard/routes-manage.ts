import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import { SCOPES, type Scope } from '@meterd/core/keys';
import { mintKeyBody } from '../http/schemas.js';
import { hidden, type DashCtx } from './context.js';

const idParam = (name: string) => ({
  type: 'object',
  required: [name],
  properties: { [name]: { type: 'string', maxLength: 100 } },
});

/**
 * Keys, webhooks and billing for the signed-in workspace: the same services as the bearer API
 * (routes/keys.ts, routes/webhooks.ts, routes/stripe.ts), authorised by the session instead of a
 * bearer key.
 */
export function manageRoutes(app: FastifyInstance, d: DashCtx): void {
  const { keys, webhooks, billing } = d.services;

  app.get('/dashboard/api/keys', { schema: hidden, preHandler: d.guard }, async (req) => ({
    data: await keys.list(req.dash!.workspace.id, 'newest'),
    current_key_id: req.dash!.session.keyId,
    scopes: SCOPES,
  }));

  app.post<{ Body: { name?: string; scopes?: Scope[] } }>(
    '/dashboard/api/keys',
    { schema: { ...hidden, body: mintKeyBody }, preHandler: d.guard },
    async (req, reply) => {
      // A name typed into the form: blank means none.
      const name = req.body?.name?.trim() || null;
      const key = await keys.mint(req.dash!.workspace.id, { name, scopes: req.body?.scopes });
      return reply.status(201).send({ api_key: key });
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
      await keys.revoke(workspace.id, req.params.key_id);
      return { api_key: { id: req.params.key_id, revoked: true } };
    },
  );

  app.get('/dashboard/api/webhooks', { schema: hidden, preHandler: d.guard }, async (req) => {
    const ws = req.dash!.workspace.id;
    const [endpoints, deliveries] = await Promise.all([webhooks.list(ws), webhooks.deliveriesWithAttempts(ws, 50)]);
    return { endpoints, deliveries };
  });

  app.post<{ Params: { webhook_id: string } }>(
    '/dashboard/api/webhooks/:webhook_id/reactivate',
    { schema: { ...hidden, params: idParam('webhook_id') }, preHandler: d.guard },
    async (req) => ({ webhook: await webhooks.reactivate(req.dash!.workspace.id, req.params.webhook_id) }),
  );

  app.post<{ Params: { delivery_id: string } }>(
    '/dashboard/api/deliveries/:delivery_id/resend',
    { schema: { ...hidden, params: idParam('delivery_id') }, preHandler: d.guard },
    async (req, reply) => {
      const id = await webhooks.resend(req.dash!.workspace.id, req.params.delivery_id);
      return reply.status(202).send({ delivery: { id, resent_from: req.params.delivery_id, status: 'pending' } });
    },
  );

  app.get('/dashboard/api/billing/unbilled', { schema: hidden, preHandler: d.guard }, async (req) =>
    billing.unbilled(req.dash!.workspace.id),
  );

  app.post('/dashboard/api/billing/portal', { schema: hidden, preHandler: d.guard }, async (req) =>
    billing.portalSession(req.dash!.workspace.id),
  );
}
