import { randomBytes } from 'node:crypto';
import type Stripe from 'stripe';
import { StripeHttpError, StripeV2Error, invalid } from './stripe-error.js';
import { onlyParams, type ParamSpec } from './form.js';
import { stripeId } from './state.js';
import { ok, type Context, type Request, type Routed, type StripeRoute } from './context.js';

const EVENT: ParamSpec = { event_name: true, payload: 'map', identifier: true, timestamp: true };
const ADJUSTMENT: ParamSpec = { event_name: true, type: true, cancel: { identifier: true } };

const MAX_STREAM_EVENTS = 100;

export const sessionExpired = (): StripeHttpError =>
  new StripeV2Error(
    401,
    'billing_meter_event_session_expired',
    'The temporary session token has expired.',
    'temporary_session_expired',
  );

function json(body: string): Record<string, unknown> {
  try {
    const v = JSON.parse(body === '' ? '{}' : body) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    /* answered below */
  }
  throw invalid('The request body must be a JSON object.');
}

const iso = (s: number): string => new Date(s * 1000).toISOString();

/** Stripe API v2 routes: sessions, single meter events and adjustments (secret key), the stream (session token). */
export const v2Routes: StripeRoute[] = [
  {
    method: 'POST',
    url: '/v2/billing/meter_event_session',
    handle(ctx, r) {
      onlyParams(json(r.body), {});
      const s = {
        id: stripeId('mes'),
        token: `mes_tok_${randomBytes(24).toString('base64url')}`,
        created: r.nowS,
        expires_at: r.nowS + ctx.sessionTtlS,
      };
      ctx.data().sessions[s.token] = s;
      ctx.changed();
      const body: Stripe.V2.Billing.MeterEventSession = {
        id: s.id,
        object: 'v2.billing.meter_event_session',
        authentication_token: s.token,
        created: iso(s.created),
        expires_at: iso(s.expires_at),
        livemode: false,
      };
      return ok(body);
    },
  },
  {
    method: 'POST',
    url: '/v2/billing/meter_events',
    handle(ctx, r) {
      const b = json(r.body);
      onlyParams(b, EVENT);
      const ev = ctx.billing.accept(
        { event_name: b.event_name, payload: b.payload, identifier: b.identifier, timestamp: b.timestamp },
        r.nowS,
        'v2',
      );
      const body: Stripe.V2.Billing.MeterEvent = {
        object: 'v2.billing.meter_event',
        created: iso(ev.created),
        event_name: ev.event_name,
        identifier: ev.identifier,
        livemode: false,
        payload: ev.payload,
        timestamp: iso(ev.timestamp),
      };
      return ok(body);
    },
  },
  {
    method: 'POST',
    url: '/v2/billing/meter_event_adjustments',
    handle(ctx, r) {
      const b = json(r.body);
      onlyParams(b, ADJUSTMENT);
      const c = ctx.billing.cancel(
        b.event_name,
        b.type,
        (b.cancel as Record<string, unknown> | undefined)?.identifier,
        r.nowS,
        'v2',
      );
      ctx.later(c.apply);
      const body: Stripe.V2.Billing.MeterEventAdjustment = {
        id: stripeId('mtr_event_adj'),
        object: 'v2.billing.meter_event_adjustment',
        cancel: { identifier: c.identifier },
        created: iso(r.nowS),
        event_name: c.event_name,
        livemode: false,
        status: 'pending',
        type: 'cancel',
      };
      return ok(body);
    },
  },
  {
    method: 'POST',
    url: '/v2/billing/meter_event_stream',
    auth: 'session',
    handle: (ctx, r) => routeStream(ctx, r, r.bearer, false),
  },
];

/**
 * POST /v2/billing/meter_event_stream, authenticated by a session token. Like Stripe, it answers
 * as soon as the batch is well-formed and validates each event's content afterwards: a bad event
 * is dropped and reported in a meter error report, not in the response. A duplicate identifier is
 * dropped too (not counted twice); Stripe's error report codes have none for it, so it is only
 * listed in /_state's stream_errors.
 */
export function routeStream(ctx: Context, r: Request, token: string | undefined, expireAll: boolean): Routed {
  const s = token === undefined ? undefined : ctx.data().sessions[token];
  if (s === undefined)
    throw new StripeHttpError(
      401,
      'invalid_request_error',
      'Invalid authentication token for the meter event stream.',
      'invalid_session_token',
    );
  if (expireAll || r.nowS >= s.expires_at) throw sessionExpired();
  const b = json(r.body);
  if (!Array.isArray(b.events)) throw invalid('events is required and must be an array.', 'events');
  if (b.events.length === 0 || b.events.length > MAX_STREAM_EVENTS)
    throw invalid(`events must hold 1 to ${MAX_STREAM_EVENTS} events.`, 'events');
  onlyParams(b, { events: true });
  const events = b.events as unknown[];
  events.forEach((raw, i) => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw invalid(`events[${i}] must be an object.`, `events[${i}]`);
    onlyParams(raw as Record<string, unknown>, EVENT, `events[${i}]`);
  });
  for (const raw of events as Array<Record<string, unknown>>) {
    try {
      ctx.billing.accept(
        { event_name: raw.event_name, payload: raw.payload, identifier: raw.identifier, timestamp: raw.timestamp },
        r.nowS,
        'v2_stream',
      );
    } catch (err) {
      if (!(err instanceof StripeHttpError)) throw err;
      // Bounded: a long chaos run must not grow memory without end.
      if (ctx.data().streamErrors.length >= 10_000) ctx.data().streamErrors.shift();
      ctx.data().streamErrors.push({
        at: r.nowS,
        identifier: typeof raw.identifier === 'string' ? raw.identifier : null,
        code: err.code ?? 'invalid',
        message: err.message,
      });
      ctx.changed();
    }
  }
  return { status: 200, body: '{}' };
}
