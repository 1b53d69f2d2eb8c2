import { listOf } from './http-util.js';
import { invalid, notFound } from './stripe-error.js';
import { ok, type Routed, type StripeRoute } from './context.js';

/**
 * Events stripe-local emitted (events-out.ts), as Stripe serves them:
 * - GET /v1/events (newest first, `type` filter, cursor pagination) and GET /v1/events/:id —
 *   https://docs.stripe.com/api/events/list;
 * - GET /v2/core/events (newest first, `object_id` filter on the related object, `limit`) and
 *   GET /v2/core/events/:id with the event's `data` — https://docs.stripe.com/api/v2/core/events/list.
 */
export const eventRoutes: StripeRoute[] = [
  {
    method: 'GET',
    url: '/v1/events',
    handle(ctx, r) {
      const type = r.query.get('type');
      // Stripe's `type` filter takes one `*` wildcard, e.g. `customer.*`.
      const re =
        type === null
          ? undefined
          : new RegExp(
              `^${type
                .split('*')
                .map((x) => x.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
                .join('.*')}$`,
            );
      const all = ctx
        .data()
        .v1Events.filter((e) => re === undefined || re.test(e.type))
        .reverse();
      return { status: 200, body: listOf(all, '/v1/events', r.query) };
    },
  },
  { method: 'GET', url: '/v1/events/:id', handle: (ctx, r) => eventById(ctx.data().v1Events, r.params.id!) },
  {
    method: 'GET',
    url: '/v2/core/events',
    handle(ctx, r) {
      const objectId = r.query.get('object_id');
      const rawLimit = r.query.get('limit');
      const limit = rawLimit === null ? 20 : Number(rawLimit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw invalid('limit must be from 1 to 100.', 'limit');
      const all = ctx
        .data()
        .v2Events.filter((e) => objectId === null || e.related_object?.id === objectId)
        .reverse();
      return {
        status: 200,
        body: JSON.stringify({ data: all.slice(0, limit), next_page_url: null, previous_page_url: null }),
      };
    },
  },
  { method: 'GET', url: '/v2/core/events/:id', handle: (ctx, r) => eventById(ctx.data().v2Events, r.params.id!) },
];

function eventById(events: readonly { id: string }[], id: string): Routed {
  const e = events.find((x) => x.id === id);
  if (e === undefined) throw notFound('event', id);
  return ok(e);
}
