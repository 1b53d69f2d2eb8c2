import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { quotaKey } from '@meterd/core/contracts';
import { periodOf } from '@meterd/core/plans';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, Receiver, verifySignature, testEnv } from './helpers.js';
import { REPO, exited, freePort, spawnService } from './procs.js';

let stores: TestStores;
before(async () => {
  stores = await openTestStores('ctlcrash');
});
after(async () => {
  await stores.close();
});

test('kill -9 of control-api right after the cause committed: the delivery still happens after restart', async () => {
  const port = await freePort();
  const env = testEnv(stores, { CONTROL_API_PORT: String(port), QUOTA_CHECK_MS: '200', WEBHOOK_TIMEOUT_MS: '1000' });
  const main = join(REPO, 'control-api/dist/src/main.js');
  const base = `http://127.0.0.1:${port}`;
  const rx = await new Receiver().start();
  let first = await spawnService(main, env, `${base}/healthz`);
  try {
    const w = await stores.workspace('free');
    const hook = (
      await call(base, 'POST', `/api/v1/workspaces/${w.workspace.id}/webhooks`, {
        token: w.token,
        body: { url: rx.url },
      })
    ).json.webhook;
    // The first attempt reaches the receiver, which kills the process before answering: the
    // event is committed, the attempt is claimed, and nothing records its outcome.
    rx.respond = (_r, n) => {
      if (n === 1) {
        first.kill('SIGKILL');
        return 'hang';
      }
      return 200;
    };
    // The cause: ingest's counter for this workspace crosses 80 % of the free plan.
    await stores.redis.set(quotaKey(stores.redisPrefix, w.workspace.id, periodOf(Date.now())), '450');
    await rx.waitFor(1, 10_000);
    await exited(first);
    const { rows } = await stores.pool.query(`SELECT status FROM webhook_deliveries WHERE workspace_id = $1`, [
      w.workspace.id,
    ]);
    assert.deepEqual(
      rows.map((r) => r.status),
      ['delivering'],
    );

    first = await spawnService(main, env, `${base}/healthz`);
    const got = await rx.waitFor(2, 20_000);
    assert.equal(got[1]!.headers['stateset-event-id'], got[0]!.headers['stateset-event-id']);
    assert.equal(got[1]!.headers['stateset-delivery-attempt'], '2');
    assert.equal(verifySignature(got[1]!.body, got[1]!.headers['stateset-signature'] as string, hook.secret), true);
    assert.equal(JSON.parse(got[1]!.body).event, 'meter.quota.warning');
    // Exactly one warning for the 80 % threshold, despite the restart re-checking the counter.
    const { rows: ev } = await stores.pool.query(
      `SELECT count(*)::int AS n FROM outbox_events WHERE workspace_id = $1`,
      [w.workspace.id],
    );
    assert.equal(ev[0].n, 1);
  } finally {
    first.kill('SIGTERM');
    await exited(first);
    await rx.close();
  }
});
