import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { quotaKey } from '@meterd/core/contracts';
import { createLogger } from '@meterd/core/log';
import { periodOf } from '@meterd/core/plans';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { QuotaWatch } from '../src/billing/quota-watch.js';

/** K control API replicas check quotas at the same moment: each warning is emitted once. */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('ctlquotareplicas');
});
after(async () => {
  await stores?.close();
});

test('three QuotaWatch replicas checking at once emit the 80 % and 100 % warnings once each', async () => {
  const { workspace } = await stores.workspace('free');
  const now = Date.now();
  // The free plan's 500 events, exceeded: both thresholds are crossed.
  await stores.redis.set(quotaKey(stores.redisPrefix, workspace.id, periodOf(now)), '510');
  const log = createLogger('quota-replicas', 'silent');
  const replicas = [1, 2, 3].map(() => new QuotaWatch(stores.pool, stores.redis, stores.redisPrefix, log));
  const emitted = await Promise.all(replicas.map((r) => r.check(now)));
  assert.equal(
    emitted.reduce((a, b) => a + b, 0),
    2,
  );
  const { rows } = await stores.pool.query<{ threshold: number }>(
    `SELECT ((body::jsonb)->'data'->>'threshold_percent')::int AS threshold FROM outbox_events WHERE workspace_id = $1 AND event = 'meter.quota.warning' ORDER BY 1`,
    [workspace.id],
  );
  assert.deepEqual(
    rows.map((r) => r.threshold),
    [80, 100],
  );
  assert.deepEqual(await Promise.all(replicas.map((r) => r.check(now))), [0, 0, 0], 'a later pass emits nothing');
});
