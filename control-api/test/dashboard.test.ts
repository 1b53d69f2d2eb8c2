import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { quotaKey } from '@meterd/core/contracts';
import { periodOf } from '@meterd/core/plans';
import { call, startTestControl } from './helpers.js';
import { parsePrometheus } from '@meterd/core/metrics';
import { snapshotOf } from '../src/dashboard/ingest-metrics.js';
import type { ControlServer } from '../src/server.js';

let stores: TestStores;
let control: ControlServer;
let base: string;

before(async () => {
  stores = await openTestStores('dashboard');
  // INGEST_URL points at nothing: the overview must still answer, with ingest marked unreachable.
  control = await startTestControl(stores, { INGEST_URL: 'http://127.0.0.1:9', DASHBOARD_SESSION_TTL_SECONDS: '120' });
  base = control.url;
});

after(async () => {
  await control?.close();
  await stores?.close();
});

async function signIn(token: string): Promise<{ cookie: string; csrf: string; setCookie: string }> {
  const r = await call(base, 'POST', '/dashboard/api/session', { body: { api_key: token } });
  assert.equal(r.status, 201, r.text);
  const setCookie = r.headers.get('set-cookie') ?? '';
  return { cookie: setCookie.split(';')[0]!, csrf: r.json.csrf_token, setCookie };
}

test('sign-in sets an HttpOnly, SameSite session cookie; Redis holds only the hash of its id, never the key', async () => {
  const { token, keyId, workspace } = await stores.workspace('growth');
  const s = await signIn(token);
  assert.match(s.setCookie, /^meterd_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Lax; Max-Age=120$/);
  const id = s.cookie.split('=')[1]!;
  const raw = await stores.redis.get(`${stores.redisPrefix}:dash:s:${createHash('sha256').update(id).digest('hex')}`);
  assert.ok(raw);
  assert.equal(JSON.parse(raw).keyId, keyId);
  assert.ok(!raw.includes(token) && !raw.includes(id));
  assert.ok(
    (await stores.redis.ttl(`${stores.redisPrefix}:dash:s:${createHash('sha256').update(id).digest('hex')}`)) <= 120,
  );
  const me = await call(base, 'GET', '/dashboard/api/me', { headers: { cookie: s.cookie } });
  assert.equal(me.status, 200);
  assert.equal(me.json.workspace.id, workspace.id);
  assert.equal(me.json.plan.name, 'growth');
  assert.equal(me.headers.get('cache-control'), 'no-store');
});

test('the cookie is Secure and __Host- prefixed when PUBLIC_BASE_URL is https', async () => {
  // A Redis prefix of its own: sign-in buckets are shared through Redis, and this file's sign-ins
  // through `control` already use the burst of one address.
  const s2 = await startTestControl(stores, {
    PUBLIC_BASE_URL: 'https://meterd.example',
    INGEST_URL: 'http://127.0.0.1:9',
    REDIS_KEY_PREFIX: `${stores.redisPrefix}:s2`,
  });
  try {
    const { token } = await stores.workspace();
    const r = await call(s2.url, 'POST', '/dashboard/api/session', { body: { api_key: token } });
    assert.match(
      r.headers.get('set-cookie') ?? '',
      /^__Host-meterd_session=[^;]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=\d+; Secure$/,
    );
  } finally {
    await s2.close();
  }
});

test('bad keys, keys without admin, and calls without a session are refused with the documented codes', async () => {
  const bad = await call(base, 'POST', '/dashboard/api/session', { body: { api_key: 'sks_nope' } });
  assert.equal(bad.status, 401);
  assert.equal(bad.json.error.code, 'invalid_api_key');
  const { token } = await stores.workspace('free', ['meter:write']);
  const narrow = await call(base, 'POST', '/dashboard/api/session', { body: { api_key: token } });
  assert.equal(narrow.status, 403);
  assert.equal(narrow.json.error.code, 'insufficient_scope');
  assert.equal(narrow.headers.get('set-cookie'), null);
  const extra = await call(base, 'POST', '/dashboard/api/session', { body: { api_key: token, remember: true } });
  assert.equal(extra.json.error.code, 'unknown_field');
  const anon = await call(base, 'GET', '/dashboard/api/overview');
  assert.equal(anon.status, 401);
  assert.equal(anon.json.error.code, 'session_required');
  const forged = await call(base, 'GET', '/dashboard/api/me', {
    headers: { cookie: `meterd_session=${'a'.repeat(43)}` },
  });
  assert.equal(forged.json.error.code, 'session_required');
});

test("state-changing calls need the session's CSRF token; reads do not", async () => {
  const { token, workspace } = await stores.workspace('growth');
  const s = await signIn(token);
  const none = await call(base, 'POST', '/dashboard/api/keys', { headers: { cookie: s.cookie }, body: { name: 'x' } });
  assert.equal(none.status, 403);
  assert.equal(none.json.error.code, 'csrf_token_invalid');
  const wrong = await call(base, 'POST', '/dashboard/api/keys', {
    headers: { cookie: s.cookie, 'x-csrf-token': s.csrf.slice(1) + 'x' },
    body: { name: 'x' },
  });
  assert.equal(wrong.json.error.code, 'csrf_token_invalid');
  const { rows } = await stores.pool.query('SELECT count(*)::int AS n FROM api_keys WHERE workspace_id = $1', [
    workspace.id,
  ]);
  assert.equal(rows[0].n, 1, 'a refused call created nothing');
  const ok = await call(base, 'POST', '/dashboard/api/keys', {
    headers: { cookie: s.cookie, 'x-csrf-token': s.csrf },
    body: { name: 'ci', scopes: ['meter:write'] },
  });
  assert.equal(ok.status, 201);
  assert.match(ok.json.api_key.token, /^sks_/);
  const list = await call(base, 'GET', '/dashboard/api/keys', { headers: { cookie: s.cookie } });
  assert.equal(list.json.data.length, 2);
  assert.ok(!list.text.includes(ok.json.api_key.token), 'the list never shows a secret');
});

test('revoking the key a session signed in with ends that session; sign-out ends it too', async () => {
  const { token, workspace } = await stores.workspace('growth');
  const a = await signIn(token);
  const created = await call(base, 'POST', '/dashboard/api/keys', {
    headers: { cookie: a.cookie, 'x-csrf-token': a.csrf },
    body: { name: 'second', scopes: ['admin'] },
  });
  const b = await signIn(created.json.api_key.token);
  const self = await call(base, 'DELETE', `/dashboard/api/keys/${created.json.api_key.id}`, {
    headers: { cookie: b.cookie, 'x-csrf-token': b.csrf },
  });
  assert.equal(self.status, 400, 'a session does not saw off the key it stands on');
  const revoke = await call(base, 'DELETE', `/dashboard/api/keys/${created.json.api_key.id}`, {
    headers: { cookie: a.cookie, 'x-csrf-token': a.csrf },
  });
  assert.equal(revoke.status, 200);
  assert.equal((await call(base, 'GET', '/dashboard/api/me', { headers: { cookie: b.cookie } })).status, 401);
  assert.equal((await call(base, 'GET', '/dashboard/api/me', { headers: { cookie: a.cookie } })).status, 200);
  const out = await call(base, 'DELETE', '/dashboard/api/session', {
    headers: { cookie: a.cookie, 'x-csrf-token': a.csrf },
  });
  assert.equal(out.status, 204);
  assert.match(out.headers.get('set-cookie') ?? '', /Max-Age=0/);
  assert.equal((await call(base, 'GET', '/dashboard/api/me', { headers: { cookie: a.cookie } })).status, 401);
  const other = await stores.workspace();
  const c = await signIn(other.token);
  const cross = await call(
    base,
    'DELETE',
    `/dashboard/api/keys/${(await stores.pool.query('SELECT id FROM api_keys WHERE workspace_id = $1 AND revoked_at IS NULL', [workspace.id])).rows[0].id}`,
    { headers: { cookie: c.cookie, 'x-csrf-token': c.csrf } },
  );
  assert.equal(cross.status, 404, 'a session reaches only its own workspace');
});

test('pages redirect to sign-in without a session, keeping only a dashboard path as next; pages carry a strict CSP', async () => {
  const r = await call(base, 'GET', '/dashboard/onboarding?workspace=ws_abc&shopify=connected');
  assert.equal(r.status, 302);
  assert.equal(
    r.headers.get('location'),
    `/dashboard/signin?next=${encodeURIComponent('/dashboard/onboarding?workspace=ws_abc&shopify=connected')}`,
  );
  const page = await call(base, 'GET', '/dashboard/signin?next=https://evil.example/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'; script-src 'self'/);
  assert.match(page.text, /data-next="\/dashboard\/overview"/);
  assert.match(page.text, /<form[^>]*method="post"/, 'a sign-in without JavaScript never puts the key in a URL');
  assert.doesNotMatch(page.text, /https?:\/\/(?!127\.0\.0\.1)/, 'nothing is loaded from another origin');
  const asset = await call(base, 'GET', '/dashboard/assets/app.js');
  assert.equal(asset.status, 200);
  assert.match(asset.headers.get('content-type') ?? '', /text\/javascript/);
  assert.equal((await call(base, 'GET', '/dashboard/assets/..%2Fpages.ts')).status, 404);
  const { token } = await stores.workspace();
  const s = await signIn(token);
  const signedIn = await call(base, 'GET', '/dashboard/overview', { headers: { cookie: s.cookie } });
  assert.equal(signedIn.status, 200);
  assert.ok(signedIn.text.includes(`<meta name="csrf-token" content="${s.csrf}">`));
});

test('overview and onboarding answer from real state, and say which parts are unavailable', async () => {
  const { token, workspace } = await stores.workspace('free');
  const s = await signIn(token);
  await stores.redis.set(quotaKey(stores.redisPrefix, workspace.id, periodOf(Date.now())), '7');
  const o = await call(base, 'GET', '/dashboard/api/overview?granularity=day', { headers: { cookie: s.cookie } });
  assert.equal(o.status, 200, o.text);
  assert.deepEqual(o.json.usage.used, 7);
  assert.equal(o.json.usage.limit, 500);
  assert.equal(o.json.ingest.reachable, false);
  assert.deepEqual(o.json.series, []);
  assert.equal(o.json.range.step, 86_400_000);
  const ob = await call(base, 'GET', '/dashboard/api/onboarding', { headers: { cookie: s.cookie } });
  assert.deepEqual(
    ob.json.steps.map((x: { done: boolean }) => x.done),
    [true, false, true],
  );
  assert.equal(ob.json.steps[2].unlocked, false);
  const unlocked = await call(base, 'GET', '/dashboard/api/onboarding?shopify=connected', {
    headers: { cookie: s.cookie },
  });
  assert.equal(unlocked.json.steps[2].unlocked, true);
  await stores.pool.query(
    `INSERT INTO shopify_connections (workspace_id, shop_domain, access_token_enc) VALUES ($1, 'acme.myshopify.com', 'x')`,
    [workspace.id],
  );
  const viaDb = await call(base, 'GET', '/dashboard/api/onboarding', { headers: { cookie: s.cookie } });
  assert.equal(viaDb.json.steps[2].unlocked, true);
  assert.equal(viaDb.json.shopify.shop_domain, 'acme.myshopify.com');
});

test('ingest metrics: counters summed over label sets, rejects by reason, zero reasons dropped', () => {
  const text = [
    '# HELP meterd_ingest_events_accepted_total Events stored.',
    '# TYPE meterd_ingest_events_accepted_total counter',
    'meterd_ingest_events_accepted_total 12',
    'meterd_ingest_events_duplicate_total 3',
    'meterd_ingest_events_rejected_total{reason="invalid_field"} 2',
    'meterd_ingest_events_rejected_total{reason="plan_quota_exceeded"} 5',
    'meterd_ingest_events_rejected_total{reason="invalid_json"} 0',
    'meterd_ingest_flush_seconds_bucket{le="0.1"} 4',
    'garbage line',
  ].join('\n');
  assert.equal(parsePrometheus(text).length, 6);
  const s = snapshotOf('http://ingest', text, 1);
  assert.equal(s.accepted, 12);
  assert.equal(s.duplicate, 3);
  assert.deepEqual(s.rejected, { invalid_field: 2, plan_quota_exceeded: 5 });
});
