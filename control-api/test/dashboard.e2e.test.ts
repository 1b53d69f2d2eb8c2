import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page, type Route } from 'playwright-core';
import { inTransaction } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, Receiver, startTestControl } from './helpers.js';
import { exited, freePort, REPO, spawnService } from './procs.js';
import { emitEvent } from '../src/webhooks/outbox.js';
import type { ControlServer } from '../src/server.js';

/**
 * The dashboard in real headless Chromium against a running stack: this control API, a real
 * ingest process and a real aggregator process over the shared stores (a database and key prefix
 * of this file's own). Every page is saved as a screenshot under test-results/screenshots/.
 */
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(REPO, 'test-results', 'screenshots');
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let stores: TestStores;
let control: ControlServer;
let ingest: ChildProcess;
let aggregator: ChildProcess;
let stripe: ChildProcess;
let ingestUrl: string;
let profile: string;
let spool: string;
let browser: BrowserContext;
let page: Page;
let rx: Receiver;
let ws: { id: string; token: string; dashboardUrl: string };
const WHSEC = 'whsec_dashboard_e2e';

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run infra/stack/browser.sh (scripts/test.sh does)`);
  mkdirSync(SHOTS, { recursive: true });
  stores = await openTestStores('dashe2e');
  spool = mkdtempSync(join(tmpdir(), 'meterd-dash-spool-'));
  const [ingestPort, aggPort, stripePort, controlPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  ingestUrl = `http://127.0.0.1:${ingestPort}`;
  const stripeUrl = `http://127.0.0.1:${stripePort}`;
  const env = { ...stores.env, LOG_LEVEL: 'warn' };
  [ingest, aggregator, stripe] = await Promise.all([
    spawnService(
      join(REPO, 'ingest/dist/src/main.js'),
      { ...env, INGEST_PORT: String(ingestPort), INGEST_THREADS: '1', SPOOL_DIR: spool, SHIP_INTERVAL_MS: '100' },
      `${ingestUrl}/readyz`,
    ),
    spawnService(
      join(REPO, 'aggregator/dist/src/main.js'),
      { ...env, AGGREGATOR_PORT: String(aggPort), AGGREGATOR_POLL_MS: '100' },
      `http://127.0.0.1:${aggPort}/healthz`,
    ),
    spawnService(
      join(REPO, 'stripe-local/dist/src/main.js'),
      {
        STRIPE_LOCAL_PORT: String(stripePort),
        LOG_LEVEL: 'warn',
        STRIPE_LOCAL_SEED_PRICES: 'growth:4900',
        STRIPE_LOCAL_WEBHOOK_URL: `http://127.0.0.1:${controlPort}/webhooks/stripe`,
        STRIPE_LOCAL_WEBHOOK_SECRET: WHSEC,
      },
      `${stripeUrl}/healthz`,
    ),
  ]);
  control = await startTestControl(stores, {
    CONTROL_API_PORT: String(controlPort),
    PUBLIC_BASE_URL: `http://127.0.0.1:${controlPort}`,
    INGEST_URL: ingestUrl,
    DASHBOARD_SESSION_TTL_SECONDS: '600',
    STRIPE_SECRET_KEY: 'sk_test_dashboard',
    STRIPE_API_BASE: stripeUrl,
    STRIPE_WEBHOOK_SECRET: WHSEC,
  });
  // A real signup: a workspace with a Stripe customer, its first key, and the dashboard_url to follow.
  // Growth is paid through Checkout: paying it (stripe-local's test card) makes Stripe's webhook set the plan.
  const signup = await call(control.url, 'POST', '/api/v1/signup', {
    body: { slug: `dash-${Date.now().toString(36)}`, display_name: 'Acme', plan: 'growth' },
  });
  assert.equal(signup.status, 201, signup.text);
  ws = { id: signup.json.workspace.id, token: signup.json.api_key.token, dashboardUrl: signup.json.dashboard_url };
  const session = /\/c\/pay\/(cs_[A-Za-z0-9_]+)$/.exec(signup.json.checkout_url as string)![1];
  assert.equal(
    (await fetch(`${stripeUrl}/_test/checkout/sessions/${session}/complete`, { method: 'POST' })).status,
    200,
  );
  await eventually(
    async () =>
      (await stores.pool.query('SELECT plan FROM workspaces WHERE id = $1', [ws.id])).rows[0].plan === 'growth',
    10_000,
    'the growth plan',
  );
  rx = await new Receiver().start();
  profile = mkdtempSync(join(tmpdir(), 'meterd-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 900 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  page.on('dialog', (d) => void d.accept());
});

after(async () => {
  await browser?.close().catch(() => {});
  await control?.close();
  for (const c of [ingest, aggregator, stripe]) {
    if (c && c.exitCode === null) {
      c.kill('SIGTERM');
      await exited(c);
    }
  }
  await rx?.close();
  await stores?.close();
  for (const d of [profile, spool]) if (d) rmSync(d, { recursive: true, force: true });
});

/** Runs in the page (this package compiles without DOM types): controls with no accessible name. */
const UNNAMED_CONTROLS = `[...document.querySelectorAll('button, input, select, textarea, a[href], summary')]
  .filter((el) => (el.getAttribute('aria-label') ?? '') === ''
    && !(el.id && document.querySelector('label[for="' + el.id + '"]'))
    && el.closest('label') === null
    && (el.innerText ?? '').trim() === '')
  .map((el) => el.outerHTML.slice(0, 80))`;

async function shot(name: string, p: Page = page): Promise<void> {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

const url = (path: string) => new URL(path, control.url).toString();

test("sign in from signup's dashboard_url with the workspace key: the key goes in a POST body only, the cookie is HttpOnly", async () => {
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(ws.dashboardUrl);
  assert.match(page.url(), /\/dashboard\/signin\?next=/);
  await shot('01-signin');
  await page.getByLabel('API key').fill(ws.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/dashboard\/onboarding\?workspace=/);
  await page.locator('#step-api_key[data-done="true"]').waitFor();
  assert.ok(
    requests.every((u) => !u.includes(ws.token)),
    'the key never appears in a URL',
  );
  const cookies = await browser.cookies();
  assert.equal(cookies.length, 1);
  assert.equal(cookies[0]!.httpOnly, true);
  assert.equal(cookies[0]!.sameSite, 'Lax');
  assert.ok(!cookies[0]!.value.includes(ws.token));
  const stored = await page.evaluate<string>(
    'JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie',
  );
  assert.ok(!stored.includes(ws.token) && !stored.includes('sks_'), 'nothing in web storage or script-visible cookies');
  assert.equal(await page.locator('#step-first_event').getAttribute('data-unlocked'), 'false');
  await shot('02-onboarding');
  await page.goto(url('/dashboard/onboarding?shopify=connected'));
  await page.locator('#step-first_event[data-unlocked="true"]').waitFor();
  await shot('03-onboarding-shopify-connected');
});

test('an event sent through ingest appears in the overview chart', async () => {
  await page.goto(url('/dashboard/overview'));
  await page.locator('#chart-summary').waitFor();
  assert.equal(await page.locator('#chart-summary').getAttribute('data-events'), '0');
  const occurred = new Date(Date.now() - 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const send = () =>
    call(ingestUrl, 'POST', '/api/v1/meter', {
      token: ws.token,
      body: {
        workspace_id: ws.id,
        event_type: 'checkout.completed',
        quantity: 1,
        gmv_cents: 4299,
        idempotency_key: 'order_5521',
        occurred_at: occurred,
      },
    });
  const sent = await send();
  assert.equal(sent.status, 202, sent.text);
  // The same event again: ingest answers it as a duplicate.
  const dup = await send();
  assert.equal(dup.json.duplicate, true);
  // The page refreshes itself: ingest spools and ships the event, the aggregator folds it in.
  await page.locator('#chart-summary[data-events="1"]').waitFor({ timeout: 30_000 });
  assert.equal(await page.locator('#chart-summary').getAttribute('data-gmv-cents'), '4299');
  assert.match(await page.locator('#chart-summary').innerText(), /1 event, GMV 42\.99 USD/);
  const bar = page.locator('svg.chart rect.bar[data-events="1"]');
  assert.equal(await bar.count(), 1);
  assert.equal(await bar.getAttribute('data-gmv-cents'), '4299');
  assert.equal(await bar.getAttribute('data-t'), String(Math.floor(Date.parse(occurred) / 3_600_000) * 3_600_000));
  await page.locator('#usage-used', { hasText: '1 / 100,000' }).waitFor();
  await page.locator('#ingest-duplicates').waitFor();
  assert.ok(Number(await page.locator('#ingest-duplicates').innerText()) >= 1);
  await page.locator('#eps').filter({ hasNotText: 'measuring' }).waitFor({ timeout: 10_000 });
  await shot('04-overview');
  await page.selectOption('#granularity', 'day');
  await page.locator('svg.chart rect.bar[data-events="1"]').waitFor();
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('05-overview-phone');
  const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px on a phone`);
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('create a key (token shown once, and it works), then revoke it', async () => {
  await page.goto(url('/dashboard/keys'));
  await page.getByLabel('Name').fill('ci handler');
  await page.getByRole('button', { name: 'Create key' }).click();
  const token = await page.locator('#new-key-token').inputValue();
  assert.match(token, /^sks_/);
  await shot('06-keys-created');
  const ok = await call(ingestUrl, 'POST', '/api/v1/meter', {
    token,
    body: {
      workspace_id: ws.id,
      event_type: 'checkout.completed',
      gmv_cents: 100,
      idempotency_key: 'order_5522',
      occurred_at: new Date().toISOString(),
    },
  });
  assert.equal(ok.status, 202, 'the new key meters');
  const row = page.locator('tr', { hasText: 'ci handler' });
  await row.getByRole('button', { name: 'Revoke key ci handler' }).click();
  await row.locator('.badge', { hasText: 'revoked' }).waitFor();
  await shot('07-keys-revoked');
  const { rows } = await stores.pool.query('SELECT revoked_at FROM api_keys WHERE workspace_id = $1 AND name = $2', [
    ws.id,
    'ci handler',
  ]);
  assert.ok(rows[0].revoked_at !== null);
  await page.reload();
  assert.equal(await page.locator('#new-key-token').count(), 0, 'the token is never shown again');
  await eventually(
    async () =>
      (
        await call(ingestUrl, 'POST', '/api/v1/meter', {
          token,
          body: {
            workspace_id: ws.id,
            event_type: 'checkout.completed',
            gmv_cents: 100,
            idempotency_key: 'order_5523',
            occurred_at: new Date().toISOString(),
          },
        })
      ).status === 401,
    5_000,
    'ingest to refuse the revoked key',
  );
});

test('a disabled endpoint is reactivated and a failed delivery resent from the webhooks page', async () => {
  rx.respond = () => 500;
  const created = await call(control.url, 'POST', `/api/v1/workspaces/${ws.id}/webhooks`, {
    token: ws.token,
    body: { url: rx.url, description: 'Prod Zapier pipe' },
  });
  assert.equal(created.status, 201);
  const hookId = created.json.webhook.id as string;
  // Five deliveries that exhaust their five attempts disable the endpoint (docs/api.md's rule).
  for (let i = 0; i < 5; i++)
    await inTransaction(stores.pool, (c) => emitEvent(c, ws.id, 'meter.quota.warning', { n: i }));
  await eventually(
    async () =>
      (await stores.pool.query('SELECT status FROM webhook_endpoints WHERE id = $1', [hookId])).rows[0].status ===
      'disabled',
    20_000,
    'the endpoint to be disabled',
  );
  await page.goto(url('/dashboard/webhooks'));
  const endpointRow = page.locator(`tr[data-endpoint-id="${hookId}"]`);
  await endpointRow.locator('.badge', { hasText: 'disabled' }).waitFor();
  await page.locator('tr[data-status="failed"]').first().waitFor();
  assert.equal(await page.locator('tr[data-status="failed"]').count(), 5);
  await page.locator('tr[data-status="failed"] summary').first().click();
  assert.match(await page.locator('tr[data-status="failed"] .attempts').first().innerText(), /500 in \d+ ms/);
  await shot('08-webhooks-disabled');

  rx.respond = () => 200;
  const before = rx.received.length;
  await endpointRow.getByRole('button', { name: `Reactivate endpoint ${rx.url}` }).click();
  await endpointRow.locator('.badge', { hasText: 'active' }).waitFor();
  assert.equal(
    (await stores.pool.query('SELECT status FROM webhook_endpoints WHERE id = $1', [hookId])).rows[0].status,
    'active',
  );

  const failedId = await page.locator('tr[data-status="failed"]').first().getAttribute('data-delivery-id');
  await page
    .locator(`tr[data-delivery-id="${failedId}"]`)
    .getByRole('button', { name: /^Resend delivery/ })
    .click();
  await rx.waitFor(before + 1);
  const { rows } = await stores.pool.query(
    `SELECT body FROM outbox_events e JOIN webhook_deliveries d ON d.event_id = e.id WHERE d.id = $1`,
    [failedId],
  );
  assert.equal(rx.received.at(-1)!.body, rows[0].body, 'the resend carries the same event');
  await page.locator('tr[data-status="succeeded"]').first().waitFor({ timeout: 10_000 });
  assert.match(await page.locator('tr[data-status="succeeded"]').first().innerText(), /200/);
  await shot('09-webhooks-resent');
});

test('billing shows the plan and opens the Stripe billing portal; sign-out ends the session', async () => {
  await page.goto(url('/dashboard/billing'));
  await page.locator('#plan-name', { hasText: 'growth' }).waitFor();
  await shot('10-billing');
  await page.getByRole('button', { name: 'Open the Stripe billing portal' }).click();
  await page.waitForURL(/\/p\/session\/bps_/);

  // Sign out while the page's own requests are still in flight, as a quick click does. Those requests
  // come back 401 once the session is gone; they must not start a second navigation (to ?next=)
  // that aborts the sign-out's own (CI saw "page.waitForURL: net::ERR_ABORTED" from that race).
  const held: Route[] = [];
  let releaseSignOut!: () => void;
  const signOutHeld = new Promise<void>((resolve) => (releaseSignOut = resolve));
  await page.route('**/dashboard/api/**', async (route) => {
    if (route.request().method() === 'GET') return void held.push(route);
    await signOutHeld;
    await route.continue();
  });
  await page.goto(url('/dashboard/billing'));
  await eventually(async () => held.length > 0, 5_000, 'the billing page to request its data');
  const navigations: string[] = [];
  page.on('request', (r) => {
    if (r.isNavigationRequest()) navigations.push(r.url());
  });
  await page.getByRole('button', { name: 'Sign out' }).click();
  for (const route of held.splice(0))
    await route.fulfill({ status: 401, contentType: 'application/json', body: '{"error":{"code":"unauthorized"}}' });
  // With the race, the 401s navigate at once; a second is ample for that, and its absence is the pass.
  const early = await page
    .waitForRequest((r) => r.isNavigationRequest(), { timeout: 1_000 })
    .then((r) => r.url())
    .catch((err: Error) => {
      if (err.name !== 'TimeoutError') throw err;
      return null;
    });
  assert.equal(early, null, 'no navigation before the session is deleted');
  releaseSignOut();
  await page.waitForURL(/\/dashboard\/signin/);
  await page.unroute('**/dashboard/api/**');
  assert.deepEqual(navigations, [url('/dashboard/signin')], 'one navigation, to the sign-in page');
  await page.goto(url('/dashboard/overview'));
  assert.match(page.url(), /\/dashboard\/signin\?next=%2Fdashboard%2Foverview$/);
  assert.equal((await call(control.url, 'GET', '/dashboard/api/me')).status, 401);
});

test('every control on every page has an accessible name', async () => {
  const ctx2 = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'meterd-chromium-')), {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
  });
  try {
    const p = ctx2.pages()[0] ?? (await ctx2.newPage());
    await p.goto(url('/dashboard/signin'));
    await p.getByLabel('API key').fill(ws.token);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.waitForURL(/overview/);
    for (const path of ['overview', 'onboarding', 'webhooks', 'keys', 'billing', 'meters']) {
      await p.goto(url(`/dashboard/${path}`));
      await p.locator('#content').filter({ hasNotText: 'Loading…' }).waitFor();
      const unnamed = await p.evaluate<string[]>(UNNAMED_CONTROLS);
      assert.deepEqual(unnamed, [], `unnamed controls on ${path}`);
    }
  } finally {
    await ctx2.close();
  }
});
