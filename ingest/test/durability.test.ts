import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { createClickHouse } from '@meterd/core/clickhouse';
import { migrateClickHouse } from '@meterd/core/migrate';
import { CH_MIGRATIONS_DIR } from '@meterd/core/testing';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { newEventId } from '@meterd/core/ids';
import { migratePostgres } from '@meterd/core/migrate';
import { createPool, insertApiKey, insertWorkspace } from '@meterd/core/store';
import { PG_MIGRATIONS_DIR } from '@meterd/core/testing';
import { SpoolWriter } from '../src/spool/writer.js';
import { spoolLine, toRow } from '../src/rows.js';
import { batchAcked, event, post, startTestIngest, tempDir, until, waitShipped } from './helpers.js';
import { freePort, killHard, PrivateClickHouse, PrivatePostgres, PrivateRedis, spawnIngest } from './processes.js';

/**
 * Invariant 1, acknowledged means durable: an event that got a 202 survives kill -9 of ingest and
 * a ClickHouse outage, and is stored exactly once.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('durability');
});
after(async () => {
  await stores.close();
});

/** Clients sending 20-event batches with fresh keys until `stop()`; `acked` holds every key that got a 202. */
function load(url: string, workspaceId: string, token: string, clients: number, pauseMs = 0) {
  const acked = new Set<string>();
  let running = true;
  let seq = 0;
  let errors = 0;
  const one = async (c: number) => {
    while (running) {
      const events = Array.from({ length: 20 }, () => event(workspaceId, `c${c}-${seq++}`));
      const keys = await batchAcked(url, token, events);
      if (keys === null) {
        errors++; // connection refused/reset while ingest is down: not acknowledged, so not promised
        await new Promise((r) => setTimeout(r, 20));
      } else for (const k of keys) acked.add(k);
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    }
  };
  const all = Promise.all(Array.from({ length: clients }, (_, c) => one(c)));
  const handle = {
    acked,
    errors: () => errors,
    stop: async () => {
      running = false;
      await all;
    },
  };
  loads.add(handle);
  return handle;
}

/** Every load started; a test that fails mid-way still stops its load, so the file can exit. */
const loads = new Set<{ stop(): Promise<void> }>();
afterEach(async () => {
  for (const l of loads) await l.stop();
  loads.clear();
});

/** Keys stored more than once after dedupe (must be none), and the set of stored keys. */
async function stored(client: ReturnType<typeof createClickHouse>, workspaceId: string) {
  const rs = await client.query({
    query: `SELECT idempotency_key, count() AS n FROM events FINAL WHERE workspace_id = '${workspaceId}' GROUP BY idempotency_key`,
    format: 'JSONEachRow',
  });
  const rows = await rs.json<{ idempotency_key: string; n: string }>();
  return { keys: new Set(rows.map((r) => r.idempotency_key)), doubled: rows.filter((r) => r.n !== '1').length };
}

// `interval` acknowledges before any fdatasync (here up to a second before): the page cache outlives
// the killed process, so its promise to a kill -9 is the same as `always`. INGEST_ACK=clickhouse
// acknowledges after the insert: every 202 is in ClickHouse at the kill already, and the restart
// gets a new, empty disk (an ephemeral volume).
const modes: { name: string; env: Record<string, string>; ephemeral: boolean }[] = [
  { name: 'SPOOL_FSYNC=always', env: { SPOOL_FSYNC: 'always' }, ephemeral: false },
  { name: 'SPOOL_FSYNC=interval', env: { SPOOL_FSYNC: 'interval' }, ephemeral: false },
  { name: 'INGEST_ACK=clickhouse', env: { INGEST_ACK: 'clickhouse' }, ephemeral: true },
];
for (const mode of modes)
  test(`${mode.name}: kill -9 of ingest under load, then restart: every event that got a 202 is in ClickHouse exactly once`, async () => {
    const { workspace, token } = await stores.workspace('enterprise');
    const port = String(await freePort());
    const env = {
      ...stores.env,
      INGEST_PORT: port,
      INGEST_THREADS: '2',
      SPOOL_DIR: tempDir('kill9'),
      SHIP_INTERVAL_MS: '200',
      SPOOL_FSYNC_INTERVAL_MS: '1000',
      ...mode.env,
    };
    let ingest = await spawnIngest(env);
    const l = load(ingest.url, workspace.id, token, 16);
    await until(
      async () => l.acked.size,
      (n) => n > 3_000,
      20_000,
      'some load to be acknowledged',
    );
    await killHard(ingest.child);
    const ackedAtKill = l.acked.size;
    if (mode.ephemeral) {
      const atKill = await stored(stores.clickhouse, workspace.id);
      assert.deepEqual(
        [...l.acked].filter((k) => !atKill.keys.has(k)),
        [],
        'every 202 was in ClickHouse when the process died',
      );
    }
    ingest = await spawnIngest(mode.ephemeral ? { ...env, SPOOL_DIR: tempDir('kill9-new') } : env);
    await new Promise((r) => setTimeout(r, 500));
    await l.stop();
    assert.ok(ackedAtKill > 0 && l.errors() > 0, 'the kill happened under load');
    // Everything acknowledged must reach ClickHouse once the restarted ingest shipped its spool.
    const result = await until(
      () => stored(stores.clickhouse, workspace.id),
      (s) => [...l.acked].every((k) => s.keys.has(k)),
      20_000,
      'acknowledged events to reach ClickHouse',
    );
    assert.equal(result.doubled, 0);
    const missing = [...l.acked].filter((k) => !result.keys.has(k));
    assert.deepEqual(missing, []);
    await killHard(ingest.child);
  });

test(
  'ClickHouse stopped for 30 s under load, then started: no event that got a 202 is lost',
  { timeout: 120_000 },
  async () => {
    const ch = new PrivateClickHouse(tempDir('ch'), await freePort(), await freePort());
    await ch.start();
    const connect = (database?: string) =>
      createClickHouse({ url: new URL(ch.url), database: database ?? 'default', user: 'default', password: '' });
    await migrateClickHouse(connect, 'meterd', CH_MIGRATIONS_DIR);
    const client = connect('meterd');
    const ingest = await startTestIngest(stores, {
      CLICKHOUSE_URL: ch.url,
      CLICKHOUSE_DATABASE: 'meterd',
      SHIP_INTERVAL_MS: '100',
    });
    try {
      const { workspace, token } = await stores.workspace('enterprise');
      const l = load(ingest.url, workspace.id, token, 2, 20);
      await until(
        async () => l.acked.size,
        (n) => n > 1_000,
        10_000,
        'load before the outage',
      );
      const step = (label: string) =>
        process.env.TEST_LOG_LEVEL &&
        console.error(new Date().toISOString(), label, l.acked.size, ingest.shipper.unshippedBytes);
      step('stopping ClickHouse');
      await ch.stop();
      step('stopped');
      const ackedBefore = l.acked.size;
      await new Promise((r) => setTimeout(r, 30_000));
      assert.ok(l.acked.size > ackedBefore, 'ingest kept acknowledging while ClickHouse was down');
      assert.ok(ingest.shipper.unshippedBytes > 0, 'the spool held what ClickHouse could not take');
      step('starting ClickHouse');
      await ch.start();
      step('started');
      await l.stop();
      step('load stopped');
      await waitShipped(ingest, 30_000);
      step('shipped');
      const s = await stored(client, workspace.id);
      assert.equal(s.doubled, 0);
      assert.deepEqual(
        [...l.acked].filter((k) => !s.keys.has(k)),
        [],
      );
      assert.equal(s.keys.size, l.acked.size);
    } finally {
      await ingest.close(0);
      await client.close();
      await ch.stop();
    }
  },
);

test('SIGTERM under load drains: requests in flight are answered, the spool is shipped, the process exits 0', async () => {
  const { workspace, token } = await stores.workspace('enterprise');
  const port = String(await freePort());
  const ingest = await spawnIngest({
    ...stores.env,
    INGEST_PORT: port,
    INGEST_THREADS: '2',
    SPOOL_DIR: tempDir('term'),
    SHIP_INTERVAL_MS: '60000',
  });
  const l = load(ingest.url, workspace.id, token, 8);
  await until(
    async () => l.acked.size,
    (n) => n > 2_000,
    20_000,
    'load before SIGTERM',
  );
  const exited = new Promise<number | null>((r) => ingest.child.once('exit', (code) => r(code)));
  ingest.child.kill('SIGTERM');
  assert.equal(await exited, 0, `${ingest.child.signalCode ?? ''} ${ingest.output()}`);
  await l.stop();
  // SHIP_INTERVAL_MS is a minute: only the drain's final flush can have put these rows in ClickHouse.
  const s = await stored(stores.clickhouse, workspace.id);
  assert.equal(s.doubled, 0);
  assert.deepEqual(
    [...l.acked].filter((k) => !s.keys.has(k)),
    [],
  );
});

test('lowering INGEST_THREADS strands nothing: the spool of a thread that no longer exists is shipped, then removed', async () => {
  const { workspace } = await stores.workspace('enterprise');
  const spoolDir = tempDir('adopt');
  // What a second thread left behind: acknowledged rows that never reached ClickHouse.
  const orphan = SpoolWriter.open(join(spoolDir, 't1'), { segmentBytes: 1 << 20, fsync: 'always' });
  const now = Date.now();
  let data = '';
  for (let i = 0; i < 50; i++) {
    data += spoolLine(
      toRow(
        {
          workspace_id: workspace.id,
          event_type: 'checkout.completed',
          idempotency_key: `orphan-${i}`,
          quantity: 1,
          gmv_cents: 100,
          currency: 'USD',
          occurred_at_ms: now,
        },
        newEventId(),
        now,
      ),
    );
  }
  await new Promise<void>((res, rej) => orphan.append(data, 50, (e) => (e ? rej(e) : res())));
  await orphan.close();
  const ingest = await spawnIngest({
    ...stores.env,
    INGEST_PORT: String(await freePort()),
    INGEST_THREADS: '1',
    SPOOL_DIR: spoolDir,
    SHIP_INTERVAL_MS: '100',
  });
  try {
    const s = await until(
      () => stored(stores.clickhouse, workspace.id),
      (x) => x.keys.size === 50,
      15_000,
      'orphaned rows in ClickHouse',
    );
    assert.equal(s.doubled, 0);
    await until(
      async () => existsSync(join(spoolDir, 't1')),
      (e) => !e,
      10_000,
      'the orphaned folder to be removed',
    );
  } finally {
    await killHard(ingest.child);
  }
});

test(
  'Redis killed (kill -9) under load and restarted: ingest answers 503 meanwhile, recovers by itself, and every 202 is stored exactly once',
  { timeout: 120_000 },
  async () => {
    const redis = new PrivateRedis(tempDir('redis'), await freePort());
    await redis.start();
    const { workspace, token } = await stores.workspace('enterprise');
    const ingest = await startTestIngest(stores, { REDIS_URL: redis.url });
    try {
      const l = load(ingest.url, workspace.id, token, 4, 5);
      await until(
        async () => l.acked.size,
        (n) => n > 1_000,
        10_000,
        'load before the outage',
      );
      await redis.kill();
      const ackedAtKill = l.acked.size;
      // During the outage nothing may be acknowledged that cannot be deduplicated: answers are 503.
      const during = await post(ingest.url, '/api/v1/meter', event(workspace.id, 'during-outage'), token);
      assert.equal(during.status, 503);
      assert.equal(during.body.error.code, 'service_unavailable');
      // Readiness is the process's own (it can accept, spool and ship): a shared store's outage
      // must not take every replica out of the load balancer at once. The check still reports it.
      const ready = await until(
        async () =>
          (await fetch(ingest.url + '/readyz')).json() as Promise<{ ready: boolean; checks: { redis: boolean } }>,
        (r) => !r.checks.redis,
        10_000,
        'the health check to see Redis down',
      );
      assert.equal(ready.ready, true);
      await new Promise((r) => setTimeout(r, 3_000));
      // At most the request each of the 4 clients had in flight, already past its claim, may
      // finish: 4 × 20 events. Nothing sent after the kill is acknowledged.
      assert.ok(
        l.acked.size - ackedAtKill <= 4 * 20,
        `only requests already past their claim may finish: ${l.acked.size - ackedAtKill}`,
      );
      await redis.start();
      await until(
        async () => l.acked.size,
        (n) => n > ackedAtKill + 1_000,
        30_000,
        'ingest to accept again after Redis came back',
      );
      await l.stop();
      await waitShipped(ingest, 30_000);
      const s = await stored(stores.clickhouse, workspace.id);
      assert.equal(s.doubled, 0);
      assert.deepEqual(
        [...l.acked].filter((k) => !s.keys.has(k)),
        [],
      );
    } finally {
      await ingest.close(0);
      await redis.kill();
    }
  },
);

test(
  'Postgres stopped under load and restarted: cached keys keep working, an unseen key gets 503 (not 401), nothing acknowledged is lost',
  {
    timeout: 120_000,
    skip: PrivatePostgres.available() ? false : 'needs root to run a private Postgres cluster as the postgres user',
  },
  async () => {
    const pg = new PrivatePostgres(tempDir('pg'), await freePort());
    pg.init();
    await pg.start();
    const pool = createPool(new URL(pg.url), 2);
    await migratePostgres(pool, PG_MIGRATIONS_DIR);
    const wsA = await insertWorkspace(pool, { slug: 'pg-outage-a', display_name: 'A', plan: 'enterprise' });
    const keyA = await insertApiKey(pool, wsA.id);
    const wsB = await insertWorkspace(pool, { slug: 'pg-outage-b', display_name: 'B', plan: 'enterprise' });
    const keyB = await insertApiKey(pool, wsB.id);
    await pool.end();
    const ingest = await startTestIngest(stores, { DATABASE_URL: pg.url });
    try {
      const l = load(ingest.url, wsA.id, keyA.token, 4, 5);
      await until(
        async () => l.acked.size,
        (n) => n > 500,
        10_000,
        'load before the outage',
      );
      await pg.stop();
      const ackedAtStop = l.acked.size;
      await until(
        async () => l.acked.size,
        (n) => n > ackedAtStop + 200,
        20_000,
        'a cached key to keep metering while Postgres is down',
      );
      const unseen = await post(ingest.url, '/api/v1/meter', event(wsB.id, 'b-during'), keyB.token);
      assert.equal(unseen.status, 503, 'a key that cannot be checked is not called invalid');
      assert.equal(unseen.body.error.code, 'service_unavailable');
      await pg.start();
      const after = await until(
        () => post(ingest.url, '/api/v1/meter', event(wsB.id, 'b-after'), keyB.token),
        (r) => r.status === 202,
        15_000,
        'the unseen key to work again',
      );
      assert.equal(after.body.duplicate, false);
      await l.stop();
      await waitShipped(ingest, 30_000);
      const s = await stored(stores.clickhouse, wsA.id);
      assert.equal(s.doubled, 0);
      assert.deepEqual(
        [...l.acked].filter((k) => !s.keys.has(k)),
        [],
      );
      assert.equal((await stored(stores.clickhouse, wsB.id)).keys.size, 1);
    } finally {
      await ingest.close(0);
      await pg.stop();
    }
  },
);

test('a crash between the spool fsync and the Redis commit: at restart the key is committed, so a retry is a duplicate of the stored event', async () => {
  const { workspace, token } = await stores.workspace('free');
  const spoolDir = tempDir('recommit');
  const now = Date.now();
  const row = toRow(
    {
      workspace_id: workspace.id,
      event_type: 'checkout.completed',
      idempotency_key: 'crash-1',
      quantity: 2,
      gmv_cents: 700,
      currency: 'EUR',
      occurred_at_ms: now,
    },
    newEventId(),
    now,
  );
  // What the crash left: the row durable in the spool, its claim still pending in Redis.
  const w = SpoolWriter.open(join(spoolDir, 't0'), { segmentBytes: 1 << 20, fsync: 'always' });
  await new Promise<void>((res, rej) => w.append(spoolLine(row), 1, (e) => (e ? rej(e) : res())));
  await w.close();
  await stores.redis.set(
    `${stores.redisPrefix}:{${workspace.id}}:d:checkout.completed:crash-1`,
    'P:deadbeef:7',
    'PX',
    60_000,
  );
  const ingest = await startTestIngest(stores, { SPOOL_DIR: spoolDir });
  try {
    // A retryable 503 may come first: the workspace is new to this Redis, and its recovery waits for
    // the settled marks of the file's earlier ingests until their heartbeats are stale.
    const retry = await until(
      () =>
        post(
          ingest.url,
          '/api/v1/meter',
          event(workspace.id, 'crash-1', { quantity: 2, gmv_cents: 700, currency: 'EUR' }),
          token,
        ),
      (r) => r.status !== 503,
      60_000,
      'an answer other than 503',
    );
    assert.equal(retry.status, 202);
    assert.equal(retry.body.duplicate, true);
    assert.equal(retry.body.id, row.id);
    await waitShipped(ingest);
    assert.deepEqual((await stored(stores.clickhouse, workspace.id)).keys, new Set(['crash-1']));
  } finally {
    await ingest.close(0);
  }
});
