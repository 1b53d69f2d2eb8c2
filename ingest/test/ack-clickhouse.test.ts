import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GateProxy, openTestStores, type TestStores } from '@meterd/core/testing';
import { event, post, startTestIngest, storedCounts } from './helpers.js';

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
