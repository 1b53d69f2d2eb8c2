import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';

/** Money on the dashboard: amounts in ISO 4217 minor units, and the usage Stripe did not bill. */
let stores: TestStores;
let control: ControlServer;
let base: string;

before(async () => {
  stores = await openTestStores('dashmoney');
  control = await startTestControl(stores, { INGEST_URL: 'http://127.0.0.1:9' });
  base = control.url;
});

after(async () => {
  await control?.close();
  await stores?.close();
});

async function signIn(token: string): Promise<{ cookie: string }> {
  const r = await call(base, 'POST', '/dashboard/api/session', { body: { api_key: token } });
  assert.equal(r.status, 201, r.text);
  return { cookie: (r.headers.get('set-cookie') ?? '').split(';')[0]! };
}

test("amounts are ISO 4217 minor units: the overview gives each currency's exponent; the billing page lists what Stripe did not bill", async () => {
  const { token, workspace } = await stores.workspace();
  const other = await stores.workspace();
  const s = await signIn(token);
  const day = Math.floor(Date.now() / 86_400_000) * 86_400_000;
  const fmt = (ms: number): string => new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
  const row = (currency: string, gmv: number) => ({
    workspace_id: workspace.id,
    event_type: 'checkout.completed',
    currency,
    window_start: fmt(day),
    events: 1,
    quantity: 1,
    gmv_cents: gmv,
    first_event_at: fmt(day),
    last_event_at: fmt(day),
    late_events: 0,
    version: 1,
    computed_at: fmt(day),
  });
  await stores.clickhouse.insert({
    table: 'usage_daily',
    format: 'JSONEachRow',
    values: [row('JPY', 4299), row('KWD', 4299), row('EUR', -250)],
  });
  const o = await call(base, 'GET', '/dashboard/api/overview?granularity=day', { headers: { cookie: s.cookie } });
  assert.equal(o.status, 200, o.text);
  assert.deepEqual(o.json.currency_exponents, { USD: 2, JPY: 0, KWD: 3, EUR: 2 });
  assert.deepEqual(
    o.json.series.map((p: { currency: string; gmv_cents: string }) => [p.currency, p.gmv_cents]).sort(),
    [
      ['EUR', '-250'],
      ['JPY', '4299'],
      ['KWD', '4299'],
    ],
  );

  const ledgerRow = (ws: string, identifier: string, status: string, reason: string) =>
    stores.pool.query(
      `INSERT INTO billing_pushes (workspace_id, event_type, currency, event_name, window_start, window_end, revision, identifier, stripe_customer_id, value_field, total, value, status, reason)
     VALUES ($1, 'checkout.completed', 'JPY', 'checkout.completed.jpy', to_timestamp($2), to_timestamp($2 + 3600), 1, $3, 'cus_x', 'gmv_cents', 5000, 5000, $4, $5)`,
      [ws, day / 1000, identifier, status, reason],
    );
  await ledgerRow(
    workspace.id,
    'id-unbillable',
    'unbillable',
    'window older than the 35 days Stripe accepts: 5000 not billed',
  );
  await ledgerRow(other.workspace.id, 'id-other', 'rejected', 'meter_event_customer_not_found: no such customer');
  // A row Stripe refused for good (billing-sync records why in last_error) was not billed either.
  await stores.pool.query(
    `INSERT INTO billing_pushes (workspace_id, event_type, currency, event_name, window_start, window_end, revision, identifier, stripe_customer_id, value_field, total, value, status, last_error)
     VALUES ($1, 'checkout.completed', 'JPY', 'checkout.completed.jpy', to_timestamp($2), to_timestamp($2 + 3600), 2, 'id-failed', 'cus_x', 'gmv_cents', 5100, 100, 'failed', 'payload[value] must be a whole number')`,
    [workspace.id, day / 1000],
  );
  const u = await call(base, 'GET', '/dashboard/api/billing/unbilled', { headers: { cookie: s.cookie } });
  assert.equal(u.status, 200, u.text);
  assert.deepEqual(
    u.json.rows.map((r: { identifier: string; status: string; value: string; currency: string; reason: string }) => [
      r.identifier,
      r.status,
      r.value,
      r.currency,
      r.reason,
    ]),
    [
      ['id-failed', 'failed', '100', 'JPY', 'payload[value] must be a whole number'],
      ['id-unbillable', 'unbillable', '5000', 'JPY', 'window older than the 35 days Stripe accepts: 5000 not billed'],
    ],
    "only this workspace's rows",
  );
  assert.deepEqual(u.json.currency_exponents, { JPY: 0 });
  assert.equal((await call(base, 'GET', '/dashboard/api/billing/unbilled')).status, 401);
});

test("the dashboard formats minor units with each currency's exponent (JPY 0, USD 2, KWD 3), negatives included", async () => {
  // The browser module itself (public/dom.js): its formatting functions touch no DOM.
  const dom = (await import(new URL('../../src/dashboard/public/dom.js', import.meta.url).href)) as {
    setCurrencyExponents(o: Record<string, number>): void;
    fmtMoney(minor: string, currency: string): string;
  };
  assert.equal(dom.fmtMoney('4299', 'JPY'), '4,299 minor units of JPY', 'no exponent known yet: never guessed');
  dom.setCurrencyExponents({ USD: 2, JPY: 0, KWD: 3 });
  assert.equal(dom.fmtMoney('429901', 'USD'), '4,299.01 USD');
  assert.equal(dom.fmtMoney('4299', 'JPY'), '4,299 JPY');
  assert.equal(dom.fmtMoney('4299', 'KWD'), '4.299 KWD');
  assert.equal(dom.fmtMoney('-250', 'USD'), '-2.50 USD');
});
