import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  startService as startInProcess,
  type Service as InProcess,
  type ServiceSpec,
  type StartedService,
} from '@meterd/core/service';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { ROOT, freePort, startOn, type Service } from './support/services.js';
import { apiClient } from './support/api.js';

/**
 * The OpenAPI document against the public base URL: every operation it lists, called through the
 * front router (ingest, the aggregator and the control API behind it) without credentials, is
 * served (never the 404 of an unknown route) and answered as the document says. With the control
 * API's own route-table test (control-api/test/openapi.test.ts: every registered route is in the
 * document) and test/support/api.ts (every answer of the end-to-end tests is validated, and a route
 * missing from the document fails the test that called it), the document and the services cannot
 * drift apart in either direction.
 */
let stores: TestStores;
let spoolDir: string;
const services: Service[] = [];
let front: StartedService<InProcess> | undefined;

before(async () => {
  stores = await openTestStores('openapiroutes');
  spoolDir = mkdtempSync(join(tmpdir(), 'meterd-openapi-'));
});
after(async () => {
  await front?.drain();
  await Promise.all(services.map((s) => s.stop()));
  rmSync(spoolDir, { recursive: true, force: true });
  await stores.close();
});

test('every documented operation is served behind the front router, with a documented answer', async () => {
  const [ingest, aggregator, control] = await Promise.all([
    startOn('ingest', stores.env, { SPOOL_DIR: spoolDir }),
    startOn('aggregator', stores.env),
    startOn('control-api', stores.env),
  ]);
  services.push(ingest, aggregator, control);
  const frontPort = await freePort();
  const mod = (await import(pathToFileURL(`${ROOT}control-api/dist/src/front/service.js`).href)) as {
    frontService: ServiceSpec<{ readonly LOG_LEVEL: string }, InProcess>;
  };
  front = await startInProcess(mod.frontService, {
    ...process.env,
    LOG_LEVEL: 'silent',
    FRONT_PORT: String(frontPort),
    INGEST_URL: ingest.url,
    AGGREGATOR_URL: aggregator.url,
    CONTROL_API_URL: control.url,
  });
  const base = `http://127.0.0.1:${frontPort}`;
  const doc = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as {
    paths: Record<string, Record<string, unknown>>;
  };
  const call = apiClient(base);
  const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => [m, path]));
  assert.ok(operations.length > 30, `${operations.length} operations`);
  for (const [method, path] of operations) {
    // Ids that exist nowhere: the answer is a refusal (401, 400, 404 of a resource), never "no such route".
    const url = path!.replace(/\{[^}]+\}/g, 'ws_doesnotexist');
    const r = await call(base, method!.toUpperCase(), url, method === 'get' || method === 'delete' ? {} : { body: {} });
    const unknownRoute = r.status === 404 && /^no route /.test(r.json?.error?.message ?? '');
    // 501: a route whose integration is not configured here (Stripe webhooks without a secret) still exists.
    const served = r.status !== 405 && !unknownRoute && (r.status < 500 || r.status === 501);
    assert.ok(served, `${method!.toUpperCase()} ${path}: ${r.status} ${r.text}`);
  }
});
