import type { FastifyInstance, FastifySchema } from 'fastify';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { environmentQueryProp, pathParams, wsParams } from '../http/schemas.js';
import type { DeliveryStatus } from '../services/webhooks.js';
import { EVENT_TYPES } from '../webhooks/outbox.js';

const endpointBody = {
  type: 'object',
  required: ['url'],
  additionalProperties: false,
  properties: {
    url: { type: 'string', maxLength: 2048 },
    description: { type: 'string', maxLength: 500 },
    events: { type: 'array', uniqueItems: true, items: { type: 'string', enum: [...EVENT_TYPES] } },
  },
} as const;

const deliveryQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    webhook_id: { type: 'string' },
    status: { type: 'string', enum: ['pending', 'delivering', 'succeeded', 'failed'] },
    limit: { type: 'string', pattern: '^(?:[1-9]|[1-9][0-9]|1[0-9][0-9]|200)$' },
    ...environmentQueryProp,
  },
} as const;

/** Outgoing webhook endpoints, and their delivery log with resend (docs/control-api.md). */
export function webhookRoutes(app: FastifyInstance, ctx: Ctx): void {
  const guard = requireAuth(ctx.auth, ['admin', 'webhooks:write']);
  const { webhooks, workspaces } = ctx.services;
  const opts = (summary: string, schema: FastifySchema = {}) => ({
    schema: { tags: ['webhooks'], summary, params: wsParams, ...schema },
    preHandler: guard,
  });
  const base = '/api/v1/workspaces/:id/webhooks';
  const deliveries = '/api/v1/workspaces/:id/webhook-deliveries';

  app.post<{ Params: { id: string }; Body: { url: string; description?: string; events?: string[] } }>(
    base,
    opts(
      'Subscribe an endpoint (at most WEBHOOK_MAX_ENDPOINTS per workspace, 16 by default: 409 endpoint_limit_exceeded); the whsec_ signing secret is in this response only.',
      { body: endpointBody, idempotent: true, errors: ['endpoint_limit_exceeded'] },
    ),
    async (req, reply) => {
      const ws = await workspaceAccess(workspaces, req, req.params.id);
      const b = req.body;
      const webhook = await webhooks.create(ws, {
        url: b.url,
        description: b.description ?? null,
        events: b.events === undefined || b.events.length === 0 ? null : b.events,
      });
      return reply.status(201).send({ webhook });
    },
  );

  app.get<{ Params: { id: string } }>(
    base,
    opts('List endpoints with their status (never their secret).'),
    async (req) => ({
      data: await webhooks.list(await workspaceAccess(workspaces, req, req.params.id)),
    }),
  );

  app.delete<{ Params: { id: string; webhook_id: string } }>(
    `${base}/:webhook_id`,
    opts('Delete an endpoint (its pending deliveries go with it).', {
      params: pathParams('id', 'webhook_id'),
      errors: ['resource_not_found'],
    }),
    async (req, reply) => {
      await webhooks.remove(await workspaceAccess(workspaces, req, req.params.id), req.params.webhook_id);
      return reply.status(204).send();
    },
  );

  app.post<{ Params: { id: string; webhook_id: string } }>(
    `${base}/:webhook_id/reactivate`,
    opts('Re-enable an endpoint disabled after five exhausted deliveries.', {
      params: pathParams('id', 'webhook_id'),
      errors: ['resource_not_found'],
    }),
    async (req) => ({
      webhook: await webhooks.reactivate(await workspaceAccess(workspaces, req, req.params.id), req.params.webhook_id),
    }),
  );

  app.get<{ Params: { id: string }; Querystring: { webhook_id?: string; status?: DeliveryStatus; limit?: string } }>(
    deliveries,
    opts('The delivery log, newest first.', { querystring: deliveryQuery }),
    async (req) => {
      const ws = await workspaceAccess(workspaces, req, req.params.id);
      const q = req.query;
      const data = await webhooks.deliveries(ws, {
        ...(q.webhook_id === undefined ? {} : { endpointId: q.webhook_id }),
        ...(q.status === undefined ? {} : { status: q.status }),
        limit: Number(q.limit ?? 50),
      });
      return { data };
    },
  );

  app.get<{ Params: { id: string; delivery_id: string } }>(
    `${deliveries}/:delivery_id`,
    opts('One delivery with every attempt (status, latency, error).', {
      params: pathParams('id', 'delivery_id'),
      errors: ['resource_not_found'],
    }),
    async (req) => ({
      delivery: await webhooks.delivery(await workspaceAccess(workspaces, req, req.params.id), req.params.delivery_id),
    }),
  );

  app.post<{ Params: { id: string; delivery_id: string } }>(
    `${deliveries}/:delivery_id/resend`,
    opts("Send a delivery's event again to its endpoint, as a new delivery with its own log.", {
      params: pathParams('id', 'delivery_id'),
      idempotent: true,
      errors: ['resource_not_found'],
    }),
    async (req, reply) => {
      const id = await webhooks.resend(await workspaceAccess(workspaces, req, req.params.id), req.params.delivery_id);
      return reply.status(202).send({ delivery: { id, resent_from: req.params.delivery_id, status: 'pending' } });
    },
  );
}
