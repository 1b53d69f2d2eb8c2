import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import Stripe from 'stripe';
import { RejectionLog } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, OPERATOR_KEY, startTestControl } from './helpers.js';
import { spawnStripeLocal } from './procs.js';
import { SecretBox } from '../src/crypto/secret-box.js';
import type { ControlServer } from '../src/server.js';
import { IdempotencyService } from '../src/services/idempotency.js';
import { ReadinessService } from '../src/services/readiness.js';

/**
 * Workspaces read/updated/deleted, Idempotency-Key on creates, billing readiness and the event
 * explorer, through the public HTTP API with real stores (and stripe-local for readiness).
 */
let stores: TestStores;
let s: ControlServer;
let stripeLocal: ChildProcess;
let stripeUrl: string;
const KEY = 'sk_test_workspaces_api';

before(async () => {
  stores = await openTestStores('ctlworkspaces');
  ({ child: stripeLocal, url: stripeUrl } = await spawnStripeLocal());
  s = await startTestControl(stores, { STRIPE_SECRET_KEY: KEY, STRIPE_API_BASE: stripeUrl });
});
after(async () => {
  await s.close();
  stripeLocal.kill('SIGTERM');
  await stores.close();
});

const ws = (id: string, rest = '') => `/api/v1/workspaces/${id}${rest}`;

test('attack: workspace A’s admin key can neither read nor change workspace B', async () => {
  const a = await stores.workspace();
  const b = await stores.workspace();
  const before = (await call(s.url, 'GET', ws(b.workspace.id), { token: b.token })).json;
  const attempts: [string, string, unknown?][] = [
    ['GET', ws(b.workspace.id)],
    ['PATCH', ws(b.workspace.id), { display_name: 'pwned' }],
    ['DELETE', ws(b.workspace.id)],
    ['GET', ws(b.workspace.id, '/export')],
    ['GET', ws(b.workspace.id, '/billing/readiness')],
    ['GET', ws(b.workspace.id, '/events')],
    ['GET', ws(b.workspace.id, '/events/rejections')],
  ];
  for (const [method, path, body] of attempts) {
    const r = await call(s.url, method, path, { token: a.token, ...(body === undefined ? {} : { body }) });
    assert.equal(r.status, 403, `${method} ${path}: ${r.text}`);
    assert.equal(r.json.error.code, 'workspace_mismatch');
  }
  const restore = await call(s.url, 'POST', ws(b.workspace.id, '/restore'), { token: a.token });
  assert.equal(restore.json.error.code, 'operator_only');
  // A's Idempotency-Key never replays B's answer: the same key mints A its own key.
  const mintB = await call(s.url, 'POST', ws(b.workspace.id, '/api-keys'), {
    token: b.token,
    body: { name: 'b' },
    headers: { 'idempotency-key': 'shared-key-1' },
  });
  const mintA = await call(s.url, 'POST', ws(a.workspace.id, '/api-keys'), {
    token: a.token,
    body: { name: 'b' },
    headers: { 'idempotency-key': 'shared-key-1' },
  });
  assert.equal(mintA.status, 201);
  assert.equal(mintA.headers.get('idempotent-replayed'), null);
  assert.notEqual(mintA.json.api_key.token, mintB.json.api_key.token);
  const after = (await call(s.url, 'GET', ws(b.workspace.id), { token: b.token })).json;
  assert.deepEqual(after, before);
});

test('bad input is a 400 naming the field, and changes nothing', async () => {
  const a = await stores.workspace();
  const before = (await call(s.url, 'GET', ws(a.workspace.id), { token: a.token })).json;
  const cases: [string, string, unknown, string, string | undefined][] = [
    ['PATCH', ws(a.workspace.id), { nickname: 'x' }, 'unknown_field', 'nickname'],
    ['PATCH', ws(a.workspace.id), { contact_email: 'not-an-email' }, 'invalid_field', 'contact_email'],
    ['PATCH', ws(a.workspace.id), { display_name: '' }, 'invalid_field', 'display_name'],
    ['PATCH', ws(a.workspace.id), {}, 'invalid_body', undefined],
    ['GET', ws(a.workspace.id, '/events?from=yesterday'), undefined, 'invalid_field', 'from'],
    ['GET', ws(a.workspace.id, '/events?cursor=bm9wZQ'), undefined, 'invalid_field', 'cursor'],
    ['GET', ws(a.workspace.id, '/events?limit=0'), undefined, 'invalid_field', 'limit'],
    ['GET', ws(a.workspace.id, '/events?colour=red'), undefined, 'unknown_field', 'colour'],
    [
      'GET',
      ws(a.workspace.id, '/events?from=2025-11-02T00:00:00Z&to=2025-11-01T00:00:00Z'),
      undefined,
      'invalid_field',
      'from',
    ],
    // Shaped like a date but none (month 13), or out of range: refused, not an empty page or a 500.
    ['GET', ws(a.workspace.id, '/events?from=2025-13-01T00:00:00Z'), undefined, 'invalid_field', 'from'],
    ['GET', ws(a.workspace.id, '/events?to=2025-13-01T00:00:00Z'), undefined, 'invalid_field', 'to'],
    ['GET', ws(a.workspace.id, '/events?to=2999-01-01T00:00:00Z'), undefined, 'invalid_field', 'to'],
    ['GET', ws(a.workspace.id, '/events?from=1969-12-31T00:00:00Z'), undefined, 'invalid_field', 'from'],
    ...[Number.MAX_SAFE_INTEGER, -1, 4_102_444_800].map((t): [string, string, unknown, string, string] => [
      'GET',
      ws(a.workspace.id, `/events?cursor=${Buffer.from(JSON.stringify({ t, e: 'x', k: 'y' })).toString('base64url')}`),
      undefined,
      'invalid_field',
      'cursor',
    ]),
    ['GET', ws(a.workspace.id, '/events/rejections?limit=5000'), undefined, 'invalid_field', 'limit'],
  ];
  for (const [method, path, body, code, field] of cases) {
    const r = await call(s.url, method, path, { token: a.token, ...(body === undefined ? {} : { body }) });
    assert.equal(r.status, 400, `${method} ${path}: ${r.text}`);
    assert.equal(r.json.error.code, code, `${method} ${path}: ${r.text}`);
    assert.equal(r.json.error.field, field, `${method} ${path}: ${r.text}`);
  }
  const badKey = await call(s.url, 'POST', ws(a.workspace.id, '/api-keys'), {
    token: a.token,
    body: {},
    headers: { 'idempotency-key': 'x'.repeat(256) },
  });
  assert.equal(badKey.status, 400);
  assert.equal(badKey.json.error.field, 'Idempotency-Key');
  const keys = await call(s.url, 'GET', ws(a.workspace.id, '/api-keys'), { token: a.token });
  assert.equal(keys.json.data.length, 1, 'no key was minted');
  assert.deepEqual((await call(s.url, 'GET', ws(a.workspace.id), { token: a.token })).json, before);
});

test('PATCH updates the display name and contact email; only the operator sets a plan', async () => {
  const a = await stores.workspace();
  const r = await call(s.url, 'PATCH', ws(a.workspace.id), {
    token: a.token,
    body: { display_name: 'Acme Ltd', contact_email: 'billing@acme.example' },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.workspace.display_name, 'Acme Ltd');
  assert.equal(r.json.workspace.contact_email, 'billing@acme.example');
  const cleared = await call(s.url, 'PATCH', ws(a.workspace.id), { token: a.token, body: { contact_email: null } });
  assert.equal(cleared.json.workspace.contact_email, null);
  assert.equal(cleared.json.workspace.display_name, 'Acme Ltd');
  const plan = await call(s.url, 'PATCH', ws(a.workspace.id), { token: a.token, body: { plan: 'scale' } });
  assert.equal(plan.status, 403);
  assert.equal(plan.json.error.code, 'operator_only');
  const op = await call(s.url, 'PATCH', ws(a.workspace.id), { token: OPERATOR_KEY, body: { plan: 'scale' } });
  assert.equal(op.json.workspace.plan, 'scale');
});

test('soft delete: keys stop at once, the operator reads it and its export, restores it within the grace period only', async () => {
  const a = await stores.workspace();
  const del = await call(s.url, 'DELETE', ws(a.workspace.id), { token: a.token });
  assert.equal(del.status, 200, del.text);
  assert.ok(del.json.workspace.deleted_at);
  assert.ok(Date.parse(del.json.workspace.purge_after) > Date.now() + 29 * 86_400_000);
  // The very next request with its key is refused: the deletion dropped it from the cache.
  const refused = await call(s.url, 'GET', ws(a.workspace.id), { token: a.token });
  assert.equal(refused.status, 401);
  assert.equal(refused.json.error.code, 'invalid_api_key');
  // Every other route treats it as gone, even for the operator…
  const keys = await call(s.url, 'GET', ws(a.workspace.id, '/api-keys'), { token: OPERATOR_KEY });
  assert.equal(keys.json.error.code, 'workspace_not_found');
  // …but the operator still reads it and its finance export.
  const read = await call(s.url, 'GET', ws(a.workspace.id), { token: OPERATOR_KEY });
  assert.equal(read.json.workspace.id, a.workspace.id);
  const exp = await call(s.url, 'GET', ws(a.workspace.id, '/export'), { token: OPERATOR_KEY });
  assert.equal(exp.status, 200, exp.text);
  assert.deepEqual(Object.keys(exp.json).sort(), ['billing', 'usage', 'workspace']);
  const restored = await call(s.url, 'POST', ws(a.workspace.id, '/restore'), { token: OPERATOR_KEY });
  assert.equal(restored.json.workspace.deleted_at, null);
  // The refusal was remembered as an unknown key (at most 2 s, the Authenticator's negative cache).
  await eventually(
    async () => (await call(s.url, 'GET', ws(a.workspace.id), { token: a.token })).status === 200,
    5_000,
    'the restored key to work again',
  );
  // Past the grace period there is no way back.
  await call(s.url, 'DELETE', ws(a.workspace.id), { token: a.token });
  await stores.pool.query(`UPDATE workspaces SET purge_after = now() - interval '1 second' WHERE id = $1`, [
    a.workspace.id,
  ]);
  const late = await call(s.url, 'POST', ws(a.workspace.id, '/restore'), { token: OPERATOR_KEY });
  assert.equal(late.status, 409);
  assert.equal(late.json.error.code, 'restore_window_closed');
});

test('Idempotency-Key: same body replays the first answer, another body is 409 idempotency_key_reused', async () => {
  const a = await stores.workspace();
  const post = (body: unknown, key: string) =>
    call(s.url, 'POST', ws(a.workspace.id, '/api-keys'), { token: a.token, body, headers: { 'idempotency-key': key } });
  const first = await post({ name: 'ci' }, 'mint-ci-1');
  assert.equal(first.status, 201);
  const again = await post({ name: 'ci' }, 'mint-ci-1');
  assert.equal(again.status, 201);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(again.json, first.json);
  const other = await post({ name: 'other' }, 'mint-ci-1');
  assert.equal(other.status, 409);
  assert.equal(other.json.error.code, 'idempotency_key_reused');
  const keys = await call(s.url, 'GET', ws(a.workspace.id, '/api-keys'), { token: a.token });
  assert.equal(keys.json.data.length, 2, 'the first key and the minted one, nothing more');
  // A failed create frees its key: the retry runs.
  const failedOnce = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug: a.workspace.slug, display_name: 'Dup' },
    headers: { 'idempotency-key': 'signup-1' },
  });
  assert.equal(failedOnce.json.error.code, 'slug_taken');
  const signup = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug: `${a.workspace.slug}-x`, display_name: 'Dup' },
    headers: { 'idempotency-key': 'signup-1' },
  });
  assert.equal(signup.status, 201, signup.text);
  const replay = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug: `${a.workspace.slug}-x`, display_name: 'Dup' },
    headers: { 'idempotency-key': 'signup-1' },
  });
  assert.equal(replay.json.workspace.id, signup.json.workspace.id);
});

test('Idempotency-Key: stored answers hold no plaintext sks_/whsec_ secret, replay to their caller only', async () => {
  const a = await stores.workspace();
  const slug = `${a.workspace.slug}-sealed`;
  const creates = [
    {
      key: 'sealed-signup',
      path: '/api/v1/signup',
      token: undefined,
      body: { slug, display_name: 'Sealed' },
      secret: (j: any) => j.api_key.token,
    },
    {
      key: 'sealed-mint',
      path: ws(a.workspace.id, '/api-keys'),
      token: a.token,
      body: { name: 'sealed' },
      secret: (j: any) => j.api_key.token,
    },
    {
      key: 'sealed-hook',
      path: ws(a.workspace.id, '/webhooks'),
      token: a.token,
      body: { url: 'https://hooks.example.com/sealed' },
      secret: (j: any) => j.webhook.secret,
    },
  ];
  for (const c of creates) {
    const send = () =>
      call(s.url, 'POST', c.path, {
        ...(c.token === undefined ? {} : { token: c.token }),
        body: c.body,
        headers: { 'idempotency-key': c.key },
      });
    const first = await send();
    assert.equal(first.status, 201, first.text);
    const secret = c.secret(first.json) as string;
    assert.match(secret, /^(sks|whsec)_/);
    const { rows } = await stores.pool.query(
      `SELECT response FROM idempotency_keys WHERE key = $1 AND (response IS NULL OR response LIKE '%' || $2 || '%')`,
      [c.key, secret.slice(0, 24)],
    );
    assert.deepEqual(rows, [], `${c.path}: the stored answer holds the secret in plaintext`);
    const replay = await send();
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.equal(c.secret(replay.json), secret, `${c.path}: the replay returns the secret`);
  }
  // A's sealed answer copied under another scope (the operator's: same path and body, so the same
  // fingerprint) or another key does not open there.
  const minted = await call(s.url, 'POST', ws(a.workspace.id, '/api-keys'), {
    token: a.token,
    body: { name: 'sealed' },
    headers: { 'idempotency-key': 'sealed-mint' },
  });
  for (const [scope, key] of [
    ['operator', 'sealed-mint'],
    [`ws:${a.workspace.id}`, 'sealed-copy'],
  ] as const) {
    await stores.pool.query(
      `INSERT INTO idempotency_keys (scope, key, fingerprint, status, response, locked_until, expires_at)
       SELECT $1, $2, fingerprint, status, response, locked_until, expires_at FROM idempotency_keys
        WHERE scope = $3 AND key = 'sealed-mint'`,
      [scope, key, `ws:${a.workspace.id}`],
    );
    const stolen = await call(s.url, 'POST', ws(a.workspace.id, '/api-keys'), {
      token: scope === 'operator' ? OPERATOR_KEY : a.token,
      body: { name: 'sealed' },
      headers: { 'idempotency-key': key },
    });
    assert.equal(stolen.status, 500, `${scope} ${key}: ${stolen.text}`);
    assert.ok(!stolen.text.includes(minted.json.api_key.token as string));
  }
});

test('Idempotency-Key: concurrent requests with one key create once; the others replay or get 409 in use', async () => {
  const a = await stores.workspace();
  const results = await Promise.all(
    Array.from({ length: 12 }, () =>
      call(s.url, 'POST', ws(a.workspace.id, '/webhooks'), {
        token: a.token,
        body: { url: 'https://hooks.example.com/race' },
        headers: { 'idempotency-key': 'race-1' },
      }),
    ),
  );
  const created = results.filter((r) => r.status === 201);
  const inUse = results.filter((r) => r.status === 409);
  assert.equal(created.length + inUse.length, 12, results.map((r) => r.text).join('\n'));
  assert.ok(created.length >= 1);
  for (const r of created) assert.equal(r.json.webhook.id, created[0]!.json.webhook.id);
  for (const r of inUse) {
    assert.equal(r.json.error.code, 'idempotency_key_in_use');
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
  }
  const list = await call(s.url, 'GET', ws(a.workspace.id, '/webhooks'), { token: a.token });
  assert.equal(list.json.data.length, 1, 'one endpoint, whatever the race');
});

test('Idempotency-Key: a lapsed lease with no stored answer is refused (409), never run twice; a running one is renewed', async () => {
  const a = await stores.workspace();
  const scope = `ws:${a.workspace.id}`;
  const mint = () =>
    call(s.url, 'POST', ws(a.workspace.id, '/api-keys'), {
      token: a.token,
      body: { name: 'crash' },
      headers: { 'idempotency-key': 'crash-1' },
    });
  assert.equal((await mint()).status, 201);
  // The process died after the create committed and before its answer was stored, a minute ago.
  await stores.pool.query(
    `UPDATE idempotency_keys SET status = NULL, response = NULL, locked_until = now() - interval '1 second'
      WHERE scope = $1 AND key = 'crash-1'`,
    [scope],
  );
  const retry = await mint();
  assert.equal(retry.status, 409, retry.text);
  assert.equal(retry.json.error.code, 'idempotency_key_in_use');
  assert.equal(retry.headers.get('retry-after'), null, 'waiting would not help: the outcome is unknown');
  const keys = await call(s.url, 'GET', ws(a.workspace.id, '/api-keys'), { token: a.token });
  assert.equal(keys.json.data.length, 2, 'the first key and the one minted before the crash, no second mint');

  const svc = new IdempotencyService(stores.pool, new SecretBox(''));
  assert.equal((await svc.begin(scope, 'slow-1', Buffer.from('x'))).kind, 'owner');
  await stores.pool.query(
    `UPDATE idempotency_keys SET locked_until = now() + interval '1 second' WHERE scope = $1 AND key = 'slow-1'`,
    [scope],
  );
  await svc.extend(scope, 'slow-1');
  const { rows } = await stores.pool.query(
    `SELECT locked_until > now() + interval '50 seconds' AS renewed FROM idempotency_keys WHERE scope = $1 AND key = 'slow-1'`,
    [scope],
  );
  assert.equal(rows[0].renewed, true);
});

test('Idempotency-Key cleanup deletes expired records only, a bounded batch per statement', async () => {
  await stores.pool.query(
    `INSERT INTO idempotency_keys (scope, key, fingerprint, status, response, locked_until, created_at, expires_at)
     SELECT 'ws:cleanup', 'old-' || g, '\\x00', 201, '{}', now(), now() - interval '25 hours', now() - interval '1 hour'
       FROM generate_series(1, 1500) g`,
  );
  await stores.pool.query(
    `INSERT INTO idempotency_keys (scope, key, fingerprint, status, response, locked_until, expires_at)
     VALUES ('ws:cleanup', 'fresh', '\\x00', 201, '{}', now(), now() + interval '23 hours')`,
  );
  const svc = new IdempotencyService(stores.pool, new SecretBox(''));
  assert.equal(await svc.cleanup(), 1000);
  assert.ok((await svc.cleanup()) >= 500);
  const { rows } = await stores.pool.query(`SELECT key FROM idempotency_keys WHERE scope = 'ws:cleanup'`);
  assert.deepEqual(
    rows.map((r) => r.key),
    ['fresh'],
  );
  // The statement can walk the expiry index (a tiny test table would be read whole otherwise).
  const c = await stores.pool.connect();
  try {
    await c.query('SET enable_seqscan = off');
    const plan = await c.query(
      `EXPLAIN SELECT ctid FROM idempotency_keys WHERE expires_at <= now() ORDER BY expires_at LIMIT 1000`,
    );
    assert.match(JSON.stringify(plan.rows), /idempotency_keys_expires_idx/);
  } finally {
    c.release();
  }
});

test('billing readiness: each check with its reason', async () => {
  const signup = await call(s.url, 'POST', '/api/v1/signup', { body: { slug: 'ready-1', display_name: 'Ready' } });
  const id = signup.json.workspace.id as string;
  const token = signup.json.api_key.token as string;
  const stripe = new Stripe(KEY, { host: '127.0.0.1', port: Number(new URL(stripeUrl).port), protocol: 'http' });
  await stripe.billing.meters.create({
    display_name: 'api',
    event_name: 'ready.api.call',
    default_aggregation: { formula: 'sum' },
  });
  const push = (event: string, status: string, reason: string | null, rev: number) =>
    stores.pool.query(
      `INSERT INTO billing_pushes (workspace_id, event_type, window_start, window_end, revision, identifier, stripe_customer_id,
         value_field, total, value, status, event_name, currency, reason, created_at)
       VALUES ($1, $2, now() - interval '2 hours', now() - interval '1 hour', $5::int, $1 || $2 || $5::text, 'cus_x', 'quantity', 1, 1, $3, $2, '', $4,
         now() - make_interval(secs => 10 - $5::int))`,
      [id, event, status, reason, rev],
    );
  await push('ready.api.call', 'sent', null, 1);
  await push('ready.missing', 'rejected', 'no meter with event_name ready.missing', 1);
  const r = await call(s.url, 'GET', ws(id, '/billing/readiness'), { token });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.ready, false);
  assert.deepEqual(
    r.json.checks.map((c: { check: string; ok: boolean }) => [c.check, c.ok]),
    [
      ['stripe_configured', true],
      ['customer_linked', true],
      ['live_environment', true],
    ],
  );
  const byName = Object.fromEntries(
    r.json.meters.map((m: { event_name: string; checks: { check: string; ok: boolean; reason: string }[] }) => [
      m.event_name,
      m,
    ]),
  );
  assert.equal(byName['ready.api.call'].ready, true);
  const missing = byName['ready.missing'];
  assert.equal(missing.ready, false);
  const reasons = Object.fromEntries(
    missing.checks.map((c: { check: string; ok: boolean; reason: string }) => [c.check, c]),
  );
  assert.match(reasons.stripe_meter_active.reason, /no meter with event_name ready\.missing/);
  assert.match(reasons.last_push_succeeded.reason, /rejected: no meter/);
  assert.match(reasons.no_unbillable_rows.reason, /^1 rows/);

  const bare = await stores.workspace();
  const noCustomer = await call(s.url, 'GET', ws(bare.workspace.id, '/billing/readiness'), { token: bare.token });
  assert.equal(noCustomer.json.checks[1].ok, false);
  assert.match(noCustomer.json.checks[1].reason, /no Stripe customer/);
});

test('billing readiness: concurrent and repeated calls share one Stripe meter listing', async () => {
  const a = await stores.workspace();
  await stores.pool.query(
    `INSERT INTO billing_pushes (workspace_id, event_type, window_start, window_end, revision, identifier, stripe_customer_id,
       value_field, total, value, status, event_name, currency)
     VALUES ($1, 'shared.call', now() - interval '2 hours', now() - interval '1 hour', 1, $1 || 'shared', 'cus_x', 'quantity', 1, 1, 'sent', 'shared.call', '')`,
    [a.workspace.id],
  );
  const stripe = new Stripe(KEY, { host: '127.0.0.1', port: Number(new URL(stripeUrl).port), protocol: 'http' });
  const lists: string[] = [];
  stripe.on('request', (r: { path: string }) => lists.push(r.path));
  const svc = new ReadinessService(stores.pool, stripe);
  await Promise.all(Array.from({ length: 10 }, () => svc.of(a.workspace.id, 'cus_x')));
  for (let i = 0; i < 10; i++) await svc.of(a.workspace.id, 'cus_x');
  assert.deepEqual(
    lists,
    ['/v1/billing/meters?limit=100'],
    'one listing (fewer than 100 meters: one page) for 20 calls',
  );
});

test('event explorer: newest first, keyset pages with no overlap, filters, and recent rejections', async () => {
  const a = await stores.workspace();
  const b = await stores.workspace();
  const now = Math.floor(Date.now() / 1000);
  const rows = [];
  for (let i = 0; i < 25; i++) {
    const t = now - 60 - i * 1800; // every 30 minutes back: the pages cross hours and windows
    rows.push({
      workspace_id: a.workspace.id,
      event_type: i % 2 === 0 ? 'checkout.completed' : 'api.call',
      idempotency_key: `k${i}`,
      event_id: `evt_${i}`,
      quantity: 1,
      gmv_cents: i,
      currency: 'USD',
      occurred_at: t,
      received_at: t,
    });
  }
  // A replayed copy (same triple and hour) shows once; another workspace's event never shows.
  rows.push({ ...rows[0]!, event_id: 'evt_0_copy', received_at: now });
  rows.push({ ...rows[1]!, workspace_id: b.workspace.id });
  await stores.clickhouse.insert({ table: 'events', values: rows, format: 'JSONEachRow' });

  const seen: string[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 5; page++) {
    const q: string = `/events?limit=10${cursor === null ? '' : `&cursor=${cursor}`}`;
    const r = await call(s.url, 'GET', ws(a.workspace.id, q), { token: a.token });
    assert.equal(r.status, 200, r.text);
    seen.push(...r.json.data.map((e: { idempotency_key: string }) => e.idempotency_key));
    cursor = r.json.next_cursor;
    if (cursor === null) break;
  }
  assert.deepEqual(
    seen,
    rows.slice(0, 25).map((r) => r.idempotency_key),
  );
  const first = await call(s.url, 'GET', ws(a.workspace.id, '/events?limit=1'), { token: a.token });
  assert.equal(first.json.data[0].id, 'evt_0', 'the copy every reader counts (the first received)');
  const typed = await call(s.url, 'GET', ws(a.workspace.id, '/events?event_type=api.call&limit=200'), {
    token: a.token,
  });
  assert.equal(typed.json.data.length, 12);
  const one = await call(s.url, 'GET', ws(a.workspace.id, '/events?idempotency_key=k7'), { token: a.token });
  assert.deepEqual(
    one.json.data.map((e: { id: string }) => e.id),
    ['evt_7'],
  );
  const from = new Date((now - 3 * 3600) * 1000).toISOString();
  const ranged = await call(s.url, 'GET', ws(a.workspace.id, `/events?from=${from}&limit=200`), { token: a.token });
  assert.equal(ranged.json.data.length, 6);

  const log = new RejectionLog(stores.redis, stores.redisPrefix, 3_600_000, () => {});
  log.record(a.workspace.id, { at: Date.now() - 8 * 86_400_000, code: 'invalid_currency', message: 'old' });
  log.record(a.workspace.id, { at: Date.now(), code: 'invalid_currency', message: 'bad', field: 'currency' });
  log.record(b.workspace.id, { at: Date.now(), code: 'unknown_field', message: 'b' });
  await log.close();
  const rej = await call(s.url, 'GET', ws(a.workspace.id, '/events/rejections'), { token: a.token });
  assert.deepEqual(
    rej.json.data.map((r: { code: string; field?: string }) => [r.code, r.field]),
    [['invalid_currency', 'currency']],
    'newest first, none older than 7 days, none of another workspace',
  );
});

test('the events page lists stored events and recent rejections; billing shows readiness', async () => {
  const { workspace, token } = await stores.workspace();
  const r = await call(s.url, 'POST', '/dashboard/api/session', { body: { api_key: token } });
  const cookie = (r.headers.get('set-cookie') ?? '').split(';')[0]!;
  const now = Math.floor(Date.now() / 1000) - 60;
  await stores.clickhouse.insert({
    table: 'events',
    values: [
      {
        workspace_id: workspace.id,
        event_type: 'api.call',
        idempotency_key: 'dash-1',
        event_id: 'evt_d1',
        quantity: 2,
        gmv_cents: 0,
        currency: 'USD',
        occurred_at: now,
        received_at: now,
      },
    ],
    format: 'JSONEachRow',
  });
  const log = new RejectionLog(stores.redis, stores.redisPrefix, 3_600_000, () => {});
  log.record(workspace.id, { at: Date.now(), code: 'invalid_currency', message: 'bad', field: 'currency' });
  await log.close();
  const ev = await call(s.url, 'GET', '/dashboard/api/events', { headers: { cookie } });
  assert.deepEqual(
    ev.json.data.map((e: { id: string }) => e.id),
    ['evt_d1'],
  );
  const rej = await call(s.url, 'GET', '/dashboard/api/events/rejections', { headers: { cookie } });
  assert.equal(rej.json.data[0].code, 'invalid_currency');
  const ready = await call(s.url, 'GET', '/dashboard/api/billing/readiness', { headers: { cookie } });
  assert.equal(ready.json.checks[0].check, 'stripe_configured');
  const page = await call(s.url, 'GET', '/dashboard/events', { headers: { cookie } });
  assert.equal(page.status, 200);
  assert.match(page.text, /aria-current="page">Events</);
  assert.equal((await call(s.url, 'GET', '/dashboard/api/events')).status, 401, 'no session, no events');
});

test('billing readiness reads only the recent ledger: a year of history is never visited', async () => {
  const seen: { text: string; values: unknown[] }[] = [];
  const recording = {
    query: (text: string, values: unknown[]) => {
      seen.push({ text, values });
      return stores.pool.query(text, values);
    },
  } as unknown as typeof stores.pool;
  const { workspace } = await stores.workspace('growth');
  // A year of hourly ledger rows, all older than the 35 days readiness looks at.
  await stores.pool.query(
    `INSERT INTO billing_pushes (workspace_id, event_type, currency, event_name, window_start, window_end, revision,
       identifier, stripe_customer_id, value_field, total, value, status, created_at)
     SELECT $1, 'checkout.completed', 'usd', 'checkout.completed.usd', t, t + interval '1 hour', 1,
       $1 || ':' || extract(epoch FROM t), 'cus_x', 'gmv_cents', 1, 1, 'sent', t
       FROM generate_series(now() - interval '400 days', now() - interval '40 days', interval '1 hour') AS t`,
    [workspace.id],
  );
  await stores.pool.query('ANALYZE billing_pushes');
  await new ReadinessService(recording, null).of(workspace.id, null);
  const ledger = seen.find((q) => q.text.includes('billing_pushes'));
  assert.ok(ledger, 'the readiness check reads the ledger');
  const { rows } = await stores.pool.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE) ${ledger.text}`, ledger.values);
  const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
  // Without an index bounding the read by time, the plan walks the workspace's 8,000+ old rows and
  // filters them out one by one.
  const removed = [...plan.matchAll(/Rows Removed by Filter: (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
  assert.ok(removed < 100, plan);
});
