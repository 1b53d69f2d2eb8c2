import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@meterd/core/log';
import { parsePrometheus, sumOf } from '@meterd/core/metrics';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { defineControlMetrics } from '../src/metrics.js';
import { OpsGauges } from '../src/ops-gauges.js';

/** The gauges infra/k8s/observability's alerts read: disabled webhook endpoints and Redis memory headroom. */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('opsgauges');
});
after(async () => {
  await stores.close();
});

test('disabled webhook endpoints and Redis used/max memory are exported', async () => {
  const { workspace } = await stores.workspace();
  for (const [id, status] of [
    ['we_a', 'disabled'],
    ['we_b', 'disabled'],
    ['we_c', 'active'],
  ])
    await stores.pool.query(
      `INSERT INTO webhook_endpoints (id, workspace_id, url, secret_enc, status) VALUES ($1, $2, 'https://x.example', 'x', $3)`,
      [`${id}_${stores.id}`, workspace.id, status],
    );
  const metrics = defineControlMetrics();
  await new OpsGauges(stores.pool, stores.redis, metrics, createLogger('test', 'silent')).refresh();
  const samples = parsePrometheus(metrics.registry.render());
  assert.equal(sumOf(samples, 'meterd_control_webhook_endpoints_disabled'), 2);
  const info = await stores.redis.info('memory');
  const maxmemory = Number(/^maxmemory:(\d+)/m.exec(info)![1]);
  assert.ok(sumOf(samples, 'meterd_redis_used_memory_bytes') > 0);
  assert.equal(sumOf(samples, 'meterd_redis_maxmemory_bytes'), maxmemory);
});
