import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Stripe from 'stripe';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { lit } from '@meterd/core/clickhouse';
import { quotaKey, BILLING_METRICS } from '@meterd/core/contracts';
import { periodOf } from '@meterd/core/plans';
import { startOn, waitFor, type Service } from './support/services.js';
import { apiClient } from './support/api.js';

/**
 * Environment isolation end to end (docs/api.md §13), every service its own process: a workspace's
 * live and test keys send events with the same idempotency keys into one closed hour, through the
 * real ingest, aggregator, billing-sync and stripe-local. Checked both ways: neither environment's
 * events are duplicates of the other's, count in the other's quota, appear in the other's rollups or
 * usage API answer; and only live usage reaches Stripe (the billing ledger holds no test row after
 * several billing passes, and Stripe's summaries equal the live rollups).
 */
const KEY = 'sk_test_environments';
const N = 6;

let stores: TestStores;
let spoolDir: string;
const services: Service[] = [];

before(async () => {
  stores = await openTestStores('environments');
  spoolDir = mkdtempSync(join(tmpdir(), 'meterd-environments-'));
});
after(async () => {
  await Promise.all(services.map((s) => s.stop()));
  rmSync(spoolDir, { recursive: true, force: true });
  await stores.close();
});

const rfc3339 = (s: number): string => new Date(s * 1000).toISOString().replace('.000Z', 'Z');

/** Sum of api.call quantities per workspace in ClickHouse's hourly rollups. */
async function rollups(ids: string[]): Promise<Record<string, number>> {
  const rs = await stores.clickhouse.query({
    query: `SELECT workspace_id, toString(sum(quantity)) AS q FROM usage_hourly FINAL
      WHERE workspace_id IN (${ids.map(lit).join(', ')}) GROUP BY workspace_id`,
    format: 'JSONEachRow',
  });
  return Object.fromEntries((await rs.json<{ workspace_id: string; q: string }>()).map((r) => [r.workspace_id, +r.q]));
}

test('a test event never reaches live rollups, quotas or Stripe pushes, and a live event never reaches test', async () => {
  const hour = Math.floor(Date.now() / 3_600_000) * 3600 - 2 * 3600;
  const [stripeLocal, ingest, aggregator, control] = await Promise.all([
    startOn('stripe-local', stores.env),
    startOn('ingest', stores.env, { SPOOL_DIR: spoolDir, SHIP_INTERVAL_MS: '100' }),
    startOn('aggregator', stores.env, { AGGREGATOR_POLL_MS: '100', AGGREGATOR_CLOSE_AFTER_SECONDS: '60' }),
    startOn('control-api', stores.env),
  ]);
  const stripeUrl = stripeLocal.url;
  const stripePort = Number(new URL(stripeUrl).port);
  services.push(stripeLocal, ingest, aggregator, control);
  // Every answer below, from any service, is checked against the OpenAPI document.
  const call = apiClient(control.url);

  const stripe = new Stripe(KEY, { host: '127.0.0.1', port: stripePort, protocol: 'http', maxNetworkRetries: 0 });
  const { workspace, token: liveToken } = await stores.workspace('growth');
  const customer = await stripe.customers.create({
    email: 'env@example.com',
    metadata: { workspace_id: workspace.id },
  });
  await stores.pool.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1', [workspace.id, customer.id]);
  const view = await call(control.url, 'GET', `/api/v1/workspaces/${workspace.id}`, { token: liveToken });
  const testId: string = view.json.workspace.environments.test;
  // A test bucket can never be linked to a Stripe customer (the schema refuses it), and billing-sync reads live buckets only.
  await assert.rejects(
    stores.pool.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1', [testId, 'cus_test_bucket']),
    /workspaces_test_has_no_customer/,
  );
  const minted = await call(control.url, 'POST', `/api/v1/workspaces/${workspace.id}/api-keys?environment=test`, {
    token: liveToken,
    body: { name: 'ci' },
  });
  const testToken: string = minted.json.api_key.token;
  assert.match(testToken, /^sks_test_/);
  const live = workspace.id;

  // The same idempotency keys in both environments, different quantities: live 1 each, test 10 each.
  const events = (ws: string, quantity: number) =>
    Array.from({ length: N }, (_, i) => ({
      workspace_id: ws,
      event_type: 'api.call',
      idempotency_key: `req-${i}`,
      quantity,
      occurred_at: rfc3339(hour + 60 * i + 5),
    }));
  const send = async (path: string, token: string, body: unknown) => {
    const r = await call(ingest.url, 'POST', path, { token, body });
    return { ...r, used: r.headers.get('x-plan-events-used') };
  };
  const l = await send('/api/v1/meter/batch', liveToken, { events: events(live, 1) });
  assert.deepEqual([l.status, l.json.accepted, l.json.duplicates], [202, N, 0]);
  const t = await send('/api/v1/meter/batch', testToken, { events: events(testId, 10) });
  assert.deepEqual([t.status, t.json.accepted, t.json.duplicates], [202, N, 0], JSON.stringify(t.json));
  // Each environment counts against its own quota counter.
  assert.deepEqual([l.used, t.used], [String(N), String(N)]);
  const period = periodOf(Date.now());
  assert.deepEqual(
    await stores.redis.mget(quotaKey(stores.redisPrefix, live, period), quotaKey(stores.redisPrefix, testId, period)),
    [String(N), String(N)],
  );
  // A test key cannot send into live, nor a live key into test.
  const cross = await send('/api/v1/meter', testToken, events(live, 1)[0]);
  const crossBack = await send('/api/v1/meter', liveToken, events(testId, 1)[0]);
  assert.deepEqual([cross.json.error.code, crossBack.json.error.code], ['workspace_mismatch', 'workspace_mismatch']);

  await waitFor('both environments in the rollups', async () => {
    const r = await rollups([live, testId]);
    return r[live] === N && r[testId] === 10 * N;
  });

  // The usage API: a test key reads its bucket by either id; a live key reads live only.
  const usage = async (id: string, token: string) => {
    const r = await call(
      aggregator.url,
      'GET',
      `/api/v1/workspaces/${id}/usage?granularity=hour&from=${rfc3339(hour)}&to=${rfc3339(hour + 3600)}`,
      { token },
    );
    return r.status === 200
      ? r.json.data.reduce((a: number, x: { quantity: number }) => a + x.quantity, 0)
      : r.json.error.code;
  };
  assert.equal(await usage(live, liveToken), N);
  assert.equal(await usage(live, testToken), 10 * N);
  assert.equal(await usage(testId, testToken), 10 * N);
  assert.equal(await usage(testId, liveToken), 'workspace_mismatch');

  const billing = await startOn('billing-sync', stores.env, {
    STRIPE_SECRET_KEY: KEY,
    STRIPE_API_BASE: stripeUrl,
    BILLING_CLOSE_DELAY_SECONDS: '60',
    BILLING_INTERVAL_MS: '200',
    BILLING_ENSURE_METERS: 'true',
    BILLING_METER_VALUES: 'api.call=quantity',
  });
  services.push(billing);
  const ledger = async () =>
    (
      await stores.pool.query<{ workspace_id: string; value: string; status: string }>(
        'SELECT workspace_id, value::text, status FROM billing_pushes ORDER BY workspace_id',
      )
    ).rows;
  await waitFor('the live hour to be pushed', async () => (await ledger()).some((r) => r.status === 'sent'));
  // Five more billing passes (counted from its metrics, not guessed with a sleep): none may push test usage.
  const passes = async (): Promise<number> =>
    Number(
      new RegExp(`^${BILLING_METRICS.passes} (\\d+)`, 'm').exec(
        await (await fetch(`${billing.url}/metrics`)).text(),
      )?.[1] ?? NaN,
    );
  const before = await passes();
  await waitFor('five more billing passes', async () => (await passes()) >= before + 5);
  assert.deepEqual(await ledger(), [{ workspace_id: live, value: String(N), status: 'sent' }]);
  const meter = (await stripe.billing.meters.list({ limit: 100 })).data.find((m) => m.event_name === 'api.call')!;
  const summaries = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: customer.id,
    start_time: hour,
    end_time: hour + 3600,
  });
  assert.equal(
    summaries.data.reduce((a, x) => a + x.aggregated_value, 0),
    N,
    'Stripe holds the live usage only',
  );
});
