import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { createLogger } from '@meterd/core/log';
import type { MeterUsageQuery, MeterUsageRow } from '@meterd/core/meters';
import { insertApiKey, testBucketOf } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, testEnv } from './helpers.js';
import { REPO } from './procs.js';
import { loadControlConfig } from '../src/config.js';
import { startControl, type ControlServer } from '../src/server.js';

/**
 * The Meters page in real headless Chromium: the meters listed with their aggregation, group-by,
 * backfill state and Stripe event name; a chart per meter with a series per group (top 10 plus
 * "other"); alerts created and deleted through the page (session cookie and CSRF token), and a
 * session signed in with a test key sees the meters but cannot change alerts. The chart's numbers
 * come from a reader the test controls (the usage computation is the aggregator's).
 */
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(REPO, 'test-results', 'screenshots');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];

let stores: TestStores;
let control: ControlServer;
let profile: string;
let browser: BrowserContext;
let page: Page;
let ws: { id: string; token: string };
const asked: MeterUsageQuery[] = [];

/** 12 models in the last window of whatever range is asked: model-1 has 10, model-12 has 120. */
async function reader(q: MeterUsageQuery): Promise<MeterUsageRow[]> {
  asked.push(q);
  if (q.meter.slug !== 'llm-tokens') return [];
  const step = q.window === 'hour' ? 3_600_000 : 86_400_000;
  return Array.from({ length: 12 }, (_, i) => ({
    startMs: q.toMs - step,
    endMs: q.toMs,
    group: { model: `model-${i + 1}` },
    value: String((i + 1) * 10),
  }));
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run infra/stack/browser.sh (scripts/test.sh does)`);
  mkdirSync(SHOTS, { recursive: true });
  stores = await openTestStores('dashmeters');
  control = await startControl(loadControlConfig(testEnv(stores, { DASHBOARD_SESSION_TTL_SECONDS: '600' })), {
    log: createLogger('dash-meters-test', 'silent'),
    meterUsage: reader,
  });
  const w = await stores.workspace('growth');
  ws = { id: w.workspace.id, token: w.token };
  for (const body of [
    {
      slug: 'llm-tokens',
      event_types: ['llm.call'],
      aggregation: 'sum',
      value_field: 'properties.tokens',
      group_by: ['model'],
      stripe_event_name: 'llm_tokens',
    },
    { slug: 'api-calls', event_types: ['api.call'], aggregation: 'count' },
  ]) {
    const r = await call(control.url, 'POST', `/api/v1/workspaces/${ws.id}/meters`, { token: ws.token, body });
    assert.equal(r.status, 201, r.text);
  }
  profile = mkdtempSync(join(tmpdir(), 'meterd-chromium-meters-'));
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
  await stores?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

const url = (path: string) => new URL(path, control.url).toString();

async function signIn(token: string): Promise<void> {
  await browser.clearCookies();
  await page.goto(url('/dashboard/signin?next=/dashboard/meters'));
  await page.getByLabel('API key').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // The sign-in page's own URL ends in its `next`: wait for the path itself.
  await page.waitForURL((u) => u.pathname === '/dashboard/meters');
}

test('the Meters page lists each meter and charts it with a series per group: the top 10 and "other"', async () => {
  await signIn(ws.token);
  const row = page.locator('tr[data-meter="llm-tokens"]');
  await row.waitFor();
  const cells = await row.locator('td').allInnerTexts();
  assert.deepEqual(
    cells.map((c) => c.trim()),
    ['llm-tokens', 'sum(properties.tokens)', 'llm.call', 'model', 'pending', 'llm_tokens'],
  );
  assert.deepEqual(
    (await page.locator('tr[data-meter="api-calls"] td').allInnerTexts()).map((c) => c.trim()),
    ['api-calls', 'count', 'api.call', 'none', 'pending', 'not billed'],
  );
  const chart = page.locator('section[data-meter="llm-tokens"]');
  await chart.locator('polyline.series-line').first().waitFor();
  const series = await chart
    .locator('polyline.series-line')
    .evaluateAll((els) =>
      els.map((e) => [e.getAttribute('data-series'), e.getAttribute('data-values')!.split(',').at(-1)]),
    );
  assert.deepEqual(series, [
    ...Array.from({ length: 10 }, (_, i) => [`model=model-${12 - i}`, String((12 - i) * 10)]),
    ['other', '30'],
  ]);
  const q = asked.find((x) => x.meter.slug === 'llm-tokens')!;
  assert.deepEqual([q.bucketId, q.window, q.groupBy, q.tz], [ws.id, 'hour', ['model'], 'UTC']);
  assert.equal((q.toMs - q.fromMs) / 3_600_000, 48);
  await page.screenshot({ path: join(SHOTS, 'meters-01-list-and-charts.png'), fullPage: true });
});

test('an alert is created and deleted from the page (session and CSRF token); a bad one shows its error and stores nothing', async () => {
  await signIn(ws.token);
  await page.locator('#create-alert').waitFor();
  await page.getByLabel('Meter', { exact: true }).selectOption('llm-tokens');
  await page.getByLabel('Threshold', { exact: true }).fill('5000');
  await page.getByLabel('Period (UTC)').selectOption('day');
  await page.getByLabel('Group (optional)').fill('model=model-3');
  await page.getByRole('button', { name: 'Create alert' }).click();
  const created = page.locator('tr[data-alert-id]');
  await created.waitFor();
  assert.deepEqual(
    (await created.locator('td').allInnerTexts()).slice(0, 5).map((c) => c.trim()),
    ['llm-tokens', '5000', 'day', 'model=model-3', '—'],
  );
  const { rows } = await stores.pool.query(
    'SELECT threshold_kind, threshold::text, period, group_value FROM meter_alerts WHERE workspace_id = $1 AND deleted_at IS NULL',
    [ws.id],
  );
  assert.deepEqual(rows, [
    { threshold_kind: 'absolute', threshold: '5000', period: 'day', group_value: { model: 'model-3' } },
  ]);

  // A group key the meter does not group by: the page shows the API's error, nothing is stored.
  await page.getByLabel('Meter', { exact: true }).selectOption('llm-tokens');
  await page.getByLabel('Threshold', { exact: true }).fill('1');
  await page.getByLabel('Group (optional)').fill('region=eu');
  await page.getByRole('button', { name: 'Create alert' }).click();
  await page.getByText('(group_value.region)').waitFor();
  const count = await stores.pool.query('SELECT count(*)::int AS n FROM meter_alerts WHERE workspace_id = $1', [ws.id]);
  assert.equal(count.rows[0].n, 1);
  await page.screenshot({ path: join(SHOTS, 'meters-02-alert-created.png'), fullPage: true });

  await page.getByRole('button', { name: /^Delete the alert on llm-tokens/ }).click();
  await created.waitFor({ state: 'detached' });
  const gone = await stores.pool.query(
    'SELECT deleted_at IS NOT NULL AS gone FROM meter_alerts WHERE workspace_id = $1',
    [ws.id],
  );
  assert.deepEqual(gone.rows, [{ gone: true }]);
});

test("without the CSRF token the page's alert call is refused; a test-key session reads the meters and cannot create alerts", async () => {
  await signIn(ws.token);
  const status = await page.evaluate(`fetch('/dashboard/api/alerts', {
      method: 'POST', headers: { 'content-type': 'application/json' }, credentials: 'same-origin',
      body: JSON.stringify({ meter: 'api-calls', threshold_kind: 'absolute', threshold: 1, period: 'day' }),
    }).then(async (r) => [r.status, (await r.json()).error.code])`);
  assert.deepEqual(status, [403, 'csrf_token_invalid']);

  const testKey = (await insertApiKey(stores.pool, (await testBucketOf(stores.pool, ws.id))!, ['admin'])).token;
  await signIn(testKey);
  await page.locator('tr[data-meter="llm-tokens"]').waitFor();
  assert.equal(await page.locator('#create-alert').count(), 0, 'no create form for a test-key session');
  const refused = await page.evaluate(`fetch('/dashboard/api/alerts', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': document.querySelector('meta[name="csrf-token"]').content },
      body: JSON.stringify({ meter: 'api-calls', threshold_kind: 'absolute', threshold: 1, period: 'day' }),
    }).then(async (r) => [r.status, (await r.json()).error.code])`);
  assert.deepEqual(refused, [403, 'workspace_mismatch']);
  const test = asked.filter((x) => x.meter.slug === 'llm-tokens').at(-1)!;
  assert.notEqual(test.bucketId, ws.id, "the test session's chart reads the test environment's rollups");
  const n = await stores.pool.query(
    'SELECT count(*)::int AS n FROM meter_alerts WHERE workspace_id = $1 AND deleted_at IS NULL',
    [ws.id],
  );
  assert.equal(n.rows[0].n, 0);
});
