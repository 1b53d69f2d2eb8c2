import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestStores, runUntilExit, moduleUrl, type ExitReport, type TestStores } from '@meterd/core/testing';

/**
 * Every service, started in-process in a child, used a little, then closed: the child must exit by
 * itself, with nothing left on its event loop. A loop that re-arms its timer after close (the hang
 * that once kept a test file alive until CI's limit) fails here naming what it left.
 */
let stores: TestStores;
let dir: string;

before(async () => {
  stores = await openTestStores('lifecycle');
  dir = mkdtempSync(join(tmpdir(), 'meterd-lifecycle-'));
});
after(async () => {
  await stores.close();
  rmSync(dir, { recursive: true, force: true });
});

const dist = (pkg: string, file: string): string => moduleUrl(`../../${pkg}/dist/src/${file}`, import.meta.url);

function exitedByItself(r: ExitReport): void {
  assert.equal(r.leftover, undefined, `left on the event loop after close: ${JSON.stringify(r.leftover)}\n${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
}

/** Fetches `url` and fails the child (non-zero exit) unless it answers `status`. */
const expect = `const expect = async (url, status, init) => { const r = await fetch(url, init); await r.arrayBuffer(); if (r.status !== status) throw new Error(url + ' answered ' + r.status); };`;

test('ingest: a thread that served a meter request and was closed ends by itself', async () => {
  const { token, workspace } = await stores.workspace('free');
  const body = JSON.stringify({
    workspace_id: workspace.id,
    event_type: 'checkout.completed',
    quantity: 1,
    gmv_cents: 100,
    idempotency_key: 'lifecycle-1',
  });
  exitedByItself(
    await runUntilExit(
      `
    const { startIngestThread } = await import(${dist('ingest', 'app.js')});
    const { loadIngestConfig } = await import(${dist('ingest', 'config.js')});
    const { MetricsRegistry } = await import(${dist('core', 'metrics/index.js')});
    ${expect}
    const t = await startIngestThread(loadIngestConfig(), { index: 0, registry: new MetricsRegistry(1, 0), redisPrefix: ${JSON.stringify(stores.redisPrefix)} });
    await expect('http://127.0.0.1:' + t.port + '/api/v1/meter', 202, { method: 'POST', headers: { authorization: 'Bearer ${token}', 'content-type': 'application/json' }, body: ${JSON.stringify(body)} });
    await expect('http://127.0.0.1:' + t.port + '/readyz', 200);
    await t.close(2_000);
  `,
      { ...stores.env, INGEST_PORT: '0', SPOOL_DIR: join(dir, 'spool'), SHIP_INTERVAL_MS: '20', LOG_LEVEL: 'silent' },
    ),
  );
});

test('ingest: closed while a health check awaits Redis, the check does not re-arm itself', async () => {
  const redis = new URL(stores.env.REDIS_URL!);
  exitedByItself(
    await runUntilExit(
      `
    const { startIngestThread } = await import(${dist('ingest', 'app.js')});
    const { loadIngestConfig } = await import(${dist('ingest', 'config.js')});
    const { MetricsRegistry } = await import(${dist('core', 'metrics/index.js')});
    const { GateProxy } = await import(${dist('core', 'testing/index.js')});
    const gate = await GateProxy.start({ host: ${JSON.stringify(redis.hostname)}, port: ${Number(redis.port || 6379)} });
    const t = await startIngestThread(loadIngestConfig({ ...process.env, REDIS_URL: 'redis://127.0.0.1:' + gate.port }), { index: 0, registry: new MetricsRegistry(1, 0) });
    // The next periodic check (every second) sends its PING into the held gate and waits there.
    gate.hold();
    while (gate.heldBytes === 0) await new Promise((r) => setTimeout(r, 10));
    const closing = t.close(0);
    gate.release();
    await closing;
    await gate.close();
  `,
      { ...stores.env, INGEST_PORT: '0', SPOOL_DIR: join(dir, 'spool-gate'), LOG_LEVEL: 'silent' },
    ),
  );
});

test('aggregator: the rollup loop and usage API, closed mid-cycle, end by themselves', async () => {
  exitedByItself(
    await runUntilExit(
      `
    const { startAggregatorApp } = await import(${dist('aggregator', 'app.js')});
    const { loadAggregatorConfig } = await import(${dist('aggregator', 'config.js')});
    ${expect}
    const app = await startAggregatorApp(loadAggregatorConfig());
    await expect('http://127.0.0.1:' + app.port + '/healthz', 200);
    await app.close();
  `,
      { ...stores.env, AGGREGATOR_PORT: '0', AGGREGATOR_POLL_MS: '10', LOG_LEVEL: 'silent' },
    ),
  );
});

test('control-api: the API, webhook worker and quota watch end by themselves after close', async () => {
  exitedByItself(
    await runUntilExit(
      `
    const { startControl } = await import(${dist('control-api', 'server.js')});
    const { loadControlConfig } = await import(${dist('control-api', 'config.js')});
    ${expect}
    const s = await startControl(loadControlConfig());
    await expect(s.url + '/healthz', 200);
    await s.close();
  `,
      {
        ...stores.env,
        NODE_ENV: 'development',
        CONTROL_API_PORT: '0',
        QUOTA_CHECK_MS: '100',
        WEBHOOK_POLL_MS: '10',
        LOG_LEVEL: 'silent',
      },
    ),
  );
});

test('billing-sync: a pass and the loop end by themselves after close', async () => {
  exitedByItself(
    await runUntilExit(
      `
    const { startBillingSync } = await import(${dist('billing-sync', 'service.js')});
    const { loadBillingConfig } = await import(${dist('billing-sync', 'config.js')});
    const { createLogger } = await import(${dist('core', 'log.js')});
    ${expect}
    const s = await startBillingSync(loadBillingConfig(), createLogger('billing-sync', 'silent'));
    await s.passOnce();
    s.startLoop();
    await expect(s.url + '/metrics', 200);
    await s.close();
  `,
      {
        ...stores.env,
        BILLING_SYNC_PORT: '0',
        BILLING_INTERVAL_MS: '100',
        BILLING_USAGE_SOURCE: 'raw',
        STRIPE_SECRET_KEY: '',
        LOG_LEVEL: 'silent',
      },
    ),
  );
});

test('stripe-local: the server and its state-saving loop end by themselves after close', async () => {
  exitedByItself(
    await runUntilExit(
      `
    const { startStripeLocal } = await import(${dist('stripe-local', 'server.js')});
    ${expect}
    const s = await startStripeLocal({ host: '127.0.0.1', port: 0, apiKey: 'sk_test_lifecycle', stateFile: ${JSON.stringify(join(dir, 'stripe.json'))},
      rateMeterEvents: 1000, rateStream: 1000, rateDefault: 1000, identifierWindowHours: 24, sessionTtlSeconds: 900, faults: {} });
    await expect(s.url + '/v1/customers', 200, { method: 'POST', headers: { authorization: 'Bearer sk_test_lifecycle', 'content-type': 'application/x-www-form-urlencoded' }, body: 'email=a%40b.test' });
    await s.close();
  `,
      {},
    ),
  );
});

test('front router: closed with a keep-alive connection open, it ends by itself', async () => {
  exitedByItself(
    await runUntilExit(
      `
    const { createFront } = await import(${dist('control-api', 'front/router.js')});
    const { listenOn } = await import(${dist('core', 'http/index.js')});
    const app = createFront({ ingest: new URL('http://127.0.0.1:9'), aggregator: new URL('http://127.0.0.1:9'), control: new URL('http://127.0.0.1:9') });
    const port = await listenOn(app, 0, '127.0.0.1');
    // One request the front answers itself, one it proxies (to a closed port: 502), on kept-alive connections.
    ${expect}
    await expect('http://127.0.0.1:' + port + '/healthz', 200);
    await expect('http://127.0.0.1:' + port + '/api/v1/signup', 502, { method: 'POST', body: '{}' });
    await app.close();
  `,
      {},
    ),
  );
});
