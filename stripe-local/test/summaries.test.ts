import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type Stripe from 'stripe';
import type { StripeLocal } from '../src/index.js';
import { startLocal, nowS } from './helpers.js';

/**
 * Meter event summaries as https://docs.stripe.com/api/billing/meter/event-summaries documents them:
 * [start_time, end_time) minute-aligned, one summary without value_grouping_window, one per hour
 * or UTC day with it (then the range must be aligned to that window), every accepted event
 * counted — negative values included, and an identifier repeated after its dedupe window.
 */
let local: StripeLocal;
let stripe: Stripe;
before(async () => ({ local, stripe } = await startLocal()));
after(() => local.close());

const DAY = 86_400;
const dayFloor = (s: number): number => Math.floor(s / DAY) * DAY;

async function setup(
  name: string,
  extra: Partial<Stripe.Billing.MeterCreateParams> = {},
): Promise<{
  meter: Stripe.Billing.Meter;
  customer: Stripe.Customer;
  send: (id: string, value: string, ts: number) => Promise<unknown>;
}> {
  const meter = await stripe.billing.meters.create({
    display_name: name,
    event_name: name,
    default_aggregation: { formula: 'sum' },
    ...extra,
  });
  const customer = await stripe.customers.create({ email: `${name}@example.com` });
  const send = (identifier: string, value: string, timestamp: number): Promise<unknown> =>
    stripe.billing.meterEvents.create({
      event_name: name,
      identifier,
      timestamp,
      payload: { stripe_customer_id: customer.id, value },
    });
  return { meter, customer, send };
}

test('negative values (refunds, credits) are accepted and lower the sum; the range is [start, end)', async () => {
  const { meter, customer, send } = await setup('s.neg');
  const d = dayFloor(nowS()) - 2 * DAY;
  await send('n1', '1000', d);
  await send('n2', '-250', d + 3600);
  await send('n3', '-9007199254740991', d + 7200);
  await send('n4', '9007199254740991', d + 7200);
  await send('at-end', '5', d + DAY); // end_time is exclusive
  const s = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: d,
    end_time: d + DAY,
  });
  assert.deepEqual(
    s.data.map((x) => [x.start_time, x.end_time, x.aggregated_value]),
    [[d, d + DAY, 750]],
  );
  await assert.rejects(
    send('too-big', '9007199254740992', d),
    (e: Stripe.errors.StripeError) => e.code === 'meter_event_invalid_value',
  );
  await assert.rejects(
    send('frac', '-1.5', d),
    (e: Stripe.errors.StripeError) => e.code === 'meter_event_invalid_value',
  );
});

test('value_grouping_window hour and day: one summary per window, aligned ranges only, paginated like any list', async () => {
  const { meter, customer, send } = await setup('s.group');
  const d = dayFloor(nowS()) - 3 * DAY;
  await send('g1', '3', d + 10);
  await send('g2', '4', d + 5 * 3600 + 59);
  await send('g3', '-2', d + DAY + 3600);
  const hourly = await stripe.billing.meters
    .listEventSummaries(meter.id, {
      customer: customer.id,
      start_time: d,
      end_time: d + 2 * DAY,
      value_grouping_window: 'hour',
    })
    .autoPagingToArray({ limit: 100 });
  assert.equal(hourly.length, 48);
  assert.deepEqual(
    hourly
      .filter((x) => x.aggregated_value !== 0)
      .map((x) => [x.start_time - d, x.end_time - x.start_time, x.aggregated_value]),
    [
      [0, 3600, 3],
      [5 * 3600, 3600, 4],
      [DAY + 3600, 3600, -2],
    ],
  );
  assert.equal(new Set(hourly.map((x) => x.id)).size, 48, 'ids are unique, so cursors work');
  const daily = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: d,
    end_time: d + 2 * DAY,
    value_grouping_window: 'day',
  });
  assert.deepEqual(
    daily.data.map((x) => x.aggregated_value),
    [7, -2],
  );
  await assert.rejects(
    stripe.billing.meters.listEventSummaries(meter.id, {
      customer: customer.id,
      start_time: d + 3600,
      end_time: d + DAY,
      value_grouping_window: 'day',
    }),
    (e: Stripe.errors.StripeError) => e.param === 'start_time',
  );
  await assert.rejects(
    stripe.billing.meters.listEventSummaries(meter.id, {
      customer: customer.id,
      start_time: d + 60,
      end_time: d + 3600,
      value_grouping_window: 'hour',
    }),
    (e: Stripe.errors.StripeError) => e.param === 'start_time',
  );
  // Another customer's events never leak in.
  const other = await stripe.customers.create({ email: 'other@example.com' });
  await stripe.billing.meterEvents.create({
    event_name: 's.group',
    identifier: 'g-other',
    timestamp: d + 10,
    payload: { stripe_customer_id: other.id, value: '100' },
  });
  const again = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: d,
    end_time: d + DAY,
  });
  assert.equal(again.data[0]!.aggregated_value, 7);
});

test('count meters count events; a pre-aggregated meter (event_time_window) places each event at its window start', async () => {
  const counted = await stripe.billing.meters.create({
    display_name: 'c',
    event_name: 's.count',
    default_aggregation: { formula: 'count' },
  });
  const customer = await stripe.customers.create({ email: 'count@example.com' });
  const d = dayFloor(nowS()) - DAY;
  for (const [i, ts] of [d + 1, d + 2, d + 4000].entries()) {
    await stripe.billing.meterEvents.create({
      event_name: 's.count',
      identifier: `c${i}`,
      timestamp: ts,
      payload: { stripe_customer_id: customer.id },
    });
  }
  const c = await stripe.billing.meters.listEventSummaries(counted.id, {
    customer: customer.id,
    start_time: d,
    end_time: d + 7200,
    value_grouping_window: 'hour',
  });
  assert.deepEqual(
    c.data.map((x) => x.aggregated_value),
    [2, 1],
  );

  const { meter, customer: cu, send } = await setup('s.daily', { event_time_window: 'day' });
  assert.equal(meter.event_time_window, 'day');
  await send('w1', '10', d + 13 * 3600);
  await send('w2', '5', d + 20 * 3600);
  const hourly = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: cu.id,
    start_time: d,
    end_time: d + 3 * 3600,
    value_grouping_window: 'hour',
  });
  assert.deepEqual(
    hourly.data.map((x) => x.aggregated_value),
    [15, 0, 0],
  );
  await assert.rejects(
    stripe.billing.meters.create({
      display_name: 'x',
      event_name: 's.bad',
      default_aggregation: { formula: 'sum' },
      event_time_window: 'week' as 'day',
    }),
    (e: Stripe.errors.StripeError) => e.param === 'event_time_window',
  );
});

test('an identifier repeated within its window is refused; repeated after it, it is a new event and counts again', async () => {
  const { meter, customer, send } = await setup('s.window');
  const t = Math.floor(nowS() / 60) * 60 - 600;
  await send('same', '40', t);
  await assert.rejects(send('same', '40', t), (e: Stripe.errors.StripeError) => e.code === 'duplicate_meter_event');
  local.advanceClock(23 * 3600);
  await assert.rejects(
    send('same', '40', t),
    (e: Stripe.errors.StripeError) => e.code === 'duplicate_meter_event',
    'still inside 24 h',
  );
  local.advanceClock(2 * 3600); // 25 h after the first: Stripe no longer remembers it
  await send('same', '40', t);
  const s = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: t,
    end_time: t + 60,
  });
  assert.equal(s.data[0]!.aggregated_value, 80, 'both copies count, as at Stripe');
  // The /_clock control does the same for a stripe-local in its own process.
  const res = await fetch(`${local.url}/_clock`, { method: 'POST', body: JSON.stringify({ advance_seconds: 60 }) });
  assert.equal(((await res.json()) as { offset_seconds: number }).offset_seconds, 25 * 3600 + 60);
});
