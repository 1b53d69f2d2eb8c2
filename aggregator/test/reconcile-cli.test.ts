import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { COPY_HORIZON_S, catchUp, insertEvents, randomStream, rng } from './helpers.js';

const CLI = fileURLToPath(new URL('../src/reconcile.js', import.meta.url));
let stores: TestStores;
before(async () => {
  stores = await openTestStores('aggrecon');
});
after(async () => {
  await stores.close();
});

const run = (...args: string[]): { status: number | null; out: string } => {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...stores.env, AGGREGATOR_CLOSE_AFTER_SECONDS: '600' },
    encoding: 'utf8',
  });
  return { status: r.status, out: r.stdout + r.stderr };
};

test('reconcile CLI: 0 when rollups match, 1 and the difference when a rollup is wrong, 2 on bad arguments', async () => {
  const { batches } = randomStream(rng(9), {
    workspaces: ['ws_reca', 'ws_recb'],
    distinct: 200,
    base: Date.UTC(2024, 0, 30),
    spanMs: 86_400_000,
    closeAfterSeconds: 600,
  });
  for (const b of batches) await insertEvents(stores.clickhouse, b);
  const agg = new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: 2, ttlMs: 10_000 }), {
    shards: 2,
    closeAfterSeconds: 600,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 100,
  });
  await catchUp(agg, 2);
  await agg.stop();

  let r = run('--workspace', 'ws_reca', '--from', '2024-01-01T00:00:00Z', '--to', '2024-03-01T00:00:00Z');
  assert.equal(r.status, 0, r.out);
  r = run('--all');
  assert.equal(r.status, 0, r.out);

  // A rollup row that claims one event too many, written with a higher version (wins under FINAL).
  await stores.clickhouse.command({
    query: `INSERT INTO usage_hourly SELECT workspace_id, event_type, currency, window_start, events + 1, quantity, gmv_cents,
      first_event_at, last_event_at, late_events, version + 1, computed_at FROM usage_hourly FINAL WHERE workspace_id = 'ws_recb' LIMIT 1`,
  });
  r = run('--all');
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /hour\tws_recb .*\tevents\texpected=\d+\tactual=\d+/);
  assert.equal(
    run('--workspace', 'ws_reca', '--from', '2024-01-01T00:00:00Z', '--to', '2024-03-01T00:00:00Z').status,
    0,
  );

  assert.equal(run('--workspace', 'ws_reca').status, 2);
  assert.equal(run('--all', '--workspace', 'ws_reca').status, 2);
  assert.equal(run('--all', '--from', 'yesterday').status, 2);
});
