import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isMeterdError } from '@meterd/core/errors';
import { createLogger } from '@meterd/core/log';
import { inTransaction } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { loadControlConfig } from '../src/config.js';
import { SecretBox } from '../src/crypto/secret-box.js';
import { defineControlMetrics } from '../src/metrics.js';
import { createServices, type Services } from '../src/services/index.js';
import { MINTED_KEY_SCOPES } from '../src/services/keys.js';
import { Provisioner } from '../src/services/provisions.js';
import { emitEvent } from '../src/webhooks/outbox.js';
import { testEnv } from './helpers.js';

/**
 * The services the public API and the dashboard share, called directly on real stores: the rules
 * that both surfaces rely on hold without HTTP in between.
 */
let stores: TestStores;
let svc: Services;
let provisioner: Provisioner;

before(async () => {
  stores = await openTestStores('ctlservices');
  const cfg = loadControlConfig(testEnv(stores, { WEBHOOK_MAX_ENDPOINTS: '2' }));
  const log = createLogger('services-test', 'silent');
  const box = new SecretBox(cfg.SECRETS_KEY, cfg.SECRETS_KEYS_OLD);
  provisioner = new Provisioner(stores.pool, null, box, log);
  svc = createServices(cfg, {
    pool: stores.pool,
    redis: stores.redis,
    log,
    metrics: defineControlMetrics(),
    box,
    stripe: null,
    ch: stores.clickhouse,
    provisioner,
  });
});
after(async () => {
  await provisioner.close();
  await stores.close();
});

/** Resolves to the error code `p` rejects with. */
async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (isMeterdError(err)) return err.code;
    throw err;
  }
  assert.fail('expected a rejection');
}

test('keys: minted without scopes they get meter:write and meter:read; lists never hold a token and come in either order', async () => {
  const { workspace } = await stores.workspace('free');
  const a = await svc.keys.mint(workspace.id, { name: 'a', scopes: undefined });
  const b = await svc.keys.mint(workspace.id, { name: null, scopes: ['admin'] });
  assert.deepEqual(a.scopes, ['meter:write', 'meter:read']);
  assert.deepEqual(b.scopes, ['admin']);
  assert.match(a.token, /^sks_/);
  const oldest = await svc.keys.list(workspace.id);
  const newest = await svc.keys.list(workspace.id, 'newest');
  assert.equal(oldest.length, 3, 'the first key and the two minted');
  assert.deepEqual(
    newest.map((k) => k.id),
    oldest.map((k) => k.id).reverse(),
  );
  assert.ok(!JSON.stringify(oldest).includes(a.token), 'a list never shows a secret');
  assert.deepEqual(Object.keys(oldest[0]!).sort(), ['created_at', 'id', 'name', 'prefix', 'revoked_at', 'scopes']);
  assert.deepEqual(oldest.find((k) => k.id === a.id)?.scopes, [...MINTED_KEY_SCOPES], 'as stored');
  assert.equal(await svc.keys.liveCount(workspace.id), 3);
});

test("keys: revoking works once and only in the key's workspace; the dashboard's sign-in takes live admin keys only", async () => {
  const { workspace, keyId } = await stores.workspace('free');
  const other = await stores.workspace('free');
  const reader = await svc.keys.mint(workspace.id, { name: null, scopes: ['meter:read'] });
  const admin = await svc.keys.mint(workspace.id, { name: null, scopes: ['admin'] });

  assert.equal(await codeOf(svc.keys.adminKey(reader.token)), 'insufficient_scope');
  assert.equal(await codeOf(svc.keys.adminKey('sks_not_a_key')), 'invalid_api_key');
  assert.deepEqual(await svc.keys.adminKey(admin.token), {
    keyId: admin.id,
    workspaceId: workspace.id,
    environment: 'live',
  });
  assert.equal((await svc.workspaces.ofLiveKey(admin.id, workspace.id, 'live'))?.id, workspace.id);
  assert.equal(
    await svc.workspaces.ofLiveKey(admin.id, other.workspace.id, 'live'),
    undefined,
    'a key of another workspace',
  );

  assert.equal(await codeOf(svc.keys.revoke(other.workspace.id, admin.id)), 'resource_not_found');
  await svc.keys.revoke(workspace.id, admin.id);
  assert.equal(await codeOf(svc.keys.revoke(workspace.id, admin.id)), 'resource_not_found', 'already revoked');
  assert.equal(await codeOf(svc.keys.adminKey(admin.token)), 'invalid_api_key');
  assert.equal(await svc.workspaces.ofLiveKey(admin.id, workspace.id, 'live'), undefined, 'its sessions end');
  assert.ok(await svc.workspaces.ofLiveKey(keyId, workspace.id, 'live'), 'the other keys stay live');
  assert.equal(await svc.keys.liveCount(workspace.id), 2);
});

test('webhooks: each delivery carries its own attempts in order; another workspace sees none of them', async () => {
  const { workspace } = await stores.workspace('free');
  const other = await stores.workspace('free');
  const hook = await svc.webhooks.create(workspace.id, {
    url: 'http://127.0.0.1:9/hook',
    description: null,
    events: null,
  });
  assert.match(hook.secret, /^whsec_/);
  const sealed = await stores.pool.query<{ secret_enc: string }>(
    'SELECT secret_enc FROM webhook_endpoints WHERE id = $1',
    [hook.id],
  );
  assert.ok(!sealed.rows[0]!.secret_enc.includes(hook.secret), 'the secret is stored sealed');
  assert.ok(!JSON.stringify(await svc.webhooks.list(workspace.id)).includes(hook.secret));

  for (let i = 0; i < 2; i++)
    await inTransaction(stores.pool, (c) => emitEvent(c, workspace.id, 'meter.quota.warning', { i }));
  const [second, first] = await svc.webhooks.deliveries(workspace.id, { limit: 10 });
  // Written directly: the worker, which would write them, is not running here.
  for (const [delivery, attempt, code] of [
    [first!.id, 2, 502],
    [first!.id, 1, 500],
    [second!.id, 1, 200],
  ] as const)
    await stores.pool.query(
      'INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms) VALUES ($1, $2, $3, 5)',
      [delivery, attempt, code],
    );

  const listed = await svc.webhooks.deliveriesWithAttempts(workspace.id, 50);
  assert.deepEqual(
    listed.map((d) => [d.id, d.attempts_log.map((a) => a.status_code)]),
    [
      [second!.id, [200]],
      [first!.id, [500, 502]],
    ],
  );
  assert.ok(!('delivery_id' in listed[0]!.attempts_log[0]!));
  assert.deepEqual(await svc.webhooks.delivery(workspace.id, first!.id), listed[1]);

  assert.deepEqual(await svc.webhooks.deliveriesWithAttempts(other.workspace.id, 50), []);
  assert.equal(await codeOf(svc.webhooks.delivery(other.workspace.id, first!.id)), 'resource_not_found');
  assert.equal(await codeOf(svc.webhooks.resend(other.workspace.id, first!.id)), 'resource_not_found');
  assert.equal(await codeOf(svc.webhooks.reactivate(other.workspace.id, hook.id)), 'resource_not_found');
  assert.equal(await codeOf(svc.webhooks.remove(other.workspace.id, hook.id)), 'resource_not_found');

  const resent = await svc.webhooks.resend(workspace.id, first!.id);
  const again = await svc.webhooks.delivery(workspace.id, resent);
  assert.equal(again.event_id, first!.event_id);
  assert.deepEqual(again.attempts_log, [], 'a resend starts its own log');
});

test('webhooks: the endpoint cap holds per workspace', async () => {
  const { workspace } = await stores.workspace('free');
  const add = () => svc.webhooks.create(workspace.id, { url: 'http://127.0.0.1:9/x', description: null, events: null });
  await add();
  const second = await add();
  assert.equal(await codeOf(add()), 'endpoint_limit_exceeded');
  await svc.webhooks.remove(workspace.id, second.id);
  await add();
});

test('billing without Stripe: no portal, no checkout, no paid signup; the operator still sets any plan', async () => {
  const { workspace } = await stores.workspace('free');
  assert.equal(svc.billing.portalAvailable(workspace), false);
  assert.equal(await codeOf(svc.billing.portalSession(workspace.id)), 'not_configured');
  assert.equal(await codeOf(svc.billing.checkout(workspace, 'growth', {})), 'payment_required');
  assert.equal(
    await codeOf(svc.workspaces.signup({ slug: 'paid-svc', display_name: 'P', contact_email: null, plan: 'growth' })),
    'payment_required',
  );
  const { rowCount } = await stores.pool.query("SELECT 1 FROM workspaces WHERE slug = 'paid-svc'");
  assert.equal(rowCount, 0, 'a refused signup creates nothing');
  assert.equal((await svc.billing.setPlan(workspace.id, 'scale')).plan, 'scale');
  assert.equal(await codeOf(svc.billing.setPlan('ws_missing', 'scale')), 'workspace_not_found');
});
