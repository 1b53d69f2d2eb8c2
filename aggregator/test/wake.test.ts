import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { loadConfig, storeVars } from '@meterd/core/config';
import { BATCHES_RECORDED_CHANNEL } from '@meterd/core/contracts';
import { createLogger } from '@meterd/core/log';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { subscribeToWakes } from '../src/app.js';
import { createAggregatorMetrics } from '../src/metrics.js';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { COPY_HORIZON_S, catchUp, insertEvents, rollupSnapshot, sleep } from './helpers.js';

// Ingest announces each ship round's record (BATCHES_RECORDED_CHANNEL): the aggregator folds it at
// once. The poll here is two minutes, so only the announcement can bring the batch in before the
// deadline; nothing is timed otherwise (the announcement is repeated until the rollup shows it).
const SHARDS = 4;
const POLL_MS = 120_000;
const DEADLINE_MS = 30_000;
let stores: TestStores;
before(async () => {
  stores = await openTestStores('aggwake');
});
after(async () => {
  await stores.close();
});

const cycles = (render: string): number => Number(/^aggregator_cycles_total (\d+)/m.exec(render)?.[1] ?? 0);

test('an announced batch is rolled up at once, not at the next poll', async () => {
  const metrics = createAggregatorMetrics();
  const agg = new Aggregator(
    stores.clickhouse,
    new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }),
    { shards: SHARDS, closeAfterSeconds: 3600, copyHorizonSeconds: COPY_HORIZON_S, windowsPerQuery: 200 },
    metrics,
  );
  await catchUp(agg, SHARDS);
  agg.start(POLL_MS);
  const wakes = subscribeToWakes(loadConfig(storeVars), agg, createLogger('wake-test', 'silent'));
  try {
    // The first cycle of the loop runs at its start: only what comes after it waits for a poll.
    while (cycles(metrics.registry.render()) < 1) await sleep(20);
    const now = Math.floor(Date.now() / 1000) * 1000;
    const workspace = `ws_wake_${process.pid}`;
    await insertEvents(stores.clickhouse, [
      {
        workspace_id: workspace,
        event_type: 'api.call',
        idempotency_key: 'k1',
        event_id: 'e1',
        quantity: 3,
        gmv_cents: 0,
        currency: 'USD',
        occurred_ms: now,
        received_ms: now,
      },
    ]);
    const deadline = Date.now() + DEADLINE_MS;
    let folded = false;
    while (!folded && Date.now() < deadline) {
      await stores.redis.publish(BATCHES_RECORDED_CHANNEL, '');
      await sleep(300);
      const hour = (await rollupSnapshot(stores.clickhouse)).hour;
      folded = [...hour.keys()].some((k) => k.includes(workspace));
    }
    assert.ok(folded, `the batch was rolled up within ${DEADLINE_MS} ms although the poll is ${POLL_MS} ms`);
  } finally {
    wakes.disconnect();
    await agg.stop();
  }
});
