import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { environmentQueryProp, eventFilterProps, wsParams } from '../http/schemas.js';
import { DEFAULT_RANGE_MS, MAX_RANGE_MS, decodeCursor, parseTime } from '../services/events.js';

/** RFC 3339 with a zone, as ingest takes occurred_at. */
const RFC3339 = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(?:\\.\\d+)?(?:Z|[+-]\\d{2}:\\d{2})$';
const limitParam = { type: 'string', pattern: '^(?:[1-9]|[1-9][0-9]|1[0-9][0-9]|200)$' } as const;

const eventsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ...eventFilterProps,
    from: { type: 'string', pattern: RFC3339 },
    to: { type: 'string', pattern: RFC3339 },
    limit: limitParam,
    ...environmentQueryProp,
  },
} as const;

interface EventsQuery {
  event_type?: string;
  idempotency_key?: string;
  from?: string;
  to?: string;
  cursor?: string;
  limit?: string;
}

/** The event explorer: stored events newest first (cursor-paginated) and recent rejections. */
export function eventRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { workspaces, events } = ctx.services;
  const reader = requireAuth(ctx.auth, ['admin', 'meter:read']);

  app.get<{ Params: { id: string }; Querystring: EventsQuery }>(
    '/api/v1/workspaces/:id/events',
    {
      schema: {
        tags: ['events'],
        summary:
          'Stored events, newest first (by occurred_at, then event_type and idempotency_key, descending). `from`/`to` bound occurred_at (default: the 35 days up to now; at most 366 days); pass `next_cursor` back as `cursor` for the next page.',
        params: wsParams,
        querystring: eventsQuery,
        errors: ['workspace_mismatch', 'workspace_not_found'],
      },
      preHandler: reader,
    },
    async (req) => {
      const q = req.query;
      const to = q.to === undefined ? Date.now() : parseTime(q.to, 'to');
      const from = q.from === undefined ? to - DEFAULT_RANGE_MS : parseTime(q.from, 'from');
      if (from > to) throw new ApiError('invalid_field', 'from must not be after to', 'from');
      if (to - from > MAX_RANGE_MS)
        throw new ApiError('invalid_field', 'from and to may be at most 366 days apart', 'from');
      const cursor = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
      const ws = await workspaceAccess(workspaces, req, req.params.id);
      return events.list(ws, {
        from,
        to,
        limit: q.limit === undefined ? 50 : Number(q.limit),
        ...(q.event_type === undefined ? {} : { eventType: q.event_type }),
        ...(q.idempotency_key === undefined ? {} : { idempotencyKey: q.idempotency_key }),
        ...(cursor === undefined ? {} : { cursor }),
      });
    },
  );

  app.get<{ Params: { id: string }; Querystring: { limit?: string } }>(
    '/api/v1/workspaces/:id/events/rejections',
    {
      schema: {
        tags: ['events'],
        summary:
          'Events ingest refused for this workspace in the last 7 days, newest first, with their error code (at most 1,000 kept per workspace; recorded within about a second).',
        params: wsParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { limit: limitParam, ...environmentQueryProp },
        },
        errors: ['workspace_mismatch', 'workspace_not_found'],
      },
      preHandler: reader,
    },
    async (req) => {
      const ws = await workspaceAccess(workspaces, req, req.params.id);
      return { data: await events.rejections(ws, req.query.limit === undefined ? 100 : Number(req.query.limit)) };
    },
  );
}
