import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { OPERATOR_KEY, call, eventually, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';

let stores: TestStores;
let s: ControlServer;

before(async () => {
  stores = await openTestStores('ctlsignup');
  s = await startTestControl(stores, { SIGNUP_BURST: '100' });
});
after(async () => {
  await s.close();
  await stores.close();
});

test('signup as documented: workspace, first key shown once, dashboard url, workspace.signup in the outbox', async () => {
  const res = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug: 'acme', display_name: 'Acme', contact_email: 'ops@acme.com' },
  });
  assert.equal(res.status, 201);
  assert.match(res.json.workspace.id, /^ws_/);
  assert.equal(res.json.workspace.plan, 'free');
  assert.match(res.json.api_key.token, /^sks_live_[A-Za-z0-9_-]{43}$/);
  assert.equal(typeof res.json.dashboard_url, 'string');
  const { rows } = await stores.pool.query('SELECT event, body FROM outbox_events WHERE workspace_id = $1', [
    res.json.workspace.id,
  ]);
  assert.equal(rows.length, 1);
  assert.equal(rows[0].event, 'workspace.signup');
  assert.equal(JSON.parse(rows[0].body).data.workspace.slug, 'acme');
  // The token works, and no later answer ever shows it again.
  const keys = await call(s.url, 'GET', `/api/v1/workspaces/${res.json.workspace.id}/api-keys`, {
    token: res.json.api_key.token,
  });
  assert.equal(keys.status, 200);
  assert.equal(keys.json.data.length, 1);
  assert.ok(!keys.text.includes(res.json.api_key.token));
  assert.ok(!('token' in keys.json.data[0]) && !('key_hash' in keys.json.data[0]));
});

test('signup validates slug and plan, and a taken slug is a 409 that creates nothing', async () => {
  for (const [slug, code] of [
    ['ab', 'invalid_field'],
    ['Acme', 'invalid_field'],
    ['-acme', 'invalid_field'],
    ['ac--me', 'invalid_field'],
    ['a'.repeat(41), 'invalid_field'],
  ] as const) {
    const r = await call(s.url, 'POST', '/api/v1/signup', { body: { slug, display_name: 'X' } });
    assert.equal(r.status, 400, slug);
    assert.equal(r.json.error.code, code);
    assert.equal(r.json.error.field, 'slug');
  }
  const plan = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug: 'plan-co', display_name: 'X', plan: 'gold' },
  });
  assert.equal(plan.json.error.field, 'plan');
  const extra = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug: 'extra-co', display_name: 'X', colour: 'red' },
  });
  assert.deepEqual([extra.status, extra.json.error.code, extra.json.error.field], [400, 'unknown_field', 'colour']);
  const missing = await call(s.url, 'POST', '/api/v1/signup', { body: { slug: 'missing-co' } });
  assert.deepEqual([missing.json.error.code, missing.json.error.field], ['missing_field', 'display_name']);

  const first = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug: 'taken-co', display_name: 'A', plan: 'free' },
  });
  assert.equal(first.status, 201);
  assert.equal(first.json.workspace.plan, 'free');
  const again = await call(s.url, 'POST', '/api/v1/signup', { body: { slug: 'taken-co', display_name: 'B' } });
  assert.deepEqual([again.status, again.json.error.code], [409, 'slug_taken']);
  const { rows } = await stores.pool.query(
    `SELECT count(*)::int AS n FROM workspaces WHERE slug = 'taken-co' AND environment = 'live'`,
  );
  assert.equal(rows[0].n, 1);
});

test('signup is rate-limited per client address', async () => {
  // Buckets live in Redis under the key prefix: a prefix of its own keeps other tests' signups out of them.
  const limited = await startTestControl(stores, {
    SIGNUP_BURST: '2',
    SIGNUP_RATE_PER_MINUTE: '1',
    TRUSTED_PROXIES: '127.0.0.1,::1',
    REDIS_KEY_PREFIX: `${stores.redisPrefix}:rl`,
  });
  try {
    const codes: number[] = [];
    for (let i = 0; i < 3; i++)
      codes.push(
        (await call(limited.url, 'POST', '/api/v1/signup', { body: { slug: `rl-${i}-co`, display_name: 'X' } })).status,
      );
    assert.deepEqual(codes, [201, 201, 429]);
    const r = await call(limited.url, 'POST', '/api/v1/signup', { body: { slug: 'rl-9-co', display_name: 'X' } });
    assert.equal(r.json.error.code, 'rate_limited');
    assert.ok(Number(r.headers.get('retry-after')) > 0);
    // Another address (through a trusted proxy's X-Forwarded-For) has its own bucket.
    const other = await call(limited.url, 'POST', '/api/v1/signup', {
      body: { slug: 'rl-other-co', display_name: 'X' },
      headers: { 'x-forwarded-for': '203.0.113.9' },
    });
    assert.equal(other.status, 201);
  } finally {
    await limited.close();
  }
});

test('API keys: create with scopes (token once), list without secrets, scope and workspace checks, revoke', async () => {
  const a = await stores.workspace('free');
  const b = await stores.workspace('free');
  const created = await call(s.url, 'POST', `/api/v1/workspaces/${a.workspace.id}/api-keys`, {
    token: a.token,
    body: { name: 'ci', scopes: ['meter:write'] },
  });
  assert.equal(created.status, 201);
  assert.deepEqual(created.json.api_key.scopes, ['meter:write']);
  const narrow = created.json.api_key.token as string;

  const badScope = await call(s.url, 'POST', `/api/v1/workspaces/${a.workspace.id}/api-keys`, {
    token: a.token,
    body: { scopes: ['root'] },
  });
  assert.deepEqual([badScope.status, badScope.json.error.code], [400, 'invalid_field']);
  const noAdmin = await call(s.url, 'GET', `/api/v1/workspaces/${a.workspace.id}/api-keys`, { token: narrow });
  assert.deepEqual([noAdmin.status, noAdmin.json.error.code], [403, 'insufficient_scope']);
  const cross = await call(s.url, 'GET', `/api/v1/workspaces/${b.workspace.id}/api-keys`, { token: a.token });
  assert.deepEqual([cross.status, cross.json.error.code], [403, 'workspace_mismatch']);
  const op = await call(s.url, 'GET', `/api/v1/workspaces/${b.workspace.id}/api-keys`, { token: OPERATOR_KEY });
  assert.equal(op.status, 200);
  const ghost = await call(s.url, 'GET', '/api/v1/workspaces/ws_doesnotexist/api-keys', { token: OPERATOR_KEY });
  assert.deepEqual([ghost.status, ghost.json.error.code], [404, 'workspace_not_found']);

  // The control API caches the admin key's lookup; revocation must reach that cache over Redis.
  const admin2 = await call(s.url, 'POST', `/api/v1/workspaces/${a.workspace.id}/api-keys`, {
    token: a.token,
    body: { scopes: ['admin'] },
  });
  const t2 = admin2.json.api_key.token as string;
  assert.equal((await call(s.url, 'GET', `/api/v1/workspaces/${a.workspace.id}/api-keys`, { token: t2 })).status, 200);
  const revoked = await call(
    s.url,
    'DELETE',
    `/api/v1/workspaces/${a.workspace.id}/api-keys/${admin2.json.api_key.id}`,
    { token: a.token },
  );
  assert.equal(revoked.status, 200);
  const t0 = Date.now();
  await eventually(
    async () =>
      (await call(s.url, 'GET', `/api/v1/workspaces/${a.workspace.id}/api-keys`, { token: t2 })).status === 401,
    1_000,
    'revoked key refused',
  );
  assert.ok(Date.now() - t0 < 1_000);
  const list = await call(s.url, 'GET', `/api/v1/workspaces/${a.workspace.id}/api-keys`, { token: a.token });
  assert.ok(list.json.data.find((k: { id: string }) => k.id === admin2.json.api_key.id).revoked_at !== null);
  const twice = await call(s.url, 'DELETE', `/api/v1/workspaces/${a.workspace.id}/api-keys/${admin2.json.api_key.id}`, {
    token: a.token,
  });
  assert.deepEqual([twice.status, twice.json.error.code], [404, 'resource_not_found']);
});
