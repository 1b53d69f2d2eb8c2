import type { FastifyInstance, FastifySchema } from 'fastify';
import { METER_LIMITS, PROPERTY_KEY_RE, PROPERTY_LIMITS } from '@meterd/core/meters';
import type { Ctx } from '../context.js';
import { liveWorkspaceAccess, requireAuth } from '../http/auth.js';
import { environmentQueryProp, pathParams, wsParams } from '../http/schemas.js';
import { ALERT_PERIODS, THRESHOLD_KINDS, type AlertInput } from '../services/alerts.js';

/** Thresholds are JSON numbers: beyond 2^53 they would not read back as sent. */
const MAX_THRESHOLD = Number.MAX_SAFE_INTEGER;

export const alertBody = {
  type: 'object',
  required: ['meter', 'threshold_kind', 'threshold', 'period'],
  additionalProperties: false,
  properties: {
    meter: { type: 'string', minLength: 1, maxLength: 100, description: "The meter's slug or id." },
    threshold_kind: { type: 'string', enum: [...THRESHOLD_KINDS] },
    threshold: { type: 'number', exclusiveMinimum: 0, maximum: MAX_THRESHOLD },
    period: { type: 'string', enum: [...ALERT_PERIODS] },
    group_value: {
      type: ['object', 'null'],
      minProperties: 1,
      maxProperties: METER_LIMITS.maxGroupBy,
      propertyNames: { pattern: PROPERTY_KEY_RE.source },
      additionalProperties: { type: 'string', maxLength: PROPERTY_LIMITS.valueMax },
      description:
        'The group the alert watches ({ "model": "gpt-4" }), keys among the meter\'s group_by; null or left out: the meter\'s total.',
    },
  },
} as const;

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { meter: { type: 'string', maxLength: 100 }, ...environmentQueryProp },
} as const;

/**
 * Usage alerts (docs/meters.md): when a meter reaches a threshold in a UTC day or month,
 * `meter.threshold.reached` is sent once per period and threshold. Like meters, they belong to the
 * live workspace: any key with `admin` or `meter:read` lists them, a live `admin` key changes them.
 * There is no PATCH: an alert is small, and deleting and creating one keeps each firing tied to the
 * threshold it crossed.
 */
export function alertRoutes(app: FastifyInstance, ctx: Ctx): void {
  const admin = requireAuth(ctx.auth, ['admin']);
  const reader = requireAuth(ctx.auth, ['admin', 'meter:read']);
  const { alerts, workspaces } = ctx.services;
  const base = '/api/v1/workspaces/:id/alerts';
  const opts = (summary: string, schema: FastifySchema, guard = admin) => ({
    schema: { tags: ['alerts'], summary, params: wsParams, ...schema },
    preHandler: guard,
  });

  app.post<{ Params: { id: string }; Body: AlertInput }>(
    base,
    opts(
      "Create a usage alert on a meter: an absolute threshold in the meter's unit or a percent of the plan's monthly event quota, per UTC day or month, on the total or one group.",
      { body: alertBody, idempotent: true, errors: ['resource_not_found', 'alert_limit_exceeded'] },
    ),
    async (req, reply) => {
      const ws = await liveWorkspaceAccess(workspaces, req, req.params.id, 'write');
      return reply.status(201).send({ alert: await alerts.create(ws, req.body) });
    },
  );

  app.get<{ Params: { id: string }; Querystring: { meter?: string } }>(
    base,
    opts(
      'List the live alerts, optionally of one meter (`?meter=` its slug or id), with when each last fired.',
      { querystring: listQuery },
      reader,
    ),
    async (req) => ({
      data: await alerts.list(await liveWorkspaceAccess(workspaces, req, req.params.id, 'read'), req.query.meter),
    }),
  );

  app.get<{ Params: { id: string; alert_id: string } }>(
    `${base}/:alert_id`,
    opts('Read an alert.', { params: pathParams('id', 'alert_id'), errors: ['resource_not_found'] }, reader),
    async (req) => ({
      alert: await alerts.get(await liveWorkspaceAccess(workspaces, req, req.params.id, 'read'), req.params.alert_id),
    }),
  );

  app.delete<{ Params: { id: string; alert_id: string } }>(
    `${base}/:alert_id`,
    opts('Delete an alert: it stops firing.', { params: pathParams('id', 'alert_id'), errors: ['resource_not_found'] }),
    async (req, reply) => {
      await alerts.remove(await liveWorkspaceAccess(workspaces, req, req.params.id, 'write'), req.params.alert_id);
      return reply.status(204).send();
    },
  );
}
