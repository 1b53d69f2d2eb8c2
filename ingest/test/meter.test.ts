import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { periodOf } from '@meterd/core/plans';
import { revokeApiKey } from '@meterd/core/store';
import { startTestIngest, post, event, storedCounts, waitShipped, until } from './helpers.js';

let stores: TestStores;
let ingest: Awaited<ReturnType<typeof startTestIngest>>;

before(async () => {
  stores = await openTestStores('meter');
  ingest = await startTestIngest(stores, { DEPLOY_API_KEY: 'operator-secret-for-tests' });
});
after(async () => {
  await ingest.close(0);
  await stores.close();
});

async function quotaCounter(ws: string): Promise<number> {
  return Number((await stores.redis.get(`${stores.redisPrefix}:{${ws}}:q:${periodOf(Date.now())}`)) ?? 0);
}

test('the same event twice: 202 both times, the original row with duplicate:true, plan headers, one row in ClickHouse', async () => {
  const { workspace, token } = await stores.workspace('free');
  const body = event(workspace.id, 'order_5521');
  const first = await post(ingest.url, '/api/v1/meter', body, token);
  assert.equal(first.status, 202);
  assert.equal(first.body.duplicate, false);
  assert.match(first.body.id, /^evt_[0-9a-f]{32}$/);
  assert.equal(first.body.gmv_cents, 4299);
  assert.equal(first.body.currency, 'USD');
  assert.equal(first.headers.get('x-plan-events-used'), '1');
  assert.equal(first.headers.get('x-plan-events-limit'), '500');
  assert.equal(first.headers.get('x-plan-events-remaining'), '499');

  // A retry with a different amount is still the same business event: the original row comes back.
  const second = await post(ingest.url, '/api/v1/meter', { ...body, gmv_cents: 1 }, token);
  assert.equal(second.status, 202);
  assert.equal(second.body.duplicate, true);
  assert.deepEqual({ ...second.body, duplicate: false }, first.body);
  assert.equal(second.headers.get('x-plan-events-used'), '1');
  assert.equal(second.headers.get('x-plan-events-remaining'), '499');

  await waitShipped(ingest);
  assert.deepEqual(await storedCounts(stores, workspace.id), { total: 1, distinct: 1 });
});

test('10,000 events sent concurrently, 10 % repeats: ClickHouse holds exactly the distinct ones, the quota counter equals their number', async () => {
  const { workspace, token } = await stores.workspace('growth');
  const distinct = 9_000;
  const keys: string[] = [];
  for (let i = 0; i < distinct; i++) keys.push(`o-${i}`);
  for (let i = 0; i < 1_000; i++) keys.push(`o-${(i * 7919) % distinct}`);
  // Shuffle so repeats race their originals.
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [keys[i], keys[j]] = [keys[j]!, keys[i]!];
  }
  let next = 0;
  const statuses = new Map<number, number>();
  const worker = async () => {
    while (next < keys.length) {
      const k = keys[next++]!;
      let r = await post(ingest.url, '/api/v1/meter', event(workspace.id, k), token);
      // 409 = the same key is being stored by a concurrent request: retry as a client would.
      while (r.status === 409) {
        await new Promise((res) => setTimeout(res, 5));
        r = await post(ingest.url, '/api/v1/meter', event(workspace.id, k), token);
      }
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  assert.deepEqual([...statuses], [[202, 10_000]]);
  await waitShipped(ingest);
  assert.deepEqual(await storedCounts(stores, workspace.id), { total: distinct, distinct });
  assert.equal(await quotaCounter(workspace.id), distinct);
});

test('batch: per-event results, rejects counted in `rejected`, duplicates inside the batch answered as duplicates', async () => {
  const { workspace, token } = await stores.workspace('growth');
  const r = await post(
    ingest.url,
    '/api/v1/meter/batch',
    {
      events: [
        event(workspace.id, 'b-1'),
        event('ws_someoneelse', 'b-2'),
        event(workspace.id, 'b-3', { gmv_cents: Number.MAX_SAFE_INTEGER + 1 }),
        event(workspace.id, 'b-1'),
        event(workspace.id, 'b-4', { currency: 'eur' }),
      ],
    },
    token,
  );
  assert.equal(r.status, 202);
  assert.equal(r.body.accepted, 2);
  assert.equal(r.body.duplicates, 1);
  assert.equal(r.body.rejected, 2);
  assert.deepEqual(
    r.body.results.map((x: any) => [x.index, x.status, x.error?.code ?? null, x.duplicate ?? null]),
    [
      [0, 202, null, false],
      [1, 403, 'workspace_mismatch', null],
      [2, 400, 'integer_out_of_range', null],
      [3, 202, null, true],
      [4, 202, null, false],
    ],
  );
  assert.equal(r.body.results[3].id, r.body.results[0].id);
  assert.equal(r.headers.get('x-plan-events-used'), '2');
  await waitShipped(ingest);
  const rs = await stores.clickhouse.query({
    query: `SELECT idempotency_key, currency FROM events FINAL WHERE workspace_id = '${workspace.id}' ORDER BY idempotency_key`,
    format: 'JSONEachRow',
  });
  assert.deepEqual(await rs.json(), [
    { idempotency_key: 'b-1', currency: 'USD' },
    { idempotency_key: 'b-4', currency: 'EUR' },
  ]);
});

test('plan quota: the free plan takes 500 events, then 429 plan_quota_exceeded; duplicates never count', async () => {
  const { workspace, token } = await stores.workspace('free');
  for (let b = 0; b < 5; b++) {
    const events = Array.from({ length: 100 }, (_, i) => event(workspace.id, `q-${b * 100 + i}`));
    const r = await post(ingest.url, '/api/v1/meter/batch', { events }, token);
    assert.equal(r.body.accepted, 100);
  }
  const dup = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'q-7'), token);
  assert.equal(dup.status, 202);
  assert.equal(dup.body.duplicate, true);
  const over = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'q-500'), token);
  assert.equal(over.status, 429);
  assert.equal(over.body.error.code, 'plan_quota_exceeded');
  assert.equal(over.headers.get('x-plan-events-used'), '500');
  assert.equal(over.headers.get('x-plan-events-remaining'), '0');
  const batch = await post(
    ingest.url,
    '/api/v1/meter/batch',
    { events: [event(workspace.id, 'q-501'), event(workspace.id, 'q-3')] },
    token,
  );
  assert.deepEqual(
    batch.body.results.map((x: any) => x.error?.code ?? 'ok'),
    ['plan_quota_exceeded', 'ok'],
  );
  assert.equal(await quotaCounter(workspace.id), 500);
  await waitShipped(ingest);
  assert.deepEqual(await storedCounts(stores, workspace.id), { total: 500, distinct: 500 });
});

test('a storage write failing after the Redis claim: the retry is stored, not reported as a duplicate', async () => {
  let failNext = 1;
  const flaky = await startTestIngest(
    stores,
    {},
    {
      wrapSpool: (inner) => ({
        append(data, rows, done) {
          if (failNext-- > 0) return done(new Error('injected disk failure'));
          inner.append(data, rows, done);
        },
      }),
    },
  );
  try {
    const { workspace, token } = await stores.workspace('free');
    const body = event(workspace.id, 'order-after-failure');
    const failed = await post(flaky.url, '/api/v1/meter', body, token);
    assert.equal(failed.status, 503);
    assert.equal(failed.body.error.code, 'service_unavailable');
    assert.equal(failed.headers.get('retry-after'), '1');
    assert.equal(await quotaCounter(workspace.id), 0, 'the released claim gives the quota back');
    const retry = await post(flaky.url, '/api/v1/meter', body, token);
    assert.equal(retry.status, 202);
    assert.equal(retry.body.duplicate, false);
    await waitShipped(flaky);
    assert.deepEqual(await storedCounts(stores, workspace.id), { total: 1, distinct: 1 });
  } finally {
    await flaky.close(0);
  }
});

test('a revoked key stops working within a second', async () => {
  const { workspace, token, keyId } = await stores.workspace('free');
  assert.equal((await post(ingest.url, '/api/v1/meter', event(workspace.id, 'r-1'), token)).status, 202);
  const revokedAt = Date.now();
  assert.equal(await revokeApiKey(stores.pool, stores.redis, workspace.id, keyId), true);
  const r = await until(
    () => post(ingest.url, '/api/v1/meter', event(workspace.id, 'r-2'), token),
    (x) => x.status === 401,
    1_000,
    'the revoked key to be refused',
  );
  assert.equal(r.body.error.code, 'invalid_api_key');
  assert.ok(Date.now() - revokedAt < 1_000);
});

test('the operator key meters for any workspace; an unknown workspace is 404', async () => {
  const { workspace } = await stores.workspace('scale');
  const r = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'op-1'), 'operator-secret-for-tests');
  assert.equal(r.status, 202);
  assert.equal(r.headers.get('x-plan-events-limit'), '5000000');
  const missing = await post(
    ingest.url,
    '/api/v1/meter',
    event('ws_doesnotexist', 'op-2'),
    'operator-secret-for-tests',
  );
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'workspace_not_found');
});

test('enterprise is unlimited and says so in the headers', async () => {
  const { workspace, token } = await stores.workspace('enterprise');
  const r = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'e-1'), token);
  assert.equal(r.status, 202);
  assert.equal(r.headers.get('x-plan-events-limit'), 'unlimited');
  assert.equal(r.headers.get('x-plan-events-remaining'), 'unlimited');
});

test('health, readiness and metrics', async () => {
  assert.equal((await fetch(ingest.url + '/healthz')).status, 200);
  const ready = await until(
    async () => (await fetch(ingest.url + '/readyz')).json() as Promise<any>,
    (x) => x.ready === true,
    5_000,
  );
  assert.equal(ready.checks.redis, true);
  assert.equal(ready.checks.postgres, true);
  const text = await (await fetch(ingest.url + '/metrics')).text();
  assert.match(text, /^meterd_ingest_events_accepted_total [1-9]\d*$/m);
  assert.match(text, /^meterd_ingest_events_duplicate_total [1-9]\d*$/m);
  assert.match(text, /^meterd_ingest_events_rejected_total\{reason="plan_quota_exceeded"\} [1-9]\d*$/m);
  assert.match(text, /^meterd_ingest_flush_seconds_count [1-9]\d*$/m);
  assert.match(text, /^meterd_ingest_spool_unshipped_rows \d+$/m);
  assert.match(text, /^meterd_ingest_dedupe_round_trips_total [1-9]\d*$/m);
  const nf = await fetch(ingest.url + '/nope');
  assert.equal(nf.status, 404);
  assert.equal(((await nf.json()) as any).error.code, 'not_found');
  const wrongMethod = await fetch(ingest.url + '/api/v1/meter');
  assert.equal(wrongMethod.status, 405);
});
