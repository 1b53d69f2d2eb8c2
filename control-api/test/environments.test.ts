import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { hashKey } from '@meterd/core/keys';
import { createLogger } from '@meterd/core/log';
import { quotaKey } from '@meterd/core/contracts';
import { PLAN_QUOTAS, periodOf } from '@meterd/core/plans';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, OPERATOR_KEY, Receiver, startTestControl, verifySignature } from './helpers.js';
import { QuotaWatch } from '../src/billing/quota-watch.js';
import type { ControlServer } from '../src/server.js';

/**
 * Environments through the public API and the dashboard (docs/api.md §13): every workspace has a
 * live and a test bucket with ids of their own; keys are minted per environment with the
 * environment in their prefix; a test key reaches only test; webhooks are per environment; deleting
 * a workspace deletes both; the dashboard switches between them.
 */
let stores: TestStores;
let s: ControlServer;

before(async () => {
  stores = await openTestStores('ctlenvironments');
  s = await startTestControl(stores);
});
after(async () => {
  await s.close();
  await stores.close();
});

const ws = (id: string, rest = '') => `/api/v1/workspaces/${id}${rest}`;

async function signup(slug: string) {
  const r = await call(s.url, 'POST', '/api/v1/signup', { body: { slug, display_name: slug } });
  assert.equal(r.status, 201, r.text);
  const live = r.json.workspace.id as string;
  const view = await call(s.url, 'GET', ws(live), { token: r.json.api_key.token });
  assert.equal(view.json.workspace.environment, 'live');
  assert.equal(view.json.workspace.environments.live, live);
  const testId = view.json.workspace.environments.test as string;
  assert.match(testId, /^ws_test[A-Za-z0-9]{20}$/);
  assert.deepEqual(r.json.workspace.environments, { live, test: testId }, 'signup names both environments');
  const minted = await call(s.url, 'POST', ws(live, '/api-keys?environment=test'), {
    token: r.json.api_key.token,
    body: { name: 'test admin', scopes: ['admin', 'meter:write', 'meter:read', 'webhooks:write'] },
  });
  assert.equal(minted.status, 201, minted.text);
  return {
    live,
    test: testId,
    liveToken: r.json.api_key.token as string,
    testToken: minted.json.api_key.token as string,
  };
}

test('keys are minted per environment, carry it in their prefix, and a test key reaches test only', async () => {
  const w = await signup('env-keys');
  assert.match(w.liveToken, /^sks_live_/);
  assert.match(w.testToken, /^sks_test_/);

  // The test key names its bucket by either id; the environment comes from the key.
  for (const id of [w.live, w.test]) {
    const r = await call(s.url, 'GET', ws(id), { token: w.testToken });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.json.workspace.id, r.json.workspace.environment], [w.test, 'test']);
  }
  // Keys are listed per environment: the live list lacks the test key, the test list the live one.
  const liveKeys = (await call(s.url, 'GET', ws(w.live, '/api-keys'), { token: w.liveToken })).json.data;
  const testKeys = (await call(s.url, 'GET', ws(w.live, '/api-keys'), { token: w.testToken })).json.data;
  assert.deepEqual(
    liveKeys.map((k: { prefix: string }) => k.prefix.slice(0, 9)),
    ['sks_live_'],
  );
  assert.deepEqual(
    testKeys.map((k: { prefix: string }) => k.prefix.slice(0, 9)),
    ['sks_test_'],
  );
  // A live admin key asks for test explicitly; the operator too.
  const asked = await call(s.url, 'GET', ws(w.live, '/api-keys?environment=test'), { token: w.liveToken });
  assert.deepEqual(asked.json.data, testKeys);
  const op = await call(s.url, 'GET', ws(w.live, '/api-keys?environment=test'), { token: OPERATOR_KEY });
  assert.deepEqual(op.json.data, testKeys);

  // A test key never reaches live: not by asking, not by renaming or deleting the workspace.
  const refusals: [string, string, unknown?][] = [
    ['GET', ws(w.live, '/api-keys?environment=live')],
    ['PATCH', ws(w.live), { display_name: 'renamed by a test key' }],
    ['DELETE', ws(w.live)],
    ['DELETE', ws(w.test)],
  ];
  for (const [method, path, body] of refusals) {
    const r = await call(s.url, method, path, { token: w.testToken, ...(body === undefined ? {} : { body }) });
    assert.deepEqual([r.status, r.json.error.code], [403, 'workspace_mismatch'], `${method} ${path}`);
  }
  // Routes with query parameters of their own take it too.
  for (const path of [
    '/events?environment=test&limit=5',
    '/events/rejections?environment=test',
    '/webhook-deliveries?environment=test',
  ])
    assert.equal((await call(s.url, 'GET', ws(w.live, path), { token: w.liveToken })).status, 200, path);
  const bad = await call(s.url, 'GET', ws(w.live, '/api-keys?environment=prod'), { token: w.liveToken });
  assert.deepEqual([bad.status, bad.json.error.code], [400, 'invalid_field']);

  // Another workspace's test bucket is another workspace.
  // Readiness says why the test environment is never billed.
  const ready = await call(s.url, 'GET', ws(w.live, '/billing/readiness'), { token: w.testToken });
  const env = ready.json.checks.find((c: { check: string }) => c.check === 'live_environment');
  assert.deepEqual([ready.json.ready, env.ok], [false, false]);
  assert.match(env.reason, /never pushed to Stripe/);

  const other = await signup('env-keys-other');
  const cross = await call(s.url, 'GET', ws(other.test), { token: w.testToken });
  assert.equal(cross.json.error.code, 'workspace_mismatch');
  const crossLive = await call(s.url, 'GET', ws(other.live, '/api-keys?environment=test'), { token: w.liveToken });
  assert.equal(crossLive.json.error.code, 'workspace_mismatch');
});

test('a key minted before environments (sks_ + 43 characters) keeps working, as live', async () => {
  const w = await signup('env-legacy');
  const legacy = 'sks_' + randomBytes(32).toString('base64url');
  await stores.pool.query(
    `INSERT INTO api_keys (id, workspace_id, display_prefix, key_hash, scopes) VALUES ('key_legacy', $1, $2, $3, $4)`,
    [w.live, legacy.slice(0, 12), hashKey(legacy), ['admin']],
  );
  const r = await call(s.url, 'GET', ws(w.live), { token: legacy });
  assert.deepEqual([r.status, r.json.workspace.environment], [200, 'live']);
});

test('webhooks are per environment: a test event reaches the test endpoint only, signed with its secret', async () => {
  const w = await signup('env-hooks');
  const liveRx = await new Receiver().start();
  const testRx = await new Receiver().start();
  try {
    const liveHook = await call(s.url, 'POST', ws(w.live, '/webhooks'), {
      token: w.liveToken,
      body: { url: liveRx.url, events: ['meter.quota.warning'] },
    });
    const testHook = await call(s.url, 'POST', ws(w.live, '/webhooks'), {
      token: w.testToken,
      body: { url: testRx.url, events: ['meter.quota.warning'] },
    });
    assert.equal(testHook.status, 201, testHook.text);
    assert.notEqual(testHook.json.webhook.secret, liveHook.json.webhook.secret);
    // Test traffic crosses 80 % of the (shared) plan's quota in the test bucket's own counter.
    const limit = PLAN_QUOTAS.free.eventsPerPeriod!;
    await stores.redis.set(quotaKey(stores.redisPrefix, w.test, periodOf(Date.now())), String(limit * 0.8));
    const watch = new QuotaWatch(stores.pool, stores.redis, stores.redisPrefix, createLogger('t', 'silent'));
    assert.equal(await watch.check(), 1);
    const [got] = await testRx.waitFor(1);
    const body = JSON.parse(got!.body);
    assert.deepEqual([body.event, body.workspace_id], ['meter.quota.warning', w.test]);
    assert.ok(verifySignature(got!.body, got!.headers['stateset-signature'] as string, testHook.json.webhook.secret));
    assert.ok(!verifySignature(got!.body, got!.headers['stateset-signature'] as string, liveHook.json.webhook.secret));
    const deliveries = await call(s.url, 'GET', ws(w.live, '/webhook-deliveries'), { token: w.liveToken });
    assert.deepEqual(deliveries.json.data, [], 'the live endpoint was sent nothing');
    assert.equal(liveRx.received.length, 0);
  } finally {
    await liveRx.close();
    await testRx.close();
  }
});

test('deleting a workspace deletes its test environment too; restoring restores both', async () => {
  const w = await signup('env-delete');
  const del = await call(s.url, 'DELETE', ws(w.live), { token: w.liveToken });
  assert.equal(del.status, 200, del.text);
  for (const token of [w.liveToken, w.testToken]) {
    const r = await call(s.url, 'GET', ws(w.live), { token });
    assert.deepEqual([r.status, r.json.error.code], [401, 'invalid_api_key']);
  }
  const { rows } = await stores.pool.query(
    'SELECT environment, deleted_at IS NOT NULL AS deleted FROM workspaces WHERE id = ANY($1) ORDER BY environment',
    [[w.live, w.test]],
  );
  assert.deepEqual(rows, [
    { environment: 'live', deleted: true },
    { environment: 'test', deleted: true },
  ]);
  const restored = await call(s.url, 'POST', ws(w.live, '/restore'), { token: OPERATOR_KEY });
  assert.equal(restored.status, 200, restored.text);
  // A refused key is remembered for up to 2 s (core's authenticator), so the restore shows within that.
  for (const token of [w.liveToken, w.testToken])
    await eventually(async () => (await call(s.url, 'GET', ws(w.live), { token })).status === 200, 5_000, 'restored');
});

async function signIn(token: string) {
  const r = await call(s.url, 'POST', '/dashboard/api/session', { body: { api_key: token } });
  assert.equal(r.status, 201, r.text);
  return { cookie: (r.headers.get('set-cookie') ?? '').split(';')[0]!, csrf: r.json.csrf_token as string };
}

test('the dashboard switches between live and test; a test-key session stays in test', async () => {
  const w = await signup('env-dash');
  const live = await signIn(w.liveToken);
  const me = async (c: { cookie: string }) =>
    (await call(s.url, 'GET', '/dashboard/api/me', { headers: { cookie: c.cookie } })).json.workspace;
  assert.deepEqual([(await me(live)).id, (await me(live)).environment], [w.live, 'live']);
  const page = await call(s.url, 'GET', '/dashboard/overview', { headers: { cookie: live.cookie } });
  assert.match(page.text, /<option value="live" selected>Live<\/option><option value="test">Test<\/option>/);

  const sw = (c: { cookie: string; csrf: string }, environment: string) =>
    call(s.url, 'POST', '/dashboard/api/environment', {
      headers: { cookie: c.cookie, 'x-csrf-token': c.csrf },
      body: { environment },
    });
  assert.equal((await sw(live, 'test')).status, 200);
  assert.deepEqual([(await me(live)).id, (await me(live)).environment], [w.test, 'test']);
  const testPage = await call(s.url, 'GET', '/dashboard/keys', { headers: { cookie: live.cookie } });
  assert.match(testPage.text, /class="test-banner"/);
  // Keys minted from the dashboard in test are test keys.
  const minted = await call(s.url, 'POST', '/dashboard/api/keys', {
    headers: { cookie: live.cookie, 'x-csrf-token': live.csrf },
    body: { name: 'from the dashboard' },
  });
  assert.match(minted.json.api_key.token, /^sks_test_/);
  assert.equal((await sw(live, 'live')).status, 200);
  assert.equal((await me(live)).id, w.live);

  const testSession = await signIn(w.testToken);
  assert.equal((await me(testSession)).id, w.test);
  const refused = await sw(testSession, 'live');
  assert.deepEqual([refused.status, refused.json.error.code], [403, 'workspace_mismatch']);
  assert.equal((await me(testSession)).id, w.test, 'the session still works, in test');
  const testOnly = await call(s.url, 'GET', '/dashboard/overview', { headers: { cookie: testSession.cookie } });
  assert.ok(!testOnly.text.includes('<option value="live"'));
});
