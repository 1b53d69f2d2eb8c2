import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import { alertBody } from '../routes/alerts.js';
import { meterChart } from '../meters/series.js';
import type { AlertInput } from '../services/alerts.js';
import { hidden, type DashCtx } from './context.js';
import { signedInWithTestKey } from './guard.js';
import { chartRange, granularityQuery, type ChartGranularity } from './rollups.js';

/** Groups charted one by one; the rest are folded into "other" (meters/series.ts). */
const TOP_GROUPS = 10;

const slugParam = {
  type: 'object',
  required: ['slug'],
  properties: { slug: { type: 'string', maxLength: 100 } },
} as const;

/**
 * The Meters page: the workspace's meters with their alerts, a usage chart per meter, and alerts
 * created and deleted. The same services as the bearer API (routes/meters.ts, routes/alerts.ts);
 * definitions are the live workspace's whichever environment the session shows, and a session
 * signed in with a test key reads them but changes nothing (docs/api.md §13).
 */
export function meterRoutes(app: FastifyInstance, d: DashCtx): void {
  const { meters, alerts, workspaces } = d.services;
  const live = (req: FastifyRequest) => workspaces.liveOf(req.dash!.workspace.id);

  app.get('/dashboard/api/meters', { schema: hidden, preHandler: d.guard }, async (req) => {
    const ws = await live(req);
    const [list, alertList] = await Promise.all([meters.list(ws), alerts.list(ws)]);
    return {
      meters: list,
      alerts: alertList,
      can_manage: !signedInWithTestKey(req.dash!),
      charts: d.services.meterUsage !== null,
    };
  });

  app.get<{ Params: { slug: string }; Querystring: { granularity?: ChartGranularity } }>(
    '/dashboard/api/meters/:slug/usage',
    {
      schema: {
        ...hidden,
        params: slugParam,
        querystring: granularityQuery,
      },
      preHandler: d.guard,
    },
    async (req) => {
      const read = d.services.meterUsage;
      if (read === null) throw new ApiError('not_configured', 'meter usage is not readable on this server yet');
      const m = await meters.definition(await live(req), req.params.slug);
      const g = req.query.granularity ?? 'hour';
      const range = chartRange(g, Date.now());
      // The environment the session shows: its rollups are its own.
      const rows = await read({
        meter: m,
        bucketId: req.dash!.workspace.id,
        fromMs: range.from,
        toMs: range.to,
        window: g,
        tz: 'UTC',
        groupBy: m.group_by,
        filter: {},
        closedOnly: false,
      });
      const chart = meterChart(rows, {
        aggregation: m.aggregation,
        groupBy: m.group_by,
        ...range,
        top: TOP_GROUPS,
      });
      return { meter: { slug: m.slug, aggregation: m.aggregation, group_by: m.group_by }, granularity: g, ...chart };
    },
  );

  app.post<{ Body: AlertInput }>(
    '/dashboard/api/alerts',
    { schema: { ...hidden, body: alertBody }, preHandler: d.guard },
    async (req, reply) => {
      if (signedInWithTestKey(req.dash!))
        throw new ApiError(
          'workspace_mismatch',
          'alerts belong to the live workspace: sign in with a live key to change them',
        );
      return reply.status(201).send({ alert: await alerts.create(await live(req), req.body) });
    },
  );

  app.delete<{ Params: { alert_id: string } }>(
    '/dashboard/api/alerts/:alert_id',
    {
      schema: {
        ...hidden,
        params: {
          type: 'object',
          required: ['alert_id'],
          properties: { alert_id: { type: 'string', maxLength: 100 } },
        },
      },
      preHandler: d.guard,
    },
    async (req, reply) => {
      if (signedInWithTestKey(req.dash!))
        throw new ApiError(
          'workspace_mismatch',
          'alerts belong to the live workspace: sign in with a live key to change them',
        );
      await alerts.remove(await live(req), req.params.alert_id);
      return reply.status(204).send();
    },
  );
}
