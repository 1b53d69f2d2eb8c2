import type { FastifyInstance } from 'fastify';
import { eventFilterProps } from '../http/schemas.js';
import { DEFAULT_RANGE_MS, decodeCursor } from '../services/events.js';
import { hidden, type DashCtx } from './context.js';

const eventsQuery = { type: 'object', additionalProperties: false, properties: eventFilterProps } as const;

/**
 * The event explorer and billing readiness for the signed-in workspace: the same services as
 * GET /api/v1/workspaces/:id/events, …/events/rejections and …/billing/readiness.
 */
export function eventRoutes(app: FastifyInstance, d: DashCtx): void {
  const { events, readiness } = d.services;

  app.get<{ Querystring: { event_type?: string; idempotency_key?: string; cursor?: string } }>(
    '/dashboard/api/events',
    { schema: { ...hidden, querystring: eventsQuery }, preHandler: d.guard },
    async (req) => {
      const q = req.query;
      const to = Date.now();
      return events.list(req.dash!.workspace.id, {
        from: to - DEFAULT_RANGE_MS,
        to,
        limit: 50,
        ...(q.event_type === undefined ? {} : { eventType: q.event_type }),
        ...(q.idempotency_key === undefined ? {} : { idempotencyKey: q.idempotency_key }),
        ...(q.cursor === undefined ? {} : { cursor: decodeCursor(q.cursor) }),
      });
    },
  );

  app.get('/dashboard/api/events/rejections', { schema: hidden, preHandler: d.guard }, async (req) => ({
    data: await events.rejections(req.dash!.workspace.id, 100),
  }));

  app.get('/dashboard/api/billing/readiness', { schema: hidden, preHandler: d.guard }, async (req) => {
    const w = req.dash!.workspace;
    return readiness.of(w.id, w.stripe_customer_id, w.environment);
  });
}
