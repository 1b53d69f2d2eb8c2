import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { startPgBouncer, type TestPgBouncer, type TestStores } from '@meterd/core/testing';
import { createPool, insertWorkspace } from '@meterd/core/store';
import { createLogger } from '@meterd/core/log';
import { createBillingMetrics } from '../src/metrics.js';
import { ClickHouseRawUsage } from '../src/usage/clickhouse-raw.js';
import { BillingWorker } from '../src/worker.js';
import {
  BILLING_MAIN,
  billingConfig,
  billingEnv,
  expectedTotals,
  hourFloor,
  insertEvents,
  stripeTotals,
  waitFor,
  type EventRow,
  type LocalStripe,
  withStoresAndStripe,
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
const field = (t: string): 'gmv_cents' | 'quantity' => (t === 'api.call' ? 'quantity' : 'gmv_cents');

function spawnReplica(env: Record<string, string>): { proc: ChildProcess; exited: Promise<number | string | null> } {
  const proc = spawn(process.execPath, [BILLING_MAIN], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<number | string | null>((resolve) =>
    proc.once('exit', (code, sig) => resolve(code ?? sig)),
  );
  return { proc, exited };
}

const count = async (where: string): Promise<number> =>
  Number(
    (await stores.pool.query<{ n: string }>(`SELECT count(*)::text AS n FROM billing_pushes WHERE ${where}`)).rows[0]!
      .n,
  );

test('two replicas through PgBouncer, one killed -9 mid-push: every total reaches Stripe exactly once', async () => {
  const customers = new Map<string, string>();
  for (let i = 0; i < 40; i++) {
    const w = await insertWorkspace(stores.pool, {
      slug: `r-${i}-${Date.now()}`,
      display_name: `R${i}`,
      plan: 'growth',
      stripe_customer_id: `cus_rep_${i}`,
    });
    customers.set(w.id, `cus_rep_${i}`);
  }
  const now = Math.floor(Date.now() / 1000);
  const from = hourFloor(now) - 4 * 3600;
  const to = hourFloor(now);
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
  const victim = spawnReplica(env);
  const survivor = spawnReplica(env);
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
    expectedTotals(rows, from, to, field),
  );
});

test('three replicas planning at once record each difference once', async () => {
  const ws = await insertWorkspace(stores.pool, {
    slug: `plan-${Date.now()}`,
    display_name: 'Plan',
    plan: 'growth',
    stripe_customer_id: 'cus_plan_replicas',
  });
  const from = hourFloor(Math.floor(Date.now() / 1000)) - 3 * 3600;
  const rows: EventRow[] = [0, 1, 2].flatMap((h) =>
    TYPES.map((type, i) => ({
      workspace_id: ws.id,
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
    [ws.id],
  );
  assert.deepEqual(planned[0], { n: String(rows.length), keys: String(rows.length) });
});
