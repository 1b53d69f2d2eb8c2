import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { Namespace, Secret, Service, ResourceQuota } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Ingress, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { quotaKey } from '@meterd/core/contracts';
import { periodOf } from '@meterd/core/plans';
import { OPERATOR_KEY, call, eventually, Receiver, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';
import { renderManifests } from '../src/provision/k8s-manifests.js';
import { CATALOG } from '../src/provision/catalog.js';

const WHSEC = 'whsec_test_stripe_secret';
const WHSEC_THIN = 'whsec_test_thin_destination';
let stores: TestStores;
let s: ControlServer;

before(async () => {
  stores = await openTestStores('ctlprov');
  // Two destinations, two secrets: snapshot events (plans) and thin events (meter error reports).
  s = await startTestControl(stores, {
    STRIPE_WEBHOOK_SECRET: `${WHSEC_THIN}, ${WHSEC}`,
    PROVISION_LOCAL_ENABLED: 'true',
  });
});
after(async () => {
  await s.close();
  await stores.close();
});

const seedProvision = (ws: string, sks: string, customer = 'acme') => ({
  service: 'acp-handler',
  customer_id: customer,
  config: { METER_URL: 'http://127.0.0.1:9', METER_WORKSPACE_ID: ws, METER_API_KEY: sks },
});

test('provision: pending → running through the local driver, emits provision.running, quota 429 beyond the plan, deprovision frees the slot', async () => {
  const rx = await new Receiver().start();
  try {
    const { workspace, token } = await stores.workspace('free');
    await call(s.url, 'POST', `/api/v1/workspaces/${workspace.id}/webhooks`, { token, body: { url: rx.url } });
    const res = await call(s.url, 'POST', '/api/v1/provision', { token, body: seedProvision(workspace.id, token) });
    assert.equal(res.status, 202);
    assert.equal(res.json.provision.status, 'pending');
    const id = res.json.provision.id as string;
    const running = await eventually(
      async () => {
        const r = await call(s.url, 'GET', `/api/v1/provision/${id}`, { token });
        return r.json.provision.status !== 'pending' ? r.json.provision : undefined;
      },
      20_000,
      'provision settled',
    );
    assert.equal(running.status, 'running', running.error);
    assert.equal((await fetch(`${running.url}/healthz`)).status, 200);
    const [evt] = await rx.waitFor(1);
    assert.equal(JSON.parse(evt!.body).event, 'provision.running');

    const over = await call(s.url, 'POST', '/api/v1/provision', {
      token,
      body: seedProvision(workspace.id, token, 'acme-two'),
    });
    assert.deepEqual([over.status, over.json.error.code], [429, 'plan_limit_exceeded']);
    const unknown = await call(s.url, 'POST', '/api/v1/provision', {
      token,
      body: { ...seedProvision(workspace.id, token), service: 'nope' },
    });
    assert.deepEqual([unknown.status, unknown.json.error.field], [400, 'service']);

    const gone = await call(s.url, 'DELETE', `/api/v1/provision/${id}`, { token });
    assert.equal(gone.json.provision.status, 'deprovisioned');
    await assert.rejects(fetch(`${running.url}/healthz`));
    const again = await call(s.url, 'POST', '/api/v1/provision', {
      token,
      body: seedProvision(workspace.id, token, 'acme-three'),
    });
    assert.equal(again.status, 202);
    await s.provisioner.settle();
    await call(s.url, 'DELETE', `/api/v1/provision/${again.json.provision.id}`, { token });
  } finally {
    await rx.close();
  }
});

test('rendered Kubernetes manifests validate against the schemas of their kinds', () => {
  const spec = {
    provisionId: 'prv_ABC',
    workspaceId: 'ws_Abc123',
    workspaceSlug: 'acme-corp',
    customerId: 'acme',
    service: CATALOG['acp-handler']!,
    config: { METER_URL: 'https://x', METER_WORKSPACE_ID: 'ws_Abc123', METER_API_KEY: 'sks_x' },
  };
  const ms = renderManifests(spec, {
    domain: 'handlers.example.com',
    imagePrefix: 'ghcr.io/meterd',
    clusterIssuer: 'letsencrypt-prod',
  });
  const models: Record<string, new (d: any) => { validate(): void }> = {
    Namespace,
    Secret,
    Service,
    ResourceQuota,
    Deployment,
    Ingress,
    NetworkPolicy,
  };
  assert.deepEqual(ms.map((m) => m.kind).sort(), Object.keys(models).sort());
  for (const m of ms) new models[m.kind]!(m).validate();
  const ingress = ms.find((m) => m.kind === 'Ingress')!;
  assert.equal(ingress.metadata.annotations!['cert-manager.io/cluster-issuer'], 'letsencrypt-prod');
  // The validator does reject a broken object of the same kind.
  const dep = structuredClone(ms.find((m) => m.kind === 'Deployment')!) as any;
  dep.spec.replicas = 'two';
  assert.throws(() => new Deployment(dep).validate());
});

test('a failing driver leaves the provision failed with provision.failed', async () => {
  const bad = await startTestControl(stores, { PROVISION_DRIVER: 'kubernetes', KUBE_API_URL: 'http://127.0.0.1:9' });
  try {
    const { workspace } = await stores.workspace('growth');
    const res = await call(bad.url, 'POST', '/api/v1/provision', {
      token: OPERATOR_KEY,
      body: { ...seedProvision(workspace.id, 'sks_x'), workspace_id: workspace.id },
    });
    assert.equal(res.status, 202);
    await bad.provisioner.settle();
    const st = await call(bad.url, 'GET', `/api/v1/provision/${res.json.provision.id}`, { token: OPERATOR_KEY });
    assert.equal(st.json.provision.status, 'failed');
    const { rows } = await stores.pool.query(`SELECT event FROM outbox_events WHERE workspace_id = $1`, [workspace.id]);
    assert.deepEqual(
      rows.map((r) => r.event),
      ['provision.failed'],
    );
  } finally {
    await bad.close();
  }
});

function stripeEvent(id: string, created: number, customer: string, lookupKey: string) {
  return JSON.stringify({
    id,
    object: 'event',
    type: 'customer.subscription.updated',
    created,
    data: {
      object: {
        id: 'sub_1',
        object: 'subscription',
        customer,
        status: 'active',
        metadata: {},
        items: { object: 'list', data: [{ id: 'si_1', price: { id: 'price_1', lookup_key: lookupKey } }] },
      },
    },
  });
}
const sign = (payload: string, secret = WHSEC) =>
  new Stripe('sk_test_unused').webhooks.generateTestHeaderString({ payload, secret });

test('Stripe webhooks: bad signature 400 changes nothing; lookup_key scale → 10 handlers; duplicates and older events change nothing', async () => {
  const { workspace } = await stores.workspace('free');
  await stores.pool.query(`UPDATE workspaces SET stripe_customer_id = 'cus_test1' WHERE id = $1`, [workspace.id]);
  const now = Math.floor(Date.now() / 1000);
  const body = stripeEvent('evt_s1', now, 'cus_test1', 'scale');
  const bad = await call(s.url, 'POST', '/webhooks/stripe', {
    raw: body,
    headers: { 'stripe-signature': sign(body, 'whsec_wrong') },
  });
  assert.deepEqual([bad.status, bad.json.error.code], [400, 'invalid_signature']);
  const planOf = async () =>
    (await stores.pool.query('SELECT plan FROM workspaces WHERE id = $1', [workspace.id])).rows[0].plan;
  assert.equal(await planOf(), 'free');

  const ok = await call(s.url, 'POST', '/webhooks/stripe', { raw: body, headers: { 'stripe-signature': sign(body) } });
  assert.deepEqual([ok.status, ok.json.outcome], [200, 'applied']);
  assert.equal(await planOf(), 'scale');
  const dup = await call(s.url, 'POST', '/webhooks/stripe', { raw: body, headers: { 'stripe-signature': sign(body) } });
  assert.equal(dup.json.outcome, 'duplicate');
  const older = stripeEvent('evt_s0', now - 60, 'cus_test1', 'growth');
  const stale = await call(s.url, 'POST', '/webhooks/stripe', {
    raw: older,
    headers: { 'stripe-signature': sign(older) },
  });
  assert.equal(stale.json.outcome, 'stale');
  assert.equal(await planOf(), 'scale');

  // Scale allows 10 handlers: the quota check reads the plan the webhook set (Kubernetes driver
  // unreachable here, so slots are taken by pending/failed records; count only what the quota sees).
  const { rows } = await stores.pool.query(
    `INSERT INTO provisions (id, workspace_id, service, customer_id, driver, status, config_enc)
     SELECT 'prv_fill' || g, $1, 'acp-handler', 'c' || g, 'local', 'running', 'v1.x' FROM generate_series(1, 9) g RETURNING id`,
    [workspace.id],
  );
  assert.equal(rows.length, 9);
  const tenth = await call(s.url, 'POST', '/api/v1/provision', {
    token: OPERATOR_KEY,
    body: { ...seedProvision(workspace.id, 'sks_x', 'tenth'), workspace_id: workspace.id },
  });
  assert.equal(tenth.status, 202);
  const eleventh = await call(s.url, 'POST', '/api/v1/provision', {
    token: OPERATOR_KEY,
    body: { ...seedProvision(workspace.id, 'sks_x', 'eleventh'), workspace_id: workspace.id },
  });
  assert.deepEqual([eleventh.status, eleventh.json.error.code], [429, 'plan_limit_exceeded']);
  await s.provisioner.settle();
  await call(s.url, 'DELETE', `/api/v1/provision/${tenth.json.provision.id}`, { token: OPERATOR_KEY });
});

test("meter.quota.warning fires once per threshold per period from ingest's Redis counters", async () => {
  const { workspace } = await stores.workspace('free');
  const key = quotaKey(stores.redisPrefix, workspace.id, periodOf(Date.now()));
  await stores.redis.set(key, '399');
  await s.quota.check();
  await stores.redis.set(key, '400');
  await s.quota.check();
  await s.quota.check();
  await stores.redis.set(key, '500');
  await s.quota.check();
  await s.quota.check();
  const { rows } = await stores.pool.query(
    `SELECT body FROM outbox_events WHERE workspace_id = $1 AND event = 'meter.quota.warning' ORDER BY created_at`,
    [workspace.id],
  );
  assert.deepEqual(
    rows.map((r) => JSON.parse(r.body).data.threshold_percent),
    [80, 100],
  );
});

test('Stripe webhooks verify with any configured destination secret, and with no other', async () => {
  const { workspace } = await stores.workspace('free');
  await stores.pool.query(`UPDATE workspaces SET stripe_customer_id = 'cus_two_secrets' WHERE id = $1`, [workspace.id]);
  const body = stripeEvent('evt_two_secrets', Math.floor(Date.now() / 1000), 'cus_two_secrets', 'growth');
  const other = await call(s.url, 'POST', '/webhooks/stripe', {
    raw: body,
    headers: { 'stripe-signature': sign(body, 'whsec_neither') },
  });
  assert.deepEqual([other.status, other.json.error.code], [400, 'invalid_signature']);
  const thinDestination = await call(s.url, 'POST', '/webhooks/stripe', {
    raw: body,
    headers: { 'stripe-signature': sign(body, WHSEC_THIN) },
  });
  assert.deepEqual([thinDestination.status, thinDestination.json.outcome], [200, 'applied']);
});
