import { fileURLToPath } from 'node:url';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import type { StripeLocal } from '../src/index.js';
import { startLocal } from './helpers.js';

/**
 * Paid plans in stripe-local, driven by the real `stripe` SDK: prices found by lookup_key,
 * Checkout Sessions in subscription mode, the test-only completion (Stripe's test cards), the
 * subscriptions it creates, and the signed webhooks each change sends. Object shapes are checked
 * against Stripe's own published examples (stripe-local/test/fixtures/stripe-billing.json).
 */
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/stripe-billing.json', import.meta.url));
const SECRET = 'whsec_checkout_test';
let local: StripeLocal;
let stripe: Stripe;
let receiver: Server;
const received: Stripe.Event[] = [];
const verifier = new Stripe('sk_test_verify');

before(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      // The SDK's own verification: a wrong signature throws and the test sees a missing event.
      received.push(verifier.webhooks.constructEvent(body, String(req.headers['stripe-signature']), SECRET));
      res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  ({ local, stripe } = await startLocal({
    // stripe-local's own default (Stripe's test-mode limits), not the helper's live-mode ones.
    rateTestMode: undefined,
    webhookUrl: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`,
    webhookSecret: SECRET,
    seedPrices: [
      { lookup_key: 'growth', unit_amount: 4900, currency: 'usd' },
      { lookup_key: 'scale', unit_amount: 29900, currency: 'usd' },
    ],
  }));
});
after(async () => {
  await local.close();
  receiver.closeAllConnections();
  await new Promise<void>((r) => receiver.close(() => r()));
});

/**
 * Fields of API version 2024-09-30.acacia (what stripe-local speaks and the pinned SDK types
 * require) that Stripe's newer example objects no longer carry.
 */
const OLDER_API_FIELDS = new Set([
  'checkout.session.shipping_details',
  'subscription.discount',
  'subscription.current_period_end',
  'subscription.current_period_start',
]);

/** Every field we send exists in Stripe's example with the same JSON type (null matches anything). */
function assertStripeShape(kind: string, ours: unknown): void {
  const fixture = (JSON.parse(readFileSync(FIXTURES, 'utf8')) as { resources: Record<string, Record<string, unknown>> })
    .resources[kind]!;
  const typeOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
  for (const [k, v] of Object.entries(ours as Record<string, unknown>)) {
    if (OLDER_API_FIELDS.has(`${kind}.${k}`)) continue;
    assert.ok(k in fixture, `${kind}.${k} is not a field of Stripe's ${kind}`);
    const a = typeOf(v);
    const b = typeOf(fixture[k]);
    if (a !== 'null' && b !== 'null') assert.equal(a, b, `${kind}.${k}: ${a} here, ${b} at Stripe`);
  }
}

test("seeded prices are found by lookup_key, and have Stripe's price and product shape", async () => {
  const list = await stripe.prices.list({ lookup_keys: ['growth'], active: true });
  assert.equal(list.data.length, 1);
  const price = list.data[0]!;
  assert.deepEqual(
    [price.lookup_key, price.unit_amount, price.currency, price.recurring?.interval, price.type],
    ['growth', 4900, 'usd', 'month', 'recurring'],
  );
  assertStripeShape('price', price);
  assertStripeShape('product', await stripe.products.retrieve(price.product as string));
  assert.equal((await stripe.prices.list({ lookup_keys: ['enterprise'] })).data.length, 0);
  assert.equal((await stripe.prices.list({ lookup_keys: ['growth', 'scale'] })).data.length, 2);
  await assert.rejects(
    stripe.prices.create({ currency: 'usd', unit_amount: 1, lookup_key: 'growth', product_data: { name: 'x' } }),
    /already uses that lookup key/,
  );
});

test('a subscription Checkout Session completes like a test card payment: subscription created, signed webhooks sent; cancel sends deleted', async () => {
  const price = (await stripe.prices.list({ lookup_keys: ['scale'] })).data[0]!;
  const customer = await stripe.customers.create({ email: 'pay@example.com' });
  const session = await stripe.checkout.sessions.create({
    mode: 'subscription',
    customer: customer.id,
    client_reference_id: 'ws_123',
    metadata: { workspace_id: 'ws_123', plan: 'scale' },
    subscription_data: { metadata: { workspace_id: 'ws_123' } },
    line_items: [{ price: price.id, quantity: 1 }],
    success_url: 'https://app.example/ok',
    cancel_url: 'https://app.example/cancel',
  });
  assert.match(session.id, /^cs_test_/);
  assert.deepEqual(
    [session.status, session.payment_status, session.mode, session.subscription],
    ['open', 'unpaid', 'subscription', null],
  );
  assert.ok(session.url?.startsWith(`${local.url}/c/pay/`));
  assertStripeShape('checkout.session', session);
  assert.equal((await fetch(session.url!)).status, 200);

  const before = received.length;
  const done = await fetch(`${local.url}/_test/checkout/sessions/${session.id}/complete`, { method: 'POST' });
  assert.equal(done.status, 200);
  const events = received.slice(before);
  assert.deepEqual(
    events.map((e) => e.type),
    ['customer.subscription.created', 'checkout.session.completed'],
  );
  const completed = await stripe.checkout.sessions.retrieve(session.id);
  assert.deepEqual([completed.status, completed.payment_status, completed.amount_total], ['complete', 'paid', 29900]);
  assert.equal((events[1]!.data.object as Stripe.Checkout.Session).subscription, completed.subscription);
  assert.equal((events[1]!.data.object as Stripe.Checkout.Session).client_reference_id, 'ws_123');

  const sub = await stripe.subscriptions.retrieve(completed.subscription as string);
  assert.deepEqual(
    [sub.status, sub.customer, sub.metadata.workspace_id, sub.items.data[0]!.price.lookup_key],
    ['active', customer.id, 'ws_123', 'scale'],
  );
  assertStripeShape('subscription', sub);
  assertStripeShape('subscription_item', sub.items.data[0]);
  assertStripeShape('event', events[0]);

  // Completing twice is refused, as Stripe never completes a session twice.
  assert.equal(
    (await fetch(`${local.url}/_test/checkout/sessions/${session.id}/complete`, { method: 'POST' })).status,
    400,
  );

  const canceled = await stripe.subscriptions.cancel(sub.id);
  assert.equal(canceled.status, 'canceled');
  const deadline = Date.now() + 5_000;
  while (!received.some((e) => e.type === 'customer.subscription.deleted')) {
    if (Date.now() > deadline) throw new Error('no customer.subscription.deleted webhook within 5 s');
    await new Promise((r) => setTimeout(r, 20));
  }
});

test('checkout refuses what Stripe refuses: no mode, an unknown price, a one-time price in subscription mode', async () => {
  await assert.rejects(
    stripe.checkout.sessions.create({ line_items: [{ price: 'price_missing', quantity: 1 }], mode: 'subscription' }),
    (e: Stripe.errors.StripeError) => e.statusCode === 404,
  );
  const oneTime = await stripe.prices.create({ currency: 'usd', unit_amount: 100, product_data: { name: 'once' } });
  await assert.rejects(
    stripe.checkout.sessions.create({ line_items: [{ price: oneTime.id, quantity: 1 }], mode: 'subscription' }),
    /recurring price/,
  );
  await assert.rejects(
    stripe.checkout.sessions.create({
      line_items: [{ price: oneTime.id, quantity: 1 }],
    } as Stripe.Checkout.SessionCreateParams),
    /mode/,
  );
});
