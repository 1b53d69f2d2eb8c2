import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { inTransaction } from '@meterd/core/store';
import { openTestStores, startPgBouncer, type TestPgBouncer, type TestStores } from '@meterd/core/testing';
import { call, Receiver, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';
import { emitEvent } from '../src/webhooks/outbox.js';

/**
 * The control API with DATABASE_URL through PgBouncer in transaction mode and DATABASE_SESSION_URL
 * direct: signup, keys and webhook endpoints work through the pooler, and the outbox LISTEN (on the
 * session URL) hears an event committed by another process at once, with polling turned down to a
 * minute so only the notification can explain a prompt delivery.
 */
let stores: TestStores;
let bouncer: TestPgBouncer;
let s: ControlServer;

before(async () => {
  stores = await openTestStores('ctlpgbouncer');
  bouncer = await startPgBouncer(6435);
  s = await startTestControl(stores, { ...bouncer.envFor(stores.databaseUrl), WEBHOOK_POLL_MS: '60000' });
});
after(async () => {
  await s?.close();
  await bouncer?.stop();
  await stores?.close();
});

test('through PgBouncer: signup, a key, a webhook endpoint, and an event from another process delivered by NOTIFY', async () => {
  const signup = await call(s.url, 'POST', '/api/v1/signup', { body: { slug: 'bouncer-co', display_name: 'B' } });
  assert.equal(signup.status, 201, signup.text);
  const { workspace, api_key } = signup.json as { workspace: { id: string }; api_key: { token: string } };
  const rx = await new Receiver().start();
  try {
    const hook = await call(s.url, 'POST', `/api/v1/workspaces/${workspace.id}/webhooks`, {
      token: api_key.token,
      body: { url: rx.url, description: 'bouncer' },
    });
    assert.equal(hook.status, 201, hook.text);
    // Committed on a direct connection of this test process, not by the control API.
    const id = await inTransaction(stores.pool, (c) => emitEvent(c, workspace.id, 'meter.quota.warning', {}));
    const [r] = await rx.waitFor(1, 10_000);
    assert.equal(JSON.parse(r!.body).id, id);
  } finally {
    await rx.close();
  }
});
