import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import Stripe from 'stripe';
import { toClickHouseDateTime } from '@meterd/core/clickhouse';
import { freePort } from '@meterd/core/net';
import { insertWorkspace } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, startTestControl } from './helpers.js';
import { REPO, spawnService } from './procs.js';

/**
 * Stripe's meter error reports reach the ledger: billing-sync (its built main.js, one pass) pushes
 * usage for a customer Stripe does not know; stripe-local rejects the event asynchronously and
 * delivers a signed `v1.billing.meter.error_report_triggered` thin event to the control API, which
 * fetches the full event and marks the ledger row rejected with Stripe's reason. Once the
 * workspace has a real customer, billing-sync's next pass bills the amount again, once.
 */
let stores: TestStores;
let stripeLocal: ChildProcess;
let stripeUrl: string;
let control: Awaited<ReturnType<typeof startTestControl>>;
const KEY = 'sk_test_meter_errors';
const WHSEC = 'whsec_meter_errors_test';

before(async () => {
  stores = await openTestStores('ctlmetererr');
  const port = await freePort();
  stripeUrl = `http://127.0.0.1:${port}`;
  control = await startTestControl(stores, {
    STRIPE_SECRET_KEY: KEY,
    STRIPE_API_BASE: stripeUrl,
    STRIPE_WEBHOOK_SECRET: WHSEC,
  });
  stripeLocal = await spawnService(
    join(REPO, 'stripe-local/dist/src/main.js'),
    {
      STRIPE_LOCAL_PORT: String(port),
      LOG_LEVEL: 'warn',
      STRIPE_LOCAL_WEBHOOK_URL: `${control.url}/webhooks/stripe`,
      STRIPE_LOCAL_WEBHOOK_SECRET: WHSEC,
      STRIPE_LOCAL_ERROR_REPORT_WINDOW_MS: '200',
      STRIPE_LOCAL_RATE_TEST_MODE: '0',
    },
    `${stripeUrl}/healthz`,
  );
});
after(async () => {
  stripeLocal.kill('SIGTERM');
  await control.close();
  await stores.close();
});

/** One billing-sync pass as its own process (BILLING_RUN_ONCE), as cron would run it. */
async function billingPass(): Promise<void> {
  const child = spawn(process.execPath, [join(REPO, 'billing-sync/dist/src/main.js')], {
    env: {
      ...process.env,
      ...stores.env,
      LOG_LEVEL: 'warn',
      BILLING_SYNC_PORT: '0',
      STRIPE_SECRET_KEY: KEY,
      STRIPE_API_BASE: stripeUrl,
      BILLING_USAGE_SOURCE: 'raw',
      BILLING_CLOSE_DELAY_SECONDS: '0',
      BILLING_ENSURE_METERS: 'true',
      BILLING_RUN_ONCE: 'true',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  assert.equal(code, 0);
}

async function rows(
  ws: string,
): Promise<Array<{ revision: number; status: string; reason: string | null; customer: string }>> {
  const { rows: r } = await stores.pool.query<{
    revision: number;
    status: string;
    reason: string | null;
    customer: string;
  }>(
    `SELECT revision, status, reason, stripe_customer_id AS customer FROM billing_pushes WHERE workspace_id = $1 ORDER BY revision`,
    [ws],
  );
  return r;
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("an error report marks the ledger row rejected with Stripe's reason; the amount is billed once the customer exists", async () => {
  const u = new URL(stripeUrl);
  const stripe = new Stripe(KEY, { host: u.hostname, port: Number(u.port), protocol: 'http' });
  const good = await stripe.customers.create({ email: 'good@example.com' });
  const okWs = await insertWorkspace(stores.pool, {
    slug: `ok-${Date.now()}`,
    display_name: 'OK',
    plan: 'growth',
    stripe_customer_id: good.id,
  });
  const badWs = await insertWorkspace(stores.pool, {
    slug: `bad-${Date.now()}`,
    display_name: 'Bad',
    plan: 'growth',
    stripe_customer_id: 'cus_deleted_elsewhere',
  });
  const now = Date.now();
  const at = Math.floor(now / 3_600_000) * 3_600_000 - 3_600_000 + 60_000;
  const ev = (ws: string, key: string, gmv: number) => ({
    workspace_id: ws,
    event_type: 'checkout.completed',
    idempotency_key: key,
    event_id: `evt_${key}`,
    quantity: 1,
    gmv_cents: gmv,
    currency: 'USD',
    occurred_at: toClickHouseDateTime(at),
    received_at: toClickHouseDateTime(at),
  });
  await stores.clickhouse.insert({
    table: 'events',
    format: 'JSONEachRow',
    values: [ev(okWs.id, 'k1', 1200), ev(badWs.id, 'k2', 3400)],
  });

  await billingPass();
  const rejected = await waitFor('the error report to mark the row', async () => {
    const r = await rows(badWs.id);
    return r[0]?.status === 'rejected' ? r[0] : undefined;
  });
  assert.match(rejected.reason!, /^meter_event_customer_not_found: /);
  assert.deepEqual(
    (await rows(okWs.id)).map((r) => r.status),
    ['sent'],
    "the valid customer's row is untouched",
  );
  const metrics = await (await fetch(`${control.url}/metrics`)).text();
  assert.match(metrics, /^meterd_control_billing_rows_rejected_total 1$/m);
  assert.match(metrics, /^meterd_control_meter_error_reports_total 1$/m);

  // A forged report (no valid signature) changes nothing.
  const forged = await call(control.url, 'POST', '/webhooks/stripe', {
    raw: JSON.stringify({
      id: 'evt_test_forged',
      object: 'v2.core.event',
      type: 'v1.billing.meter.error_report_triggered',
      created: new Date().toISOString(),
    }),
    headers: { 'stripe-signature': 't=1,v1=00' },
  });
  assert.equal(forged.status, 400);
  assert.equal(forged.json.error.code, 'invalid_signature');

  // The cause is fixed: the workspace gets a customer Stripe knows. The next pass bills it, once.
  const fixed = await stripe.customers.create({ email: 'fixed@example.com' });
  await stores.pool.query('UPDATE workspaces SET stripe_customer_id = $1 WHERE id = $2', [fixed.id, badWs.id]);
  await billingPass();
  assert.deepEqual(
    (await rows(badWs.id)).map((r) => [r.revision, r.status, r.customer]),
    [
      [1, 'retried', 'cus_deleted_elsewhere'],
      [2, 'sent', fixed.id],
    ],
  );
  const meter = (await stripe.billing.meters.list({ limit: 100 })).data.find(
    (m) => m.event_name === 'checkout.completed.usd',
  )!;
  const start = Math.floor(at / 3_600_000) * 3600;
  const summary = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: fixed.id,
    start_time: start,
    end_time: start + 3600,
  });
  assert.equal(
    summary.data.reduce((a, s) => a + s.aggregated_value, 0),
    3400,
  );
  await billingPass();
  assert.equal((await rows(badWs.id)).length, 2, 'nothing more to send');
});
