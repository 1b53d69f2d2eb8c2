import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { periodOf } from '@meterd/core/plans';
import { event, startTestIngest, tempDir, until, waitShipped } from './helpers.js';
import { freePort, PrivateRedis } from './processes.js';

/**
 * Redis restarted without its data under load (docs/redis.md): ingest notices (the epoch),
 * rebuilds the quota counter from ClickHouse, answers retries of events stored before the loss
 * as duplicates (exact ClickHouse lookups until the tier is rebuilt), and stores nothing twice.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('redisloss');
});
after(() => stores.close());

async function send(url: string, token: string, events: Record<string, unknown>[]) {
  const res = await fetch(url + '/api/v1/meter/batch', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ events }),
  });
  const body = (await res.json()) as { results?: { index: number; status: number; duplicate?: boolean }[] };
  return { status: res.status, results: body.results ?? [] };
}

test(
  'Redis restarted without its data under load: counters rebuilt, retries still duplicates, 0 lost, 0 doubled',
  { timeout: 150_000 },
  async () => {
    const redis = new PrivateRedis(tempDir('redis-loss'), await freePort(), false);
    await redis.start();
    const { workspace, token } = await stores.workspace('growth');
    const ingest = await startTestIngest(stores, { REDIS_URL: redis.url });
    const acked = new Set<string>();
    let running = true;
    let seq = 0;
    const client = async (c: number) => {
      while (running) {
        const events = Array.from({ length: 20 }, () => event(workspace.id, `c${c}-${seq++}`));
        try {
          const r = await send(ingest.url, token, events);
          for (const x of r.results) if (x.status === 202) acked.add(events[x.index]!.idempotency_key as string);
        } catch {
          await new Promise((r) => setTimeout(r, 20)); // connection trouble: nothing acknowledged
        }
      }
    };
    const load = Promise.all([0, 1, 2, 3].map(client));
    try {
      await until(
        async () => acked.size,
        (n) => n > 1_000,
        20_000,
        'load before the loss',
      );
      await redis.kill();
      const before = [...acked];
      await redis.start(); // empty: no AOF, no RDB
      await until(
        async () => acked.size,
        (n) => n > before.length + 1_000,
        30_000,
        'ingest to accept again after Redis came back empty',
      );
      // Operators are told: the rebuild is counted for the MeterdQuotaCountersRebuilt alert.
      const text = await (await fetch(ingest.url + '/metrics')).text();
      assert.match(text, /^meterd_ingest_quota_rebuilds_total [1-9]\d*$/m);
      // Retries of events acknowledged before the loss: answered as duplicates, never stored again.
      const retried = before.slice(0, 400);
      for (let i = 0; i < retried.length; i += 20) {
        const r = await send(
          ingest.url,
          token,
          retried.slice(i, i + 20).map((k) => event(workspace.id, k)),
        );
        assert.equal(r.status, 202);
        for (const x of r.results) {
          assert.equal(x.status, 202, `retry of ${retried[i + x.index]}`);
          assert.equal(x.duplicate, true, `retry of ${retried[i + x.index]} after the loss is a duplicate`);
        }
      }
      running = false;
      await load;
      await waitShipped(ingest, 30_000);
      const rs = await stores.clickhouse.query({
        query: `SELECT idempotency_key, count() AS n FROM events WHERE workspace_id = '${workspace.id}' GROUP BY idempotency_key`,
        format: 'JSONEachRow',
      });
      const rows = await rs.json<{ idempotency_key: string; n: string }>();
      const doubled = rows.filter((r) => Number(r.n) > 1).map((r) => r.idempotency_key);
      const stored = new Set(rows.map((r) => r.idempotency_key));
      assert.deepEqual(doubled, [], 'no event stored twice');
      assert.deepEqual(
        [...acked].filter((k) => !stored.has(k)),
        [],
        'every acknowledged event is stored',
      );
      // The quota counter counts each stored event once: rebuilt from ClickHouse, then counted on.
      const r = new Redis(redis.url);
      try {
        const used = Number(await r.get(`${stores.redisPrefix}:{${workspace.id}}:q:${periodOf(Date.now())}`));
        assert.equal(used, stored.size);
      } finally {
        r.disconnect();
      }
    } finally {
      running = false;
      await load;
      await ingest.close(0);
      await redis.kill();
    }
  },
);
