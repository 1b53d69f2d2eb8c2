import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { freePort, startService, waitFor, type Service } from './support/services.js';
import { apiClient } from './support/api.js';

/**
 * A workspace's lifecycle across processes: ingest records the events it refuses for the event
 * explorer (read through the control API), and deleting the workspace stops its key at ingest
 * (whose key cache held it) within the pub/sub round trip, while the operator's finance export
 * stays available.
 */
const OPERATOR = 'operator-lifecycle-key-0123456789';
let stores: TestStores;
let spoolDir: string;
let ingest: Service;
let control: Service;

before(async () => {
  stores = await openTestStores('lifecycle');
  spoolDir = mkdtempSync(join(tmpdir(), 'meterd-lifecycle-'));
  const ip = await freePort();
  ingest = await startService('ingest', 'ingest', ip, {
    ...stores.env,
    INGEST_PORT: String(ip),
    INGEST_THREADS: '1',
    SPOOL_DIR: spoolDir,
    LOG_LEVEL: 'warn',
    DEPLOY_API_KEY: OPERATOR,
  });
  const cp = await freePort();
  control = await startService('control-api', 'control-api', cp, {
    ...stores.env,
    CONTROL_API_PORT: String(cp),
    NODE_ENV: 'development',
    LOG_LEVEL: 'warn',
    DEPLOY_API_KEY: OPERATOR,
    WEBHOOK_WORKER: 'false',
  });
});
after(async () => {
  await control?.stop();
  await ingest?.stop();
  rmSync(spoolDir, { recursive: true, force: true });
  await stores.close();
});

/** Every answer, ingest's included, is checked against the control API's OpenAPI document. */
async function req(base: string, method: string, path: string, token: string, body?: unknown) {
  return apiClient(control.url)(base, method, path, { token, ...(body === undefined ? {} : { body }) });
}

const event = (ws: string, key: string, extra: Record<string, unknown> = {}) => ({
  workspace_id: ws,
  event_type: 'api.call',
  idempotency_key: key,
  ...extra,
});

test('ingest’s refusals are listed by the explorer with their code; other workspaces see none', async () => {
  const a = await stores.workspace();
  const b = await stores.workspace();
  assert.equal((await req(ingest.url, 'POST', '/api/v1/meter', a.token, event(a.workspace.id, 'ok-1'))).status, 202);
  const bad = await req(
    ingest.url,
    'POST',
    '/api/v1/meter',
    a.token,
    event(a.workspace.id, 'bad-1', { currency: 'EURO' }),
  );
  assert.equal(bad.json.error.code, 'invalid_currency');
  const batch = await req(ingest.url, 'POST', '/api/v1/meter/batch', a.token, {
    events: [
      event(a.workspace.id, 'ok-2'),
      event(a.workspace.id, 'bad-2', { gmv_cent: 5 }),
      event(b.workspace.id, 'x'),
    ],
  });
  assert.equal(batch.json.rejected, 2);
  const listed = await waitFor('the refusals in the explorer', async () => {
    const r = await req(control.url, 'GET', `/api/v1/workspaces/${a.workspace.id}/events/rejections`, a.token);
    return r.json.data.length === 3;
  });
  assert.ok(listed < 10_000);
  const r = await req(control.url, 'GET', `/api/v1/workspaces/${a.workspace.id}/events/rejections`, a.token);
  assert.deepEqual(
    r.json.data.map((x: { code: string; idempotency_key?: string }) => [x.code, x.idempotency_key]),
    [
      ['workspace_mismatch', 'x'],
      ['unknown_field', 'bad-2'],
      ['invalid_currency', 'bad-1'],
    ],
  );
  const other = await req(control.url, 'GET', `/api/v1/workspaces/${b.workspace.id}/events/rejections`, b.token);
  assert.deepEqual(other.json.data, []);
});

test('a deleted workspace’s key is refused by ingest within a second, though ingest had it cached', async () => {
  const a = await stores.workspace();
  // Cached by ingest (KEY_CACHE_TTL_MS is 30 s): only the deletion's announcement can drop it.
  assert.equal((await req(ingest.url, 'POST', '/api/v1/meter', a.token, event(a.workspace.id, 'before'))).status, 202);
  const del = await req(control.url, 'DELETE', `/api/v1/workspaces/${a.workspace.id}`, a.token);
  assert.equal(del.status, 200);
  let n = 0;
  const waited = await waitFor(
    'ingest to refuse the key',
    async () =>
      (await req(ingest.url, 'POST', '/api/v1/meter', a.token, event(a.workspace.id, `after-${n++}`))).status === 401,
    1_000,
  );
  assert.ok(waited < 1_000);
  // The operator may not meter for it either (its plan lookup skips deleted workspaces).
  const op = await req(ingest.url, 'POST', '/api/v1/meter', OPERATOR, event(a.workspace.id, 'op'));
  assert.equal(op.json.error.code, 'workspace_not_found');
  const exp = await req(control.url, 'GET', `/api/v1/workspaces/${a.workspace.id}/export`, OPERATOR);
  assert.equal(exp.status, 200);
  assert.equal(exp.json.workspace.id, a.workspace.id);
});
