import { parseForm, str, obj, type FormObject } from './form.js';
import { invalid, missingParam, notFound, StripeHttpError } from './stripe-error.js';
import { listOf } from './http-util.js';
import { stripeId, type Customer, type Meter } from './state.js';
import type { Context, Request, Routed } from './context.js';

const ok = (body: unknown): Routed => ({ status: 200, body: JSON.stringify(body) });

/** Stripe API v1 routes stripe-local implements: customers, meters, meter events, adjustments, summaries, portal sessions. */
export function routeV1(ctx: Context, r: Request): Routed | undefined {
  const p = r.path;
  const m = r.method;
  const form = (): FormObject => parseForm(r.body);

  if (p === '/v1/customers' && m === 'POST') return ok(createCustomer(ctx, form(), r.nowS));
  if (p === '/v1/customers' && m === 'GET') {
    const email = r.query.get('email');
    const all = Object.values(ctx.data().customers).filter((c) => email === null || c.email === email).sort((a, b) => b.created - a.created);
    return { status: 200, body: listOf(all, '/v1/customers', r.query) };
  }
  let match = /^\/v1\/customers\/([^/]+)$/.exec(p);
  if (match) {
    const c = ctx.data().customers[match[1]!];
    if (c === undefined) throw notFound('customer', match[1]!);
    if (m === 'GET') return ok(c);
    if (m === 'POST') return ok(updateCustomer(ctx, c, form()));
  }

  if (p === '/v1/billing/meters' && m === 'POST') return ok(createMeter(ctx, form(), r.nowS));
  if (p === '/v1/billing/meters' && m === 'GET') {
    const status = r.query.get('status');
    const all = Object.values(ctx.data().meters).filter((x) => status === null || x.status === status).sort((a, b) => a.created - b.created);
    return { status: 200, body: listOf(all, '/v1/billing/meters', r.query) };
  }
  match = /^\/v1\/billing\/meters\/([^/]+)(\/event_summaries)?$/.exec(p);
  if (match && m === 'GET') {
    const meter = ctx.data().meters[match[1]!];
    if (meter === undefined) throw notFound('billing.meter', match[1]!);
    if (match[2] === undefined) return ok(meter);
    return { status: 200, body: eventSummaries(ctx, meter, r.query) };
  }

  if (p === '/v1/billing/meter_events' && m === 'POST') {
    const f = form();
    const ev = ctx.billing.validate({ event_name: f.event_name, payload: obj(f, 'payload'), identifier: f.identifier, timestamp: f.timestamp }, r.nowS, 'v1');
    ctx.billing.record(ev);
    return ok({ object: 'billing.meter_event', created: ev.created, event_name: ev.event_name, identifier: ev.identifier, livemode: false, payload: ev.payload, timestamp: ev.timestamp });
  }
  if (p === '/v1/billing/meter_event_adjustments' && m === 'POST') {
    const f = form();
    const c = ctx.billing.cancel(f.event_name, f.type, obj(f, 'cancel')?.identifier, r.nowS);
    return ok({ object: 'billing.meter_event_adjustment', livemode: false, status: 'pending', event_name: c.event_name, type: 'cancel', cancel: { identifier: c.identifier } });
  }

  if (p === '/v1/billing_portal/sessions' && m === 'POST') {
    const f = form();
    const customer = str(f, 'customer');
    if (customer === undefined) throw missingParam('customer');
    if (ctx.data().customers[customer] === undefined) throw notFound('customer', customer, 'customer');
    const id = stripeId('bps');
    return ok({
      id, object: 'billing_portal.session', created: r.nowS, customer, livemode: false, locale: null,
      return_url: str(f, 'return_url') ?? null, url: `${ctx.baseUrl()}/p/session/${id}`, configuration: 'bpc_local', flow: null, on_behalf_of: null,
    });
  }
  return undefined;
}

export function metadataOf(f: FormObject): Record<string, string> {
  const md = obj(f, 'metadata') ?? {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(md)) {
    if (typeof v !== 'string') throw invalid(`Invalid metadata[${k}]`, `metadata[${k}]`);
    out[k] = v;
  }
  return out;
}

function createCustomer(ctx: Context, f: FormObject, nowS: number): Customer {
  const c: Customer = {
    id: stripeId('cus'), object: 'customer', created: nowS, email: str(f, 'email') ?? null, name: str(f, 'name') ?? null,
    description: str(f, 'description') ?? null, metadata: metadataOf(f), livemode: false,
  };
  ctx.data().customers[c.id] = c;
  ctx.changed();
  return c;
}

function updateCustomer(ctx: Context, c: Customer, f: FormObject): Customer {
  for (const k of ['email', 'name', 'description'] as const) {
    const v = str(f, k);
    if (v !== undefined) c[k] = v === '' ? null : v;
  }
  if (f.metadata !== undefined) c.metadata = { ...c.metadata, ...metadataOf(f) };
  ctx.changed();
  return c;
}

function createMeter(ctx: Context, f: FormObject, nowS: number): Meter {
  const display = str(f, 'display_name');
  if (display === undefined) throw missingParam('display_name');
  const eventName = str(f, 'event_name');
  if (eventName === undefined) throw missingParam('event_name');
  const formula = str(obj(f, 'default_aggregation') ?? {}, 'formula');
  if (formula === undefined) throw missingParam('default_aggregation[formula]');
  if (formula !== 'sum' && formula !== 'count' && formula !== 'last') throw invalid('Invalid default_aggregation[formula]', 'default_aggregation[formula]');
  if (ctx.billing.meterForEvent(eventName) !== undefined) {
    throw invalid(`An active meter with event_name ${eventName} already exists.`, 'event_name', 'resource_already_exists');
  }
  const meter: Meter = {
    id: stripeId('mtr'), object: 'billing.meter', created: nowS, updated: nowS, display_name: display, event_name: eventName,
    status: 'active', livemode: false, default_aggregation: { formula },
    customer_mapping: { type: 'by_id', event_payload_key: str(obj(f, 'customer_mapping') ?? {}, 'event_payload_key') ?? 'stripe_customer_id' },
    value_settings: { event_payload_key: str(obj(f, 'value_settings') ?? {}, 'event_payload_key') ?? 'value' },
    event_time_window: null, status_transitions: { deactivated_at: null },
  };
  ctx.data().meters[meter.id] = meter;
  ctx.changed();
  return meter;
}

function eventSummaries(ctx: Context, meter: Meter, q: URLSearchParams): string {
  const customer = q.get('customer');
  if (customer === null || customer === '') throw missingParam('customer');
  const start = intParam(q, 'start_time');
  const end = intParam(q, 'end_time');
  if (start % 60 !== 0) throw invalid('start_time must be aligned with minute boundaries.', 'start_time');
  if (end % 60 !== 0) throw invalid('end_time must be aligned with minute boundaries.', 'end_time');
  if (end <= start) throw invalid('end_time must be after start_time.', 'end_time');
  const grouping = q.get('value_grouping_window');
  if (grouping !== null && grouping !== 'hour' && grouping !== 'day') throw invalid('Invalid value_grouping_window', 'value_grouping_window');
  const step = grouping === 'hour' ? 3_600 : grouping === 'day' ? 86_400 : 0;
  if (step > 0 && (start % step !== 0 || end % step !== 0)) throw invalid(`start_time and end_time must be aligned with ${grouping} boundaries.`, 'start_time');
  const rows = ctx.billing.summaries(meter, customer, start, end, grouping ?? undefined).map((s) => ({
    id: `mtrusg_${meter.id.slice(4)}_${s.start}`, object: 'billing.meter_event_summary', aggregated_value: s.value,
    end_time: s.end, livemode: false, meter: meter.id, start_time: s.start,
  }));
  return listOf(rows, `/v1/billing/meters/${meter.id}/event_summaries`, q);
}

function intParam(q: URLSearchParams, name: string): number {
  const v = q.get(name);
  if (v === null || v === '') throw missingParam(name);
  if (!/^\d+$/.test(v)) throw new StripeHttpError(400, 'invalid_request_error', `Invalid integer: ${v}`, 'parameter_invalid_integer', name);
  return Number(v);
}
