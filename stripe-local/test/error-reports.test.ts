import { test } from 'node:test';
import assert from 'node:assert/strict';
import type Stripe from 'stripe';
import { startLocal, startReceiver, waitFor, nowS, hourFloor } from './helpers.js';

/**
 * Meter error reports (`v1.billing.meter.error_report_triggered`, `v1.billing.meter.no_meter_found`):
 * thin events signed like Stripe's webhooks, verified and fetched with the real SDK
 * (`parseThinEvent`, `v2.core.events.retrieve`), as a consumer of real Stripe would.
 */
const SECRET = 'whsec_reports';

type ReportData = Stripe.Events.V1BillingMeterErrorReportTriggeredEvent.Data;

test('events rejected asynchronously are reported per meter, with codes, counts and sample identifiers; valid ones count', async () => {
  const rx = await startReceiver();
  const { local, stripe } = await startLocal({ webhookUrl: rx.url, webhookSecret: SECRET, errorReportWindowMs: 100 });
  try {
    const meter = await stripe.billing.meters.create({
      display_name: 'r',
      event_name: 'r.sum',
      default_aggregation: { formula: 'sum' },
    });
    const customer = await stripe.customers.create({ email: 'r@example.com' });
    const t = hourFloor(nowS()) - 3600;
    const session = await stripe.v2.billing.meterEventSession.create();
    const ts = new Date(t * 1000).toISOString();
    await stripe.v2.billing.meterEventStream.create(
      {
        events: [
          {
            event_name: 'r.sum',
            identifier: 'ok-1',
            timestamp: ts,
            payload: { stripe_customer_id: customer.id, value: '7' },
          },
          {
            event_name: 'r.sum',
            identifier: 'bad-customer',
            timestamp: ts,
            payload: { stripe_customer_id: 'cus_nobody', value: '5' },
          },
          {
            event_name: 'r.sum',
            identifier: 'bad-value',
            timestamp: ts,
            payload: { stripe_customer_id: customer.id, value: '1.5' },
          },
          {
            event_name: 'r.sum',
            identifier: 'bad-value-2',
            timestamp: ts,
            payload: { stripe_customer_id: customer.id, value: 'x' },
          },
          {
            event_name: 'r.nomatch',
            identifier: 'no-meter',
            timestamp: ts,
            payload: { stripe_customer_id: customer.id, value: '1' },
          },
        ],
      },
      { apiKey: session.authentication_token, host: '127.0.0.1' },
    );
    // v1 accepts synchronously and checks the customer later, like Stripe.
    await stripe.billing.meterEvents.create({
      event_name: 'r.sum',
      identifier: 'v1-bad-customer',
      timestamp: t,
      payload: { stripe_customer_id: 'cus_gone', value: '100' },
    });

    // The endpoint also gets the v1 customer.created: wait for the two thin events themselves.
    const isThin = (d: { body: string }): boolean =>
      (JSON.parse(d.body) as { object: string }).object === 'v2.core.event';
    const thin = await waitFor('two thin events delivered', () => {
      const t = rx.got.filter(isThin);
      return t.length >= 2 ? t : undefined;
    });
    const parsed = thin.map((d) => stripe.parseThinEvent(d.body, d.signature, SECRET));
    const report = parsed.find((e) => e.type === 'v1.billing.meter.error_report_triggered');
    const noMeter = parsed.find((e) => e.type === 'v1.billing.meter.no_meter_found');
    assert.ok(report && noMeter, `got ${parsed.map((e) => e.type).join(', ')}`);
    assert.deepEqual(report.related_object, {
      id: meter.id,
      type: 'billing.meter',
      url: `/v1/billing/meters/${meter.id}`,
    });
    assert.equal(
      (JSON.parse(thin[parsed.indexOf(report)]!.body) as { data?: unknown }).data,
      undefined,
      'a thin delivery carries no data',
    );

    const full = (await stripe.v2.core.events.retrieve(
      report.id,
    )) as Stripe.Events.V1BillingMeterErrorReportTriggeredEvent;
    const data: ReportData = full.data;
    assert.equal(data.reason.error_count, 4);
    const byCode = new Map(data.reason.error_types.map((x) => [x.code, x]));
    assert.equal(byCode.get('meter_event_customer_not_found')?.error_count, 2);
    assert.deepEqual(
      byCode
        .get('meter_event_customer_not_found')
        ?.sample_errors.map((s) => s.request.identifier)
        .sort(),
      ['bad-customer', 'v1-bad-customer'],
    );
    assert.equal(byCode.get('meter_event_invalid_value')?.error_count, 2);
    assert.match(byCode.get('meter_event_invalid_value')!.sample_errors[0]!.error_message, /whole number/);
    assert.ok(Date.parse(data.validation_start) <= Date.parse(data.validation_end));
    assert.equal(data.developer_message_summary, 'There are 4 invalid events');

    const nm = (await stripe.v2.core.events.retrieve(noMeter.id)) as unknown as {
      data: ReportData;
      related_object?: unknown;
    };
    assert.deepEqual(
      nm.data.reason.error_types.map((x) => [x.code, x.error_count, x.sample_errors[0]!.request.identifier]),
      [['no_meter', 1, 'no-meter']],
    );
    assert.equal(nm.related_object, undefined);

    // Listed by related object, newest first, as GET /v2/core/events does.
    const listed = await stripe.v2.core.events.list({ object_id: meter.id });
    assert.deepEqual(
      listed.data.map((e) => e.id),
      [report.id],
    );

    // Only the valid event counts; the rejected ones never do.
    const s = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer: customer.id,
      start_time: t,
      end_time: t + 3600,
    });
    assert.equal(s.data[0]!.aggregated_value, 7);
  } finally {
    await local.close();
    await rx.close();
  }
});

test('a report is retried until the endpoint takes it, and a bad signature secret fails verification', async () => {
  let calls = 0;
  const rx = await startReceiver();
  const { createServer } = await import('node:http');
  // An endpoint that fails the first delivery.
  const flaky = createServer((req, res) => {
    calls += 1;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (calls === 1) {
        res.writeHead(500).end();
        return;
      }
      rx.got.push({ body: Buffer.concat(chunks).toString('utf8'), signature: String(req.headers['stripe-signature']) });
      res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
  const port = (flaky.address() as { port: number }).port;
  const { local, stripe } = await startLocal({
    webhookUrl: `http://127.0.0.1:${port}/`,
    webhookSecret: SECRET,
    errorReportWindowMs: 50,
  });
  try {
    await stripe.billing.meters.create({
      display_name: 'f',
      event_name: 'f.sum',
      default_aggregation: { formula: 'sum' },
    });
    await stripe.billing.meterEvents.create({
      event_name: 'f.sum',
      identifier: 'f1',
      payload: { stripe_customer_id: 'cus_unknown', value: '1' },
    });
    const d = await waitFor('redelivery', () => rx.got[0], 5_000);
    assert.equal(calls, 2);
    assert.equal(stripe.parseThinEvent(d.body, d.signature, SECRET).type, 'v1.billing.meter.error_report_triggered');
    assert.throws(() => stripe.parseThinEvent(d.body, d.signature, 'whsec_wrong'), /signature/i);
  } finally {
    await local.close();
    await new Promise<void>((r) => {
      flaky.close(() => r());
      flaky.closeAllConnections();
    });
    await rx.close();
  }
});

test('v1 snapshot events: customer.created and customer.updated are listed by GET /v1/events with a type filter', async () => {
  const { local, stripe } = await startLocal();
  try {
    const c = await stripe.customers.create({ email: 'e@example.com' });
    await stripe.customers.update(c.id, { name: 'E' });
    const all = await stripe.events.list();
    assert.deepEqual(
      all.data.map((e) => e.type),
      ['customer.updated', 'customer.created'],
    );
    const created = await stripe.events.list({ type: 'customer.created' });
    assert.equal(created.data.length, 1);
    assert.equal((created.data[0]!.data.object as Stripe.Customer).id, c.id);
    const wildcard = await stripe.events.list({ type: 'customer.*' });
    assert.equal(wildcard.data.length, 2);
    const updated = await stripe.events.retrieve(all.data[0]!.id);
    assert.deepEqual(updated.data.previous_attributes, { name: null });
    await assert.rejects(stripe.events.retrieve('evt_missing'), (e: Stripe.errors.StripeError) => e.statusCode === 404);
  } finally {
    await local.close();
  }
});
