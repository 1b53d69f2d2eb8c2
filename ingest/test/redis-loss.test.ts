import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { periodOf } from '@meterd/core/plans';
import { dedupeRegistryKey } from '@meterd/core/contracts';
import { loadIngestConfig } from '../src/config.js';
import { createEventsInserter } from '../src/spool/row-binary.js';
import { event, startTestIngest, storedCounts, tempDir, until, waitShipped } from './helpers.js';
import { PrivateRedis } from './processes.js';
import { privateRedisPort } from './dedupe-ports.js';

/**
 * Redis restarted without its data under load (docs/redis.md): ingest notices (the workspace's
 * marker is gone), waits until every live ingest thread has shipped what it acknowledged, rebuilds
 * the quota counter from ClickHouse, answers retries of events stored before the loss as
 * duplicates (exact ClickHouse lookups until the tier is rebuilt), and stores nothing twice.
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
    const redis = new PrivateRedis(tempDir('redis-loss'), await privateRedisPort(), false);
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

/** Per key of `keys`: its answer (202 stored, 202 duplicate, or the rejection's status). */
async function sendKeys(url: string, token: string, workspaceId: string, keys: string[]) {
  const out = new Map<string, { status: number; duplicate?: boolean }>();
  for (let i = 0; i < keys.length; i += 50) {
    const part = keys.slice(i, i + 50);
    const r = await send(
      url,
      token,
      part.map((k) => event(workspaceId, k)),
    );
    for (const x of r.results) out.set(part[x.index]!, { status: x.status, duplicate: x.duplicate });
  }
  return out;
}

/** Sends `keys` until each is answered other than 503 (which stores nothing). */
async function storedOnce(url: string, token: string, workspaceId: string, keys: string[]) {
  const answered = new Map<string, { status: number; duplicate?: boolean }>();
  await until(
    async () => {
      const rest = keys.filter((k) => !answered.has(k));
      for (const [k, r] of await sendKeys(url, token, workspaceId, rest)) if (r.status !== 503) answered.set(k, r);
      return answered.size;
    },
    (n) => n === keys.length,
    40_000,
    `${keys.length} keys to be answered`,
  );
  return answered;
}

for (const loss of ['Redis restarted empty', "only the workspace's slot lost its keys"] as const)
  test(
    `two ingest threads, ${loss}: the other thread's acknowledged-unshipped events retried during the recovery are duplicates, counted once`,
    { timeout: 150_000 },
    async () => {
      const redis = new PrivateRedis(tempDir('redis-loss2'), await privateRedisPort(), false);
      await redis.start();
      const admin = new Redis(redis.url);
      const { workspace, token } = await stores.workspace('growth');
      // A workspace whose only events are B's unshipped ones: ClickHouse knows nothing of it.
      const young = await stores.workspace('growth');
      const env = { REDIS_URL: redis.url, DEDUPE_PENDING_TTL_MS: '4000' };
      const a = await startTestIngest(stores, env);
      // Thread B ships only when the test lets it: its acknowledged events wait in its spool.
      const cfg = loadIngestConfig(stores.env);
      const insert = createEventsInserter({
        url: cfg.CLICKHOUSE_URL,
        database: cfg.CLICKHOUSE_DATABASE,
        user: cfg.CLICKHOUSE_USER,
        password: cfg.CLICKHOUSE_PASSWORD,
      });
      let openGate!: () => void;
      const gate = new Promise<void>((r) => (openGate = r));
      let gated = true;
      const b = await startTestIngest(stores, env, {
        index: 1,
        insertRows: async (body, rows) => {
          if (gated) await gate;
          return insert(body, rows);
        },
      });
      const acked = new Set<string>();
      let running = true;
      let seq = 0;
      const load = (async () => {
        while (running) {
          const events = Array.from({ length: 20 }, () => event(workspace.id, `a-${seq++}`));
          try {
            const r = await send(a.url, token, events);
            for (const x of r.results) if (x.status === 202) acked.add(events[x.index]!.idempotency_key as string);
          } catch {
            await new Promise((r) => setTimeout(r, 20)); // connection trouble: nothing acknowledged
          }
        }
      })();
      try {
        await until(
          async () => acked.size,
          (n) => n > 300,
          20_000,
          'load on thread A',
        );
        const onB = Array.from({ length: 200 }, (_, i) => `b-${i}`);
        // The young workspace first, while B's spool is empty. (503 = nothing stored: retried. The
        // registry is seconds old, so a new workspace waits until every thread shipped past its birth.)
        const youngKeys = onB.slice(0, 50);
        const youngFirst = await storedOnce(b.url, young.token, young.workspace.id, youngKeys);
        for (const k of youngKeys) assert.deepEqual(youngFirst.get(k), { status: 202, duplicate: false });
        const first = await sendKeys(b.url, token, workspace.id, onB);
        for (const k of onB) assert.deepEqual(first.get(k), { status: 202, duplicate: false }, `${k} stored on B`);
        for (const k of onB) acked.add(k);
        assert.ok(b.shipper.unshippedBytes > 0, "B's events are acknowledged but not shipped");

        if (loss === 'Redis restarted empty') {
          await redis.kill();
          await redis.start();
        } else {
          // What a cluster node that lost its data does to one workspace: every key of its slot
          // goes; the registry and the threads' shipped times live elsewhere and stay.
          for (const ws of [workspace.id, young.workspace.id]) {
            const keys = await admin.keys(`${stores.redisPrefix}:{${ws}}:*`);
            assert.ok(keys.length > 0);
            await admin.del(...keys);
            assert.equal(await admin.hexists(dedupeRegistryKey(stores.redisPrefix), ws), 1);
          }
        }
        // Retried through A while B still holds them: refused (retryable), never stored again.
        const during = await sendKeys(a.url, token, workspace.id, onB);
        const youngDuring = await sendKeys(a.url, young.token, young.workspace.id, youngKeys);
        for (const [k, r] of [...during, ...youngDuring])
          assert.ok(r.status === 503 || r.duplicate === true, `${k} while B has not shipped: ${JSON.stringify(r)}`);
        gated = false;
        openGate();
        // Once B has shipped, the recovery goes on: each retry is a duplicate.
        const answered = await storedOnce(a.url, token, workspace.id, onB);
        for (const k of onB) assert.deepEqual(answered.get(k), { status: 202, duplicate: true }, `retry of ${k}`);
        const youngAfter = await storedOnce(a.url, young.token, young.workspace.id, youngKeys);
        for (const k of youngKeys)
          assert.deepEqual(youngAfter.get(k), { status: 202, duplicate: true }, `retry of ${k}`);
        await until(
          async () => acked.size,
          (n) => n > 1_000,
          30_000,
          'A to accept new events again',
        );
        running = false;
        await load;
        await waitShipped(a, 30_000);
        await waitShipped(b, 30_000);
        const rs = await stores.clickhouse.query({
          query: `SELECT idempotency_key, count() AS n FROM events WHERE workspace_id = '${workspace.id}' GROUP BY idempotency_key`,
          format: 'JSONEachRow',
        });
        const rows = await rs.json<{ idempotency_key: string; n: string }>();
        const stored = new Set(rows.map((r) => r.idempotency_key));
        assert.deepEqual(
          rows.filter((r) => Number(r.n) > 1).map((r) => r.idempotency_key),
          [],
          'no event stored twice',
        );
        assert.deepEqual(
          [...acked].filter((k) => !stored.has(k)),
          [],
          'every acknowledged event is stored',
        );
        const used = Number(await admin.get(`${stores.redisPrefix}:{${workspace.id}}:q:${periodOf(Date.now())}`));
        assert.equal(used, stored.size, 'the quota counter counts each stored event once');
        assert.deepEqual(await storedCounts(stores, young.workspace.id), { total: 50, distinct: 50 });
        const youngUsed = await admin.get(`${stores.redisPrefix}:{${young.workspace.id}}:q:${periodOf(Date.now())}`);
        assert.equal(Number(youngUsed), 50, "the young workspace's counter, rebuilt from B's shipped events");
      } finally {
        running = false;
        openGate();
        await load;
        await a.close(0);
        await b.close(0);
        admin.disconnect();
        await redis.kill();
      }
    },
  );
