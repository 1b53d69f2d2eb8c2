import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestStores } from '@meterd/core/testing';
import {
  billingEnv,
  countPushes,
  pastHours,
  spawnBilling,
  stripeGroupUsage,
  waitFor,
  withStoresAndStripe,
  workspacesFor,
  type LocalStripe,
} from './helpers.js';

/**
 * kill -9 of billing-sync (its built main.js) at random moments while it pushes user-defined
 * meters per group, under 5xx (before and after storing), timeouts after storing and 429s, with
 * closed hours recomputed (a higher meter_hourly version) between runs: once the faults stop and
 * a last run drains the ledger, Stripe's usage of every workspace × hour × group equals the
 * rollups exactly. The closed meter hours are written here as the aggregator writes them (its own
 * path is in meters-e2e.test.ts); the runs alternate between the v2 stream and v1.
 */
let stores: TestStores;
let local: LocalStripe;
withStoresAndStripe(
  'billing_meter_crash',
  { STRIPE_LOCAL_RATE_TEST_MODE: '0', STRIPE_LOCAL_CHECK_CUSTOMERS: 'false' },
  (s, l) => {
    stores = s;
    local = l;
  },
);

const MODELS = ['gpt-4', 'claude', 'mistral'];

test('kill -9 mid-push of meter groups under faults: each group billed exactly once', async () => {
  const customers = await workspacesFor(stores, 'mcrash', 20);
  const { now, from, to } = pastHours(4);
  for (const ws of customers.keys())
    await stores.pool.query(
      `INSERT INTO meters (id, workspace_id, slug, event_types, aggregation, value_field, group_by, stripe_event_name, backfill_state)
       VALUES ($1, $2, 'tokens', '{api.call}', 'sum', 'properties.tokens', '{model}', 'crash.tokens', 'done')`,
      [`mtr_${ws}`, ws],
    );
  // Every hour is closed for the meter reads (closedOnly), as the aggregator records it.
  await stores.clickhouse.insert({
    table: 'aggregator_state',
    values: [{ shard: 0, block: 0, version: 1, as_of_ms: now * 1000, updated_ms: now * 1000, closed_before: now }],
    format: 'JSONEachRow',
  });
  const want = new Map<string, Map<string, number>>();
  let version = 1;
  const writeHours = async (cells: Array<{ ws: string; h: number; model: string; value: number }>): Promise<void> => {
    version++;
    await stores.clickhouse.insert({
      table: 'meter_hourly',
      values: cells.map((c) => ({
        workspace_id: c.ws,
        meter_id: `mtr_${c.ws}`,
        window_start: c.h,
        currency: '',
        group_values: [c.model],
        events: 1,
        values_n: 1,
        value_sum: c.value,
        value_max: c.value,
        latest_at: c.h,
        latest_key: '',
        latest_value: c.value,
        uniq_values: [],
        skipped: 0,
        version,
        computed_at: now,
      })),
      format: 'JSONEachRow',
    });
    for (const c of cells) {
      if (!want.has(c.ws)) want.set(c.ws, new Map());
      want.get(c.ws)!.set(`${c.h}|${c.model}`, c.value);
    }
  };
  const cells = [];
  for (const ws of customers.keys())
    for (let h = from; h < to; h += 3600)
      for (const model of MODELS) cells.push({ ws, h, model, value: 1 + Math.floor(Math.random() * 10_000) });
  await writeHours(cells);
  await local.faults({
    error_rate: 0.15,
    applied_error_rate: 0.15,
    timeout_rate: 0.1,
    timeout_ms: 700,
    rate_limit_rate: 0.1,
  });
  const base = billingEnv(stores, local, {
    BILLING_INTERVAL_MS: '100',
    STRIPE_TIMEOUT_MS: '500',
    BILLING_BATCH_SIZE: '25',
    BILLING_CONCURRENCY: '3',
    BILLING_CLAIM_LEASE_MS: '1000',
  });
  const run = (env: Record<string, string>, killAfterMs?: number): Promise<number | string | null> => {
    const { proc, exited } = spawnBilling(env);
    if (killAfterMs !== undefined) setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
    return exited;
  };
  let kills = 0;
  for (let i = 0; i < 6; i++) {
    // Recomputed closed hours (late events): a new value for some groups of pushed hours.
    if (i % 3 === 2)
      await writeHours(cells.filter((_, j) => j % 7 === i).map((c) => ({ ...c, value: c.value + 1 + i * 13 })));
    const exit = await run(
      { ...base, STRIPE_TRANSPORT: i % 2 === 0 ? 'v2' : 'v1' },
      300 + Math.floor(Math.random() * 1_200),
    );
    if (exit === 'SIGKILL') kills++;
  }
  assert.ok(kills >= 4, `expected most runs killed mid-flight, got ${kills}`);
  await local.faults({ reset: true });
  await waitFor(
    "the killed runs' claims to expire",
    async () => (await countPushes(stores, `status = 'pending' AND lease_until > now()`)) === 0,
  );
  assert.equal(await run({ ...base, BILLING_RUN_ONCE: 'true' }), 0);
  // Every hour has been pushed now: a recomputed hour must become a correction of its group.
  const before = await countPushes(stores, `meter_id <> '' AND revision > 1`);
  await writeHours([{ ...cells[0]!, value: cells[0]!.value + 500 }]);
  assert.equal(await run({ ...base, BILLING_RUN_ONCE: 'true' }), 0);
  assert.equal(await countPushes(stores, `meter_id <> '' AND revision > 1`), before + 1);
  assert.equal(await countPushes(stores, `meter_id <> '' AND status <> 'sent'`), 0);
  for (const [ws, customer] of customers)
    assert.deepEqual(
      await stripeGroupUsage(local.stripe, 'crash.tokens', customer, from, to, ['model']),
      want.get(ws),
      ws,
    );
});
