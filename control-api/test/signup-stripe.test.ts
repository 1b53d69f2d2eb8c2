import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import Stripe from 'stripe';
import { freePort } from '@meterd/core/net';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, startTestControl } from './helpers.js';
import { spawnStripeLocal } from './procs.js';

/** Signup with Stripe configured, against stripe-local through the real SDK. */
let stores: TestStores;
let stripeLocal: ChildProcess;
let stripeUrl: string;
const KEY = 'sk_test_signup';

before(async () => {
  stores = await openTestStores('ctlstripe');
  ({ child: stripeLocal, url: stripeUrl } = await spawnStripeLocal());
});
after(async () => {
  stripeLocal.kill('SIGTERM');
  await stores.close();
});

test('signup links a Stripe customer that exists at Stripe', async () => {
  const s = await startTestControl(stores, { STRIPE_SECRET_KEY: KEY, STRIPE_API_BASE: stripeUrl });
  try {
    const res = await call(s.url, 'POST', '/api/v1/signup', {
      body: { slug: 'stripe-linked', display_name: 'Linked', contact_email: 'ops@linked.example' },
    });
    assert.equal(res.status, 201, res.text);
    const customerId = res.json.workspace.stripe_customer_id as string;
    assert.match(customerId, /^cus_/);
    const { rows } = await stores.pool.query('SELECT stripe_customer_id FROM workspaces WHERE id = $1', [
      res.json.workspace.id,
    ]);
    assert.equal(rows[0].stripe_customer_id, customerId);
    const u = new URL(stripeUrl);
    const stripe = new Stripe(KEY, { host: u.hostname, port: Number(u.port), protocol: 'http' });
    const customer = await stripe.customers.retrieve(customerId);
    assert.equal((customer as Stripe.Customer).email, 'ops@linked.example');
  } finally {
    await s.close();
  }
});

test('a failing Stripe call leaves nothing half-created', async () => {
  const dead = `http://127.0.0.1:${await freePort()}`; // nothing listens there: every Stripe call fails
  const s = await startTestControl(stores, { STRIPE_SECRET_KEY: KEY, STRIPE_API_BASE: dead });
  try {
    const res = await call(s.url, 'POST', '/api/v1/signup', { body: { slug: 'stripe-down', display_name: 'Down' } });
    assert.equal(res.status, 502, res.text);
    assert.equal(res.json.error.code, 'upstream_error');
    const ws = await stores.pool.query(`SELECT id FROM workspaces WHERE slug = 'stripe-down'`);
    assert.equal(ws.rowCount, 0);
    const keys = await stores.pool.query(
      `SELECT k.id FROM api_keys k LEFT JOIN workspaces w ON w.id = k.workspace_id WHERE w.id IS NULL`,
    );
    assert.equal(keys.rowCount, 0);
    const events = await stores.pool.query(`SELECT id FROM outbox_events WHERE body LIKE '%stripe-down%'`);
    assert.equal(events.rowCount, 0);
  } finally {
    await s.close();
  }
});
