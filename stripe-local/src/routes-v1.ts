import { randomBytes } from 'node:crypto';
import type Stripe from 'stripe';
import { parseForm, str, obj, onlyParams, type FormObject, type ParamSpec } from './form.js';
import { invalid, missingParam, notFound, StripeHttpError } from './stripe-error.js';
import { listOf } from './http-util.js';
import { stripeId, type Customer, type Meter } from './state.js';
import { ok, type Context, type Request, type StripeRoute } from './context.js';

/** Parameters each create/update endpoint takes (anything else: 400 parameter_unknown). */
const PARAMS = {
  customer: { email: true, name: true, description: true, phone: true, metadata: 'map', expand: 'map' },
  meter: {
    display_name: true,
    event_name: true,
    event_time_window: true,
    expand: 'map',
    default_aggregation: { formula: true },
    customer_mapping: { event_payload_key: true, type: true },
    value_settings: { event_payload_key: true },
    dimension_payload_keys: 'map',
  },
  meterEvent: { event_name: true, payload: 'map', identifier: true, timestamp: true, expand: 'map' },
  adjustment: { event_name: true, type: true, cancel: { identifier: true }, expand: 'map' },
  portal: { customer: true, return_url: true, locale: true, expand: 'map' },
} satisfies Record<string, ParamSpec>;

const form = (r: Request): FormObject => parseForm(r.body);

/** Stripe API v1 routes stripe-local implements: customers, meters, meter events, adjustments, summaries, portal sessions. */
export const v1Routes: StripeRoute[] = [
  { method: 'POST', url: '/v1/customers', handle: (ctx, r) => ok(createCustomer(ctx, form(r), r.nowS)) },
  {
    method: 'GET',
    url: '/v1/customers',
    handle(ctx, r) {
      const email = r.query.get('email');
      const all = Object.values(ctx.data().customers)
        .filter((c) => email === null || c.email === email)
        .sort((a, b) => b.created - a.created);
      return { status: 200, body: listOf(all, '/v1/customers', r.query) };
    },
  },
  { method: 'GET', url: '/v1/customers/:id', handle: (ctx, r) => ok(customerOf(ctx, r.params.id!)) },
  {
    method: 'POST',
    url: '/v1/customers/:id',
    handle: (ctx, r) => ok(updateCustomer(ctx, customerOf(ctx, r.params.id!), form(r))),
  },
  { method: 'POST', url: '/v1/billing/meters', handle: (ctx, r) => ok(meterView(createMeter(ctx, form(r), r.nowS))) },
  {
    method: 'GET',
    url: '/v1/billing/meters',
    handle(ctx, r) {
      const status = r.query.get('status');
      const all = Object.values(ctx.data().meters)
        .filter((x) => status === null || x.status === status)
        .sort((a, b) => a.created - b.created)
        .map(meterView);
      return { status: 200, body: listOf(all, '/v1/billing/meters', r.query) };
    },
  },
  { method: 'GET', url: '/v1/billing/meters/:id', handle: (ctx, r) => ok(meterView(meterOf(ctx, r.params.id!))) },
  {
    method: 'GET',
    url: '/v1/billing/analytics/meter_usage',
    handle: (ctx, r) => ({ status: 200, body: meterUsage(ctx, r.query, r.nowS) }),
  },
  {
    method: 'GET',
    url: '/v1/billing/meters/:id/event_summaries',
    handle: (ctx, r) => ({ status: 200, body: eventSummaries(ctx, meterOf(ctx, r.params.id!), r.query) }),
  },
  {
    method: 'POST',
    url: '/v1/billing/meter_events',
    handle(ctx, r) {
      const f = form(r);
      onlyParams(f, PARAMS.meterEvent);
      const ev = ctx.billing.accept(
        { event_name: f.event_name, payload: obj(f, 'payload'), identifier: f.identifier, timestamp: f.timestamp },
        r.nowS,
        'v1',
      );
      const body: Stripe.Billing.MeterEvent = {
        object: 'billing.meter_event',
        created: ev.created,
        event_name: ev.event_name,
        identifier: ev.identifier,
        livemode: false,
        payload: ev.payload,
        timestamp: ev.timestamp,
      };
      return ok(body);
    },
  },
  {
    method: 'POST',
    url: '/v1/billing/meter_event_adjustments',
    handle(ctx, r) {
      const f = form(r);
      onlyParams(f, PARAMS.adjustment);
      const c = ctx.billing.cancel(f.event_name, f.type, obj(f, 'cancel')?.identifier, r.nowS, 'v1');
      ctx.later(c.apply);
      const body: Stripe.Billing.MeterEventAdjustment = {
        object: 'billing.meter_event_adjustment',
        cancel: { identifier: c.identifier },
        event_name: c.event_name,
        livemode: false,
        status: 'pending',
        type: 'cancel',
      };
      return ok(body);
    },
  },
  { method: 'POST', url: '/v1/billing_portal/sessions', handle: (ctx, r) => ok(portalSession(ctx, form(r), r.nowS)) },
];

function customerOf(ctx: Context, id: string): Customer {
  const c = ctx.data().customers[id];
  if (c === undefined) throw notFound('customer', id);
  return c;
}

function meterOf(ctx: Context, id: string): Meter {
  const meter = ctx.data().meters[id];
  if (meter === undefined) throw notFound('billing.meter', id);
  return meter;
}

function portalSession(
  ctx: Context,
  f: FormObject,
  nowS: number,
): Stripe.BillingPortal.Session & { customer_account: null } {
  onlyParams(f, PARAMS.portal);
  const customer = str(f, 'customer');
  if (customer === undefined) throw missingParam('customer');
  if (ctx.data().customers[customer] === undefined) throw notFound('customer', customer, 'customer');
  const id = stripeId('bps');
  // `customer_account` is newer than stripe-node 17's type (Stripe's fixture has it, null for a customer).
  const body: Stripe.BillingPortal.Session & { customer_account: null } = {
    id,
    object: 'billing_portal.session',
    configuration: 'bpc_local',
    created: nowS,
    customer,
    customer_account: null,
    flow: null,
    livemode: false,
    locale: (str(f, 'locale') ?? null) as Stripe.BillingPortal.Session.Locale | null,
    on_behalf_of: null,
    return_url: str(f, 'return_url') ?? null,
    url: `${ctx.baseUrl()}/p/session/${id}`,
  };
  return body;
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
  onlyParams(f, PARAMS.customer);
  return newCustomer(
    ctx,
    {
      email: str(f, 'email') ?? null,
      name: str(f, 'name') ?? null,
      description: str(f, 'description') ?? null,
      phone: str(f, 'phone') ?? null,
      metadata: metadataOf(f),
    },
    nowS,
  );
}

/**
 * Stores a customer with every field Stripe returns (https://docs.stripe.com/api/customers/object)
 * and emits `customer.created`; what stripe-local does not model is empty as in a new Stripe customer.
 */
export function newCustomer(
  ctx: Context,
  given: Pick<Customer, 'email' | 'name' | 'description' | 'phone' | 'metadata'>,
  nowS: number,
): Customer {
  const c: Customer = {
    id: stripeId('cus'),
    object: 'customer',
    address: null,
    balance: 0,
    created: nowS,
    currency: null,
    default_source: null,
    delinquent: false,
    description: given.description,
    discount: null,
    email: given.email,
    invoice_prefix: randomBytes(4).toString('hex').toUpperCase(),
    invoice_settings: { custom_fields: null, default_payment_method: null, footer: null, rendering_options: null },
    livemode: false,
    metadata: given.metadata,
    name: given.name,
    next_invoice_sequence: 1,
    phone: given.phone,
    preferred_locales: [],
    shipping: null,
    tax_exempt: 'none',
    test_clock: null,
  };
  ctx.data().customers[c.id] = c;
  ctx.changed();
  ctx.events.emitEvent('customer.created', { ...c });
  return c;
}

function updateCustomer(ctx: Context, c: Customer, f: FormObject): Customer {
  onlyParams(f, PARAMS.customer);
  const previous: Record<string, unknown> = {};
  for (const k of ['email', 'name', 'description', 'phone'] as const) {
    const v = str(f, k);
    if (v === undefined) continue;
    previous[k] = c[k] ?? null;
    c[k] = v === '' ? null : v;
  }
  if (f.metadata !== undefined) {
    previous.metadata = { ...c.metadata };
    c.metadata = { ...c.metadata, ...metadataOf(f) };
  }
  ctx.changed();
  ctx.events.emitEvent('customer.updated', { ...c }, previous);
  return c;
}

function createMeter(ctx: Context, f: FormObject, nowS: number): Meter {
  onlyParams(f, PARAMS.meter);
  const display = str(f, 'display_name');
  if (display === undefined) throw missingParam('display_name');
  const eventName = str(f, 'event_name');
  if (eventName === undefined) throw missingParam('event_name');
  const formula = str(obj(f, 'default_aggregation') ?? {}, 'formula');
  if (formula === undefined) throw missingParam('default_aggregation[formula]');
  if (formula !== 'sum' && formula !== 'count' && formula !== 'last')
    throw invalid('Invalid default_aggregation[formula]', 'default_aggregation[formula]');
  const window = str(f, 'event_time_window') ?? null;
  if (window !== null && window !== 'day' && window !== 'hour')
    throw invalid('Invalid event_time_window: must be one of day or hour', 'event_time_window');
  const mappingType = str(obj(f, 'customer_mapping') ?? {}, 'type') ?? 'by_id';
  if (mappingType !== 'by_id') throw invalid('Invalid customer_mapping[type]: must be by_id', 'customer_mapping[type]');
  const dimensions = listParam(f, 'dimension_payload_keys');
  dimensions.forEach((k, i) => {
    const param = `dimension_payload_keys[${i}]`;
    if (k === '' || k.length > 100) throw invalid('Each dimension payload key must be 1 to 100 characters.', param);
    if (dimensions.indexOf(k) !== i) throw invalid(`Duplicate dimension payload key ${k}.`, param);
  });
  if (ctx.billing.meterForEvent(eventName) !== undefined) {
    throw invalid(
      `An active meter with event_name ${eventName} already exists.`,
      'event_name',
      'resource_already_exists',
    );
  }
  const meter: Meter = {
    id: stripeId('mtr'),
    object: 'billing.meter',
    created: nowS,
    updated: nowS,
    display_name: display,
    event_name: eventName,
    status: 'active',
    livemode: false,
    default_aggregation: { formula },
    customer_mapping: {
      type: 'by_id',
      event_payload_key: str(obj(f, 'customer_mapping') ?? {}, 'event_payload_key') ?? 'stripe_customer_id',
    },
    value_settings: { event_payload_key: str(obj(f, 'value_settings') ?? {}, 'event_payload_key') ?? 'value' },
    event_time_window: window,
    status_transitions: { deactivated_at: null },
    dimension_payload_keys: dimensions,
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
  if (grouping !== null && grouping !== 'hour' && grouping !== 'day')
    throw invalid('Invalid value_grouping_window', 'value_grouping_window');
  const step = grouping === 'hour' ? 3_600 : grouping === 'day' ? 86_400 : 0;
  if (step > 0 && (start % step !== 0 || end % step !== 0))
    throw invalid(`start_time and end_time must be aligned with ${grouping} boundaries.`, 'start_time');
  const rows = ctx.billing
    .summaries(meter, customer, start, end, grouping ?? undefined)
    .map((s): Stripe.Billing.MeterEventSummary => ({
      id: `mtrusg_${meter.id.slice(4)}_${customer}_${s.start}`,
      object: 'billing.meter_event_summary',
      aggregated_value: s.value,
      end_time: s.end,
      livemode: false,
      meter: meter.id,
      start_time: s.start,
    }));
  return listOf(rows, `/v1/billing/meters/${meter.id}/event_summaries`, q);
}

function intParam(q: URLSearchParams, name: string): number {
  const v = q.get(name);
  if (v === null || v === '') throw missingParam(name);
  if (!/^\d+$/.test(v))
    throw new StripeHttpError(400, 'invalid_request_error', `Invalid integer: ${v}`, 'parameter_invalid_integer', name);
  return Number(v);
}

/** A form list (`k[0]=a&k[1]=b`, as stripe-node encodes arrays) in index order; [] when absent or ''. */
function listParam(f: FormObject, key: string): string[] {
  const o = obj(f, key);
  if (o === undefined) return [];
  const entries = Object.entries(o);
  entries.forEach(([i, v], n) => {
    if (i !== String(n) || typeof v !== 'string') throw invalid(`Invalid array: ${key}`, key);
  });
  return entries.map(([, v]) => v as string);
}

/**
 * GET /v1/billing/analytics/meter_usage (Stripe's Meter Usage Analytics API, preview: docs.stripe.com
 * billing/subscriptions/usage-based/analytics): one customer's usage of one meter over
 * [starts_at, ends_at), per `value_grouping_window` (hour or day; absent: the whole range), grouped by
 * `meters[0][dimension_group_by_keys][]` and filtered by `meters[0][dimension_filters][key]` (a value
 * or, since 2025-11-17, a list). stripe-local answers for one meter and in UTC only.
 */
function meterUsage(ctx: Context, q: URLSearchParams, nowS: number): string {
  const f = parseForm(q.toString());
  const customer = str(f, 'customer');
  if (customer === undefined || customer === '') throw missingParam('customer');
  const start = intParam(q, 'starts_at');
  const end = intParam(q, 'ends_at');
  if (end <= start) throw invalid('ends_at must be after starts_at.', 'ends_at');
  const tz = str(f, 'timezone');
  if (tz !== undefined && tz !== 'UTC') throw invalid('stripe-local supports only timezone UTC.', 'timezone');
  const grouping = str(f, 'value_grouping_window');
  if (grouping !== undefined && grouping !== 'hour' && grouping !== 'day')
    throw invalid('Invalid value_grouping_window', 'value_grouping_window');
  const step = grouping === 'hour' ? 3_600 : grouping === 'day' ? 86_400 : 0;
  if (step > 0 && (start % step !== 0 || end % step !== 0))
    throw invalid(`starts_at and ends_at must be aligned with ${grouping} boundaries.`, 'starts_at');
  const meters = obj(f, 'meters');
  const spec = meters === undefined ? undefined : obj(meters, '0');
  const meterId = spec === undefined ? undefined : str(spec, 'meter');
  if (spec === undefined || meterId === undefined) throw missingParam('meters[0][meter]');
  if (Object.keys(meters!).length > 1) throw invalid('stripe-local answers for one meter at a time.', 'meters');
  const meter = meterOf(ctx, meterId);
  const dims = meter.dimension_payload_keys ?? [];
  const groupBy = listParam(spec, 'dimension_group_by_keys');
  groupBy.forEach((k, i) => {
    if (!dims.includes(k))
      throw invalid(
        `${k} is not a dimension payload key of meter ${meter.id}.`,
        `meters[0][dimension_group_by_keys][${i}]`,
      );
  });
  const filters: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(obj(spec, 'dimension_filters') ?? {})) {
    const param = `meters[0][dimension_filters][${k}]`;
    if (!dims.includes(k)) throw invalid(`${k} is not a dimension payload key of meter ${meter.id}.`, param);
    filters[k] = typeof v === 'string' ? [v] : listParam(spec.dimension_filters as FormObject, k);
  }
  const data = ctx.billing.usage(meter, customer, start, end, grouping, { groupBy, filters }).map((u) => ({
    object: 'billing.analytics.meter_usage_row',
    starts_at: u.start,
    ends_at: u.end,
    meter: meter.id,
    value: u.value,
    dimensions: u.dimensions,
  }));
  return JSON.stringify({
    object: 'billing.analytics.meter_usage',
    livemode: false,
    refreshed_at: nowS,
    rows: { object: 'list', url: '/v1/billing/analytics/meter_usage', has_more: false, data },
  });
}

/**
 * A meter as the API shows it. Its dimension_payload_keys are kept and enforced, but not shown:
 * Stripe's published example of the object (shared/reference/stripe) has no such field, and
 * stripe-local shows no field it cannot check against Stripe's own examples.
 */
function meterView(m: Meter): Omit<Meter, 'dimension_payload_keys'> {
  const { dimension_payload_keys: _kept, ...shown } = m;
  return shown;
}
