import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import type { StripeLocal } from '../src/index.js';
import { startLocal } from './helpers.js';

/**
 * stripe-local driven by the real `stripe` SDK (v17), pointed at it with host/port/protocol, the
 * way billing-sync and control-api use it. Each test checks one documented Stripe behaviour.
 */
let local: StripeLocal;
let stripe: Stripe;

before(async () => {
  ({ local, stripe } = await startLocal());
});
after(() => local.close());

const nowS = (): number => Math.floor(Date.now() / 1000);

async function meterAndCustomer(
  eventName: string,
): Promise<{ meter: Stripe.Billing.Meter; customer: Stripe.Customer }> {
  const meter = await stripe.billing.meters.create({
    display_name: eventName,
    event_name: eventName,
    default_aggregation: { formula: 'sum' },
  });
  const customer = await stripe.customers.create({ email: 'a@example.com', metadata: { workspace_id: 'ws_1' } });
  return { meter, customer };
}

test('customers: create, retrieve, update and list', async () => {
  const c = await stripe.customers.create({ email: 'c@example.com', name: 'C', metadata: { ws: 'ws_x' } });
  assert.match(c.id, /^cus_/);
  assert.equal(((await stripe.customers.retrieve(c.id)) as Stripe.Customer).email, 'c@example.com');
  const u = await stripe.customers.update(c.id, { metadata: { plan: 'growth' } });
  assert.deepEqual(u.metadata, { ws: 'ws_x', plan: 'growth' });
  const list = await stripe.customers.list({ email: 'c@example.com' });
  assert.equal(list.data.length, 1);
  await assert.rejects(
    stripe.customers.retrieve('cus_missing'),
    (e: Stripe.errors.StripeError) => e.statusCode === 404 && e.code === 'resource_missing',
  );
});

test('v1 meter events are summed into summaries per customer and hour', async () => {
  const { meter, customer } = await meterAndCustomer('t1.sum');
  const hour = Math.floor(nowS() / 3600) * 3600 - 3 * 3600;
  await stripe.billing.meterEvents.create({
    event_name: 't1.sum',
    payload: { stripe_customer_id: customer.id, value: '40' },
    identifier: 'a1',
    timestamp: hour + 10,
  });
  await stripe.billing.meterEvents.create({
    event_name: 't1.sum',
    payload: { stripe_customer_id: customer.id, value: '2' },
    identifier: 'a2',
    timestamp: hour + 3700,
  });
  await stripe.billing.meterEvents.create({
    event_name: 't1.sum',
    payload: { stripe_customer_id: 'cus_other', value: '1000' },
    identifier: 'a3',
    timestamp: hour + 10,
  });
  const total = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: hour,
    end_time: hour + 3 * 3600,
  });
  assert.deepEqual(
    total.data.map((s) => s.aggregated_value),
    [42],
  );
  const hourly = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: hour,
    end_time: hour + 3 * 3600,
    value_grouping_window: 'hour',
  });
  assert.deepEqual(
    hourly.data.map((s) => [s.start_time - hour, s.aggregated_value]),
    [
      [0, 40],
      [3600, 2],
      [7200, 0],
    ],
  );
  await assert.rejects(
    stripe.billing.meters.listEventSummaries(meter.id, {
      customer: customer.id,
      start_time: hour + 1,
      end_time: hour + 60,
    }),
    /minute boundaries/,
  );
});

test("a duplicate identifier is refused with Stripe's message and Stripe-Should-Retry: false", async () => {
  const { customer } = await meterAndCustomer('t2.dup');
  const ev = { event_name: 't2.dup', payload: { stripe_customer_id: customer.id, value: '1' }, identifier: 'dup-1' };
  await stripe.billing.meterEvents.create(ev);
  await assert.rejects(stripe.billing.meterEvents.create(ev), (e: Stripe.errors.StripeError) => {
    assert.equal(e.statusCode, 400);
    assert.equal(e.type, 'StripeInvalidRequestError');
    assert.match(e.message, /An event already exists with identifier dup-1/);
    assert.equal(e.headers?.['stripe-should-retry'], 'false');
    return true;
  });
});

test('timestamps outside 35 days back / 5 minutes ahead, and non-whole values, are refused', async () => {
  const { customer } = await meterAndCustomer('t3.rules');
  const base = { event_name: 't3.rules', payload: { stripe_customer_id: customer.id, value: '1' } };
  await assert.rejects(
    stripe.billing.meterEvents.create({ ...base, timestamp: nowS() - 36 * 86400 }),
    (e: Stripe.errors.StripeError) => e.param === 'timestamp',
  );
  await assert.rejects(
    stripe.billing.meterEvents.create({ ...base, timestamp: nowS() + 600 }),
    (e: Stripe.errors.StripeError) => e.param === 'timestamp',
  );
  await stripe.billing.meterEvents.create({ ...base, timestamp: nowS() - 34 * 86400 });
  await stripe.billing.meterEvents.create({ ...base, timestamp: nowS() + 240 });
  await assert.rejects(
    stripe.billing.meterEvents.create({ ...base, payload: { stripe_customer_id: customer.id, value: '1.5' } }),
    (e: Stripe.errors.StripeError) => e.param === 'payload[value]',
  );
  await assert.rejects(
    stripe.billing.meterEvents.create({ event_name: 't3.rules', payload: { value: '1' } }),
    (e: Stripe.errors.StripeError) => e.code === 'meter_event_no_customer_defined',
  );
});

test('an adjustment cancels an event by identifier and the summary drops it', async () => {
  const { meter, customer } = await meterAndCustomer('t4.cancel');
  const t = Math.floor(nowS() / 60) * 60 - 600;
  await stripe.billing.meterEvents.create({
    event_name: 't4.cancel',
    payload: { stripe_customer_id: customer.id, value: '5' },
    identifier: 'c1',
    timestamp: t,
  });
  await stripe.billing.meterEvents.create({
    event_name: 't4.cancel',
    payload: { stripe_customer_id: customer.id, value: '7' },
    identifier: 'c2',
    timestamp: t,
  });
  const adj = await stripe.billing.meterEventAdjustments.create({
    event_name: 't4.cancel',
    type: 'cancel',
    cancel: { identifier: 'c1' },
  });
  assert.equal(adj.cancel?.identifier, 'c1');
  assert.equal(adj.status, 'pending', 'Stripe applies adjustments asynchronously');
  let value: number | undefined;
  for (const end = Date.now() + 5_000; value !== 7 && Date.now() < end;) {
    value = (
      await stripe.billing.meters.listEventSummaries(meter.id, {
        customer: customer.id,
        start_time: t,
        end_time: t + 60,
      })
    ).data[0]!.aggregated_value;
  }
  assert.equal(value, 7);
  await assert.rejects(
    stripe.billing.meterEventAdjustments.create({
      event_name: 't4.cancel',
      type: 'cancel',
      cancel: { identifier: 'c1' },
    }),
    /already been canceled/,
  );
});

test('v2: a session token authenticates the stream; up to 100 events per call; an expired session is a 401', async () => {
  const { meter, customer } = await meterAndCustomer('t5.stream');
  const session = await stripe.v2.billing.meterEventSession.create();
  assert.ok(Date.parse(session.expires_at) - Date.parse(session.created) === 15 * 60 * 1000);
  const t = new Date(Math.floor(nowS() / 60) * 60 * 1000 - 120_000);
  const events = Array.from({ length: 100 }, (_, i) => ({
    event_name: 't5.stream',
    identifier: `s${i}`,
    timestamp: t.toISOString(),
    payload: { stripe_customer_id: customer.id, value: String(i) },
  }));
  const opts = { apiKey: session.authentication_token, host: '127.0.0.1' };
  await stripe.v2.billing.meterEventStream.create({ events }, opts);
  // Duplicates in the stream are dropped (asynchronous validation), never counted twice.
  await stripe.v2.billing.meterEventStream.create({ events: events.slice(0, 10) }, opts);
  await assert.rejects(
    stripe.v2.billing.meterEventStream.create({ events: [...events, events[0]!] }, opts),
    (e: Stripe.errors.StripeError) => e.statusCode === 400,
  );
  const start = Math.floor(t.getTime() / 1000);
  const s = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: start,
    end_time: start + 60,
  });
  assert.equal(s.data[0]!.aggregated_value, (99 * 100) / 2);
  assert.ok(local.state().streamErrors.some((e) => e.identifier === 's0' && /already exists/.test(e.message)));
  local.setFaults({ expire_sessions: true });
  await assert.rejects(
    stripe.v2.billing.meterEventStream.create({ events: [{ ...events[0]!, identifier: 'new' }] }, opts),
    (e: Stripe.errors.StripeError) => e.statusCode === 401 && e.code === 'billing_meter_event_session_expired',
  );
  const fresh = await stripe.v2.billing.meterEventSession.create();
  await stripe.v2.billing.meterEventStream.create(
    { events: [{ ...events[0]!, identifier: 'new' }] },
    { apiKey: fresh.authentication_token, host: '127.0.0.1' },
  );
});

test('rate limits answer 429 rate_limit; fault switches inject 5xx and storms', async () => {
  const { local: limited, stripe: s } = await startLocal({ rateMeterEvents: 5 });
  try {
    const t0 = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        s.billing.meterEvents.create({
          event_name: 'x',
          payload: { stripe_customer_id: 'cus_1', value: '1' },
          identifier: `r${i}`,
        }),
      ),
    );
    const rejected = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    // At most the burst (5) plus what 5/s refilled while the calls came in: on a busy machine the 20
    // calls take a while to arrive, so the bound follows the time they took.
    const allowed = 5 + Math.ceil((5 * (performance.now() - t0)) / 1000);
    assert.ok(
      rejected.length > 0 && 20 - rejected.length <= allowed,
      `20 burst calls at 5/s: ${20 - rejected.length} passed, at most ${allowed} allowed`,
    );
    for (const r of rejected) {
      assert.equal((r.reason as Stripe.errors.StripeError).statusCode, 429);
      assert.equal((r.reason as Stripe.errors.StripeError).code, 'rate_limit');
    }
    await new Promise((r) => setTimeout(r, 1_100)); // refill the bucket so the fault, not the limiter, answers
    limited.setFaults({ error_rate: 1 });
    await assert.rejects(
      s.billing.meterEvents.create({ event_name: 'x', payload: { stripe_customer_id: 'cus_1', value: '1' } }),
      (e: Stripe.errors.StripeError) => e.statusCode === 500,
    );
    limited.setFaults({ reset: true, rate_limit_storm_ms: 60_000 });
    await assert.rejects(
      s.v2.billing.meterEventSession.create(),
      (e: Stripe.errors.StripeError) => e.statusCode === 429,
    );
  } finally {
    await limited.close();
  }
});

test("billing portal sessions and webhooks signed like Stripe's (verified by the SDK)", async () => {
  const customer = await stripe.customers.create({ email: 'p@example.com' });
  const portal = await stripe.billingPortal.sessions.create({
    customer: customer.id,
    return_url: 'http://example.com/back',
  });
  assert.match(portal.url, /^http:\/\/127\.0\.0\.1:\d+\/p\/session\/bps_/);
  assert.equal((await fetch(portal.url)).status, 200);

  const secret = 'whsec_test_secret';
  let received: Stripe.Event | undefined;
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received = stripe.webhooks.constructEvent(
        Buffer.concat(chunks),
        req.headers['stripe-signature'] as string,
        secret,
      );
      res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/webhooks/stripe`;
    const res = await fetch(`${local.url}/_webhooks/send`, {
      method: 'POST',
      body: JSON.stringify({
        url,
        secret,
        type: 'customer.subscription.updated',
        object: {
          id: 'sub_1',
          object: 'subscription',
          customer: customer.id,
          items: { data: [{ price: { lookup_key: 'growth' } }] },
        },
      }),
    });
    assert.equal(((await res.json()) as { status: number }).status, 200);
    assert.equal(received?.type, 'customer.subscription.updated');
    assert.equal((received?.data.object as { id: string }).id, 'sub_1');
  } finally {
    receiver.close();
  }
});
