import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { createLogger } from '@meterd/core/log';
import { insertWorkspace } from '@meterd/core/store';
import { createBillingMetrics } from '../src/metrics.js';
import { createStripe } from '../src/stripe/client.js';
import { ClickHouseRawUsage } from '../src/usage/clickhouse-raw.js';
import { BillingWorker } from '../src/worker.js';
import { reconcile } from '../src/reconcile.js';
import type { UsageSource, UsageTotal } from '../src/usage/source.js';
import {
  billingConfig,
  billingEnv,
  checkout,
  expectedTotals,
  hourFloor,
  hourlyEvents,
  insertEvents,
  pastHours,
  stripeTotal,
  stripeTotals,
  type LocalStripe,
  rawWorker,
  valueField,
  withStoresAndStripe,
  workspaceFor,
  workspacesFor,
} from './helpers.js';

/**
 * Events in ClickHouse → billing-sync → stripe-local: Stripe's summaries equal the totals exactly
 * per customer and period; a second pass sends nothing; a late event produces exactly one
 * correction; a downward change is one negative correction; a dry run fills the ledger and sends nothing.
 */
let stores: TestStores;
let local: LocalStripe;
const log = createLogger('billing-test', 'silent');
const TYPES = ['checkout.completed.usd', 'api.call'];

withStoresAndStripe('billing_e2e', {}, (s, l) => {
  stores = s;
  local = l;
});

test('end to end: totals at Stripe equal ClickHouse per customer and period; late data makes exactly one correction', async () => {
  const cfg = billingConfig(billingEnv(stores, local));
  const worker = rawWorker(stores, cfg);
  const customers = await workspacesFor(stores, 'b', 3, local.stripe);
  const { now, from, to } = pastHours(4);
  const rows = hourlyEvents(customers.keys(), from, 4, 5);
  // A workspace without a Stripe customer is never pushed.
  rows.push(checkout('ws_without_customer', 'x', 5, from + 10));
  await insertEvents(stores, rows);
  // A replayed batch: the same rows again must not count twice.
  await insertEvents(stores, rows.slice(0, 20));

  const first = await worker.pass(now);
  assert.equal(first.planned, 3 * 4 * 2);
  assert.equal(first.pending, 0);
  const expected = expectedTotals(
    rows.filter((r) => customers.has(r.workspace_id)),
    from,
    to,
    valueField,
  );
  assert.deepEqual(await stripeTotals(local.stripe, customers, TYPES, from, to), expected);

  const again = await worker.pass(now);
  assert.equal(again.planned, 0, 'a second pass over the same data sends nothing');

  // Late: an event for a window that was already pushed.
  const [ws] = customers.keys();
  const late = checkout(ws!, 'late-1', 777, from + 3600 + 5);
  rows.push(late);
  await insertEvents(stores, [late, late]);
  const corrected = await worker.pass(now);
  assert.equal(corrected.planned, 1);
  assert.equal(corrected.corrections, 1);
  const { rows: revs } = await stores.pool.query<{ revision: number; value: string; status: string }>(
    `SELECT revision, value::text, status FROM billing_pushes WHERE workspace_id = $1 AND event_type = 'checkout.completed' AND window_start = to_timestamp($2) ORDER BY revision`,
    [ws, from + 3600],
  );
  assert.deepEqual(
    revs.map((r) => [r.revision, r.value, r.status]),
    [
      [1, revs[0]!.value, 'sent'],
      [2, '777', 'sent'],
    ],
  );
  assert.equal((await worker.pass(now)).planned, 0);
  assert.deepEqual(
    await stripeTotals(local.stripe, customers, TYPES, from, to),
    expectedTotals(
      rows.filter((r) => customers.has(r.workspace_id)),
      from,
      to,
      valueField,
    ),
  );

  const report = await reconcile(
    createStripe(cfg),
    new ClickHouseRawUsage(stores.clickhouse),
    cfg,
    customers,
    from,
    to,
  );
  assert.equal(report.differences.length, 0);
  assert.ok(report.compared >= 6);
  // Reconciliation does find a difference when Stripe holds something ClickHouse does not.
  await local.stripe.billing.meterEvents.create({
    event_name: 'api.call',
    payload: { stripe_customer_id: customers.get(ws!)!, value: '1' },
    timestamp: from + 60,
  });
  const bad = await reconcile(createStripe(cfg), new ClickHouseRawUsage(stores.clickhouse), cfg, customers, from, to);
  assert.equal(bad.differences.length, 1);
  assert.equal(bad.differences[0]!.stripe - bad.differences[0]!.clickhouse, 1n);
});

test('a downward change is sent as one negative correction', async () => {
  const cfg = billingConfig(billingEnv(stores, local));
  const { ws, customer } = await workspaceFor(stores, 'down', local.stripe);
  const { now, from: w } = pastHours(3);
  // An in-memory source stands in for a ClickHouse deletion (which this test cannot make synchronously on 18.16).
  let total = 500n;
  const source: UsageSource = {
    totals: async (): Promise<UsageTotal[]> => [
      {
        workspace_id: ws,
        event_type: 'refund.test',
        currency: 'USD',
        window_start: w,
        quantity: 1n,
        gmv_cents: total,
      },
    ],
    asOf: async (nowS) => nowS,
  };
  const worker = new BillingWorker(stores.pool, source, createStripe(cfg), cfg, createBillingMetrics(), log);
  await worker.pass(now);
  total = 800n;
  await worker.pass(now);
  total = 300n;
  const down = await worker.pass(now);
  assert.equal(down.corrections, 1);
  assert.equal(await stripeTotal(local.stripe, ws, customer, 'refund.test.usd', w), 300);
  const { rows } = await stores.pool.query<{ revision: number; value: string; status: string }>(
    `SELECT revision, value::text, status FROM billing_pushes WHERE workspace_id = $1 ORDER BY revision`,
    [ws],
  );
  assert.deepEqual(
    rows.map((r) => [r.revision, r.value, r.status]),
    [
      [1, '500', 'sent'],
      [2, '300', 'sent'],
      [3, '-500', 'sent'],
    ],
  );
  assert.equal((await worker.pass(now)).planned, 0);
});

test('dry run: without STRIPE_SECRET_KEY the ledger is filled and nothing reaches Stripe', async () => {
  const dry = await openTestStores('billing_dry');
  try {
    const cfg = billingConfig(billingEnv(dry, undefined));
    const w = await insertWorkspace(dry.pool, {
      slug: `dry-${Date.now()}`,
      display_name: 'Dry',
      plan: 'free',
      stripe_customer_id: 'cus_dry_run',
    });
    const now = Math.floor(Date.now() / 1000);
    await insertEvents(dry, [checkout(w.id, 'd1', 4299, hourFloor(now) - 1800)]);
    const before = (await (await fetch(`${local.url}/_state`)).json()) as { events: number };
    const worker = new BillingWorker(
      dry.pool,
      new ClickHouseRawUsage(dry.clickhouse),
      undefined,
      cfg,
      createBillingMetrics(),
      log,
    );
    const r = await worker.pass(now);
    assert.equal(r.planned, 1);
    const { rows } = await dry.pool.query<{ status: string; value: string; identifier: string }>(
      `SELECT status, value::text, identifier FROM billing_pushes`,
    );
    assert.deepEqual(
      rows.map((x) => [x.status, x.value]),
      [['dry_run', '4299']],
    );
    assert.equal(rows[0]!.identifier, `${w.id}:checkout.completed:USD:${hourFloor(now) - 3600}:1`);
    assert.equal((await worker.pass(now)).planned, 0);
    const afterState = (await (await fetch(`${local.url}/_state`)).json()) as { events: number };
    assert.equal(afterState.events, before.events);
  } finally {
    await dry.close();
  }
});
