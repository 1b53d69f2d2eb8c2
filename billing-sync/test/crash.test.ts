import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestStores } from '@meterd/core/testing';
import {
  billingEnv,
  countPushes,
  expectedTotals,
  insertEvents,
  pastHours,
  spawnBilling,
  stripeTotals,
  type EventRow,
  type LocalStripe,
  valueField,
  waitFor,
  withStoresAndStripe,
  workspacesFor,
} from './helpers.js';

/**
 * kill -9 of billing-sync (the built main.js as a child process) at random moments, while
 * stripe-local injects 5xx (before and after storing), timeouts after storing, 429s and an expired
 * session, and late events keep arriving: once the faults stop and a last run drains the ledger,
 * Stripe's totals equal ClickHouse's exactly — nothing lost, nothing doubled. Runs alternate
 * between the v2 stream and v1, so both dedupe paths (silent drop, "already exists") are crossed.
 */
let stores: TestStores;
let local: LocalStripe;
// Live-mode limits (the paced summary check runs at ~80/s) and synthetic customer ids.
withStoresAndStripe(
  'billing_crash',
  { STRIPE_LOCAL_RATE_TEST_MODE: '0', STRIPE_LOCAL_CHECK_CUSTOMERS: 'false' },
  (s, l) => {
    stores = s;
    local = l;
  },
);

const TYPES = ['checkout.completed', 'api.call'];

function run(env: Record<string, string>, killAfterMs: number | undefined): Promise<number | string | null> {
  const { proc, exited } = spawnBilling(env);
  if (killAfterMs !== undefined) setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
  return exited;
}

test('kill -9 at random moments under 5xx, timeouts and 429s: Stripe totals still equal ClickHouse', async () => {
  const customers = await workspacesFor(stores, 'crash', 60);
  const { from, to } = pastHours(4);
  const rows: EventRow[] = [];
  let k = 0;
  const addEvents = (n: number): EventRow[] => {
    const batch: EventRow[] = [];
    for (let i = 0; i < n; i++) {
      const ws = [...customers.keys()][Math.floor(Math.random() * customers.size)]!;
      const type = TYPES[k % 2]!;
      batch.push({
        workspace_id: ws,
        event_type: type,
        idempotency_key: `e${k++}`,
        quantity: 1 + (k % 7),
        gmv_cents: 100 + (k % 997),
        occurred_at: from + Math.floor(Math.random() * 4 * 3600),
      });
    }
    rows.push(...batch);
    return batch;
  };
  await insertEvents(stores, addEvents(3_000));
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
    BILLING_BATCH_SIZE: '50',
    BILLING_CONCURRENCY: '3',
    // A killed run's claims expire this fast, so the runs after it take its rows again.
    BILLING_CLAIM_LEASE_MS: '1000',
  });
  let kills = 0;
  for (let i = 0; i < 8; i++) {
    if (i === 3) await local.faults({ expire_sessions: true, rate_limit_storm_ms: 400 });
    if (i % 3 === 2) await insertEvents(stores, addEvents(200)); // late data for windows already pushed
    const env = { ...base, STRIPE_TRANSPORT: i % 2 === 0 ? 'v2' : 'v1' };
    const exit = await run(env, 300 + Math.floor(Math.random() * 1_200));
    if (exit === 'SIGKILL') kills++;
  }
  assert.ok(kills >= 6, `expected most runs killed mid-flight, got ${kills}`);

  await local.faults({ reset: true });
  await waitFor(
    "the killed runs' claims to expire",
    async () => (await countPushes(stores, `status = 'pending' AND lease_until > now()`)) === 0,
  );
  assert.equal(await run({ ...base, BILLING_RUN_ONCE: 'true' }, undefined), 0);
  // Whether a killed run got to plan before its kill depends on the machine's speed; this does
  // not: every window has now been pushed, so late events for them must become corrections.
  const corrections = (): Promise<number> => countPushes(stores, 'revision > 1');
  const before = await corrections();
  await insertEvents(stores, addEvents(200));
  assert.equal(await run({ ...base, BILLING_RUN_ONCE: 'true' }, undefined), 0);
  assert.ok((await corrections()) > before, 'late events for pushed windows produced corrections');
  const { rows: left } = await stores.pool.query<{ status: string; n: string }>(
    `SELECT status, count(*)::text AS n FROM billing_pushes GROUP BY status ORDER BY status`,
  );
  assert.deepEqual(
    left.filter((r) => r.status !== 'sent'),
    [],
    `every row sent: ${JSON.stringify(left)}`,
  );
  assert.deepEqual(
    await stripeTotals(local.stripe, customers, ['checkout.completed.usd', 'api.call'], from, to),
    expectedTotals(rows, from, to, valueField),
  );
});
