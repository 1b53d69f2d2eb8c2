import type { FastifyInstance, FastifySchema } from 'fastify';
import { METER_AGGREGATIONS, METER_LIMITS, METER_SLUG_RE, PROPERTY_KEY_RE } from '@meterd/core/meters';
import type { Ctx } from '../context.js';
import { liveWorkspaceAccess, requireAuth } from '../http/auth.js';
import { pathParams, wsParams } from '../http/schemas.js';
import type { MeterInput, MeterPatch } from '../services/meters.js';

/** Patterns from core's definition (the one place they are spelt), anchored as JSON schema wants them. */
const slug = { type: 'string', pattern: METER_SLUG_RE.source } as const;
const propertyKey = { type: 'string', pattern: PROPERTY_KEY_RE.source } as const;
/** An event type, as ingest accepts it (docs/api.md §3). */
const eventType = { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,100}$' } as const;
const valueField = {
  type: ['string', 'null'],
  pattern: `^(?:quantity|gmv_cents|properties\\.${PROPERTY_KEY_RE.source.slice(1, -1)})$`,
  description: 'quantity, gmv_cents or properties.<key>; null (or left out) exactly when aggregation is count.',
} as const;
/** A Stripe meter's event_name: what billing-sync sends as `event_name`. */
const stripeEventName = { type: ['string', 'null'], pattern: '^[A-Za-z][A-Za-z0-9_.:-]{0,99}$' } as const;

const computation = {
  event_types: {
    type: 'array',
    minItems: 1,
    maxItems: METER_LIMITS.maxEventTypes,
    uniqueItems: true,
    items: eventType,
  },
  aggregation: { type: 'string', enum: [...METER_AGGREGATIONS] },
  value_field: valueField,
  group_by: { type: 'array', maxItems: METER_LIMITS.maxGroupBy, uniqueItems: true, items: propertyKey },
} as const;

const labels = {
  name: { type: 'string', maxLength: 200 },
  description: { type: 'string', maxLength: 1000 },
  stripe_event_name: stripeEventName,
} as const;

const createBody = {
  type: 'object',
  required: ['slug', 'event_types', 'aggregation'],
  additionalProperties: false,
  properties: { slug, ...labels, ...computation },
} as const;

const patchBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { slug, ...labels, ...computation },
} as const;

/**
 * Meter definitions (docs/meters.md). They belong to the live workspace and apply to its test
 * bucket's events too: any key of the workspace with `admin` or `meter:read` reads them; only a live
 * `admin` key (or the operator) creates, changes or deletes them, since a meter bills live usage.
 */
export function meterRoutes(app: FastifyInstance, ctx: Ctx): void {
  const admin = requireAuth(ctx.auth, ['admin']);
  const reader = requireAuth(ctx.auth, ['admin', 'meter:read']);
  const { meters, workspaces } = ctx.services;
  const base = '/api/v1/workspaces/:id/meters';
  const one = `${base}/:slug`;
  const opts = (summary: string, schema: FastifySchema, guard = admin) => ({
    schema: { tags: ['meters'], summary, params: wsParams, ...schema },
    preHandler: guard,
  });

  app.post<{ Params: { id: string }; Body: MeterInput }>(
    base,
    opts(
      `Define a meter: an aggregation over events' quantity, gmv_cents or a property, grouped by up to ${METER_LIMITS.maxGroupBy} properties, optionally billed to a Stripe meter. Its backfill from the raw events starts pending.`,
      {
        body: createBody,
        idempotent: true,
        errors: ['meter_slug_taken', 'stripe_event_name_taken', 'meter_limit_exceeded'],
      },
    ),
    async (req, reply) => {
      const meter = await meters.create(await liveWorkspaceAccess(workspaces, req, req.params.id, 'write'), req.body);
      return reply.status(201).send({ meter });
    },
  );

  app.get<{ Params: { id: string } }>(base, opts('List the live meters, by slug.', {}, reader), async (req) => ({
    data: await meters.list(await liveWorkspaceAccess(workspaces, req, req.params.id, 'read')),
  }));

  app.get<{ Params: { id: string; slug: string } }>(
    one,
    opts(
      'Read a meter (by slug or id) with its backfill progress.',
      { params: pathParams('id', 'slug'), errors: ['resource_not_found'] },
      reader,
    ),
    async (req) => ({
      meter: await meters.get(await liveWorkspaceAccess(workspaces, req, req.params.id, 'read'), req.params.slug),
    }),
  );

  app.patch<{ Params: { id: string; slug: string }; Body: MeterPatch }>(
    one,
    opts(
      'Rename a meter, change its description or its Stripe event_name (null: not billed). The slug and what it computes (event_types, aggregation, value_field, group_by) never change: 409 meter_immutable.',
      {
        params: pathParams('id', 'slug'),
        body: patchBody,
        errors: ['resource_not_found', 'meter_immutable', 'stripe_event_name_taken'],
      },
    ),
    async (req) => ({
      meter: await meters.update(
        await liveWorkspaceAccess(workspaces, req, req.params.id, 'write'),
        req.params.slug,
        req.body,
      ),
    }),
  );

  app.delete<{ Params: { id: string; slug: string } }>(
    one,
    opts('Delete a meter and its alerts; its slug and Stripe event_name are free again.', {
      params: pathParams('id', 'slug'),
      errors: ['resource_not_found'],
    }),
    async (req) => ({
      meter: await meters.remove(await liveWorkspaceAccess(workspaces, req, req.params.id, 'write'), req.params.slug),
    }),
  );
}
