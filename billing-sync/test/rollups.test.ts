import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { clickHouseFromConfig, ident } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { createLogger } from '@meterd/core/log';
import { createBillingMetrics } from '../src/metrics.js';
import { createStripe } from '../src/stripe/client.js';
import { ClickHouseRawUsage } from '../src/usage/clickhouse-raw.js';
import { ClickHouseRollupUsage } from '../src/usage/clickhouse-rollups.js';
import { createUsageSource } from '../src/usage/select.js';
import type { UsageTotal } from '../src/usage/source.js';
import { BillingWorker } from '../src/worker.js';
import {
  billingConfig,
  billingEnv,
  checkout,
  expectedTotals,
  hourlyEvents,
  insertEvents,
  pastHours,
  rolledUp,
  startAggregator,
  startLocalStripe,
  stripeTotal,
  stripeTotals,
  type LocalStripe,
  valueField,
  waitFor,
  workspaceFor,
  workspacesFor,
} from './helpers.js';

/**
 * The rollup-backed usage source: with the real aggregator (its built main.js as a child process)
 * rolling up `events`, the rollup totals equal the raw distinct-event totals, billing pushes them
 * exactly and a late event becomes exactly one correction. Without the aggregator (hand-written
 * rollup and state rows), a window is planned only once every shard's as-of has passed its close.
 */
let stores: TestStores;
let local: LocalStripe;
let aggregator: { close(): Promise<void> };
const SHARDS = '4';
const log = createLogger('billing-rollups-test', 'silent');
const sorted = (t: UsageTotal[]): string[] =>
  t.map((x) => `${x.workspace_id} ${x.event_type} ${x.currency} ${x.window_start} ${x.quantity} ${x.gmv_cents}`).sort();
const NAMES = ['checkout.completed.usd', 'checkout.completed.eur', 'api.call'];

before(async () => {
  stores = await openTestStores('billing_rollups');
  [local, aggregator] = await Promise.all([
    startLocalStripe(),
    // Hours close as soon as they end: this suite's windows are all in the past.
    startAggregator({
      ...stores.env,
      AGGREGATOR_SHARDS: SHARDS,
      AGGREGATOR_POLL_MS: '100',
      AGGREGATOR_CLOSE_AFTER_SECONDS: '0',
      LOG_LEVEL: 'info',
    }),
  ]);
});
after(async () => {
  await aggregator.close();
  await local.close();
  await stores.close();
});

test('rollups equal the raw distinct events; billing pushes them exactly; a late event makes one correction', async () => {
  const cfg = billingConfig(billingEnv(stores, local, { BILLING_USAGE_SOURCE: 'rollups', AGGREGATOR_SHARDS: SHARDS }));
  const source = await createUsageSource(cfg, stores.clickhouse);
  assert.ok(source instanceof ClickHouseRollupUsage);
  const raw = new ClickHouseRawUsage(stores.clickhouse);
  const customers = await workspacesFor(stores, 'r', 3, local.stripe);
  const { now, from, to } = pastHours(3);
  const rows = hourlyEvents(customers.keys(), from, 3, 4, (slot) => (slot % 2 === 0 ? 'USD' : 'EUR'));
  // A batch shipped, then shipped again after a crash before the spool checkpoint moved: the same
  // batch id, reaching further (a later attempt with more rows), then once more as it was.
  await insertEvents(stores, rows.slice(0, 25), { id: 'b1', attempt: 25 });
  await insertEvents(stores, rows, { id: 'b1', attempt: rows.length });
  await insertEvents(stores, rows, { id: 'b1', attempt: rows.length });
  await rolledUp(source as ClickHouseRollupUsage);

  for (const size of ['hour', 'day'] as const) {
    const lo = size === 'hour' ? from : Math.floor(from / 86_400) * 86_400;
    const hi = size === 'hour' ? to : Math.ceil((to + 1) / 86_400) * 86_400;
    const got = await source.totals(lo, hi, size);
    assert.ok(got.length > 0);
    assert.deepEqual(sorted(got), sorted(await raw.totals(lo, hi, size)), `${size} totals`);
  }

  const worker = new BillingWorker(stores.pool, source, createStripe(cfg), cfg, createBillingMetrics(), log);
  const first = await worker.pass(now);
  assert.equal(first.planned, 3 * 3 * 3, 'per workspace and hour: checkout in USD, checkout in EUR, api.call');
  assert.equal(first.pending, 0);
  assert.ok(first.asOf !== null && first.asOf <= now);
  assert.deepEqual(
    await stripeTotals(local.stripe, customers, NAMES, from, to),
    expectedTotals(rows, from, to, valueField),
  );

  const [ws] = customers.keys();
  const late = checkout(ws!, 'late-1', 909, from + 3600 + 42);
  rows.push(late);
  await insertEvents(stores, [late, late]);
  await rolledUp(source as ClickHouseRollupUsage);
  const corrected = await worker.pass(Math.floor(Date.now() / 1000));
  assert.equal(corrected.planned, 1);
  assert.equal(corrected.corrections, 1);
  assert.equal((await worker.pass(Math.floor(Date.now() / 1000))).planned, 0);
  const { rows: revs } = await stores.pool.query<{ revision: number; value: string }>(
    `SELECT revision, value::text FROM billing_pushes WHERE workspace_id = $1 AND event_name = 'checkout.completed.usd' AND window_start = to_timestamp($2) ORDER BY revision`,
    [ws, from + 3600],
  );
  assert.deepEqual(
    revs.map((r) => r.revision),
    [1, 2],
  );
  assert.equal(revs[1]!.value, '909');
  assert.deepEqual(
    await stripeTotals(local.stripe, customers, NAMES, from, to),
    expectedTotals(rows, from, to, valueField),
  );
});

test('an open hour holding a forgotten retry is not pushed; once the aggregator closes it, it is pushed once with the exact total', async () => {
  const own = await openTestStores('billing_open_hour');
  const aggEnv = { ...own.env, AGGREGATOR_SHARDS: '2', AGGREGATOR_POLL_MS: '100' };
  // The previous hour closes an hour after it ends: it is open for this whole first part.
  let agg = await startAggregator({ ...aggEnv, AGGREGATOR_CLOSE_AFTER_SECONDS: '3600' });
  try {
    const cfg = billingConfig(billingEnv(own, local, { BILLING_USAGE_SOURCE: 'rollups', AGGREGATOR_SHARDS: '2' }));
    const source = new ClickHouseRollupUsage(own.clickhouse, 2);
    const { ws, customer } = await workspaceFor(own, 'open-hour', local.stripe);
    const { from: h1 } = pastHours(1);
    const h0 = h1 - 2 * 3600;
    const first = checkout(ws, 'order-open', 4200, h0 + 100);
    // The retry Redis forgot lands in the open hour h1, in another batch than its first copy.
    await insertEvents(own, [first], { id: 'b-first', attempt: 1 });
    await insertEvents(
      own,
      [
        { ...first, event_id: 'evt_retry_forgotten', occurred_at: h1 + 200 },
        { ...first, idempotency_key: 'order-plain', gmv_cents: 10, occurred_at: h1 + 300 },
      ],
      { id: 'b-retry', attempt: 1 },
    );
    const since = Math.floor(Date.now() / 1000) + 2;
    const progressed = async (): Promise<boolean> => {
      const rs = await own.clickhouse.query({
        query: `SELECT count() AS n, toString(min(a)) AS m FROM (SELECT shard, argMax(as_of_ms, updated_ms) AS a FROM aggregator_state GROUP BY shard)`,
        format: 'JSONEachRow',
      });
      const [row] = await rs.json<{ n: string | number; m: string }>();
      return Number(row!.n) === 2 && Number(row!.m) >= since * 1000;
    };
    await waitFor('the aggregator to fold both batches', progressed);
    const gmvOf = async (h: number): Promise<bigint | undefined> =>
      (await source.totals(h, h + 3600, 'hour')).find((t) => t.event_type === 'checkout.completed')?.gmv_cents;
    assert.equal(await gmvOf(h1), 4210n, 'the open tail still counts the forgotten retry (the hazard)');

    const worker = new BillingWorker(own.pool, source, createStripe(cfg), cfg, createBillingMetrics(), log);
    const open = await worker.pass(Math.floor(Date.now() / 1000));
    const pushed = async (): Promise<[number, string, string][]> =>
      (
        await own.pool.query<{ w: number; value: string; status: string }>(
          `SELECT extract(epoch FROM window_start)::int AS w, value::text, status FROM billing_pushes WHERE workspace_id = $1 ORDER BY window_start, revision`,
          [ws],
        )
      ).rows.map((r) => [r.w, r.value, r.status]);
    assert.deepEqual(await pushed(), [[h0, '4200', 'sent']], 'the closed hour only; the open one is not pushed');
    assert.ok(open.asOf !== null && open.asOf < h1 + 3600, 'the closed mark is before the open hour ends');
    const at = (from: number, to: number): Promise<number | undefined> =>
      stripeTotal(local.stripe, ws, customer, 'checkout.completed.usd', from, to);
    assert.equal(await at(h1, h1 + 3600), undefined);

    // The aggregator closes h1 two seconds from now (on the server's clock).
    await agg.close();
    const closeAt = (await serverSecond(own)) + 2;
    agg = await startAggregator({ ...aggEnv, AGGREGATOR_CLOSE_AFTER_SECONDS: String(closeAt - (h1 + 3600)) });
    await waitFor(
      'the aggregator to close h1',
      async () => ((await source.asOf(Number.MAX_SAFE_INTEGER)) ?? 0) >= h1 + 3600,
    );
    assert.equal(await gmvOf(h1), 10n, 'the close applies the winner rule');
    const closed = await worker.pass(Math.floor(Date.now() / 1000));
    assert.equal(closed.planned, 1);
    assert.equal((await worker.pass(Math.floor(Date.now() / 1000))).planned, 0, 'pushed once');
    assert.deepEqual(await pushed(), [
      [h0, '4200', 'sent'],
      [h1, '10', 'sent'],
    ]);
    assert.equal(await at(h1, h1 + 3600), 10, 'Stripe has the exact total of the closed hour');
    assert.equal(await at(h0, h1 + 3600), 4210);
  } finally {
    await agg.close();
    await own.close();
  }
});

async function serverSecond(s: TestStores): Promise<number> {
  const rs = await s.clickhouse.query({ query: 'SELECT toUInt32(now()) AS t', format: 'JSONEachRow' });
  return Number((await rs.json<{ t: number | string }>())[0]!.t);
}

test('a window is planned only once every aggregator shard has closed it; FINAL picks the newest version', async () => {
  const own = await openTestStores('billing_asof');
  try {
    const cfg = billingConfig(
      billingEnv(own, undefined, {
        BILLING_USAGE_SOURCE: 'rollups',
        AGGREGATOR_SHARDS: '2',
        BILLING_CLOSE_DELAY_SECONDS: '600',
      }),
    );
    const { ws } = await workspaceFor(own, 'asof', 'cus_asof');
    const { now, from: win } = pastHours(3);
    const end = win + 3600;
    const fmt = (s: number): string => new Date(s * 1000).toISOString().slice(0, 19).replace('T', ' ');
    const rollup = (currency: string, gmv: number, version: number) => ({
      workspace_id: ws,
      event_type: 'checkout.completed',
      currency,
      window_start: fmt(win),
      events: 1,
      quantity: 1,
      gmv_cents: gmv,
      first_event_at: fmt(win),
      last_event_at: fmt(win),
      late_events: 0,
      version,
      computed_at: fmt(now),
    });
    // Two versions of one key (an earlier, smaller recompute) and a second currency.
    await own.clickhouse.insert({
      table: 'usage_hourly',
      format: 'JSONEachRow',
      values: [rollup('USD', 100, 1), rollup('EUR', 40, 1)],
    });
    await own.clickhouse.insert({ table: 'usage_hourly', format: 'JSONEachRow', values: [rollup('USD', 250, 2)] });
    let updated = 1;
    // as_of_ms (progress) is far ahead on every row: only the closed mark makes a window billable.
    const state = async (shard: number, closedBefore: number): Promise<void> => {
      await own.clickhouse.insert({
        table: 'aggregator_state',
        format: 'JSONEachRow',
        values: [
          { shard, block: 1, version: 2, as_of_ms: now * 1000, closed_before: closedBefore, updated_ms: updated++ },
        ],
      });
    };
    const worker = new BillingWorker(
      own.pool,
      await createUsageSource(cfg, own.clickhouse),
      undefined,
      cfg,
      createBillingMetrics(),
      log,
    );

    const none = await worker.pass(now);
    assert.deepEqual([none.planned, none.asOf], [0, null], 'no aggregator progress yet: nothing is closed');
    await state(0, end + 60);
    await state(7, 0); // a shard left over from a larger AGGREGATOR_SHARDS never holds billing back
    const half = await worker.pass(now);
    assert.deepEqual([half.planned, half.asOf], [0, null], 'one shard has not reported');
    await state(1, end - 1);
    const early = await worker.pass(now);
    assert.deepEqual([early.planned, early.asOf], [0, end - 1], 'the lagging shard has not closed the window');
    await state(1, end);
    const done = await worker.pass(now);
    assert.equal(done.planned, 2);
    const { rows } = await own.pool.query<{ value: string; status: string; event_name: string }>(
      `SELECT value::text, status, event_name FROM billing_pushes ORDER BY event_name`,
    );
    assert.deepEqual(
      rows.map((r) => [r.event_name, r.value, r.status]),
      [
        ['checkout.completed.eur', '40', 'dry_run'],
        ['checkout.completed.usd', '250', 'dry_run'],
      ],
      'the newest USD version, and EUR on its own meter: never summed',
    );
  } finally {
    await own.close();
  }
});

test('BILLING_USAGE_SOURCE=rollups refuses a database without the rollup tables; raw needs none', async () => {
  const base = loadConfig(storeVars);
  const db = ident(`meterd_t_norollups_${process.pid}`);
  const admin = clickHouseFromConfig(base, { database: 'default' });
  await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${db}` });
  const ch = clickHouseFromConfig(base, { database: db });
  try {
    const env = billingEnv(stores, undefined);
    await assert.rejects(
      createUsageSource(billingConfig({ ...env, BILLING_USAGE_SOURCE: 'rollups' }), ch),
      (err: Error & { code?: string }) =>
        err.code === 'METERD_BILLING_USAGE_SOURCE_UNAVAILABLE' &&
        /usage_hourly, usage_daily, aggregator_state/.test(err.message),
    );
    assert.ok(
      (await createUsageSource(billingConfig({ ...env, BILLING_USAGE_SOURCE: 'raw' }), ch)) instanceof
        ClickHouseRawUsage,
    );
    assert.equal(
      billingConfig({ ...env, BILLING_USAGE_SOURCE: '' }).BILLING_USAGE_SOURCE,
      'rollups',
      'rollups is the default',
    );
  } finally {
    await ch.close();
    await admin.command({ query: `DROP DATABASE IF EXISTS ${db}` });
    await admin.close();
  }
});
