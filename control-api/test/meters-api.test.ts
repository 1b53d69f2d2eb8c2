import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { METER_BACKFILL_ERRORS, METER_LIMITS, meterBackfillErrorText } from '@meterd/core/meters';
import { insertApiKey, testBucketOf } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, OPERATOR_KEY, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';
import { MAX_ALERTS_PER_WORKSPACE } from '../src/services/alerts.js';

/**
 * The meters and alerts API (docs/api.md §14, docs/meters.md) against real Postgres: what a create
 * stores (backfill pending), what PATCH may change, soft delete, the limits and uniqueness, scopes
 * and environments, and bad input for every endpoint: each answered with its code and field, and the
 * tables unchanged.
 */
let stores: TestStores;
let s: ControlServer;

before(async () => {
  stores = await openTestStores('ctlmeters');
  s = await startTestControl(stores);
});
after(async () => {
  await s.close();
  await stores.close();
});

const path = (id: string, rest = '') => `/api/v1/workspaces/${id}${rest}`;
const HOUR = 3_600_000;
const DAY = 86_400_000;

const METER = {
  slug: 'llm-tokens',
  name: 'LLM tokens',
  event_types: ['llm.call'],
  aggregation: 'sum',
  value_field: 'quantity',
  group_by: ['model', 'region'],
  stripe_event_name: 'llm_tokens',
} as const;

async function workspace() {
  const w = await stores.workspace('growth');
  return { id: w.workspace.id, token: w.token };
}

/** Everything stored about a workspace's meters and alerts: compared before and after a refused request. */
async function snapshot(ws: string): Promise<string> {
  const m = await stores.pool.query('SELECT * FROM meters WHERE workspace_id = $1 ORDER BY id', [ws]);
  const a = await stores.pool.query('SELECT * FROM meter_alerts WHERE workspace_id = $1 ORDER BY id', [ws]);
  return JSON.stringify([m.rows, a.rows]);
}

async function createMeter(w: { id: string; token: string }, body: object = METER) {
  const r = await call(s.url, 'POST', path(w.id, '/meters'), { token: w.token, body });
  assert.equal(r.status, 201, r.text);
  return r.json.meter;
}

/** Sends each bad request and checks its status, code and field, and that nothing changed. */
async function refused(
  w: { id: string; token: string },
  cases: {
    method: string;
    url: string;
    body?: unknown;
    raw?: string;
    token?: string;
    status: number;
    code: string;
    field?: string;
  }[],
) {
  for (const c of cases) {
    const before = await snapshot(w.id);
    const r = await call(s.url, c.method, c.url, {
      token: c.token ?? w.token,
      ...(c.body === undefined ? {} : { body: c.body }),
      ...(c.raw === undefined ? {} : { raw: c.raw }),
    });
    const what = `${c.method} ${c.url} ${c.raw ?? JSON.stringify(c.body)}`;
    assert.equal(r.status, c.status, `${what}: ${r.text}`);
    assert.equal(r.json.error.code, c.code, `${what}: ${r.text}`);
    if (c.field !== undefined) assert.equal(r.json.error.field, c.field, `${what}: ${r.text}`);
    assert.equal(await snapshot(w.id), before, `${what} changed nothing`);
  }
}

test('a meter is created with its backfill pending over the 35 days before the next hour, read by slug or id, listed', async () => {
  const w = await workspace();
  const t0 = Date.now();
  const m = await createMeter(w);
  assert.match(m.id, /^mtr_[A-Za-z0-9]{20}$/);
  assert.deepEqual(
    [m.slug, m.name, m.description, m.event_types, m.aggregation, m.value_field, m.group_by, m.stripe_event_name],
    ['llm-tokens', 'LLM tokens', '', ['llm.call'], 'sum', 'quantity', ['model', 'region'], 'llm_tokens'],
  );
  const until = Date.parse(m.backfill.until);
  assert.equal(until % HOUR, 0);
  assert.ok(until > t0 && until <= t0 + HOUR + 5_000, m.backfill.until);
  assert.equal(Date.parse(m.backfill.from), until - 35 * DAY);
  assert.deepEqual([m.backfill.state, m.backfill.done_before, m.backfill.error], ['pending', m.backfill.until, null]);
  const { rows } = await stores.pool.query(
    'SELECT backfill_state, backfill_from, backfill_until, backfill_done_before, deleted_at FROM meters WHERE id = $1',
    [m.id],
  );
  assert.deepEqual(rows[0], {
    backfill_state: 'pending',
    backfill_from: new Date(m.backfill.from),
    backfill_until: new Date(until),
    backfill_done_before: new Date(until),
    deleted_at: null,
  });

  const count = await createMeter(w, { slug: 'calls', event_types: ['api.call', 'llm.call'], aggregation: 'count' });
  assert.equal(count.value_field, null);
  for (const key of [m.slug, m.id]) {
    const r = await call(s.url, 'GET', path(w.id, `/meters/${key}`), { token: w.token });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.meter, m);
  }
  const list = await call(s.url, 'GET', path(w.id, '/meters'), { token: w.token });
  assert.deepEqual(
    list.json.data.map((x: { slug: string }) => x.slug),
    ['calls', 'llm-tokens'],
  );
});

test('PATCH changes name, description and stripe_event_name only; a computation field or the slug with another value is 409 meter_immutable', async () => {
  const w = await workspace();
  const m = await createMeter(w);
  const one = path(w.id, `/meters/${m.slug}`);
  const ok = await call(s.url, 'PATCH', one, {
    token: w.token,
    // The computation fields with their current values change nothing and are accepted.
    body: {
      name: 'Tokens',
      description: 'per model',
      stripe_event_name: null,
      aggregation: 'sum',
      group_by: ['model', 'region'],
    },
  });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(
    [ok.json.meter.name, ok.json.meter.description, ok.json.meter.stripe_event_name],
    ['Tokens', 'per model', null],
  );
  assert.ok(ok.json.meter.updated_at > m.updated_at);
  await refused(w, [
    {
      method: 'PATCH',
      url: one,
      body: { aggregation: 'max' },
      status: 409,
      code: 'meter_immutable',
      field: 'aggregation',
    },
    {
      method: 'PATCH',
      url: one,
      body: { name: 'x', group_by: ['model'] },
      status: 409,
      code: 'meter_immutable',
      field: 'group_by',
    },
    {
      method: 'PATCH',
      url: one,
      body: { event_types: ['other'] },
      status: 409,
      code: 'meter_immutable',
      field: 'event_types',
    },
    {
      method: 'PATCH',
      url: one,
      body: { value_field: 'gmv_cents' },
      status: 409,
      code: 'meter_immutable',
      field: 'value_field',
    },
    { method: 'PATCH', url: one, body: { slug: 'renamed' }, status: 409, code: 'meter_immutable', field: 'slug' },
    { method: 'PATCH', url: one, body: {}, status: 400, code: 'invalid_body' },
    { method: 'PATCH', url: one, body: { name: 5 }, status: 400, code: 'invalid_field', field: 'name' },
    { method: 'PATCH', url: one, body: { name: 'x'.repeat(201) }, status: 400, code: 'invalid_field', field: 'name' },
    {
      method: 'PATCH',
      url: one,
      body: { description: 'x'.repeat(1001) },
      status: 400,
      code: 'invalid_field',
      field: 'description',
    },
    {
      method: 'PATCH',
      url: one,
      body: { stripe_event_name: 'has space' },
      status: 400,
      code: 'invalid_field',
      field: 'stripe_event_name',
    },
    {
      method: 'PATCH',
      url: one,
      body: { backfill_state: 'done' },
      status: 400,
      code: 'unknown_field',
      field: 'backfill_state',
    },
    { method: 'PATCH', url: path(w.id, '/meters/nope'), body: { name: 'x' }, status: 404, code: 'resource_not_found' },
  ]);
});

test('DELETE is soft: the row keeps deleted_at, the meter and its alerts are gone from the API, its slug and Stripe event_name are free', async () => {
  const w = await workspace();
  const m = await createMeter(w);
  const a = await call(s.url, 'POST', path(w.id, '/alerts'), {
    token: w.token,
    body: { meter: m.slug, threshold_kind: 'absolute', threshold: 10, period: 'day' },
  });
  assert.equal(a.status, 201, a.text);
  const del = await call(s.url, 'DELETE', path(w.id, `/meters/${m.slug}`), { token: w.token });
  assert.equal(del.status, 200, del.text);
  const { rows } = await stores.pool.query(
    'SELECT (m.deleted_at IS NOT NULL) AS m, (a.deleted_at IS NOT NULL) AS a FROM meters m JOIN meter_alerts a ON a.meter_id = m.id WHERE m.id = $1',
    [m.id],
  );
  assert.deepEqual(rows, [{ m: true, a: true }]);
  assert.equal((await call(s.url, 'GET', path(w.id, `/meters/${m.slug}`), { token: w.token })).status, 404);
  assert.deepEqual((await call(s.url, 'GET', path(w.id, '/alerts'), { token: w.token })).json.data, []);
  await refused(w, [
    { method: 'DELETE', url: path(w.id, `/meters/${m.slug}`), status: 404, code: 'resource_not_found' },
  ]);
  const again = await createMeter(w);
  assert.notEqual(again.id, m.id, 'a new meter, whose rollups start clean');
});

test('slug and Stripe event_name are unique among live meters (409), and a workspace has at most 50 meters', async () => {
  const w = await workspace();
  await createMeter(w);
  const other = await createMeter(w, {
    slug: 'other',
    event_types: ['x'],
    aggregation: 'count',
    stripe_event_name: 'other_ev',
  });
  await refused(w, [
    {
      method: 'POST',
      url: path(w.id, '/meters'),
      body: { ...METER, stripe_event_name: 'fresh' },
      status: 409,
      code: 'meter_slug_taken',
      field: 'slug',
    },
    {
      method: 'POST',
      url: path(w.id, '/meters'),
      body: { ...METER, slug: 'fresh' },
      status: 409,
      code: 'stripe_event_name_taken',
      field: 'stripe_event_name',
    },
    {
      method: 'PATCH',
      url: path(w.id, `/meters/${other.slug}`),
      body: { stripe_event_name: 'llm_tokens' },
      status: 409,
      code: 'stripe_event_name_taken',
      field: 'stripe_event_name',
    },
  ]);
  // Another workspace may use the same slug and event_name.
  await createMeter(await workspace());

  const full = await workspace();
  await stores.pool.query(
    `INSERT INTO meters (id, workspace_id, slug, event_types, aggregation)
     SELECT 'mtr_fill' || w.id || i, w.id, 'm' || i, '{x}', 'count' FROM (SELECT $1::text AS id) w, generate_series(1, $2) i`,
    [full.id, METER_LIMITS.maxMetersPerWorkspace],
  );
  await refused(full, [
    { method: 'POST', url: path(full.id, '/meters'), body: METER, status: 409, code: 'meter_limit_exceeded' },
  ]);
});

test('bad input to POST …/meters gets its code naming the field, and stores nothing', async () => {
  const w = await workspace();
  const url = path(w.id, '/meters');
  const post = (body: unknown, status: number, code: string, field?: string) => ({
    method: 'POST',
    url,
    body,
    status,
    code,
    ...(field === undefined ? {} : { field }),
  });
  const { slug: _s, ...noSlug } = METER;
  const { event_types: _e, ...noTypes } = METER;
  const { aggregation: _a, ...noAgg } = METER;
  await refused(w, [
    post(noSlug, 400, 'missing_field', 'slug'),
    post(noTypes, 400, 'missing_field', 'event_types'),
    post(noAgg, 400, 'missing_field', 'aggregation'),
    post({ ...METER, slug: 'Bad Slug' }, 400, 'invalid_field', 'slug'),
    post({ ...METER, slug: '-lead' }, 400, 'invalid_field', 'slug'),
    post({ ...METER, slug: 'a'.repeat(64) }, 400, 'invalid_field', 'slug'),
    post({ ...METER, slug: 7 }, 400, 'invalid_field', 'slug'),
    post({ ...METER, event_types: [] }, 400, 'invalid_field', 'event_types'),
    post({ ...METER, event_types: 'llm.call' }, 400, 'invalid_field', 'event_types'),
    post({ ...METER, event_types: ['a b'] }, 400, 'invalid_field', 'event_types.0'),
    post({ ...METER, event_types: ['x'.repeat(101)] }, 400, 'invalid_field', 'event_types.0'),
    post({ ...METER, event_types: ['a', 'a'] }, 400, 'invalid_field', 'event_types'),
    post({ ...METER, event_types: Array.from({ length: 11 }, (_, i) => `t${i}`) }, 400, 'invalid_field', 'event_types'),
    post({ ...METER, aggregation: 'avg' }, 400, 'invalid_field', 'aggregation'),
    post({ ...METER, value_field: 'price' }, 400, 'invalid_field', 'value_field'),
    post({ ...METER, value_field: 'properties.' }, 400, 'invalid_field', 'value_field'),
    post({ ...METER, value_field: `properties.${'k'.repeat(65)}` }, 400, 'invalid_field', 'value_field'),
    post({ ...METER, value_field: null }, 400, 'invalid_field', 'value_field'),
    post({ ...METER, value_field: undefined }, 400, 'invalid_field', 'value_field'),
    post({ ...METER, aggregation: 'count' }, 400, 'invalid_field', 'value_field'),
    post({ ...METER, group_by: ['a', 'b', 'c', 'd'] }, 400, 'invalid_field', 'group_by'),
    post({ ...METER, group_by: ['model', 'model'] }, 400, 'invalid_field', 'group_by'),
    post({ ...METER, group_by: ['bad key'] }, 400, 'invalid_field', 'group_by.0'),
    post({ ...METER, group_by: ['k'.repeat(65)] }, 400, 'invalid_field', 'group_by.0'),
    post({ ...METER, group_by: 'model' }, 400, 'invalid_field', 'group_by'),
    post({ ...METER, stripe_event_name: 'has space' }, 400, 'invalid_field', 'stripe_event_name'),
    post({ ...METER, stripe_event_name: 'e'.repeat(101) }, 400, 'invalid_field', 'stripe_event_name'),
    post({ ...METER, name: 'n'.repeat(201) }, 400, 'invalid_field', 'name'),
    post({ ...METER, filter: { model: 'x' } }, 400, 'unknown_field', 'filter'),
    post([METER], 400, 'invalid_body'),
    { method: 'POST', url, raw: '{"slug":', status: 400, code: 'invalid_json' },
    { method: 'POST', url, raw: `{"slug":"${'a'.repeat(300_000)}"}`, status: 413, code: 'payload_too_large' },
  ]);
});

test('a meter Stripe cannot bill exactly (max, unique_count, latest; a group key named like a payload key) is refused a stripe_event_name, at create and PATCH', async () => {
  const w = await workspace();
  const url = path(w.id, '/meters');
  const post = (body: unknown, field: string) => ({
    method: 'POST',
    url,
    body,
    status: 400,
    code: 'invalid_field',
    field,
  });
  await refused(w, [
    ...(['max', 'unique_count', 'latest'] as const).map((aggregation) =>
      post({ ...METER, aggregation }, 'stripe_event_name'),
    ),
    post({ ...METER, group_by: ['model', 'value'] }, 'group_by'),
    post({ ...METER, group_by: ['stripe_customer_id'] }, 'group_by'),
  ]);
  // Without a stripe_event_name they are fine, and count meters are billable.
  const peak = await createMeter(w, { ...METER, slug: 'peak', aggregation: 'max', stripe_event_name: null });
  await createMeter(w, { slug: 'calls', event_types: ['llm.call'], aggregation: 'count', stripe_event_name: 'calls' });
  await refused(w, [
    {
      method: 'PATCH',
      url: path(w.id, `/meters/${peak.slug}`),
      body: { stripe_event_name: 'llm_peak' },
      status: 400,
      code: 'invalid_field',
      field: 'stripe_event_name',
    },
  ]);
});

test("another workspace's meter or alert is 404 through one's own path (nothing leaks), another workspace's path 403", async () => {
  const mine = await workspace();
  const theirs = await workspace();
  const m = await createMeter(theirs);
  const a = await call(s.url, 'POST', path(theirs.id, '/alerts'), {
    token: theirs.token,
    body: { meter: m.id, threshold_kind: 'absolute', threshold: 5, period: 'month' },
  });
  assert.equal(a.status, 201, a.text);
  const before = await snapshot(theirs.id);
  for (const key of [m.id, m.slug]) {
    await refused(mine, [
      { method: 'GET', url: path(mine.id, `/meters/${key}`), status: 404, code: 'resource_not_found' },
      {
        method: 'PATCH',
        url: path(mine.id, `/meters/${key}`),
        body: { name: 'x' },
        status: 404,
        code: 'resource_not_found',
      },
      { method: 'DELETE', url: path(mine.id, `/meters/${key}`), status: 404, code: 'resource_not_found' },
      {
        method: 'POST',
        url: path(mine.id, '/alerts'),
        body: { meter: key, threshold_kind: 'absolute', threshold: 1, period: 'day' },
        status: 404,
        code: 'resource_not_found',
        field: 'meter',
      },
    ]);
  }
  await refused(mine, [
    { method: 'GET', url: path(mine.id, `/alerts/${a.json.alert.id}`), status: 404, code: 'resource_not_found' },
    { method: 'DELETE', url: path(mine.id, `/alerts/${a.json.alert.id}`), status: 404, code: 'resource_not_found' },
    { method: 'GET', url: path(theirs.id, '/meters'), status: 403, code: 'workspace_mismatch' },
    {
      method: 'POST',
      url: path(theirs.id, '/meters'),
      body: { ...METER, slug: 'mine' },
      status: 403,
      code: 'workspace_mismatch',
    },
    { method: 'GET', url: path(theirs.id, '/alerts'), status: 403, code: 'workspace_mismatch' },
  ]);
  const list = await call(s.url, 'GET', path(mine.id, '/meters'), { token: mine.token });
  assert.deepEqual(list.json.data, []);
  assert.ok(!list.text.includes(m.id));
  assert.equal(await snapshot(theirs.id), before);
});

test('scopes and environments: meter:read reads, admin writes; a test key reads the live definitions and never changes them; the operator may', async () => {
  const w = await workspace();
  const m = await createMeter(w);
  const reader = (await insertApiKey(stores.pool, w.id, ['meter:read'])).token;
  const writer = (await insertApiKey(stores.pool, w.id, ['meter:write'])).token;
  const testBucket = (await testBucketOf(stores.pool, w.id))!;
  const testKey = (await insertApiKey(stores.pool, testBucket, ['admin', 'meter:read'])).token;

  for (const [token, at] of [
    [reader, w.id],
    [testKey, w.id],
    [testKey, testBucket],
  ] as const) {
    const r = await call(s.url, 'GET', path(at, `/meters/${m.slug}`), { token });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.meter.id, m.id, 'the test environment sees the live definitions');
  }
  const alert = { meter: m.slug, threshold_kind: 'absolute', threshold: 3, period: 'day' };
  await refused(w, [
    { method: 'GET', url: path(w.id, '/meters'), token: writer, status: 403, code: 'insufficient_scope' },
    { method: 'GET', url: path(w.id, '/alerts'), token: writer, status: 403, code: 'insufficient_scope' },
    {
      method: 'POST',
      url: path(w.id, '/meters'),
      token: reader,
      body: { ...METER, slug: 'r' },
      status: 403,
      code: 'insufficient_scope',
    },
    {
      method: 'PATCH',
      url: path(w.id, `/meters/${m.slug}`),
      token: reader,
      body: { name: 'r' },
      status: 403,
      code: 'insufficient_scope',
    },
    { method: 'DELETE', url: path(w.id, `/meters/${m.slug}`), token: reader, status: 403, code: 'insufficient_scope' },
    { method: 'POST', url: path(w.id, '/alerts'), token: reader, body: alert, status: 403, code: 'insufficient_scope' },
    {
      method: 'POST',
      url: path(w.id, '/meters'),
      token: 'sks_live_wrong',
      body: METER,
      status: 401,
      code: 'invalid_api_key',
    },
    {
      method: 'POST',
      url: path(testBucket, '/meters'),
      token: testKey,
      body: { ...METER, slug: 't' },
      status: 403,
      code: 'workspace_mismatch',
    },
    {
      method: 'PATCH',
      url: path(testBucket, `/meters/${m.slug}`),
      token: testKey,
      body: { name: 't' },
      status: 403,
      code: 'workspace_mismatch',
    },
    { method: 'DELETE', url: path(w.id, `/meters/${m.slug}`), token: testKey, status: 403, code: 'workspace_mismatch' },
    {
      method: 'POST',
      url: path(w.id, '/alerts'),
      token: testKey,
      body: alert,
      status: 403,
      code: 'workspace_mismatch',
    },
  ]);
  // A live key asking for the test environment acts on the live definitions; so does the operator.
  const viaTest = await call(s.url, 'POST', path(w.id, '/meters?environment=test'), {
    token: w.token,
    body: { ...METER, slug: 'via-test', stripe_event_name: null },
  });
  assert.equal(viaTest.status, 201, viaTest.text);
  const op = await call(s.url, 'PATCH', path(w.id, '/meters/via-test'), { token: OPERATOR_KEY, body: { name: 'op' } });
  assert.equal(op.status, 200, op.text);
  const { rows } = await stores.pool.query(
    'SELECT workspace_id FROM meters WHERE slug = $1 AND workspace_id = ANY($2)',
    ['via-test', [w.id, testBucket]],
  );
  assert.deepEqual(rows, [{ workspace_id: w.id }]);
});

test('a create with an Idempotency-Key retried answers the first meter and stores one', async () => {
  const w = await workspace();
  const headers = { 'idempotency-key': 'meter-create-1' };
  const first = await call(s.url, 'POST', path(w.id, '/meters'), { token: w.token, body: METER, headers });
  const again = await call(s.url, 'POST', path(w.id, '/meters'), { token: w.token, body: METER, headers });
  assert.equal(first.status, 201, first.text);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(again.json, first.json);
  const { rows } = await stores.pool.query('SELECT count(*)::int AS n FROM meters WHERE workspace_id = $1', [w.id]);
  assert.equal(rows[0].n, 1);
});

test('alerts: created on a meter by slug or id, listed (also per meter), read, deleted', async () => {
  const w = await workspace();
  const m = await createMeter(w);
  const calls = await createMeter(w, { slug: 'calls', event_types: ['api.call'], aggregation: 'count' });
  const a1 = await call(s.url, 'POST', path(w.id, '/alerts'), {
    token: w.token,
    body: {
      meter: m.slug,
      threshold_kind: 'absolute',
      threshold: 1000.5,
      period: 'day',
      group_value: { model: 'gpt-4' },
    },
  });
  assert.equal(a1.status, 201, a1.text);
  assert.match(a1.json.alert.id, /^alr_/);
  assert.deepEqual(
    { ...a1.json.alert, id: undefined, created_at: undefined },
    {
      id: undefined,
      created_at: undefined,
      meter: { id: m.id, slug: m.slug },
      threshold_kind: 'absolute',
      threshold: 1000.5,
      period: 'day',
      group_value: { model: 'gpt-4' },
      last_fired_at: null,
    },
  );
  const a2 = await call(s.url, 'POST', path(w.id, '/alerts'), {
    token: w.token,
    body: { meter: calls.id, threshold_kind: 'quota_percent', threshold: 80, period: 'month' },
  });
  assert.equal(a2.status, 201, a2.text);
  const all = await call(s.url, 'GET', path(w.id, '/alerts'), { token: w.token });
  assert.deepEqual(
    all.json.data.map((a: { id: string }) => a.id),
    [a1.json.alert.id, a2.json.alert.id],
  );
  const ofCalls = await call(s.url, 'GET', path(w.id, '/alerts?meter=calls'), { token: w.token });
  assert.deepEqual(
    ofCalls.json.data.map((a: { id: string }) => a.id),
    [a2.json.alert.id],
  );
  const one = await call(s.url, 'GET', path(w.id, `/alerts/${a1.json.alert.id}`), { token: w.token });
  assert.deepEqual(one.json.alert, a1.json.alert);
  assert.equal(
    (await call(s.url, 'DELETE', path(w.id, `/alerts/${a1.json.alert.id}`), { token: w.token })).status,
    204,
  );
  const { rows } = await stores.pool.query('SELECT deleted_at IS NOT NULL AS gone FROM meter_alerts WHERE id = $1', [
    a1.json.alert.id,
  ]);
  assert.deepEqual(rows, [{ gone: true }], 'soft: its firings keep their alert');
  await refused(w, [
    { method: 'DELETE', url: path(w.id, `/alerts/${a1.json.alert.id}`), status: 404, code: 'resource_not_found' },
  ]);
});

test('bad input to the alerts endpoints gets its code naming the field, and stores nothing', async () => {
  const w = await workspace();
  const m = await createMeter(w);
  await createMeter(w, { slug: 'flat', event_types: ['x'], aggregation: 'count' });
  const url = path(w.id, '/alerts');
  const ok = { meter: m.slug, threshold_kind: 'absolute', threshold: 10, period: 'day' };
  const post = (body: unknown, status: number, code: string, field?: string) => ({
    method: 'POST',
    url,
    body,
    status,
    code,
    ...(field === undefined ? {} : { field }),
  });
  const { meter: _m, ...noMeter } = ok;
  const { threshold: _t, ...noThreshold } = ok;
  await refused(w, [
    post(noMeter, 400, 'missing_field', 'meter'),
    post(noThreshold, 400, 'missing_field', 'threshold'),
    post({ ...ok, meter: 'nope' }, 404, 'resource_not_found', 'meter'),
    post({ ...ok, meter: '' }, 400, 'invalid_field', 'meter'),
    post({ ...ok, meter: 'm'.repeat(101) }, 400, 'invalid_field', 'meter'),
    post({ ...ok, threshold: 0 }, 400, 'invalid_field', 'threshold'),
    post({ ...ok, threshold: -5 }, 400, 'invalid_field', 'threshold'),
    post({ ...ok, threshold: '10' }, 400, 'invalid_field', 'threshold'),
    post({ ...ok, threshold: 2 ** 60 }, 400, 'invalid_field', 'threshold'),
    post({ ...ok, threshold_kind: 'relative' }, 400, 'invalid_field', 'threshold_kind'),
    post({ ...ok, period: 'week' }, 400, 'invalid_field', 'period'),
    post({ ...ok, threshold_kind: 'quota_percent' }, 400, 'invalid_field', 'period'),
    post({ ...ok, group_value: { provider: 'x' } }, 400, 'invalid_field', 'group_value.provider'),
    post({ ...ok, meter: 'flat', group_value: { model: 'x' } }, 400, 'invalid_field', 'group_value.model'),
    post({ ...ok, group_value: { model: 5 } }, 400, 'invalid_field', 'group_value.model'),
    post({ ...ok, group_value: { model: 'v'.repeat(257) } }, 400, 'invalid_field', 'group_value.model'),
    post({ ...ok, group_value: {} }, 400, 'invalid_field', 'group_value'),
    post({ ...ok, group_value: { a: '1', b: '2', c: '3', d: '4' } }, 400, 'invalid_field', 'group_value'),
    post({ ...ok, group_value: ['model'] }, 400, 'invalid_field', 'group_value'),
    post({ ...ok, group_value: { 'bad key': 'x' } }, 400, 'invalid_field', 'group_value'),
    post({ ...ok, channel: 'email' }, 400, 'unknown_field', 'channel'),
    post('alert', 400, 'invalid_body'),
    { method: 'POST', url, raw: '{', status: 400, code: 'invalid_json' },
    { method: 'GET', url: `${url}?meter=${'m'.repeat(101)}`, status: 400, code: 'invalid_field', field: 'meter' },
    { method: 'GET', url: `${url}?limit=5`, status: 400, code: 'unknown_field', field: 'limit' },
    { method: 'GET', url: `${url}/alr_nope`, status: 404, code: 'resource_not_found' },
  ]);

  await stores.pool.query(
    `INSERT INTO meter_alerts (id, workspace_id, meter_id, threshold_kind, threshold, period)
     SELECT 'alr_fill' || i, $1, $2, 'absolute', i, 'day' FROM generate_series(1, $3) i`,
    [w.id, m.id, MAX_ALERTS_PER_WORKSPACE],
  );
  await refused(w, [post(ok, 409, 'alert_limit_exceeded')]);
});

test("a failed backfill shows in meter.backfill: state failed and the error's stable code with its details", async () => {
  const w = await workspace();
  const m = await createMeter(w);
  // As the aggregator records it (aggregator/src/meters/backfill.ts).
  const error = {
    code: 'meter_backfill_refused' as const,
    message: 'ClickHouse refused the backfill (server code 62)',
  };
  await stores.pool.query(`UPDATE meters SET backfill_state = 'failed', backfill_error = $2 WHERE id = $1`, [
    m.id,
    meterBackfillErrorText(error),
  ]);
  const r = await call(s.url, 'GET', path(w.id, `/meters/${m.slug}`), { token: w.token });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.meter.backfill.state, 'failed');
  assert.deepEqual(r.json.meter.backfill.error, error);
  assert.ok(Object.hasOwn(METER_BACKFILL_ERRORS, r.json.meter.backfill.error.code));
});
