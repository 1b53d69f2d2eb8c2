import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parsePrometheus } from '@meterd/core/metrics';
import { freePort } from '@meterd/core/net';
import { startService, type Service, type ServiceSpec, type StartedService } from '@meterd/core/service';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { ROOT, waitFor } from './support/services.js';

/**
 * Every service, started in-process through the service skeleton exactly as its entry point starts
 * it: /healthz is live, /readyz is ready once its stores answer and 503 as soon as it drains (while
 * the service still serves), /metrics is Prometheus text; then the drain closes it.
 */
let stores: TestStores;
let dir: string;

before(async () => {
  stores = await openTestStores('endpoints');
  dir = mkdtempSync(join(tmpdir(), 'meterd-endpoints-'));
});
after(async () => {
  await stores.close();
  rmSync(dir, { recursive: true, force: true });
});

type AnySpec = ServiceSpec<{ readonly LOG_LEVEL: string }, Service>;

async function specOf(pkg: string, file: string, name: string): Promise<AnySpec> {
  const mod = (await import(pathToFileURL(`${ROOT}${pkg}/dist/src/${file}`).href)) as Record<string, AnySpec>;
  return mod[name]!;
}

const SERVICES: { spec: [string, string, string]; port: string; env: (port: number) => Record<string, string> }[] = [
  {
    spec: ['ingest', 'service.js', 'ingestService'],
    port: 'INGEST_PORT',
    env: () => ({ INGEST_THREADS: '1', SPOOL_DIR: join(dir, 'spool') }),
  },
  { spec: ['aggregator', 'app.js', 'aggregatorService'], port: 'AGGREGATOR_PORT', env: () => ({}) },
  {
    spec: ['control-api', 'server.js', 'controlService'],
    port: 'CONTROL_API_PORT',
    env: () => ({ NODE_ENV: 'development' }),
  },
  {
    spec: ['control-api', 'front/service.js', 'frontService'],
    port: 'FRONT_PORT',
    env: () => ({}),
  },
  {
    spec: ['billing-sync', 'service.js', 'billingSyncService'],
    port: 'BILLING_SYNC_PORT',
    env: () => ({ BILLING_USAGE_SOURCE: 'raw', STRIPE_SECRET_KEY: '', BILLING_INTERVAL_MS: '200' }),
  },
  {
    spec: ['stripe-local', 'service.js', 'stripeLocalService'],
    port: 'STRIPE_LOCAL_PORT',
    env: () => ({ STRIPE_LOCAL_STATE_FILE: join(dir, 'stripe.json') }),
  },
];

const get = async (url: string): Promise<{ status: number; type: string; body: string }> => {
  const r = await fetch(url);
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
};

for (const s of SERVICES) {
  const [pkg, file, name] = s.spec;
  test(`${name}: /healthz, /readyz and /metrics through the skeleton; not ready while draining`, async () => {
    const port = await freePort();
    const env = { ...process.env, ...stores.env, LOG_LEVEL: 'silent', [s.port]: String(port), ...s.env(port) };
    const started: StartedService<Service> = await startService(await specOf(pkg, file, name), env);
    const base = `http://127.0.0.1:${port}`;
    try {
      await waitFor(`${name} ready`, async () => (await get(`${base}/readyz`).catch(() => undefined))?.status === 200);

      const health = await get(`${base}/healthz`);
      assert.equal(health.status, 200);
      assert.match(health.type, /^application\/json/);
      assert.equal((JSON.parse(health.body) as { status: string }).status, 'ok');

      const ready = await get(`${base}/readyz`);
      assert.match(ready.type, /^application\/json/);

      const metrics = await get(`${base}/metrics`);
      assert.equal(metrics.status, 200);
      assert.equal(metrics.type.split(';')[0], 'text/plain');
      assert.match(metrics.type, /version=0\.0\.4/);
      assert.ok(parsePrometheus(metrics.body).length > 0, `${name} exposes samples`);

      started.markDraining();
      // Ingest's threads hear of it by message: wait for the flip rather than guessing a delay.
      await waitFor(`${name} not ready while draining`, async () => (await get(`${base}/readyz`)).status === 503);
      const draining = await get(`${base}/readyz`);
      assert.match(draining.type, /^application\/json/);
      // Still serving while draining: only readiness changed.
      assert.equal((await get(`${base}/healthz`)).status, 200);
    } finally {
      await started.drain();
    }
    await assert.rejects(fetch(`${base}/healthz`), `${name} stopped listening after the drain`);
  });
}
