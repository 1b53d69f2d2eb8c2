import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startPgBouncer, type TestPgBouncer, type TestStores } from '@meterd/core/testing';
import { createPool } from '@meterd/core/store';
import { createLogger } from '@meterd/core/log';
import { createBillingMetrics } from '../src/metrics.js';
import { ClickHouseRawUsage } from '../src/usage/clickhouse-raw.js';
import { BillingWorker } from '../src/worker.js';
import {
  billingConfig,
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
  workspaceFor,
  workspacesFor,
} from './helpers.js';

/**
 * Two billing-sync replicas, their DATABASE_URL through PgBouncer in transaction mode (the
 * session URL direct), push one ledger; one is killed -9 mid-run. Rows it had claimed are claimed
 * again once its lease expires, and every total reaches Stripe exactly once.
 */
let stores: TestStores;
let local: LocalStripe;
let bouncer: TestPgBouncer;
withStoresAndStripe(
  'billing_replicas',
  { STRIPE_LOCAL_RATE_TEST_MODE: '0', STRIPE_LOCAL_CHECK_CUSTOMERS: 'false' },
  (s, l) => {
    stores = s;
    local = l;
  },
);
before(async () => {
  bouncer = await startPgBouncer(6434);
});
after(async () => {
  await bouncer?.stop();
});

const TYPES = ['checkout.completed', 'api.call'];
const count = (where: string): Promise<number> => countPushes(stores, where);

test('two replicas through PgBouncer, one killed -9 mid-push: every total reaches Stripe exactly once', async () => {
  const customers = await workspacesFor(stores, 'rep', 40);
  const { from, to } = pastHours(4);
  const rows: EventRow[] = [];
  let k = 0;
  for (const ws of customers.keys())
    for (let h = 0; h < 4; h++)
      for (const type of TYPES)
        rows.push({
          workspace_id: ws,
          event_type: type,
          idempotency_key: `e${k++}`,
          quantity: 1 + (k % 5),
          gmv_cents: 100 + (k % 991),
          occurred_at: from + h * 3600 + (k % 3000),
        });
  await insertEvents(stores, rows);

  const env = billingEnv(stores, local, {
    ...bouncer.envFor(stores.databaseUrl),
    BILLING_INTERVAL_MS: '100',
    // Small batches, so the kill lands between claims of one pass.
    BILLING_BATCH_SIZE: '5',
    BILLING_CONCURRENCY: '2',
    BILLING_CLAIM_LEASE_MS: '1500',
  });
  const victim = spawnBilling(env);
  const survivor = spawnBilling(env);
  try {
    await waitFor('the first rows to be sent', async () => (await count(`status = 'sent'`)) > 0);
    victim.proc.kill('SIGKILL');
    assert.equal(await victim.exited, 'SIGKILL');
    const left = await count(`status = 'pending'`);
    assert.ok(left > 0, 'the kill landed mid-run: rows were still pending');
    await waitFor(
      `every row to be sent by the survivor (${left} were pending at the kill)`,
      async () => (await count(`status <> 'sent'`)) === 0 && (await count(`status = 'sent'`)) >= left,
      60_000,
    );
  } finally {
    victim.proc.kill('SIGKILL');
    survivor.proc.kill('SIGTERM');
    await Promise.all([victim.exited, survivor.exited]);
  }
  assert.equal(await count(`claimed_by IS NOT NULL`), 0, 'no claim left behind');
  assert.deepEqual(
    await stripeTotals(local.stripe, customers, ['checkout.completed.usd', 'api.call'], from, to),
    expectedTotals(rows, from, to, valueField),
  );
});

test('three replicas planning at once record each difference once', async () => {
  const { ws } = await workspaceFor(stores, 'plan', 'cus_plan_replicas');
  const { from } = pastHours(3);
  const rows: EventRow[] = [0, 1, 2].flatMap((h) =>
    TYPES.map((type, i) => ({
      workspace_id: ws,
      event_type: type,
      idempotency_key: `p${h}-${i}`,
      quantity: 2,
      gmv_cents: 500,
      occurred_at: from + h * 3600 + 60,
    })),
  );
  await insertEvents(stores, rows);
  // Dry run (no Stripe key): planning alone, through PgBouncer like the services.
  const cfg = billingConfig(billingEnv(stores, undefined, bouncer.envFor(stores.databaseUrl)));
  const pooled = createPool(bouncer.urlFor(stores.databaseUrl), 6);
  try {
    const log = createLogger('billing-replicas', 'silent');
    const workers = [1, 2, 3].map(
      () =>
        new BillingWorker(
          pooled,
          new ClickHouseRawUsage(stores.clickhouse),
          undefined,
          cfg,
          createBillingMetrics(),
          log,
        ),
    );
    await Promise.all(workers.map((w) => w.pass()));
  } finally {
    await pooled.end();
  }
  const { rows: planned } = await stores.pool.query<{ n: string; keys: string }>(
    `SELECT count(*)::text AS n, count(DISTINCT (event_type, window_start))::text AS keys FROM billing_pushes WHERE workspace_id = $1`,
    [ws],
  );
  assert.deepEqual(planned[0], { n: String(rows.length), keys: String(rows.length) });
});
