import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';

let stores: TestStores;
let s: ControlServer;

before(async () => {
  stores = await openTestStores('ctlapp');
  s = await startTestControl(stores);
});
after(async () => {
  await s.close();
  await stores.close();
});

test('health, readiness and Prometheus metrics answer', async () => {
  assert.equal((await call(s.url, 'GET', '/healthz')).status, 200);
  const ready = await call(s.url, 'GET', '/readyz');
  assert.deepEqual([ready.status, ready.json.postgres, ready.json.redis], [200, true, true]);
  const m = await call(s.url, 'GET', '/metrics');
  assert.match(m.text, /# TYPE meterd_control_requests_total counter/);
});

test('errors use the documented body with registry codes', async () => {
  const nf = await call(s.url, 'GET', '/nope');
  assert.equal(nf.status, 404);
  assert.equal(nf.json.error.code, 'not_found');
  const bad = await call(s.url, 'POST', '/api/v1/signup', { raw: '{"slug":' });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.code, 'invalid_json');
  const media = await call(s.url, 'POST', '/api/v1/signup', {
    raw: 'slug=x',
    headers: { 'content-type': 'text/plain' },
  });
  assert.equal(media.status, 415);
  assert.equal(media.json.error.code, 'unsupported_media_type');
  const noKey = await call(s.url, 'GET', '/api/v1/workspaces/ws_x/api-keys');
  assert.equal(noKey.status, 401);
  assert.equal(noKey.json.error.code, 'missing_api_key');
});

test('an unexpected error is a 500 without internals', async () => {
  // A control API whose database does not exist: its queries fail with errors that are not ApiErrors.
  const broken = await startTestControl(stores, {
    DATABASE_URL: stores.databaseUrl.toString().replace(/\/[^/]+$/, '/meterd_no_such_db'),
  });
  try {
    const res = await call(broken.url, 'POST', '/api/v1/signup', { body: { slug: 'boom-co', display_name: 'Boom' } });
    assert.equal(res.status, 500);
    assert.deepEqual(res.json, { error: { code: 'internal_error', message: 'internal error' } });
  } finally {
    await broken.close();
  }
});

test('the OpenAPI document lists the endpoints of docs/api.md', async () => {
  const doc = (await call(s.url, 'GET', '/api/v1/openapi.json')).json;
  assert.equal(doc.openapi, '3.1.0');
  for (const p of [
    '/api/v1/signup',
    '/api/v1/provision',
    '/api/v1/workspaces/{id}/webhooks',
    '/api/v1/workspaces/{id}/webhooks/{webhook_id}/reactivate',
    '/webhooks/stripe',
    '/api/v1/workspaces/{id}/billing/portal-session',
  ]) {
    assert.ok(doc.paths[p], `missing ${p}`);
  }
  assert.ok(doc.components.schemas.Error.properties.error.properties.code.enum.includes('plan_limit_exceeded'));
});
