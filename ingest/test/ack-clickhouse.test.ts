import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GateProxy, openTestStores, type TestStores } from '@meterd/core/testing';
import { event, post, startTestIngest, storedCounts, waitShipped } from './helpers.js';

/** INGEST_ACK=clickhouse through a real ingest thread and the real ClickHouse. */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('ack_clickhouse');
});
after(() => stores.close());

test('the 202 comes after the insert: every acknowledged row is in ClickHouse when the answer arrives, none waits in the spool', async () => {
  // The shipper would take a minute: only the acknowledgement path can have stored the rows.
  const t = await startTestIngest(stores, { INGEST_ACK: 'clickhouse', SHIP_INTERVAL_MS: '60000' });
  try {
    const { workspace, token } = await stores.workspace('enterprise');
    const keys = Array.from({ length: 50 }, (_, i) => `k${i}`);
    const batch = () => post(t.url, '/api/v1/meter/batch', { events: keys.map((k) => event(workspace.id, k)) }, token);
    const [a, b] = await Promise.all([batch(), post(t.url, '/api/v1/meter', event(workspace.id, 'single'), token)]);
    assert.equal(a.status, 202);
    assert.equal(b.status, 202);
    assert.deepEqual(await storedCounts(stores, workspace.id), { total: 51, distinct: 51 });
    assert.equal(t.shipper.unshippedBytes, 0);
    // The keys were committed after the insert: retries are duplicates, nothing is inserted again.
    const again = await batch();
    assert.ok(again.body.results.every((r: { duplicate: boolean }) => r.duplicate));
    assert.deepEqual(await storedCounts(stores, workspace.id), { total: 51, distinct: 51 });
  } finally {
    await t.close();
  }
});

test('an insert that fails answers 503 and releases the key, so the retry is stored, once', async () => {
  const url = new URL(stores.env.CLICKHOUSE_URL!);
  const proxy = await GateProxy.start({ host: url.hostname, port: Number(url.port) });
  url.port = String(proxy.port);
  // Inserts are cut at half the pending-claim TTL: 1 s here.
  const t = await startTestIngest(stores, {
    INGEST_ACK: 'clickhouse',
    CLICKHOUSE_URL: url.toString(),
    DEDUPE_PENDING_TTL_MS: '2000',
  });
  try {
    const { workspace, token } = await stores.workspace('enterprise');
    // A first event settles the workspace's dedupe epoch (a lookup in ClickHouse), so that below
    // only the insert waits on ClickHouse.
    assert.equal((await post(t.url, '/api/v1/meter', event(workspace.id, 'k0'), token)).status, 202);
    proxy.hold();
    const failed = await post(t.url, '/api/v1/meter', event(workspace.id, 'k1'), token);
    assert.equal(failed.status, 503);
    assert.equal(failed.body.error.code, 'service_unavailable');
    assert.equal(await stores.redis.exists(`${stores.redisPrefix}:{${workspace.id}}:d:checkout.completed:k1`), 0);
    proxy.release();
    const retry = await post(t.url, '/api/v1/meter', event(workspace.id, 'k1'), token);
    assert.equal(retry.status, 202);
    assert.equal(retry.body.duplicate, false);
    assert.equal((await storedCounts(stores, workspace.id)).distinct, 2);
  } finally {
    await t.close();
    await proxy.close();
  }
});

test("the batch record carries the meters' partials, the same as the spool shipper's: open hours of meters are right in this mode too", async () => {
  const meterPartialsOf = async (workspaceId: string) => {
    const rs = await stores.clickhouse.query({
      query: `SELECT window_start, group_values, events, values_n, value_sum, value_max, uniq_values, skipped
        FROM meter_batches WHERE workspace_id = '${workspaceId}' ORDER BY group_values`,
      format: 'JSONEachRow',
    });
    return rs.json<Record<string, unknown>>();
  };
  const sent = (workspaceId: string) =>
    [
      ['k1', 'gpt-4', 2],
      ['k2', 'gpt-4', 3],
      ['k3', 'llama', 5],
    ].map(([key, model, quantity]) =>
      event(workspaceId, key as string, {
        quantity,
        occurred_at: '2026-11-30T10:15:00Z',
        properties: { model: model as string },
      }),
    );
  const got: Record<string, unknown>[][] = [];
  for (const mode of ['spool', 'clickhouse'] as const) {
    const { workspace, token } = await stores.workspace('enterprise');
    // Defined before the workspace's first event: ingest's meter catalog loads it on that batch.
    await stores.pool.query(
      `INSERT INTO meters (id, workspace_id, slug, event_types, aggregation, value_field, group_by, backfill_state)
       VALUES ($1, $2, 'q', '{checkout.completed}', 'sum', 'quantity', '{model}', 'done')`,
      [`mtr_ack_${mode}`, workspace.id],
    );
    const t = await startTestIngest(stores, { INGEST_ACK: mode, SHIP_INTERVAL_MS: '50' });
    try {
      const r = await post(t.url, '/api/v1/meter/batch', { events: sent(workspace.id) }, token);
      assert.equal(r.status, 202);
      // INGEST_ACK=clickhouse answers after the record: its partials are there already.
      if (mode === 'spool') await waitShipped(t);
      got.push(await meterPartialsOf(workspace.id));
    } finally {
      await t.close();
    }
  }
  const [spool, ack] = got as [Record<string, unknown>[], Record<string, unknown>[]];
  assert.deepEqual(
    ack.map((p) => [p.group_values, Number(p.events), String(p.value_sum)]),
    [
      [['gpt-4'], 2, '5'],
      [['llama'], 1, '5'],
    ],
  );
  assert.deepEqual(ack, spool, 'both modes record the same meter partials');
});
