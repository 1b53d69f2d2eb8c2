import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { FastifyInstance } from 'fastify';
import { listenOn } from '@meterd/core/http';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { OPERATOR_KEY, call, eventually, startTestControl } from './helpers.js';
import { REPO, exited, freePort, spawnService } from './procs.js';
import { createFront, routeOf } from '../src/front/router.js';
import type { ControlServer } from '../src/server.js';

let stores: TestStores;
let control: ControlServer;
let ingest: ChildProcess;
let front: FastifyInstance;
let base: string;
let spool: string;

before(async () => {
  stores = await openTestStores('ctlfront');
  // As `npm start` runs it: local provisioning on, the front router on loopback as the trusted proxy.
  control = await startTestControl(stores, { PROVISION_LOCAL_ENABLED: 'true', TRUSTED_PROXIES: '127.0.0.1,::1' });
  spool = mkdtempSync(join(tmpdir(), 'meterd-front-'));
  const ingestPort = await freePort();
  ingest = await spawnService(
    join(REPO, 'ingest/dist/src/main.js'),
    {
      ...stores.env,
      INGEST_PORT: String(ingestPort),
      INGEST_THREADS: '1',
      SPOOL_DIR: spool,
      DEPLOY_API_KEY: OPERATOR_KEY,
      LOG_LEVEL: 'silent',
    },
    `http://127.0.0.1:${ingestPort}/healthz`,
  );
  front = createFront({
    ingest: new URL(`http://127.0.0.1:${ingestPort}`),
    aggregator: new URL('http://127.0.0.1:9'),
    control: new URL(control.url),
  });
  base = `http://127.0.0.1:${await listenOn(front, 0, '127.0.0.1')}`;
});
after(async () => {
  await front.close();
  ingest.kill('SIGTERM');
  await exited(ingest);
  await control.close();
  await stores.close();
  rmSync(spool, { recursive: true, force: true });
});

test('routing table', () => {
  assert.equal(routeOf('/api/v1/meter'), 'ingest');
  assert.equal(routeOf('/api/v1/meter/batch'), 'ingest');
  assert.equal(routeOf('/api/v1/workspaces/ws_1/usage'), 'aggregator');
  assert.equal(routeOf('/api/v1/workspaces/ws_1/webhooks'), 'control');
  assert.equal(routeOf('/api/v1/workspaces/ws_1/meters/tokens/usage'), 'aggregator');
  assert.equal(routeOf('/api/v1/workspaces/ws_1/meters/tokens'), 'control');
  assert.equal(routeOf('/api/v1/workspaces/ws_1/meters'), 'control');
  assert.equal(routeOf('/api/v1/meterx'), 'control');
});

test('the three curl calls of docs/api.md work against the front with only the host changed', async () => {
  const signup = await call(base, 'POST', '/api/v1/signup', {
    body: { slug: 'acme', display_name: 'Acme', contact_email: 'ops@acme.com' },
  });
  assert.equal(signup.status, 201);
  const SKS = signup.json.api_key.token as string;
  const WS = signup.json.workspace.id as string;
  assert.match(SKS, /^sks_/);
  assert.match(WS, /^ws_/);

  const prov = await call(base, 'POST', '/api/v1/provision', {
    token: SKS,
    body: {
      service: 'acp-handler',
      customer_id: 'acme',
      config: { METER_URL: base, METER_WORKSPACE_ID: WS, METER_API_KEY: SKS },
    },
  });
  assert.equal(prov.status, 202);

  const meter = await call(base, 'POST', '/api/v1/meter', {
    token: SKS,
    body: {
      workspace_id: WS,
      event_type: 'checkout.completed',
      quantity: 1,
      gmv_cents: 4299,
      idempotency_key: 'order_5521',
      occurred_at: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    },
  });
  assert.equal(meter.status, 202);
  assert.equal(meter.headers.get('x-plan-events-used'), '1');
  assert.equal(meter.headers.get('x-plan-events-limit'), '500');
  assert.equal(meter.headers.get('x-plan-events-remaining'), '499');

  // The provisioned handler meters through the same base URL.
  const p = await eventually(
    async () => {
      const r = await call(base, 'GET', `/api/v1/provision/${prov.json.provision.id}`, { token: SKS });
      return r.json.provision.status === 'running' ? r.json.provision : undefined;
    },
    20_000,
    'handler running',
  );
  const done = await fetch(`${p.url}/checkout_sessions/cs_1/complete`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ total_cents: 1000 }),
  });
  assert.equal(done.status, 200);
  assert.equal(((await done.json()) as { meter_status: string }).meter_status, 'accepted');
  await control.provisioner.settle();
  await call(base, 'DELETE', `/api/v1/provision/${prov.json.provision.id}`, { token: SKS });
});
