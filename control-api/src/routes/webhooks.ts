import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { checkResolvedHost, checkWebhookUrl } from '../webhooks/ssrf.js';
import { EVENT_TYPES } from '../webhooks/outbox.js';
import { ENDPOINT_COLS, createEndpoint, reactivateEndpoint, resendDelivery } from '../webhooks/actions.js';

const ws = { id: { type: 'string' } } as const;
const params = (extra: string[] = []) => ({
  type: 'object',
  required: ['id', ...extra],
  properties: { ...ws, ...Object.fromEntries(extra.map((k) => [k, { type: 'string' }])) },
});

interface EndpointRow {
  id: string;
  url: string;
  description: string | null;
  events: string[] | null;
  status: string;
  consecutive_failures: number;
  disabled_at: string | null;
  created_at: string;
}

interface DeliveryRow {
  id: string;
  event_id: string;
  event: string;
  endpoint_id: string;
  status: string;
  attempts: number;
  next_attempt_at: string;
  last_status_code: number | null;
  last_latency_ms: number | null;
  last_error: string | null;
  created_at: string;
  completed_at: string | null;
}
const DELIVERY_COLS = `d.id, d.event_id, e.event, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.last_status_code,
  d.last_latency_ms, d.last_error, d.created_at, d.completed_at`;

/** Outgoing webhook endpoints, and (from seed 002) their delivery log with resend. */
export function webhookRoutes(app: FastifyInstance, ctx: Ctx): void {
  const guard = requireAuth(ctx.auth, ['admin', 'webhooks:write']);
  const base = '/api/v1/workspaces/:id/webhooks';

  app.post<{ Params: { id: string }; Body: { url: string; description?: string; events?: string[] } }>(
    base,
    {
      schema: {
        tags: ['webhooks'],
        summary:
          'Subscribe an endpoint (at most WEBHOOK_MAX_ENDPOINTS per workspace, 16 by default: 409 endpoint_limit_exceeded); the whsec_ signing secret is in this response only.',
        params: params(),
        body: {
          type: 'object',
          required: ['url'],
          additionalProperties: false,
          properties: {
            url: { type: 'string', maxLength: 2048 },
            description: { type: 'string', maxLength: 500 },
            events: { type: 'array', uniqueItems: true, items: { type: 'string', enum: [...EVENT_TYPES] } },
          },
        },
      },
      preHandler: guard,
    },
    async (req, reply) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const url = checkWebhookUrl(req.body.url, ctx.cfg.WEBHOOK_ALLOW_PRIVATE);
      if (!ctx.cfg.WEBHOOK_ALLOW_PRIVATE) await checkResolvedHost(url.hostname);
      const secret = `whsec_${randomBytes(32).toString('base64url')}`;
      const events = req.body.events === undefined || req.body.events.length === 0 ? null : req.body.events;
      const row = await createEndpoint<EndpointRow>(
        ctx.pool,
        wsId,
        { url: url.toString(), description: req.body.description ?? null, events, secretEnc: ctx.box.seal(secret) },
        ctx.cfg.WEBHOOK_MAX_ENDPOINTS,
      );
      return reply.status(201).send({ webhook: { ...row, secret } });
    },
  );

  app.get<{ Params: { id: string } }>(
    base,
    {
      schema: {
        tags: ['webhooks'],
        summary: 'List endpoints with their status (never their secret).',
        params: params(),
      },
      preHandler: guard,
    },
    async (req) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const { rows } = await ctx.pool.query<EndpointRow>(
        `SELECT ${ENDPOINT_COLS} FROM webhook_endpoints WHERE workspace_id = $1 ORDER BY created_at, id`,
        [wsId],
      );
      return { data: rows };
    },
  );

  app.delete<{ Params: { id: string; webhook_id: string } }>(
    `${base}/:webhook_id`,
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Delete an endpoint (its pending deliveries go with it).',
        params: params(['webhook_id']),
      },
      preHandler: guard,
    },
    async (req, reply) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const { rowCount } = await ctx.pool.query('DELETE FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2', [
        req.params.webhook_id,
        wsId,
      ]);
      if (rowCount === 0)
        throw new ApiError('resource_not_found', `no webhook ${req.params.webhook_id} in this workspace`);
      return reply.status(204).send();
    },
  );

  app.post<{ Params: { id: string; webhook_id: string } }>(
    `${base}/:webhook_id/reactivate`,
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Re-enable an endpoint disabled after five exhausted deliveries.',
        params: params(['webhook_id']),
      },
      preHandler: guard,
    },
    async (req) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      return { webhook: await reactivateEndpoint<EndpointRow>(ctx.pool, wsId, req.params.webhook_id) };
    },
  );

  const deliveries = '/api/v1/workspaces/:id/webhook-deliveries';

  app.get<{ Params: { id: string }; Querystring: { webhook_id?: string; status?: string; limit?: string } }>(
    deliveries,
    {
      schema: {
        tags: ['webhooks'],
        summary: 'The delivery log, newest first.',
        params: params(),
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            webhook_id: { type: 'string' },
            status: { type: 'string', enum: ['pending', 'delivering', 'succeeded', 'failed'] },
            limit: { type: 'string', pattern: '^(?:[1-9]|[1-9][0-9]|1[0-9][0-9]|200)$' },
          },
        },
      },
      preHandler: guard,
    },
    async (req) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const q = req.query;
      const { rows } = await ctx.pool.query<DeliveryRow>(
        `SELECT ${DELIVERY_COLS} FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id
        WHERE d.workspace_id = $1 AND ($2::text IS NULL OR d.endpoint_id = $2) AND ($3::text IS NULL OR d.status = $3)
        ORDER BY d.created_at DESC, d.id LIMIT $4`,
        [wsId, q.webhook_id ?? null, q.status ?? null, Number(q.limit ?? 50)],
      );
      return { data: rows };
    },
  );

  app.get<{ Params: { id: string; delivery_id: string } }>(
    `${deliveries}/:delivery_id`,
    {
      schema: {
        tags: ['webhooks'],
        summary: 'One delivery with every attempt (status, latency, error).',
        params: params(['delivery_id']),
      },
      preHandler: guard,
    },
    async (req) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const { rows } = await ctx.pool.query<DeliveryRow>(
        `SELECT ${DELIVERY_COLS} FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id WHERE d.id = $1 AND d.workspace_id = $2`,
        [req.params.delivery_id, wsId],
      );
      if (rows.length === 0)
        throw new ApiError('resource_not_found', `no delivery ${req.params.delivery_id} in this workspace`);
      const { rows: attempts } = await ctx.pool.query(
        'SELECT attempt, status_code, latency_ms, error, attempted_at FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt',
        [req.params.delivery_id],
      );
      return { delivery: { ...rows[0]!, attempts_log: attempts } };
    },
  );

  app.post<{ Params: { id: string; delivery_id: string } }>(
    `${deliveries}/:delivery_id/resend`,
    {
      schema: {
        tags: ['webhooks'],
        summary: "Send a delivery's event again to its endpoint, as a new delivery with its own log.",
        params: params(['delivery_id']),
      },
      preHandler: guard,
    },
    async (req, reply) => {
      const wsId = await workspaceAccess(ctx.pool, req, req.params.id);
      const id = await resendDelivery(ctx.pool, wsId, req.params.delivery_id);
      return reply.status(202).send({ delivery: { id, resent_from: req.params.delivery_id, status: 'pending' } });
    },
  );
}
