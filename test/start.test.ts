import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestStores } from '@meterd/core/testing';
import { ROOT, waitFor } from './support/services.js';
import { apiClient } from './support/api.js';

/**
 * Under npm start's own wiring (issue 12, items 2 and 3): a signup for growth starts on free
 * quotas at ingest; paying its Checkout in stripe-local sends the signed webhook to the control
 * API, and ingest reports the growth quota within a second of the payment.
 */
async function paidPlanEndToEnd(url: Record<string, string>): Promise<void> {
  // Every answer of the API is checked against the control API's OpenAPI document.
  const call = apiClient(url['control-api']!);
  const signup = await call(url['control-api']!, 'POST', '/api/v1/signup', {
    body: { slug: `start-${Date.now().toString(36)}`, display_name: 'Start', plan: 'growth' },
  });
  const s = signup.json as {
    workspace: { id: string; plan: string };
    api_key: { token: string };
    checkout_url: string;
  };
  assert.equal(signup.status, 201, JSON.stringify(s));
  assert.equal(s.workspace.plan, 'free');
  let n = 0;
  const limitAtIngest = async (): Promise<string | null> => {
    const r = await call(url.ingest!, 'POST', '/api/v1/meter', {
      token: s.api_key.token,
      body: {
        workspace_id: s.workspace.id,
        event_type: 'api.call',
        quantity: 1,
        gmv_cents: 0,
        idempotency_key: `start-${n++}`,
        occurred_at: new Date().toISOString(),
      },
    });
    assert.equal(r.status, 202);
    return r.headers.get('x-plan-events-limit');
  };
  assert.equal(await limitAtIngest(), '500', 'free quotas until Stripe says it is paid');
  const session = /\/c\/pay\/(cs_[A-Za-z0-9_]+)$/.exec(s.checkout_url)![1];
  const paid = await fetch(`${url['stripe-local']}/_test/checkout/sessions/${session}/complete`, { method: 'POST' });
  const deliveries = ((await paid.json()) as { deliveries: { type: string; status: number }[] }).deliveries;
  assert.deepEqual(
    deliveries.map((d) => d.status),
    [200, 200],
    'the control API verified both webhooks',
  );
  await waitFor('the growth quota at ingest', async () => (await limitAtIngest()) === '100000', 1_000);
}

/**
 * What `npm start` runs after the stack and migrations: the supervisor with every built service.
 * Each service it announces must answer GET /healthz; Ctrl-C (SIGINT) must stop them all.
 * It binds the fixed local ports (8080–8084, 12111), as `npm start` does.
 */
test(
  'the supervisor starts every service, each answers /healthz, and Ctrl-C stops them all',
  { timeout: 90_000 },
  async () => {
    const stores = await openTestStores('start');
    let out = '';
    const sup = spawn(process.execPath, [join(ROOT, 'tools/dist/src/supervisor.js')], {
      env: {
        ...process.env,
        ...stores.env,
        SPOOL_DIR: mkdtempSync(join(tmpdir(), 'start-spool-')),
        LOG_LEVEL: 'warn',
        INGEST_THREADS: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    sup.stdout!.on('data', (c) => (out += c));
    sup.stderr!.on('data', (c) => (out += c));
    try {
      await waitFor(
        'the supervisor to announce its services',
        async () => out.includes('Ctrl-C stops everything'),
        20_000,
      );
      const urls = [...out.matchAll(/^ {2}(\S+)\s+(http:\/\/127\.0\.0\.1:\d+)/gm)].map((m) => ({
        name: m[1]!,
        url: m[2]!,
      }));
      assert.deepEqual(urls.map((u) => u.name).sort(), [
        'aggregator',
        'billing-sync',
        'control-api',
        'front',
        'ingest',
        'stripe-local',
      ]);
      for (const { name, url } of urls) {
        await waitFor(
          `${name} to answer ${url}/healthz`,
          () =>
            fetch(`${url}/healthz`).then(
              (r) => r.status === 200,
              () => false,
            ),
          30_000,
        );
      }
      await paidPlanEndToEnd(Object.fromEntries(urls.map((u) => [u.name, u.url])));
      const exited = new Promise<number | null>((r) => sup.once('exit', (code) => r(code)));
      sup.kill('SIGINT');
      assert.equal(await exited, 0, out.slice(-4_000));
      for (const { name, url } of urls) {
        assert.equal(
          await fetch(`${url}/healthz`).then(
            () => 'up',
            () => 'down',
          ),
          'down',
          `${name} still answers after Ctrl-C`,
        );
      }
    } finally {
      if (sup.exitCode === null) sup.kill('SIGKILL');
      await stores.close();
    }
  },
);
