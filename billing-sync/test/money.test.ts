import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { BILLING_METRICS } from '@meterd/core/contracts';
import { createLogger } from '@meterd/core/log';
import { createBillingMetrics } from '../src/metrics.js';
import { createStripe } from '../src/stripe/client.js';
import { ClickHouseRawUsage } from '../src/usage/clickhouse-raw.js';
import { ClickHouseRollupUsage } from '../src/usage/clickhouse-rollups.js';
import type { UsageSource, UsageTotal } from '../src/usage/source.js';
import { reconcileLedger } from '../src/reconcile.js';
import { keyOf, readLedger } from '../src/ledger.js';
import { BillingWorker } from '../src/worker.js';
import {
  RECONCILE_MAIN,
  billingConfig,
  billingEnv,
  checkout,
  hourFloor,
  insertEvents,
  pastHours,
  rolledUp,
  runCli,
  startAggregator,
  stripeTotal,
  stripeTotals,
  type EventRow,
  type LocalStripe,
  rawWorker,
  withStoresAndStripe,
  workspaceFor,
} from './helpers.js';

/**
 * The money path through the real SDK, stripe-local and the real stores: currencies billed on
 * their own meters, refunds as negative values, a forgotten retry counted once, a currency without
 * a meter rejected and billed once the meter exists, the billing horizon, re-sends after a long
 * outage checked against Stripe's summaries, and corrections from stale totals refused.
 */
let stores: TestStores;
let local: LocalStripe;
const log = createLogger('billing-money-test', 'silent');

withStoresAndStripe('billing_money', { STRIPE_LOCAL_RATE_TEST_MODE: '0' }, (s, l) => {
  stores = s;
  local = l;
});

const workspace = (label: string): Promise<{ ws: string; customer: string }> =>
  workspaceFor(stores, label, local.stripe);
/** A workspace whose customer Stripe does not have. */
const withoutCustomer = (label: string): Promise<{ ws: string; customer: string }> =>
  workspaceFor(stores, label, `cus_missing${Math.floor(Math.random() * 1e9)}`);

async function ledger(
  ws: string,
): Promise<Array<{ event_name: string; revision: number; value: string; status: string; reason: string | null }>> {
  const { rows } = await stores.pool.query<{
    event_name: string;
    revision: number;
    value: string;
    status: string;
    reason: string | null;
  }>(
    `SELECT event_name, revision, value::text, status, reason FROM billing_pushes WHERE workspace_id = $1 ORDER BY event_name, window_start, revision`,
    [ws],
  );
  return rows;
}

test('USD and EUR are billed on their own meters, never summed; a currency without a meter is rejected, then billed once the meter exists', async () => {
  const cfg = billingConfig(billingEnv(stores, local, { BILLING_ENSURE_METERS: 'false' }));
  for (const name of ['checkout.completed.usd', 'checkout.completed.eur']) {
    const existing = await local.stripe.billing.meters.list({ status: 'active', limit: 100 });
    if (!existing.data.some((m) => m.event_name === name))
      await local.stripe.billing.meters.create({
        display_name: name,
        event_name: name,
        default_aggregation: { formula: 'sum' },
      });
  }
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const { ws, customer } = await workspace('fx');
  const { now, from: w } = pastHours(2);
  const ev = (key: string, gmv: number, currency: string): EventRow => checkout(ws, key, gmv, w + 60, { currency });
  await insertEvents(stores, [
    ev('u1', 4299, 'USD'),
    ev('u2', 1000, 'USD'),
    ev('e1', 2500, 'EUR'),
    ev('j1', 5000, 'JPY'),
  ]);

  const r = await worker.pass(now);
  assert.equal(r.planned, 3);
  assert.equal(r.rejected, 1);
  const totals = await stripeTotals(
    local.stripe,
    new Map([[ws, customer]]),
    ['checkout.completed.usd', 'checkout.completed.eur', 'checkout.completed'],
    w,
    w + 3600,
  );
  assert.deepEqual(
    Object.fromEntries(totals),
    { [`${ws}\ncheckout.completed.usd`]: 5299, [`${ws}\ncheckout.completed.eur`]: 2500 },
    'per currency; nothing on a currency-less meter',
  );
  const jpy = (await ledger(ws)).find((x) => x.event_name === 'checkout.completed.jpy')!;
  assert.equal(jpy.status, 'rejected');
  assert.match(jpy.reason!, /^no_meter: no active Stripe meter has event_name checkout\.completed\.jpy/);
  assert.match(metrics.registry.render(), new RegExp(`^${BILLING_METRICS.rejectedRows} 1$`, 'm'));

  assert.equal((await worker.pass(now)).planned, 0, 'the rejected key waits for its meter');
  await local.stripe.billing.meters.create({
    display_name: 'JPY',
    event_name: 'checkout.completed.jpy',
    default_aggregation: { formula: 'sum' },
  });
  const fixed = await worker.pass(now);
  assert.deepEqual([fixed.retried, fixed.planned, fixed.rejected], [1, 1, 0]);
  assert.equal(await stripeTotal(local.stripe, ws, customer, 'checkout.completed.jpy', w), 5000);
  assert.deepEqual(
    (await ledger(ws))
      .filter((x) => x.event_name === 'checkout.completed.jpy')
      .map((x) => [x.revision, x.value, x.status]),
    [
      [1, '5000', 'retried'],
      [2, '5000', 'sent'],
    ],
  );
});

test('a refund (negative gmv_cents) lowers the Stripe total, in its own window and as a late event in a pushed one', async () => {
  const cfg = billingConfig(billingEnv(stores, local));
  const worker = rawWorker(stores, cfg);
  const { ws, customer } = await workspace('refund');
  const { now, from: w1 } = pastHours(3);
  const w2 = w1 + 3600;
  await insertEvents(stores, [
    checkout(ws, 'order-1', 5000, w1 + 10),
    checkout(ws, 'refund-1', -1500, w2 + 10, { quantity: -1 }),
  ]);
  await worker.pass(now);
  const total = (): Promise<number | undefined> =>
    stripeTotal(local.stripe, ws, customer, 'checkout.completed.usd', w1, w2 + 3600);
  assert.equal(await total(), 3500);
  // A late refund in the first window: one negative correction.
  await insertEvents(stores, [checkout(ws, 'refund-2', -700, w1 + 20, { quantity: -1, received_at: now })]);
  const late = await worker.pass(now);
  assert.equal(late.corrections, 1);
  assert.equal(await total(), 2800);
  assert.deepEqual(
    (await ledger(ws)).map((x) => [x.revision, x.value, x.status]),
    [
      [1, '5000', 'sent'],
      [2, '-700', 'sent'],
      [1, '-1500', 'sent'],
    ],
  );
});

test('a retry that Redis forgot, stored again in another hour, counts once in the rollups and at Stripe', async () => {
  const own = await openTestStores('billing_forgot');
  const aggregator = await startAggregator({
    ...own.env,
    AGGREGATOR_SHARDS: '2',
    AGGREGATOR_POLL_MS: '100',
    AGGREGATOR_CLOSE_AFTER_SECONDS: '0',
  });
  try {
    const cfg = billingConfig(billingEnv(own, local, { BILLING_USAGE_SOURCE: 'rollups', AGGREGATOR_SHARDS: '2' }));
    const source = new ClickHouseRollupUsage(own.clickhouse, 2);
    const { ws, customer } = await workspaceFor(own, 'forgot', local.stripe);
    const { now, from: h1 } = pastHours(3);
    const h2 = h1 + 3600;
    // The first copy, then the client's retry an hour later after Redis lost the key: a new event
    // id, and, since the client sent no occurred_at, its own arrival time in another hour.
    const first = checkout(ws, 'order-77', 4200, h1 + 100);
    await insertEvents(own, [first, checkout(ws, 'other', 10, h2 + 5)]);
    await insertEvents(own, [
      { ...first, event_id: 'evt_retry_after_redis_forgot', occurred_at: h2 + 200, received_at: h2 + 200 },
    ]);
    await rolledUp(source);
    const byHour = (await source.totals(h1, h2 + 3600, 'hour')).map((t) => [t.window_start, t.gmv_cents]).sort();
    assert.deepEqual(
      byHour,
      [
        [h1, 4200n],
        [h2, 10n],
      ],
      'the retry is not in its own hour',
    );
    assert.deepEqual(
      (await new ClickHouseRawUsage(own.clickhouse).totals(h1, h2 + 3600, 'hour'))
        .map((t) => [t.window_start, t.gmv_cents])
        .sort(),
      byHour,
      'the raw source agrees',
    );

    const worker = new BillingWorker(own.pool, source, createStripe(cfg), cfg, createBillingMetrics(), log);
    await worker.pass(now);
    assert.equal(await stripeTotal(local.stripe, ws, customer, 'checkout.completed.usd', h1, h2 + 3600), 4210);
  } finally {
    await aggregator.close();
    await own.close();
  }
});

test('a difference in a window Stripe no longer accepts is recorded as unbillable, counted and reported', async () => {
  const cfg = billingConfig(billingEnv(stores, local));
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const { ws } = await workspace('horizon');
  const now = Math.floor(Date.now() / 1000);
  // Accepted by ingest (under 35 days old) but in an hour that starts past Stripe's limit.
  const old = now - 35 * 86_400 + 600;
  await insertEvents(stores, [checkout(ws, 'old-1', 999, old)]);
  const r = await worker.pass(now);
  assert.equal(r.unbillable, 1);
  const rows = await ledger(ws);
  assert.deepEqual(
    rows.map((x) => [x.value, x.status]),
    [['999', 'unbillable']],
  );
  assert.match(rows[0]!.reason!, /older than the 35 days Stripe accepts/);
  assert.match(metrics.registry.render(), new RegExp(`^${BILLING_METRICS.unbillable} 1$`, 'm'));
  assert.equal((await worker.pass(now)).unbillable, 0, 'recorded once, not every pass');
  const report = await reconcileLedger(createStripe(cfg), stores.pool, cfg, hourFloor(old), hourFloor(old) + 3600, ws);
  assert.deepEqual(
    report.held.map((h) => [h.status, String(h.value)]),
    [['unbillable', '999']],
  );
});

test("a push pending through a 25-hour outage is checked against Stripe's summaries before it is sent again", async () => {
  // Live clock: both cases share stripe-local, whose clock only moves forward.
  const cfg = billingConfig(billingEnv(stores, local, { STRIPE_MAX_ATTEMPTS: '1', STRIPE_TRANSPORT: 'v1' }));
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const stored = await workspace('outage-stored');
  const lost = await workspace('outage-lost');
  const { now, from: w } = pastHours(1);
  await insertEvents(stores, [checkout(stored.ws, 's1', 1234, w + 1)]);
  // Stripe stores the event but the answer is lost (a 500 after storing): the row stays pending.
  await local.faults({ applied_error_rate: 1 });
  const down = await worker.pass(now);
  await local.faults({ reset: true });
  assert.equal(down.pending, 1);
  await insertEvents(stores, [checkout(lost.ws, 'l1', 4321, w + 2)]);
  await local.faults({ error_rate: 1 });
  assert.equal((await worker.pass(now)).pending, 2, 'the second never reached Stripe');
  await local.faults({ reset: true });
  const eventsBefore = await local.metric('stripe_local_meter_events_total');

  // 25 hours later at Stripe too: it no longer remembers the identifiers.
  await fetch(`${local.url}/_clock`, { method: 'POST', body: JSON.stringify({ advance_seconds: 25 * 3600 }) });
  const later = await worker.pass(now + 25 * 3600);
  assert.equal(later.pending, 0);
  assert.match(metrics.registry.render(), new RegExp(`^${BILLING_METRICS.resendChecks} 2$`, 'm'));
  assert.match(metrics.registry.render(), new RegExp(`^${BILLING_METRICS.resendSettled} 1$`, 'm'));
  const usd = (x: { ws: string; customer: string }): Promise<number | undefined> =>
    stripeTotal(local.stripe, x.ws, x.customer, 'checkout.completed.usd', w);
  assert.equal(await usd(stored), 1234, 'the event Stripe had is not counted twice');
  assert.equal(await usd(lost), 4321, 'the event Stripe never had is sent');
  assert.equal(
    (await local.metric('stripe_local_meter_events_total')) - eventsBefore,
    1,
    'only the lost one was sent again',
  );
  const { rows } = await stores.pool.query<{ workspace_id: string; via: string }>(
    `SELECT workspace_id, via FROM billing_pushes WHERE workspace_id = ANY($1) ORDER BY workspace_id`,
    [[stored.ws, lost.ws]],
  );
  assert.deepEqual(
    new Map(rows.map((r) => [r.workspace_id, r.via])),
    new Map([
      [stored.ws, 'summary'],
      [lost.ws, 'v1'],
    ]),
  );
});

test('a push Stripe accepted whose outcome was never committed is checked against the summaries 25 h later, not counted twice', async () => {
  const cfg = billingConfig(billingEnv(stores, local, { STRIPE_MAX_ATTEMPTS: '1', STRIPE_TRANSPORT: 'v1' }));
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const { ws, customer } = await workspace('outcome-lost');
  const { now, from: w } = pastHours(1);
  await insertEvents(stores, [checkout(ws, 'ol1', 2468, w + 3)]);
  // Stripe accepts the event, then the transaction recording the outcome fails (as a COMMIT that
  // fails, or a kill -9 before it): the row is pending again and carries no trace of the attempt.
  await stores.pool.query(`CREATE FUNCTION fail_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'outcome write lost'; END $$`);
  await stores.pool.query(`CREATE TRIGGER fail_outcome BEFORE UPDATE ON billing_pushes FOR EACH ROW
      WHEN (OLD.status = 'pending' AND NEW.status = 'sent') EXECUTE PROCEDURE fail_outcome()`);
  try {
    await assert.rejects(worker.pass(now), /outcome write lost/);
    // The pass has given up, so nothing of it may still run: no lane holds or waits for a connection.
    assert.deepEqual([stores.pool.totalCount - stores.pool.idleCount, stores.pool.waitingCount], [0, 0]);
  } finally {
    await stores.pool.query('DROP TRIGGER fail_outcome ON billing_pushes');
    await stores.pool.query('DROP FUNCTION fail_outcome()');
  }
  // This customer's own total, not a global counter: the pass also serves the file's other workspaces.
  const total = (): Promise<number | undefined> => stripeTotal(local.stripe, ws, customer, 'checkout.completed.usd', w);
  assert.equal(await total(), 2468, 'Stripe accepted it');
  const row = async (): Promise<{ status: string; first: string | null; via: string | null }> =>
    (
      await stores.pool.query<{ status: string; first: string | null; via: string | null }>(
        `SELECT status, first_attempt_at::text AS first, via FROM billing_pushes WHERE workspace_id = $1`,
        [ws],
      )
    ).rows[0]!;
  assert.deepEqual(await row(), { status: 'pending', first: null, via: null });

  // 25 hours later at Stripe too: it no longer remembers the identifier.
  await fetch(`${local.url}/_clock`, { method: 'POST', body: JSON.stringify({ advance_seconds: 25 * 3600 }) });
  const counter = (name: string): number =>
    Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics.registry.render())?.[1] ?? 0);
  assert.equal(counter('billing_resend_checks_total'), 0);
  const later = await worker.pass(now + 25 * 3600);
  assert.equal(later.pending, 0);
  assert.ok(counter('billing_resend_checks_total') >= 1, "Stripe's summary was consulted");
  assert.ok(counter('billing_resend_settled_total') >= 1);
  assert.equal((await row()).via, 'summary', 'settled by the summary, not sent again');
  assert.equal((await row()).status, 'sent');
  assert.equal(await total(), 2468, 'counted once at Stripe');
});

test('a late event in a window billed before per-currency meters (005) is recorded as unbillable and counted, never skipped', async () => {
  const cfg = billingConfig(billingEnv(stores, local));
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const { ws, customer } = await workspace('legacy');
  const { now, from: w } = pastHours(5);
  // Before 005 the window was sent as one sum of every currency (currency '').
  await stores.pool.query(
    `INSERT INTO billing_pushes (workspace_id, event_type, currency, event_name, window_start, window_end, revision, identifier,
       stripe_customer_id, value_field, total, value, status, via, sent_at)
     VALUES ($1, 'checkout.completed', '', 'checkout.completed', to_timestamp($2), to_timestamp($2 + 3600), 1, $3, $4, 'gmv_cents', 1500, 1500, 'sent', 'v1', now())`,
    [ws, w, `legacy-${ws}`, customer],
  );
  const ev = (key: string, gmv: number, currency: string): EventRow => checkout(ws, key, gmv, w + 10, { currency });
  // What was billed then, and a late EUR event since.
  await insertEvents(stores, [ev('l1', 1000, 'USD'), ev('l2', 500, 'EUR'), ev('l3', 70, 'EUR')]);
  const p = await worker.pass(now);
  assert.equal(p.unbillable, 1);
  assert.match(metrics.registry.render(), /^billing_unbillable_total 1$/m);
  const { rows } = await stores.pool.query<{ currency: string; value: string; status: string; reason: string | null }>(
    `SELECT currency, value::text, status, reason FROM billing_pushes WHERE workspace_id = $1 ORDER BY revision`,
    [ws],
  );
  assert.deepEqual(
    rows.map((r) => [r.currency, r.value, r.status]),
    [
      ['', '1500', 'sent'],
      ['', '70', 'unbillable'],
    ],
  );
  assert.match(rows[1]!.reason ?? '', /before per-currency meters/);
  assert.equal((await worker.pass(now)).unbillable, 0, 'recorded once');
  const totals = await stripeTotals(
    local.stripe,
    new Map([[ws, customer]]),
    ['checkout.completed.usd', 'checkout.completed.eur'],
    w,
    w + 3600,
  );
  assert.equal(totals.size, 0, 'nothing of the mixed window is sent to the per-currency meters');
});

test('the planner never corrects downward from totals older than those a window was planned from', async () => {
  const cfg = billingConfig(billingEnv(stores, local));
  const { ws, customer } = await workspace('stale');
  const { now, from: w } = pastHours(2);
  // Two replicas' views of the same window: the current one (as of now) and a stale one (as of
  // an hour ago, before a late event arrived). They stand for two usage sources at different as-ofs.
  const view = (asOf: number, gmv: bigint): UsageSource => ({
    totals: async (): Promise<UsageTotal[]> => [
      {
        workspace_id: ws,
        event_type: 'checkout.completed',
        currency: 'USD',
        window_start: w,
        quantity: 1n,
        gmv_cents: gmv,
      },
    ],
    asOf: async () => asOf,
  });
  const current = new BillingWorker(stores.pool, view(now, 900n), createStripe(cfg), cfg, createBillingMetrics(), log);
  const stale = new BillingWorker(
    stores.pool,
    view(now - 3600, 600n),
    createStripe(cfg),
    cfg,
    createBillingMetrics(),
    log,
  );
  assert.equal((await current.pass(now)).planned, 1);
  const r = await stale.pass(now);
  assert.deepEqual([r.planned, r.stale], [0, 1]);
  assert.equal(await stripeTotal(local.stripe, ws, customer, 'checkout.completed.usd', w), 900);
  // Newer totals may still go down (a refund's negative event, say).
  const newer = new BillingWorker(
    stores.pool,
    view(now + 60, 800n),
    createStripe(cfg),
    cfg,
    createBillingMetrics(),
    log,
  );
  assert.equal((await newer.pass(now + 60)).planned, 1);
  assert.deepEqual(
    (await ledger(ws)).map((x) => x.value),
    ['900', '-100'],
  );
});

test('npm run reconcile:stripe exits 0 when the ledger, ClickHouse and Stripe agree, and non-zero on a seeded drift', async () => {
  const own = await openTestStores('billing_recon_cli');
  try {
    const env = billingEnv(own, local);
    const cfg = billingConfig(env);
    const { ws, customer } = await workspaceFor(own, 'recon', local.stripe);
    const { now, from: h } = pastHours(2);
    await insertEvents(own, [
      checkout(ws, 'r1', 1500, h + 5, { currency: 'EUR' }),
      checkout(ws, 'r2', -200, h + 6, { currency: 'EUR' }),
    ]);
    await rawWorker(own, cfg).pass(now);
    const args = ['--from', new Date(h * 1000).toISOString(), '--to', new Date((h + 3600) * 1000).toISOString()];
    const clean = await runCli(RECONCILE_MAIN, args, env);
    assert.equal(clean.code, 0, clean.out);
    assert.match(clean.out, /ledger against Stripe over 1 month\(s\): 1 customer×meter total\(s\), 0 drift\(s\)/);

    // Drift: Stripe holds an event billing-sync never sent (another system, or a push the ledger lost).
    await local.stripe.billing.meterEvents.create({
      event_name: 'checkout.completed.eur',
      payload: { stripe_customer_id: customer, value: '25' },
      timestamp: h + 60,
    });
    const drift = await runCli(RECONCILE_MAIN, args, env);
    assert.equal(drift.code, 1, drift.out);
    assert.match(
      drift.out,
      new RegExp(`^DRIFT ${customer} checkout\\.completed\\.eur \\S+ stripe=1325 ledger=1300 diff=25$`, 'm'),
    );
    assert.match(
      drift.out,
      new RegExp(
        `^MISMATCH ${ws} ${customer} checkout\\.completed\\.eur \\S+ stripe=1325 clickhouse=1300 diff=25$`,
        'm',
      ),
    );
  } finally {
    await own.close();
  }
});

test('v1 refusing a missing customer at once rejects the row with the code: listed, not billed, and billed once the customer exists', async () => {
  const cfg = billingConfig(billingEnv(stores, local, { STRIPE_MAX_ATTEMPTS: '1', STRIPE_TRANSPORT: 'v1' }));
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const { ws } = await withoutCustomer('nocustomer');
  const { now, from: w } = pastHours(1);
  await insertEvents(stores, [checkout(ws, 'nc1', 777, w + 5)]);
  await local.faults({ v1_refuse_unknown_customers: true });
  try {
    const r = await worker.pass(now);
    assert.equal(r.rejected, 1);
    const [row] = await ledger(ws);
    assert.equal(row!.status, 'rejected');
    assert.match(row!.reason!, /^meter_event_customer_not_found: No such customer/);
    const view = await readLedger(stores.pool, w, false);
    assert.deepEqual(view.states.get(keyOf(ws, 'checkout.completed', 'USD', w)), {
      counted: 0n,
      maxRevision: 1,
      maxAsOf: null,
      held: true,
    });
    const report = await reconcileLedger(createStripe(cfg), stores.pool, cfg, w, w + 3600, ws);
    assert.deepEqual(
      report.held.map((h) => [h.status, String(h.value)]),
      [['rejected', '777']],
    );
    assert.equal((await worker.pass(now)).planned, 0, 'the key waits for its customer');

    const c = await local.stripe.customers.create({ email: 'nocustomer@example.com' });
    await stores.pool.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1', [ws, c.id]);
    const fixed = await worker.pass(now);
    assert.deepEqual([fixed.retried, fixed.planned, fixed.rejected], [1, 1, 0]);
    assert.equal(await stripeTotal(local.stripe, ws, c.id, 'checkout.completed.usd', w), 777);
  } finally {
    await local.faults({ reset: true });
  }
});

test('a row Stripe refused for good (failed) is not counted as billed, holds its key and is listed by reconcile', async () => {
  const cfg = billingConfig(billingEnv(stores, local, { STRIPE_MAX_ATTEMPTS: '1', STRIPE_TRANSPORT: 'v1' }));
  const worker = rawWorker(stores, cfg, createBillingMetrics(), log);
  const { ws } = await workspace('refused');
  const { now, from: w } = pastHours(1);
  // Each event is within ±(2^53−1); their sum is not, and Stripe refuses it synchronously.
  const big = Number.MAX_SAFE_INTEGER;
  await insertEvents(stores, [checkout(ws, 'r1', big, w + 1), checkout(ws, 'r2', big, w + 2)]);
  await worker.pass(now);
  const [row] = await ledger(ws);
  assert.equal(row!.status, 'failed');
  const view = await readLedger(stores.pool, w, false);
  const state = view.states.get(keyOf(ws, 'checkout.completed', 'USD', w))!;
  assert.deepEqual([state.counted, state.held], [0n, true], 'nothing of it is billed; its key waits');
  assert.equal((await worker.pass(now)).planned, 0, 'not re-planned every pass');
  const report = await reconcileLedger(createStripe(cfg), stores.pool, cfg, w, w + 3600, ws);
  assert.deepEqual(
    report.held.map((h) => [h.status, String(h.value)]),
    [['failed', String(2n * BigInt(big))]],
  );
  assert.match(report.held[0]!.reason, /whole number/);
});

test("a Stripe error re-checking a rejected row's customer (a restricted key's 403) is logged and counted; the pass still plans and pushes everyone else", async () => {
  const cfg = billingConfig(billingEnv(stores, local, { STRIPE_MAX_ATTEMPTS: '1', STRIPE_TRANSPORT: 'v1' }));
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const held = await withoutCustomer('recheck');
  const other = await workspace('recheck-other');
  const { now, from: w } = pastHours(1);
  await insertEvents(stores, [checkout(held.ws, 'rc1', 321, w + 7)]);
  await local.faults({ v1_refuse_unknown_customers: true });
  try {
    assert.equal((await worker.pass(now)).rejected, 1);
  } finally {
    await local.faults({ reset: true });
  }
  const c = await local.stripe.customers.create({ email: 'recheck@example.com' });
  await stores.pool.query('UPDATE workspaces SET stripe_customer_id = $2 WHERE id = $1', [held.ws, c.id]);
  await insertEvents(stores, [checkout(other.ws, 'rc2', 654, w + 7)]);

  await local.faults({ customer_read_status: 403 });
  let r;
  try {
    r = await worker.pass(now);
  } finally {
    await local.faults({ reset: true });
  }
  assert.deepEqual([r.retried, r.rejected], [0, 1], 'the rejected row waits');
  assert.match(metrics.registry.render(), new RegExp(`^${BILLING_METRICS.recheckErrors} 1$`, 'm'));
  const usd = (ws: string, customer: string): Promise<number | undefined> =>
    stripeTotal(local.stripe, ws, customer, 'checkout.completed.usd', w);
  assert.equal(await usd(other.ws, other.customer), 654, 'everyone else is billed');
  assert.equal(await usd(held.ws, c.id), undefined);

  const fixed = await worker.pass(now);
  assert.deepEqual([fixed.retried, fixed.rejected], [1, 0], 're-checked on the next pass');
  assert.equal(await usd(held.ws, c.id), 321);
});

test("stale pending rows of one customer × meter × window split across batches are weighed together against Stripe's summary, not left pending", async () => {
  // One row per batch and two lanes: the group's two rows are never in the same batch.
  const cfg = billingConfig(
    billingEnv(stores, local, {
      STRIPE_MAX_ATTEMPTS: '1',
      STRIPE_TRANSPORT: 'v1',
      BILLING_BATCH_SIZE: '1',
      BILLING_CONCURRENCY: '2',
    }),
  );
  const metrics = createBillingMetrics();
  const worker = rawWorker(stores, cfg, metrics, log);
  const { ws, customer } = await workspace('split');
  const { now, from: w } = pastHours(1);
  // Stripe stores each revision, but the answers are lost: both rows of the window stay pending.
  await local.faults({ applied_error_rate: 1 });
  try {
    await insertEvents(stores, [checkout(ws, 'sp1', 1111, w + 9)]);
    assert.equal((await worker.pass(now)).pending, 1);
    // Not due in the next pass (as after a backoff), so that pass plans and sends only the late event.
    await stores.pool.query(
      `UPDATE billing_pushes SET next_attempt_at = now() + interval '1 hour' WHERE workspace_id = $1`,
      [ws],
    );
    await insertEvents(stores, [checkout(ws, 'sp2', 2222, w + 9)]);
    const second = await worker.pass(now);
    assert.deepEqual([second.planned, second.pending], [1, 2]);
  } finally {
    await local.faults({ reset: true });
  }
  const eventsBefore = await local.metric('stripe_local_meter_events_total');

  await fetch(`${local.url}/_clock`, { method: 'POST', body: JSON.stringify({ advance_seconds: 25 * 3600 }) });
  // Under the simulated clock, rows left unsettled (retry in an hour) are due again within the same
  // pass: a regression would loop until stopped, so the pass is stopped after a bound and fails.
  const guard = setTimeout(() => worker.stop(), 30_000);
  guard.unref();
  let later;
  try {
    later = await worker.pass(now + 25 * 3600);
  } finally {
    clearTimeout(guard);
  }
  assert.equal(later.pending, 0, 'both settled by the summary');
  assert.match(metrics.registry.render(), new RegExp(`^${BILLING_METRICS.resendSettled} 2$`, 'm'));
  assert.equal((await local.metric('stripe_local_meter_events_total')) - eventsBefore, 0, 'nothing sent again');
  const { rows } = await stores.pool.query<{ status: string; via: string }>(
    `SELECT status, via FROM billing_pushes WHERE workspace_id = $1`,
    [ws],
  );
  assert.deepEqual(
    rows.map((r) => [r.status, r.via]),
    [
      ['sent', 'summary'],
      ['sent', 'summary'],
    ],
  );
  assert.equal(
    await stripeTotal(local.stripe, ws, customer, 'checkout.completed.usd', w),
    3333,
    'counted once at Stripe',
  );
});
