import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { inTransaction } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, Receiver, verifySignature, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';
import { emitEvent } from '../src/webhooks/outbox.js';
import { checkResolvedHost } from '../src/webhooks/ssrf.js';
import { postWebhook } from '../src/webhooks/send.js';

let stores: TestStores;
let s: ControlServer;
const SCALE = 0.05;

before(async () => {
  stores = await openTestStores('ctlhooks');
  s = await startTestControl(stores, { WEBHOOK_RETRY_SCALE: String(SCALE) });
});
after(async () => {
  await s.close();
  await stores.close();
});

/** Commits an event the way every cause does: through the outbox, in a transaction. */
const emit = (ws: string, data: Record<string, unknown> = {}) =>
  inTransaction(stores.pool, (c) => emitEvent(c, ws, 'meter.quota.warning', data));

async function endpoint(rx: Receiver, events?: string[]) {
  const w = await stores.workspace('free');
  const res = await call(s.url, 'POST', `/api/v1/workspaces/${w.workspace.id}/webhooks`, {
    token: w.token,
    body: { url: rx.url, description: 'test', ...(events ? { events } : {}) },
  });
  assert.equal(res.status, 201);
  return { ...w, hook: res.json.webhook as { id: string; secret: string } };
}

test('a delivery carries the documented body and headers, and its signature verifies with the documented function and with Stripe', async () => {
  const rx = await new Receiver().start();
  try {
    const { workspace, token, hook } = await endpoint(rx);
    assert.match(hook.secret, /^whsec_/);
    const list = await call(s.url, 'GET', `/api/v1/workspaces/${workspace.id}/webhooks`, { token });
    assert.ok(!list.text.includes(hook.secret) && !list.text.includes('secret'));
    const { rows } = await stores.pool.query('SELECT secret_enc FROM webhook_endpoints WHERE id = $1', [hook.id]);
    assert.ok(!rows[0].secret_enc.includes(hook.secret.slice(6)), 'secret is encrypted at rest');

    const id = await emit(workspace.id, { threshold_percent: 80 });
    const [r] = await rx.waitFor(1);
    const body = JSON.parse(r!.body);
    assert.deepEqual(Object.keys(body).sort(), ['created_at', 'data', 'event', 'id', 'workspace_id']);
    assert.deepEqual(
      [body.id, body.event, body.workspace_id, body.data.threshold_percent],
      [id, 'meter.quota.warning', workspace.id, 80],
    );
    assert.match(body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(r!.headers['stateset-event'], 'meter.quota.warning');
    assert.equal(r!.headers['stateset-event-id'], id);
    assert.equal(r!.headers['stateset-delivery-attempt'], '1');
    const sig = r!.headers['stateset-signature'] as string;
    assert.match(sig, /^t=\d+,v1=[0-9a-f]{64}$/);
    assert.equal(verifySignature(r!.body, sig, hook.secret), true);
    assert.equal(verifySignature(r!.body, sig, hook.secret.replace(/.$/, 'x')), false);
    const evt = new Stripe('sk_test_unused').webhooks.constructEvent(r!.body, sig, hook.secret);
    assert.equal(evt.id, id);
    assert.throws(() => new Stripe('sk_test_unused').webhooks.constructEvent(r!.body + ' ', sig, hook.secret));
  } finally {
    await rx.close();
  }
});

test('failures are retried after 0 s, 1 s, 3 s, 10 s (scaled) with an incrementing attempt header; the log shows every attempt', async () => {
  const rx = await new Receiver().start();
  rx.respond = (_r, n) => (n < 5 ? 503 : 200);
  try {
    const { workspace, token, hook } = await endpoint(rx);
    await emit(workspace.id);
    const got = await rx.waitFor(5, 15_000);
    assert.deepEqual(
      got.map((r) => r.headers['stateset-delivery-attempt']),
      ['1', '2', '3', '4', '5'],
    );
    assert.equal(new Set(got.map((r) => r.headers['stateset-event-id'])).size, 1);
    const gaps = got.slice(1).map((r, i) => r.at - got[i]!.at);
    const expected = [0, 1000, 3000, 10000].map((ms) => ms * SCALE);
    for (let i = 0; i < 4; i++)
      assert.ok(gaps[i]! >= expected[i]! * 0.9, `gap ${i}: ${gaps[i]} ms < ${expected[i]} ms`);
    assert.ok(gaps[3]! > gaps[2]! && gaps[2]! > gaps[1]!, `gaps grow: ${gaps.join(', ')}`);

    const dl = await eventually(
      async () => {
        const r = await call(
          s.url,
          'GET',
          `/api/v1/workspaces/${workspace.id}/webhook-deliveries?webhook_id=${hook.id}`,
          { token },
        );
        return r.json.data[0]?.status === 'succeeded' ? r.json.data[0] : undefined;
      },
      5_000,
      'delivery succeeded',
    );
    const one = await call(s.url, 'GET', `/api/v1/workspaces/${workspace.id}/webhook-deliveries/${dl.id}`, { token });
    assert.deepEqual(
      one.json.delivery.attempts_log.map((a: { status_code: number }) => a.status_code),
      [503, 503, 503, 503, 200],
    );
    assert.ok(one.json.delivery.attempts_log.every((a: { latency_ms: number }) => a.latency_ms >= 0));

    // Resend: a new delivery of the same event, with its own log.
    const re = await call(s.url, 'POST', `/api/v1/workspaces/${workspace.id}/webhook-deliveries/${dl.id}/resend`, {
      token,
    });
    assert.equal(re.status, 202);
    const again = await rx.waitFor(6);
    assert.equal(again[5]!.headers['stateset-event-id'], got[0]!.headers['stateset-event-id']);
    assert.equal(again[5]!.headers['stateset-delivery-attempt'], '1');
  } finally {
    await rx.close();
  }
});

test('a 4xx answer stops the retries', async () => {
  const rx = await new Receiver().start();
  rx.respond = () => 410;
  try {
    const { workspace, hook } = await endpoint(rx);
    await emit(workspace.id);
    await rx.waitFor(1);
    await new Promise((r) => setTimeout(r, 14_000 * SCALE + 300));
    assert.equal(rx.received.length, 1);
    const { rows } = await stores.pool.query(
      'SELECT status, attempts, last_status_code FROM webhook_deliveries WHERE endpoint_id = $1',
      [hook.id],
    );
    assert.deepEqual(rows[0], { status: 'failed', attempts: 1, last_status_code: 410 });
  } finally {
    await rx.close();
  }
});

test('five consecutive exhausted deliveries disable the endpoint; reactivate brings it back', async () => {
  const rx = await new Receiver().start();
  let healthy = false;
  rx.respond = () => (healthy ? 200 : 500);
  try {
    const { workspace, token, hook } = await endpoint(rx);
    for (let i = 0; i < 5; i++) await emit(workspace.id, { n: i });
    const disabled = await eventually(
      async () => {
        const r = await call(s.url, 'GET', `/api/v1/workspaces/${workspace.id}/webhooks`, { token });
        return r.json.data[0].status === 'disabled' ? r.json.data[0] : undefined;
      },
      15_000,
      'endpoint disabled',
    );
    assert.equal(disabled.consecutive_failures, 5);
    assert.equal(rx.received.length, 25);

    // While disabled, nothing is sent.
    await emit(workspace.id, { n: 'while disabled' });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(rx.received.length, 25);

    healthy = true;
    const re = await call(s.url, 'POST', `/api/v1/workspaces/${workspace.id}/webhooks/${hook.id}/reactivate`, {
      token,
    });
    assert.deepEqual([re.status, re.json.webhook.status, re.json.webhook.consecutive_failures], [200, 'active', 0]);
    await emit(workspace.id, { n: 'after' });
    const got = await rx.waitFor(26);
    assert.equal(JSON.parse(got[25]!.body).data.n, 'after');
  } finally {
    await rx.close();
  }
});

test('events filter subscriptions, and delete removes an endpoint', async () => {
  const rx = await new Receiver().start();
  try {
    const { workspace, token, hook } = await endpoint(rx, ['shopify.connected']);
    await emit(workspace.id);
    await inTransaction(stores.pool, (c) =>
      emitEvent(c, workspace.id, 'shopify.connected', { shop_domain: 'x.myshopify.com' }),
    );
    const got = await rx.waitFor(1);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.headers['stateset-event'], 'shopify.connected');
    assert.equal(
      (await call(s.url, 'DELETE', `/api/v1/workspaces/${workspace.id}/webhooks/${hook.id}`, { token })).status,
      204,
    );
    assert.equal(
      (await call(s.url, 'GET', `/api/v1/workspaces/${workspace.id}/webhooks`, { token })).json.data.length,
      0,
    );
  } finally {
    await rx.close();
  }
});

test('webhook URLs: https only, no private, loopback, link-local or metadata addresses, also after DNS', async () => {
  const strict = await startTestControl(stores, { WEBHOOK_ALLOW_PRIVATE: 'false', WEBHOOK_WORKER: 'false' });
  try {
    const w = await stores.workspace('free');
    for (const url of [
      'https://127.0.0.1/h',
      'https://169.254.169.254/latest/meta-data',
      'https://10.0.0.1/h',
      'https://[::1]/h',
      'https://localhost/h',
      'http://example.com/h',
      'https://[::ffff:127.0.0.1]/h',
    ]) {
      const r = await call(strict.url, 'POST', `/api/v1/workspaces/${w.workspace.id}/webhooks`, {
        token: w.token,
        body: { url },
      });
      assert.deepEqual([r.status, r.json.error.code, r.json.error.field], [400, 'invalid_field', 'url'], url);
    }
  } finally {
    await strict.close();
  }
  // A name that resolves to loopback is refused at creation and at connection time.
  await assert.rejects(checkResolvedHost('localhost'), /private, loopback or link-local/);
  const sent = await postWebhook('https://localhost:9/h', '{}', {}, 1_000, false);
  assert.equal(sent.status, null);
  assert.match(sent.error!, /forbidden address/);
});
