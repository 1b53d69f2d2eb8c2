import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import Stripe from 'stripe';
import { freePort } from '@meterd/core/net';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, OPERATOR_KEY, startTestControl } from './helpers.js';
import { REPO, spawnService } from './procs.js';

/**
 * Paid plans need payment (issue 12, item 2). The attack: an anonymous signup asked for
 * enterprise and got it, unlimited, with no payment. Now every signup starts on free; a paid plan
 * answers with a Stripe Checkout URL, and the plan applies only when Stripe's signed webhook says
 * the subscription is paid (and falls back to free when it is canceled). Without Stripe, only the
 * operator sets a paid plan. Against stripe-local (growth and scale priced, enterprise not), whose
 * webhooks reach this control API as Stripe's would.
 */
let stores: TestStores;
let stripeLocal: ChildProcess;
let stripeUrl: string;
let control: Awaited<ReturnType<typeof startTestControl>>;
let stripe: Stripe;
const KEY = 'sk_test_paid_plans';
const WHSEC = 'whsec_paid_plans_test';

before(async () => {
  stores = await openTestStores('paidplans');
  const [stripePort, controlPort] = [await freePort(), await freePort()];
  stripeUrl = `http://127.0.0.1:${stripePort}`;
  stripeLocal = await spawnService(
    join(REPO, 'stripe-local/dist/src/main.js'),
    {
      STRIPE_LOCAL_PORT: String(stripePort),
      LOG_LEVEL: 'warn',
      STRIPE_LOCAL_SEED_PRICES: 'growth:4900,scale:29900',
      STRIPE_LOCAL_WEBHOOK_URL: `http://127.0.0.1:${controlPort}/webhooks/stripe`,
      STRIPE_LOCAL_WEBHOOK_SECRET: WHSEC,
    },
    `${stripeUrl}/healthz`,
  );
  control = await startTestControl(stores, {
    CONTROL_API_PORT: String(controlPort),
    STRIPE_SECRET_KEY: KEY,
    STRIPE_API_BASE: stripeUrl,
    STRIPE_WEBHOOK_SECRET: WHSEC,
  });
  stripe = new Stripe(KEY, { host: '127.0.0.1', port: stripePort, protocol: 'http' });
});
after(async () => {
  await control.close();
  stripeLocal.kill('SIGTERM');
  await stores.close();
});

const planOf = async (ws: string): Promise<string> =>
  (await stores.pool.query('SELECT plan FROM workspaces WHERE id = $1', [ws])).rows[0].plan;
const sessionOf = (checkoutUrl: string): string => /\/c\/pay\/(cs_[A-Za-z0-9_]+)$/.exec(checkoutUrl)![1]!;
const pay = (session: string) =>
  fetch(`${stripeUrl}/_test/checkout/sessions/${session}/complete`, { method: 'POST' }).then(
    (r) => r.json() as Promise<{ subscription: { id: string } }>,
  );

test('anonymous signup for a paid plan starts on free with a checkout_url; paying upgrades it, canceling downgrades it', async () => {
  const res = await call(control.url, 'POST', '/api/v1/signup', {
    body: { slug: 'wants-scale', display_name: 'Wants Scale', plan: 'scale' },
  });
  assert.equal(res.status, 201, res.text);
  assert.equal(res.json.workspace.plan, 'free', 'asking is not paying');
  assert.equal(res.json.requested_plan, 'scale');
  const ws = res.json.workspace.id as string;
  assert.equal(await planOf(ws), 'free');

  const session = await stripe.checkout.sessions.retrieve(sessionOf(res.json.checkout_url));
  assert.deepEqual(
    [session.mode, session.customer, session.client_reference_id, session.status],
    ['subscription', res.json.workspace.stripe_customer_id, ws, 'open'],
  );
  const items = await stripe.prices.list({ lookup_keys: ['scale'] });
  assert.equal(session.amount_total, null);
  assert.equal(items.data[0]!.unit_amount, 29900);

  // A forged "completed" event without Stripe's signature changes nothing.
  const forged = JSON.stringify({
    id: 'evt_forged',
    object: 'event',
    type: 'checkout.session.completed',
    created: Math.floor(Date.now() / 1000),
    data: { object: { ...session, status: 'complete', payment_status: 'paid', subscription: 'sub_x' } },
  });
  const refused = await call(control.url, 'POST', '/webhooks/stripe', {
    raw: forged,
    headers: { 'stripe-signature': 't=1,v1=00' },
  });
  assert.deepEqual([refused.status, refused.json.error.code], [400, 'invalid_signature']);
  assert.equal(await planOf(ws), 'free');

  const paid = await pay(session.id);
  await eventually(async () => (await planOf(ws)) === 'scale', 5_000, 'the scale plan after payment');

  await stripe.subscriptions.cancel(paid.subscription.id);
  await eventually(async () => (await planOf(ws)) === 'free', 5_000, 'free after the subscription is canceled');
});

test('a free workspace upgrades later through its own checkout-session; other keys and scopes are refused', async () => {
  const res = await call(control.url, 'POST', '/api/v1/signup', {
    body: { slug: 'upgrades-later', display_name: 'Later' },
  });
  assert.equal(res.status, 201, res.text);
  assert.equal(res.json.checkout_url, undefined);
  const ws = res.json.workspace.id as string;
  const admin = res.json.api_key.token as string;
  const path = `/api/v1/workspaces/${ws}/billing/checkout-session`;

  const meterOnly = await call(control.url, 'POST', `/api/v1/workspaces/${ws}/api-keys`, {
    token: admin,
    body: { scopes: ['meter:write'] },
  });
  const noScope = await call(control.url, 'POST', path, {
    token: meterOnly.json.api_key.token,
    body: { plan: 'growth' },
  });
  assert.deepEqual([noScope.status, noScope.json.error.code], [403, 'insufficient_scope']);
  const other = await call(control.url, 'POST', '/api/v1/signup', {
    body: { slug: 'someone-else', display_name: 'Else' },
  });
  const foreign = await call(control.url, 'POST', path, { token: other.json.api_key.token, body: { plan: 'growth' } });
  assert.deepEqual([foreign.status, foreign.json.error.code], [403, 'workspace_mismatch']);
  const free = await call(control.url, 'POST', path, { token: admin, body: { plan: 'free' } });
  assert.deepEqual([free.status, free.json.error.field], [400, 'plan']);

  const checkout = await call(control.url, 'POST', path, {
    token: admin,
    body: { plan: 'growth', success_url: 'https://app.example/thanks' },
  });
  assert.equal(checkout.status, 201, checkout.text);
  assert.equal(await planOf(ws), 'free');
  await pay(sessionOf(checkout.json.url));
  await eventually(async () => (await planOf(ws)) === 'growth', 5_000, 'the growth plan');
  const again = await call(control.url, 'POST', path, { token: admin, body: { plan: 'scale' } });
  assert.deepEqual([again.status, again.json.error.code], [409, 'already_subscribed']);
});

test('a plan without a Stripe price is refused clearly and creates nothing', async () => {
  const res = await call(control.url, 'POST', '/api/v1/signup', {
    body: { slug: 'wants-enterprise', display_name: 'E', plan: 'enterprise' },
  });
  assert.deepEqual([res.status, res.json.error.code], [501, 'not_configured']);
  assert.match(res.json.error.message, /lookup_key "enterprise"/);
  assert.equal((await stores.pool.query(`SELECT 1 FROM workspaces WHERE slug = 'wants-enterprise'`)).rowCount, 0);
});

test('without Stripe, a paid signup is refused (402) and only the operator key sets a paid plan', async () => {
  const bare = await startTestControl(stores);
  try {
    const res = await call(bare.url, 'POST', '/api/v1/signup', {
      body: { slug: 'no-stripe-ent', display_name: 'E', plan: 'enterprise' },
    });
    assert.deepEqual([res.status, res.json.error.code, res.json.error.field], [402, 'payment_required', 'plan']);
    assert.equal((await stores.pool.query(`SELECT 1 FROM workspaces WHERE slug = 'no-stripe-ent'`)).rowCount, 0);

    const ok = await call(bare.url, 'POST', '/api/v1/signup', { body: { slug: 'no-stripe-free', display_name: 'F' } });
    assert.equal(ok.status, 201);
    const ws = ok.json.workspace.id as string;
    const tenant = ok.json.api_key.token as string;
    const upgrade = await call(bare.url, 'POST', `/api/v1/workspaces/${ws}/billing/checkout-session`, {
      token: tenant,
      body: { plan: 'growth' },
    });
    assert.deepEqual([upgrade.status, upgrade.json.error.code], [402, 'payment_required']);
    const self = await call(bare.url, 'PATCH', `/api/v1/workspaces/${ws}`, {
      token: tenant,
      body: { plan: 'enterprise' },
    });
    assert.deepEqual([self.status, self.json.error.code], [403, 'operator_only']);
    const anon = await call(bare.url, 'PATCH', `/api/v1/workspaces/${ws}`, { body: { plan: 'enterprise' } });
    assert.equal(anon.status, 401);
    assert.equal(await planOf(ws), 'free');

    const op = await call(bare.url, 'PATCH', `/api/v1/workspaces/${ws}`, {
      token: OPERATOR_KEY,
      body: { plan: 'enterprise' },
    });
    assert.equal(op.status, 200, op.text);
    assert.equal(op.json.workspace.plan, 'enterprise');
    assert.equal(await planOf(ws), 'enterprise');
    const missing = await call(bare.url, 'PATCH', '/api/v1/workspaces/ws_missing', {
      token: OPERATOR_KEY,
      body: { plan: 'growth' },
    });
    assert.deepEqual([missing.status, missing.json.error.code], [404, 'workspace_not_found']);
  } finally {
    await bare.close();
  }
});
