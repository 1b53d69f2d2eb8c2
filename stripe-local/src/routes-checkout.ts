import type Stripe from 'stripe';
import { obj, parseForm, str, type FormObject } from './form.js';
import { listOf } from './http-util.js';
import { invalid, missingParam, notFound } from './stripe-error.js';
import { stripeId } from './state.js';
import type { CheckoutState, StoredSession } from './checkout-state.js';
import { ok, type Context, type Request, type StripeRoute } from './context.js';
import { metadataOf, newCustomer } from './routes-v1.js';

/**
 * Stripe API v1 for paid plans: products, prices (found by `lookup_key`), Checkout Sessions in
 * subscription mode, and the subscriptions they create. Objects have the field names and JSON
 * types of Stripe's own examples (the `stripe` package's types check them at build time). Billing
 * changes are announced to the configured webhook endpoint as Stripe announces them.
 */
const form = (r: Request): FormObject => parseForm(r.body);

export const checkoutRoutes: StripeRoute[] = [
  { method: 'POST', url: '/v1/products', handle: (ctx, r) => ok(createProduct(ctx, st(ctx), form(r), r.nowS)) },
  {
    method: 'GET',
    url: '/v1/products/:id',
    handle: (ctx, r) => ok(st(ctx).products[r.params.id!] ?? throwNotFound('product', r.params.id!)),
  },
  { method: 'POST', url: '/v1/prices', handle: (ctx, r) => ok(createPrice(ctx, st(ctx), form(r), r.nowS)) },
  {
    method: 'GET',
    url: '/v1/prices',
    handle(ctx, r) {
      const keys = arrayParam(r.query, 'lookup_keys');
      const active = r.query.get('active');
      const all = Object.values(st(ctx).prices)
        .filter(
          (x) =>
            (keys.length === 0 || (x.lookup_key !== null && keys.includes(x.lookup_key))) &&
            (active === null || String(x.active) === active),
        )
        .sort((a, b) => b.created - a.created);
      return { status: 200, body: listOf(all, '/v1/prices', r.query) };
    },
  },
  {
    method: 'GET',
    url: '/v1/prices/:id',
    handle: (ctx, r) => ok(st(ctx).prices[r.params.id!] ?? throwNotFound('price', r.params.id!)),
  },
  {
    method: 'POST',
    url: '/v1/checkout/sessions',
    handle: (ctx, r) => ok(createSession(ctx, st(ctx), form(r), r.nowS).session),
  },
  {
    method: 'GET',
    url: '/v1/checkout/sessions/:id',
    handle: (ctx, r) => ok((st(ctx).sessions[r.params.id!] ?? throwNotFound('checkout.session', r.params.id!)).session),
  },
  {
    method: 'GET',
    url: '/v1/subscriptions',
    handle(ctx, r) {
      const customer = r.query.get('customer');
      const all = Object.values(st(ctx).subscriptions)
        .filter((s) => customer === null || s.customer === customer)
        .sort((a, b) => b.created - a.created);
      return { status: 200, body: listOf(all, '/v1/subscriptions', r.query) };
    },
  },
  { method: 'GET', url: '/v1/subscriptions/:id', handle: (ctx, r) => ok(subscriptionOf(ctx, r.params.id!)) },
  {
    method: 'DELETE',
    url: '/v1/subscriptions/:id',
    handle(ctx, r) {
      const sub = subscriptionOf(ctx, r.params.id!);
      if (sub.status !== 'canceled') {
        Object.assign(sub, {
          status: 'canceled',
          canceled_at: r.nowS,
          ended_at: r.nowS,
          cancellation_details: { comment: null, feedback: null, reason: 'cancellation_requested' },
        });
        ctx.changed();
        ctx.events.emitEvent('customer.subscription.deleted', sub);
      }
      return ok(sub);
    },
  },
];

const st = (ctx: Context): CheckoutState => ctx.data().checkout;

function subscriptionOf(ctx: Context, id: string): Stripe.Subscription {
  return st(ctx).subscriptions[id] ?? throwNotFound('subscription', id);
}

/**
 * What Stripe's test mode does when a test card pays: the session completes, its subscription is
 * created and active, and `customer.subscription.created` then `checkout.session.completed` are
 * sent to the webhook endpoint. Resolves once both deliveries are settled (or none is configured).
 */
export async function completeSession(
  ctx: Context,
  id: string,
  nowS: number,
): Promise<{ session: Stripe.Checkout.Session; subscription: Stripe.Subscription; deliveries: unknown[] }> {
  const st = ctx.data().checkout;
  const stored = st.sessions[id] ?? throwNotFound('checkout.session', id);
  const s = stored.session;
  if (s.status !== 'open')
    throw invalid(
      `This Checkout Session is no longer open (status ${s.status}).`,
      undefined,
      'checkout_session_not_open',
    );
  const customer = typeof s.customer === 'string' ? s.customer : createCustomerFor(ctx, s, nowS);
  const subId = stripeId('sub');
  const items = stored.items.map(({ price, quantity }): Stripe.SubscriptionItem => ({
    id: stripeId('si'),
    object: 'subscription_item',
    created: nowS,
    discounts: [],
    metadata: {},
    price: st.prices[price]!,
    quantity,
    subscription: subId,
    tax_rates: [],
    billing_thresholds: null,
    plan: planOf(st.prices[price]!),
  }));
  const first = st.prices[stored.items[0]!.price]!;
  const periodEnd = nowS + periodSeconds(first.recurring!);
  const sub: Stripe.Subscription = {
    id: subId,
    object: 'subscription',
    application: null,
    application_fee_percent: null,
    automatic_tax: { disabled_reason: null, enabled: false, liability: null },
    billing_cycle_anchor: nowS,
    billing_cycle_anchor_config: null,
    billing_thresholds: null,
    cancel_at: null,
    cancel_at_period_end: false,
    canceled_at: null,
    cancellation_details: { comment: null, feedback: null, reason: null },
    collection_method: 'charge_automatically',
    created: nowS,
    currency: first.currency,
    current_period_end: periodEnd,
    current_period_start: nowS,
    customer,
    days_until_due: null,
    default_payment_method: null,
    default_source: null,
    default_tax_rates: [],
    description: null,
    discount: null,
    discounts: [],
    ended_at: null,
    invoice_settings: { account_tax_ids: null, issuer: { type: 'self' } },
    items: { object: 'list', data: items, has_more: false, url: `/v1/subscription_items?subscription=${subId}` },
    latest_invoice: null,
    livemode: false,
    metadata: { ...stored.subscriptionMetadata },
    next_pending_invoice_item_invoice: null,
    on_behalf_of: null,
    pause_collection: null,
    payment_settings: { payment_method_options: null, payment_method_types: null, save_default_payment_method: 'off' },
    pending_invoice_item_interval: null,
    pending_setup_intent: null,
    pending_update: null,
    schedule: null,
    start_date: nowS,
    status: 'active',
    test_clock: null,
    transfer_data: null,
    trial_end: null,
    trial_settings: { end_behavior: { missing_payment_method: 'create_invoice' } },
    trial_start: null,
  };
  st.subscriptions[subId] = sub;
  const total = stored.items.reduce((a, { price, quantity }) => a + (st.prices[price]!.unit_amount ?? 0) * quantity, 0);
  Object.assign(s, {
    status: 'complete',
    payment_status: 'paid',
    customer,
    subscription: subId,
    amount_subtotal: total,
    amount_total: total,
    currency: first.currency,
  });
  ctx.changed();
  const deliveries = await Promise.all([
    ctx.events.emitEvent('customer.subscription.created', sub).delivery,
    ctx.events.emitEvent('checkout.session.completed', s).delivery,
  ]);
  return { session: s, subscription: sub, deliveries: deliveries.filter((d) => d !== null) };
}

/** Prices from STRIPE_LOCAL_SEED_PRICES that no active price has the lookup key of yet (an operator's catalogue, locally). */
export function seedPrices(ctx: Context, seeds: readonly PriceSeed[], nowS: number): void {
  const st = ctx.data().checkout;
  for (const seed of seeds) {
    if (Object.values(st.prices).some((x) => x.active && x.lookup_key === seed.lookup_key)) continue;
    createPrice(
      ctx,
      st,
      {
        currency: seed.currency,
        unit_amount: String(seed.unit_amount),
        lookup_key: seed.lookup_key,
        recurring: { interval: 'month' },
        product_data: { name: `meterd ${seed.lookup_key}` },
      },
      nowS,
    );
  }
}

export interface PriceSeed {
  lookup_key: string;
  unit_amount: number;
  currency: string;
}

/** `growth:4900,scale:29900` → monthly USD prices in cents. */
export function parsePriceSeeds(s: string): PriceSeed[] {
  if (s.trim() === '') return [];
  return s.split(',').map((part) => {
    const m = /^\s*([A-Za-z0-9_.-]{1,200}):(\d{1,12})\s*$/.exec(part);
    if (m === null) throw new Error(`expected lookup_key:unit_amount_in_cents, got "${part}"`);
    return { lookup_key: m[1]!, unit_amount: Number(m[2]), currency: 'usd' };
  });
}

function createProduct(ctx: Context, st: CheckoutState, f: FormObject, nowS: number): Stripe.Product {
  const name = str(f, 'name');
  if (name === undefined) throw missingParam('name');
  const product: Stripe.Product = {
    id: stripeId('prod'),
    object: 'product',
    active: str(f, 'active') !== 'false',
    created: nowS,
    default_price: null,
    description: str(f, 'description') ?? null,
    images: [],
    livemode: false,
    marketing_features: [],
    metadata: metadataOf(f),
    name,
    package_dimensions: null,
    shippable: null,
    statement_descriptor: null,
    tax_code: null,
    type: 'service',
    unit_label: null,
    updated: nowS,
    url: null,
  };
  st.products[product.id] = product;
  ctx.changed();
  return product;
}

function createPrice(ctx: Context, st: CheckoutState, f: FormObject, nowS: number): Stripe.Price {
  const currency = str(f, 'currency');
  if (currency === undefined) throw missingParam('currency');
  const amount = str(f, 'unit_amount');
  if (amount === undefined) throw missingParam('unit_amount');
  if (!/^\d{1,12}$/.test(amount))
    throw invalid(`Invalid integer: ${amount}`, 'unit_amount', 'parameter_invalid_integer');
  let product = str(f, 'product');
  if (product === undefined) {
    const data = obj(f, 'product_data');
    if (data === undefined) throw missingParam('product');
    product = createProduct(ctx, st, data, nowS).id;
  } else if (st.products[product] === undefined) throw notFound('product', product, 'product');
  const rec = obj(f, 'recurring');
  let recurring: Stripe.Price.Recurring | null = null;
  if (rec !== undefined) {
    const interval = str(rec, 'interval');
    if (interval !== 'day' && interval !== 'week' && interval !== 'month' && interval !== 'year')
      throw invalid('Invalid recurring[interval]', 'recurring[interval]');
    recurring = {
      aggregate_usage: null,
      interval,
      interval_count: Number(str(rec, 'interval_count') ?? '1'),
      meter: null,
      trial_period_days: null,
      usage_type: 'licensed',
    };
  }
  const lookupKey = str(f, 'lookup_key') ?? null;
  if (lookupKey !== null) {
    const holder = Object.values(st.prices).find((x) => x.lookup_key === lookupKey);
    if (holder !== undefined) {
      if (str(f, 'transfer_lookup_key') !== 'true')
        throw invalid(
          `A price (\`${holder.id}\`) already uses that lookup key.`,
          'lookup_key',
          'lookup_key_already_exists',
        );
      holder.lookup_key = null;
    }
  }
  const price: Stripe.Price = {
    id: stripeId('price'),
    object: 'price',
    active: true,
    billing_scheme: 'per_unit',
    created: nowS,
    currency,
    custom_unit_amount: null,
    livemode: false,
    lookup_key: lookupKey,
    metadata: metadataOf(f),
    nickname: str(f, 'nickname') ?? null,
    product,
    recurring,
    tax_behavior: 'unspecified',
    tiers_mode: null,
    transform_quantity: null,
    type: recurring === null ? 'one_time' : 'recurring',
    unit_amount: Number(amount),
    unit_amount_decimal: amount,
  };
  st.prices[price.id] = price;
  const prod = st.products[product]!;
  if (prod.default_price === null) prod.default_price = price.id;
  ctx.changed();
  return price;
}

function createSession(ctx: Context, st: CheckoutState, f: FormObject, nowS: number): StoredSession {
  const mode = str(f, 'mode');
  if (mode === undefined) throw missingParam('mode');
  if (mode !== 'subscription') throw invalid('stripe-local implements Checkout in mode=subscription only.', 'mode');
  const lines = obj(f, 'line_items');
  if (lines === undefined || Object.keys(lines).length === 0) throw missingParam('line_items');
  const items = Object.entries(lines).map(([i, v]) => {
    if (typeof v === 'string') throw invalid(`Invalid line_items[${i}]`, `line_items[${i}]`);
    const price = str(v, 'price');
    if (price === undefined) throw missingParam(`line_items[${i}][price]`);
    const known = st.prices[price];
    if (known === undefined || !known.active) throw notFound('price', price, `line_items[${i}][price]`);
    if (known.recurring === null)
      throw invalid(
        'You must provide at least one recurring price in `subscription` mode when using prices.',
        `line_items[${i}][price]`,
      );
    const quantity = Number(str(v, 'quantity') ?? '1');
    if (!Number.isInteger(quantity) || quantity < 1)
      throw invalid('Invalid integer', `line_items[${i}][quantity]`, 'parameter_invalid_integer');
    return { price, quantity };
  });
  const customer = str(f, 'customer') ?? null;
  if (customer !== null && ctx.data().customers[customer] === undefined)
    throw notFound('customer', customer, 'customer');
  const id = `cs_test_${stripeId('x').slice(2)}`;
  const session: Stripe.Checkout.Session = {
    id,
    object: 'checkout.session',
    adaptive_pricing: null,
    after_expiration: null,
    allow_promotion_codes: null,
    amount_subtotal: null,
    amount_total: null,
    automatic_tax: { enabled: false, liability: null, status: null },
    billing_address_collection: null,
    cancel_url: str(f, 'cancel_url') ?? null,
    client_reference_id: str(f, 'client_reference_id') ?? null,
    client_secret: null,
    consent: null,
    consent_collection: null,
    created: nowS,
    currency: st.prices[items[0]!.price]!.currency,
    currency_conversion: null,
    custom_fields: [],
    custom_text: { after_submit: null, shipping_address: null, submit: null, terms_of_service_acceptance: null },
    customer,
    customer_creation: customer === null ? 'always' : null,
    customer_details: null,
    customer_email: str(f, 'customer_email') ?? null,
    discounts: null,
    expires_at: nowS + 86_400,
    invoice: null,
    invoice_creation: null,
    livemode: false,
    locale: null,
    metadata: metadataOf(f),
    mode: 'subscription',
    payment_intent: null,
    payment_link: null,
    payment_method_collection: 'always',
    payment_method_configuration_details: null,
    payment_method_options: {},
    payment_method_types: ['card'],
    payment_status: 'unpaid',
    recovered_from: null,
    saved_payment_method_options: null,
    setup_intent: null,
    shipping_address_collection: null,
    shipping_cost: null,
    shipping_details: null,
    shipping_options: [],
    status: 'open',
    submit_type: null,
    subscription: null,
    success_url: str(f, 'success_url') ?? null,
    total_details: { amount_discount: 0, amount_shipping: 0, amount_tax: 0 },
    ui_mode: 'hosted',
    url: `${ctx.baseUrl()}/c/pay/${id}`,
  };
  const stored: StoredSession = { session, items, subscriptionMetadata: metadataOf(obj(f, 'subscription_data') ?? {}) };
  st.sessions[id] = stored;
  ctx.changed();
  return stored;
}

function createCustomerFor(ctx: Context, s: Stripe.Checkout.Session, nowS: number): string {
  return newCustomer(ctx, { email: s.customer_email, name: null, description: null, phone: null, metadata: {} }, nowS)
    .id;
}

/** The legacy `plan` view Stripe still puts on subscription items. */
function planOf(p: Stripe.Price): Stripe.Plan {
  return {
    id: p.id,
    object: 'plan',
    active: p.active,
    aggregate_usage: null,
    amount: p.unit_amount,
    amount_decimal: p.unit_amount_decimal,
    billing_scheme: p.billing_scheme,
    created: p.created,
    currency: p.currency,
    interval: p.recurring!.interval,
    interval_count: p.recurring!.interval_count,
    livemode: false,
    metadata: p.metadata,
    meter: null,
    nickname: p.nickname,
    product: p.product,
    tiers_mode: null,
    transform_usage: null,
    trial_period_days: null,
    usage_type: 'licensed',
  };
}

function periodSeconds(r: Stripe.Price.Recurring): number {
  const day = 86_400;
  const unit =
    r.interval === 'day' ? day : r.interval === 'week' ? 7 * day : r.interval === 'month' ? 30 * day : 365 * day;
  return unit * r.interval_count;
}

/** `lookup_keys[]=a&lookup_keys[]=b` or `lookup_keys[0]=a` (how the SDK encodes arrays). */
function arrayParam(q: URLSearchParams, name: string): string[] {
  const out: string[] = [];
  for (const [k, v] of q)
    if (k === `${name}[]` || (k.startsWith(`${name}[`) && /^\[\d+\]$/.test(k.slice(name.length)))) out.push(v);
  return out;
}

function throwNotFound(what: string, id: string): never {
  throw notFound(what, id);
}
