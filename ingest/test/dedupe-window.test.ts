import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { event, hotGone, post, startTestIngest, storedCounts, waitShipped } from './helpers.js';

/**
 * The compact tier over the whole window (docs/redis.md): once a key's hot row has expired, a
 * retry is still a duplicate, answered with the original row read from ClickHouse, and a hash
 * collision (the tier's "maybe") never swallows a distinct event.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('dedupewin');
});
after(() => stores.close());

const DAY = 86_400_000;

function retry(workspaceId: string, key: string): Record<string, unknown> {
  const e = event(workspaceId, key, { quantity: 3, gmv_cents: 999 });
  delete e.occurred_at; // a retry that leaves it out gets a new occurred_at: only the triple matters
  return e;
}

test('the same triple retried at day 0, 2, 20 and 34 (simulated clock) is one event, counted once', async () => {
  const { workspace, token } = await stores.workspace('free');
  let offset = 0;
  const ingest = await startTestIngest(stores, { DEDUPE_HOT_SECONDS: '1' }, { dedupeClock: () => Date.now() + offset });
  try {
    const first = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'order-1'), token);
    assert.equal(first.status, 202);
    assert.equal(first.body.duplicate, false);
    await waitShipped(ingest);
    for (const day of [0, 2, 20, 34]) {
      offset = day * DAY;
      await hotGone(stores, workspace.id, 'order-1');
      const r = await post(ingest.url, '/api/v1/meter', retry(workspace.id, 'order-1'), token);
      assert.equal(r.status, 202, `day ${day}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.duplicate, true, `day ${day}`);
      assert.deepEqual({ ...r.body, duplicate: false }, first.body, `day ${day}: the original row`);
      assert.equal(r.headers.get('x-plan-events-used'), '1', `day ${day}: counted once`);
    }
    // A new key at day 34 is new: the tier does not answer for keys it never saw.
    const other = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'order-2'), token);
    assert.equal(other.body.duplicate, false);
    assert.equal(other.headers.get('x-plan-events-used'), '2');
    await waitShipped(ingest);
    assert.deepEqual(await storedCounts(stores, workspace.id), { total: 2, distinct: 2 });
  } finally {
    await ingest.close(0);
  }
});

test('a tier "maybe" that is a hash collision stores the event; each key then answers with its own row', async () => {
  const { workspace, token } = await stores.workspace('free');
  // Every key hashes alike: each lookup after the first finds a colliding entry.
  const ingest = await startTestIngest(stores, { DEDUPE_HOT_SECONDS: '1' }, { dedupeHash: () => '\0'.repeat(16) });
  try {
    const a = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'a'), token);
    assert.equal(a.body.duplicate, false);
    await waitShipped(ingest);
    await hotGone(stores, workspace.id, 'a');
    // B collides with A, in another hour: the tier says "maybe", ClickHouse says no, so B is stored.
    const b = await post(
      ingest.url,
      '/api/v1/meter',
      event(workspace.id, 'b', { occurred_at: new Date(Date.now() - 3 * 3_600_000).toISOString() }),
      token,
    );
    assert.equal(b.status, 202);
    assert.equal(b.body.duplicate, false, JSON.stringify(b.body));
    assert.notEqual(b.body.id, a.body.id);
    assert.equal(b.headers.get('x-plan-events-used'), '2');
    await waitShipped(ingest);
    await hotGone(stores, workspace.id, 'b');
    for (const [key, orig] of [
      ['b', b],
      ['a', a],
    ] as const) {
      const r = await post(ingest.url, '/api/v1/meter', retry(workspace.id, key), token);
      assert.equal(r.body.duplicate, true, `${key}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.id, orig.body.id, `${key} answers with its own row`);
      assert.equal(r.headers.get('x-plan-events-used'), '2');
    }
    await waitShipped(ingest);
    assert.deepEqual(await storedCounts(stores, workspace.id), { total: 2, distinct: 2 });
  } finally {
    await ingest.close(0);
  }
});
