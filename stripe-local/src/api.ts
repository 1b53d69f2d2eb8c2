import type { FastifyReply, FastifyRequest } from 'fastify';
import { type Counter } from '@meterd/core/metrics';
import type { Faults } from './faults.js';
import { send } from './http-util.js';
import { TokenBucket } from './rate-limit.js';
import type { Recorder } from './recorder.js';
import { rateLimited, StripeHttpError } from './stripe-error.js';
import type { Context, Request, Routed, StripeRoute } from './context.js';

const STREAM = '/v2/billing/meter_event_stream';

/** Routes where fault switches apply: the meter event paths billing-sync depends on. */
const FAULTY = new Set([
  '/v1/billing/meter_events',
  '/v1/billing/meter_event_adjustments',
  '/v2/billing/meter_event_session',
  STREAM,
  '/v2/billing/meter_events',
  '/v2/billing/meter_event_adjustments',
]);

/** An injected 5xx, retryable as Stripe's own are (Stripe-Should-Retry: true). */
const injected = (message: string): StripeHttpError =>
  new StripeHttpError(500, 'api_error', message, undefined, undefined, true);

type RouteClass = 'meter_events' | 'stream' | 'default' | 'test';

export interface ApiOptions {
  apiKey: string;
  rateMeterEvents: number;
  rateStream: number;
  rateDefault: number;
  /** Requests per second for test keys on every route but the stream; 0: test keys get the live limits. */
  rateTest: number;
  faults: () => Faults;
  recorder: Recorder | undefined;
  counters: { limited: Counter; faults: Counter; events: Counter };
}

/**
 * The steps every Stripe API request goes through, in Stripe's order: rate limits (and the
 * rate-limit fault), authentication, the injected 5xx, an idempotent replay, the route itself, then
 * the faults that strike after the work is stored. `route` undefined: no route has this method and
 * path, answered 404 once the request is authenticated, as Stripe does.
 */
export function stripeApi(ctx: Context, o: ApiOptions) {
  const buckets: Record<RouteClass, TokenBucket> = {
    meter_events: new TokenBucket(o.rateMeterEvents),
    stream: new TokenBucket(o.rateStream),
    default: new TokenBucket(o.rateDefault),
    test: new TokenBucket(Math.max(o.rateTest, 1)),
  };
  const idempotent = new Map<string, Routed>();

  /**
   * Stripe's limits (https://docs.stripe.com/rate-limits): live mode 100/s basic, meter events
   * 1,000/s apart from it, the stream 10,000/s; test mode 25/s basic, meter event calls included
   * in it. The stream is authenticated by a session, not a key, and keeps its own limit.
   */
  function classOf(path: string, key: string | undefined): RouteClass {
    if (path === STREAM) return 'stream';
    if (o.rateTest > 0 && key !== undefined && /^(sk|rk)_test_/.test(key)) return 'test';
    if (path === '/v1/billing/meter_events') return 'meter_events';
    return 'default';
  }

  function authorize(key: string | undefined): void {
    if (key === undefined || key === '') {
      throw new StripeHttpError(
        401,
        'invalid_request_error',
        'You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth.',
      );
    }
    const okKey = o.apiKey === '' ? /^(sk|rk)_(test|live)_/.test(key) : key === o.apiKey;
    if (!okKey) throw new StripeHttpError(401, 'invalid_request_error', 'Invalid API Key provided.', 'api_key_invalid');
  }

  return async function answer(req: FastifyRequest, reply: FastifyReply, route?: StripeRoute): Promise<unknown> {
    const url = new URL(req.url, 'http://stripe-local');
    const path = url.pathname;
    const faulty = FAULTY.has(path);
    const faults = o.faults();
    if (faulty && (Date.now() < faults.rate_limit_until || Math.random() < faults.rate_limit_rate)) {
      o.counters.limited.inc();
      throw rateLimited();
    }
    const auth = req.headers.authorization;
    const bearer = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    if (!buckets[classOf(path, bearer)].take()) {
      o.counters.limited.inc();
      throw rateLimited();
    }
    if (path !== STREAM) authorize(bearer);
    if (faulty && Math.random() < faults.error_rate) {
      o.counters.faults.inc();
      throw injected('An unknown error occurred (injected by stripe-local).');
    }
    if (faults.customer_read_status !== 0 && req.method === 'GET' && /^\/v1\/customers\/[^/]+$/.test(path)) {
      o.counters.faults.inc();
      throw faults.customer_read_status === 403
        ? new StripeHttpError(
            403,
            'invalid_request_error',
            `The provided key does not have the required permissions for this endpoint (injected by stripe-local).`,
          )
        : new StripeHttpError(
            faults.customer_read_status,
            'api_error',
            'An unknown error occurred (injected by stripe-local).',
          );
    }
    const idemHeader = req.method === 'POST' && path.startsWith('/v1/') ? req.headers['idempotency-key'] : undefined;
    const idemKey = typeof idemHeader === 'string' ? `${path}\n${idemHeader}` : undefined;
    const replay = idemKey === undefined ? undefined : idempotent.get(idemKey);
    if (replay !== undefined) return send(reply, replay.status, replay.body, { 'Idempotent-Replayed': 'true' });
    if (route === undefined)
      throw new StripeHttpError(404, 'invalid_request_error', `Unrecognized request URL (${req.method}: ${path}).`);

    const r: Request = {
      method: req.method,
      path,
      query: url.searchParams,
      body: typeof req.body === 'string' ? req.body : '',
      params: req.params as Record<string, string>,
      bearer,
      nowS: ctx.nowS(),
    };
    const before = Object.keys(ctx.data().events).length;
    const routed = route.handle(ctx, r);
    o.counters.events.inc(Object.keys(ctx.data().events).length - before);
    if (idemKey !== undefined) idempotent.set(idemKey, routed);

    // Faults after the work is done: the change is stored, but the client never learns it.
    if (faulty && Math.random() < faults.timeout_rate) {
      o.counters.faults.inc();
      reply.hijack();
      setTimeout(() => reply.raw.destroy(), faults.timeout_ms).unref();
      return reply;
    }
    if (faulty && Math.random() < faults.applied_error_rate) {
      o.counters.faults.inc();
      throw injected('An unknown error occurred (injected by stripe-local, after storing).');
    }
    o.recorder?.record(routed.body, `${r.method} ${path}`);
    return send(reply, routed.status, routed.body, { 'Stripe-Version': '2024-09-30.acacia' });
  };
}
