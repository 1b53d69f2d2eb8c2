import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type Stripe from 'stripe';
import type { StripeLocal } from '../src/index.js';
import { startLocal, sdk, nowS } from './helpers.js';

/** Where stripe-local used to differ from Stripe (issue 13), each checked through the real SDK and on the wire. */
let local: StripeLocal;
let stripe: Stripe;
before(async () => ({ local, stripe } = await startLocal()));
after(() => local.close());

async function v2(
  path: string,
  body: unknown,
): Promise<{ status: number; json: { error?: Record<string, unknown> } & Record<string, unknown> }> {
  const res = await fetch(`${local.url}${path}`, {
    method: 'POST',
    headers: {
      Authorization: 'Bearer sk_test_x',
      'Content-Type': 'application/json',
      'Stripe-Version': '2024-09-30.acacia',
    },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as { error?: Record<string, unknown> } };
}

test("v2 errors have v2's shape { error: { code, message } } and v2's codes; v1 keeps the v1 shape", async () => {
  await stripe.billing.meters.create({
    display_name: 'v2',
    event_name: 'f.v2',
    default_aggregation: { formula: 'sum' },
  });
  const customer = await stripe.customers.create({ email: 'v2@example.com' });
  const ok = { event_name: 'f.v2', identifier: 'v2-1', payload: { stripe_customer_id: customer.id, value: '-3' } };
  assert.equal((await v2('/v2/billing/meter_events', ok)).status, 200, 'a negative value is accepted on v2 too');

  const dup = await v2('/v2/billing/meter_events', ok);
  assert.equal(dup.status, 400);
  assert.deepEqual(Object.keys(dup.json.error!).sort(), ['code', 'message']);
  assert.equal(dup.json.error!.code, 'duplicate_meter_event');
  assert.equal(
    (await v2('/v2/billing/meter_events', { ...ok, identifier: 'v2-2', event_name: 'f.none' })).json.error!.code,
    'no_meter',
  );
  assert.equal(
    (await v2('/v2/billing/meter_events', { ...ok, identifier: 'v2-3', payload: { value: '1' } })).json.error!.code,
    'payload_no_customer_defined',
  );
  assert.equal(
    (await v2('/v2/billing/meter_events', { ...ok, identifier: 'v2-4', payload: { stripe_customer_id: customer.id } }))
      .json.error!.code,
    'payload_no_value_defined',
  );
  assert.equal(
    (
      await v2('/v2/billing/meter_events', {
        ...ok,
        identifier: 'v2-5',
        payload: { stripe_customer_id: customer.id, value: '2.5' },
      })
    ).json.error!.code,
    'payload_invalid_value',
  );
  const unknown = await v2('/v2/billing/meter_events', { ...ok, identifier: 'v2-6', colour: 'red' });
  assert.equal(unknown.json.error!.code, 'parameter_unknown');
  assert.equal(unknown.json.error!.param, undefined, 'v2 errors carry no param');

  // The SDK surfaces the v2 code.
  await assert.rejects(
    stripe.v2.billing.meterEvents.create(ok),
    (e: Stripe.errors.StripeError) => e.statusCode === 400 && e.code === 'duplicate_meter_event',
  );
  // v1: type, code and param.
  await assert.rejects(
    stripe.billing.meterEvents.create({ ...ok, identifier: 'v2-1' }),
    (e: Stripe.errors.StripeError) =>
      e.type === 'StripeInvalidRequestError' && e.code === 'duplicate_meter_event' && e.param === 'identifier',
  );
});

test('unknown parameters on create endpoints are refused with parameter_unknown and change nothing', async () => {
  const before = (await stripe.customers.list({ limit: 100 })).data.length;
  const cases: Array<[string, () => Promise<unknown>]> = [
    ['colour', () => stripe.customers.create({ email: 'u@example.com', colour: 'red' } as Stripe.CustomerCreateParams)],
    [
      'default_aggregation[window]',
      () =>
        stripe.billing.meters.create({
          display_name: 'u',
          event_name: 'f.u',
          default_aggregation: { formula: 'sum', window: 'x' } as Stripe.Billing.MeterCreateParams.DefaultAggregation,
        }),
    ],
    [
      'idempotency',
      () =>
        stripe.billing.meterEvents.create({
          event_name: 'f.u',
          payload: { stripe_customer_id: 'cus_1', value: '1' },
          idempotency: 'x',
        } as Stripe.Billing.MeterEventCreateParams),
    ],
    [
      'cancel[id]',
      () =>
        stripe.billing.meterEventAdjustments.create({
          event_name: 'f.u',
          type: 'cancel',
          cancel: { id: 'x' } as Stripe.Billing.MeterEventAdjustmentCreateParams.Cancel,
        }),
    ],
  ];
  for (const [param, call] of cases) {
    await assert.rejects(
      call(),
      (e: Stripe.errors.StripeError) => e.statusCode === 400 && e.code === 'parameter_unknown' && e.param === param,
      param,
    );
  }
  assert.equal((await stripe.customers.list({ limit: 100 })).data.length, before);
  assert.equal((await stripe.billing.meters.list({ limit: 100 })).data.filter((m) => m.event_name === 'f.u').length, 0);
});

test('adjustments answer pending and apply later; an unknown identifier answers pending too and cancels nothing', async () => {
  const meter = await stripe.billing.meters.create({
    display_name: 'a',
    event_name: 'f.adj',
    default_aggregation: { formula: 'sum' },
  });
  const customer = await stripe.customers.create({ email: 'adj@example.com' });
  const t = Math.floor(nowS() / 60) * 60 - 600;
  await stripe.billing.meterEvents.create({
    event_name: 'f.adj',
    identifier: 'a1',
    timestamp: t,
    payload: { stripe_customer_id: customer.id, value: '5' },
  });
  await stripe.billing.meterEvents.create({
    event_name: 'f.adj',
    identifier: 'a2',
    timestamp: t,
    payload: { stripe_customer_id: customer.id, value: '7' },
  });
  const summary = async (): Promise<number> =>
    (
      await stripe.billing.meters.listEventSummaries(meter.id, {
        customer: customer.id,
        start_time: t,
        end_time: t + 60,
      })
    ).data[0]!.aggregated_value;

  const unknown = await stripe.billing.meterEventAdjustments.create({
    event_name: 'f.adj',
    type: 'cancel',
    cancel: { identifier: 'never-sent' },
  });
  assert.equal(unknown.status, 'pending');
  const v2Unknown = await stripe.v2.billing.meterEventAdjustments.create({
    event_name: 'f.adj',
    type: 'cancel',
    cancel: { identifier: 'never-sent-2' },
  });
  assert.equal(v2Unknown.status, 'pending');

  const adj = await stripe.v2.billing.meterEventAdjustments.create({
    event_name: 'f.adj',
    type: 'cancel',
    cancel: { identifier: 'a1' },
  });
  assert.equal(adj.status, 'pending');
  let v = await summary();
  for (const end = Date.now() + 5_000; v !== 7 && Date.now() < end;) v = await summary();
  assert.equal(v, 7, 'the cancel applied');
  assert.equal(local.state().events[local.state().identifiers.a2!]!.cancelled, false);
  await assert.rejects(
    stripe.billing.meterEventAdjustments.create({ event_name: 'f.adj', type: 'cancel', cancel: { identifier: 'a1' } }),
    (e: Stripe.errors.StripeError) => e.code === 'meter_event_already_canceled',
  );
});

test("test keys get Stripe's test-mode limit (25/s, meter events included); live keys the live limits", async () => {
  const { local: limited, port } = await startLocal({ rateTestMode: 25, rateDefault: 100, rateMeterEvents: 1000 });
  try {
    const burst = async (s: Stripe, n: number): Promise<Stripe.errors.StripeError[]> => {
      const r = await Promise.allSettled(
        Array.from({ length: n }, (_, i) =>
          s.billing.meterEvents.create({
            event_name: 'x',
            identifier: `b${Math.random()}${i}`,
            payload: { stripe_customer_id: 'cus_1', value: '1' },
          }),
        ),
      );
      return r
        .filter((x): x is PromiseRejectedResult => x.status === 'rejected')
        .map((x) => x.reason as Stripe.errors.StripeError);
    };
    // The bucket's own invariant, not a guess at the machine's speed: within the burst's elapsed
    // time at most 25 (the bucket) + 25/s (the refill) calls can pass.
    const t0 = performance.now();
    const testErrs = await burst(sdk(port, 'sk_test_limits'), 200);
    const elapsedS = (performance.now() - t0) / 1000;
    const mostAccepted = 25 + Math.ceil(25 * elapsedS) + 1;
    assert.ok(
      testErrs.length > 0 && 200 - testErrs.length <= mostAccepted,
      `200 calls at once in test mode over ${elapsedS.toFixed(2)} s: at most ${mostAccepted} may pass (refused ${testErrs.length})`,
    );
    for (const e of testErrs) {
      assert.equal(e.statusCode, 429);
      assert.equal(e.code, 'rate_limit');
      assert.equal(e.type, 'StripeRateLimitError');
    }
    const liveErrs = await burst(sdk(port, 'sk_live_limits'), 60);
    assert.equal(liveErrs.length, 0, 'live mode: meter events have their own 1,000/s limit');
  } finally {
    await limited.close();
  }
});

test("on the wire: Stripe's Content-Type (no charset), and a body over 1 MiB is a 413 in the path's error shape", async () => {
  const res = await fetch(`${local.url}/v1/customers?limit=1`, { headers: { Authorization: 'Bearer sk_test_x' } });
  await res.arrayBuffer();
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/json');
  assert.match(res.headers.get('request-id') ?? '', /^req_[0-9a-f]{16}$/);

  const big = await v2('/v2/billing/meter_events', { event_name: 'x'.repeat((1 << 20) + 1) });
  assert.equal(big.status, 413);
  assert.deepEqual(big.json.error, {
    type: 'invalid_request_error',
    code: 'invalid_request',
    message: 'Request body too large.',
  });
});
