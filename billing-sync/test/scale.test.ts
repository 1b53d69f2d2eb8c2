import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestStores } from '@meterd/core/testing';
import {
  billingConfig,
  billingEnv,
  checkout,
  insertEvents,
  pastHours,
  stripeTotals,
  type LocalStripe,
  rawWorker,
  withStoresAndStripe,
} from './helpers.js';

/**
 * 10,000 workspaces' windows pushed through the v2 stream against stripe-local enforcing Stripe's
 * documented live-mode limits (1,000/s v1 meter events, 10,000/s stream, 100/s other calls): no
 * 429 is ever answered (the pacer keeps inside the limits), every event arrives, and the time is
 * printed. Customers are synthetic ids (stripe-local, like Stripe's stream, validates them lazily).
 */
let stores: TestStores;
let local: LocalStripe;
// The live-mode limits this test is about, and synthetic customer ids.
withStoresAndStripe(
  'billing_scale',
  { STRIPE_LOCAL_RATE_TEST_MODE: '0', STRIPE_LOCAL_CHECK_CUSTOMERS: 'false' },
  (s, l) => {
    stores = s;
    local = l;
  },
);

test("10,000 workspaces: every window pushed inside Stripe's rate limits; time measured", async () => {
  const N = 10_000;
  const ids = Array.from({ length: N }, (_, i) => `ws_scale_${String(i).padStart(5, '0')}`);
  await stores.pool.query(
    `INSERT INTO workspaces (id, slug, display_name, plan, stripe_customer_id)
     SELECT id, 'scale-' || id, 'Scale', 'growth', 'cus_' || id FROM unnest($1::text[]) AS id`,
    [ids],
  );
  const { now, from: w } = pastHours(1);
  await insertEvents(
    stores,
    ids.map((ws, i) => checkout(ws, `s${i}`, 1000 + i, w + (i % 3600))),
  );

  const cfg = billingConfig(billingEnv(stores, local, { LOG_LEVEL: 'silent' }));
  const worker = rawWorker(stores, cfg);
  const t0 = performance.now();
  const r = await worker.pass(now);
  const ms = performance.now() - t0;
  assert.equal(r.planned, N);
  assert.equal(r.pushed, N);
  assert.equal(r.pending, 0);
  assert.equal(await local.metric('stripe_local_rate_limited_total'), 0, 'no request was over a documented limit');
  assert.equal(await local.metric('stripe_local_meter_events_total'), N);
  const sample = new Map(ids.filter((_, i) => i % 1000 === 0).map((ws) => [ws, `cus_${ws}`]));
  const got = await stripeTotals(local.stripe, sample, ['checkout.completed.usd'], w, w + 3600);
  for (const ws of sample.keys()) assert.equal(got.get(`${ws}\ncheckout.completed.usd`), 1000 + ids.indexOf(ws));
  console.log(
    `# scale: ${N} workspace windows planned and pushed (v2 stream, ${N / 100} calls) in ${Math.round(ms)} ms`,
  );
});
