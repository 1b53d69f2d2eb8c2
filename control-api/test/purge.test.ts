import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { clickHouseFromConfig, lit } from '@meterd/core/clickhouse';
import { quotaKey, rejectionsKey } from '@meterd/core/contracts';
import { createPool, type Pool } from '@meterd/core/store';
import { GateProxy, openTestStores, startPgBouncer, type TestStores } from '@meterd/core/testing';
import { call, eventually, OPERATOR_KEY, startTestControl } from './helpers.js';
import { FinanceService } from '../src/services/finance.js';
import { PurgeService } from '../src/services/purge.js';
import type { ControlServer } from '../src/server.js';

/**
 * Purge after the grace period (docs/api.md §8) with a moved clock: a deleted workspace and its
 * test environment lose their keys, webhooks, ClickHouse events and rollups (a mutation, on 18.16
 * too) and Redis keys; the finance export answers the same numbers afterwards; other workspaces
 * keep everything. Runs are bounded, idempotent, and a run that failed half-way is finished by the next.
 */
let stores: TestStores;
let s: ControlServer & { cfg: { REDIS_KEY_PREFIX: string } };
const DAY = 86_400_000;

before(async () => {
  stores = await openTestStores('ctlpurge');
  // The loop never runs by itself during the test: the test calls run() with its own clock.
  s = await startTestControl(stores, { WORKSPACE_PURGE_INTERVAL_MS: '86400000' });
});
const clients: { close(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await s.close();
  await stores.close();
});

const ws = (id: string, rest = '') => `/api/v1/workspaces/${id}${rest}`;

/** A purger on the test's stores; `pool` replaces the direct pool for everything but the lock. */
function purger(batch: number, clickhouseUrl?: string, pool: Pool = stores.pool): PurgeService {
  const ch = clickHouseFromConfig(
    {
      CLICKHOUSE_URL: new URL(clickhouseUrl ?? stores.env.CLICKHOUSE_URL!),
      CLICKHOUSE_DATABASE: stores.chDatabase,
      CLICKHOUSE_USER: stores.env.CLICKHOUSE_USER!,
      CLICKHOUSE_PASSWORD: stores.env.CLICKHOUSE_PASSWORD!,
    },
    { requestTimeoutMs: 5_000 },
  );
  clients.push(ch);
  return new PurgeService({
    pool,
    lockPool: stores.pool,
    ch,
    chCluster: '',
    redis: stores.redis,
    redisPrefix: stores.redisPrefix,
    finance: new FinanceService(pool, ch),
    batch,
  });
}

/** A workspace with a webhook, a test key, events and a monthly rollup in both environments, and Redis keys. */
async function populated(slug: string) {
  const r = await call(s.url, 'POST', '/api/v1/signup', {
    body: { slug, display_name: slug, contact_email: `${slug}@example.com` },
  });
  const live: string = r.json.workspace.id;
  const token: string = r.json.api_key.token;
  const testId: string = (await call(s.url, 'GET', ws(live), { token })).json.workspace.environments.test;
  await call(s.url, 'POST', ws(live, '/api-keys?environment=test'), { token, body: { name: 't' } });
  await call(s.url, 'POST', ws(live, '/webhooks'), {
    token,
    body: { url: 'https://hooks.example.com/x', events: ['meter.quota.warning'] },
    // Its stored reply (encrypted, scoped to the workspace) must go with the workspace.
    headers: { 'idempotency-key': `hook-${slug}` },
  });
  // A meter with an alert that fired: definitions, alerts and firings go with the workspace.
  const meter = await call(s.url, 'POST', ws(live, '/meters'), {
    token,
    body: { slug: 'calls', event_types: ['api.call'], aggregation: 'count' },
  });
  assert.equal(meter.status, 201, meter.text);
  const alert = await call(s.url, 'POST', ws(live, '/alerts'), {
    token,
    body: { meter: 'calls', threshold_kind: 'absolute', threshold: 1, period: 'month' },
  });
  assert.equal(alert.status, 201, alert.text);
  await stores.pool.query(
    "INSERT INTO meter_alert_firings (alert_id, period_start, threshold, value) VALUES ($1, '2026-10-01', 1, 1)",
    [alert.json.alert.id],
  );
  for (const [id, q] of [
    [live, 7],
    [testId, 70],
  ] as const) {
    await stores.clickhouse.insert({
      table: 'events',
      values: [
        {
          workspace_id: id,
          event_type: 'api.call',
          idempotency_key: 'k1',
          event_id: `evt_${id}`,
          quantity: q,
          gmv_cents: 0,
          currency: 'USD',
          occurred_at: '2026-10-01 10:00:00',
          received_at: '2026-10-01 10:00:01',
        },
      ],
      format: 'JSONEachRow',
    });
    await stores.clickhouse.insert({
      table: 'usage_monthly',
      values: [
        {
          workspace_id: id,
          event_type: 'api.call',
          currency: 'USD',
          window_start: '2026-10-01 00:00:00',
          events: 1,
          quantity: q,
          gmv_cents: 0,
          first_event_at: '2026-10-01 10:00:00',
          last_event_at: '2026-10-01 10:00:00',
          late_events: 0,
          version: 1,
          computed_at: '2026-10-01 11:00:00',
        },
      ],
      format: 'JSONEachRow',
    });
    await stores.redis.set(quotaKey(stores.redisPrefix, id, '202610'), '1');
    await stores.redis.lpush(rejectionsKey(stores.redisPrefix, id), '{}');
  }
  return { live, test: testId, token };
}

async function chRows(ids: string[]): Promise<number> {
  let n = 0;
  for (const table of ['events', 'usage_monthly']) {
    const rs = await stores.clickhouse.query({
      query: `SELECT count() AS n FROM ${table} WHERE workspace_id IN (${ids.map(lit).join(', ')})`,
      format: 'JSONEachRow',
    });
    n += Number((await rs.json<{ n: string }>())[0]!.n);
  }
  return n;
}

async function pgRows(ids: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of ['api_keys', 'webhook_endpoints', 'outbox_events', 'meters', 'meter_alerts']) {
    const { rows } = await stores.pool.query(`SELECT count(*)::int AS n FROM ${t} WHERE workspace_id = ANY($1)`, [ids]);
    out[t] = rows[0].n;
  }
  const { rows } = await stores.pool.query(
    `SELECT count(*)::int AS n FROM idempotency_keys WHERE scope = ANY(SELECT 'ws:' || x FROM unnest($1::text[]) AS x)`,
    [ids],
  );
  out.idempotency_keys = rows[0].n;
  const { rows: firings } = await stores.pool.query(
    'SELECT count(*)::int AS n FROM meter_alert_firings f JOIN meter_alerts a ON a.id = f.alert_id WHERE a.workspace_id = ANY($1)',
    [ids],
  );
  out.meter_alert_firings = firings[0].n;
  return out;
}

const redisKeys = async (id: string) => stores.redis.keys(`${stores.redisPrefix}:{${id}}:*`);

test('a workspace past its grace period is purged everywhere; its export stays; others keep everything', async () => {
  const a = await populated('purge-a');
  const kept = await populated('purge-kept');
  const exportBefore = (await call(s.url, 'GET', ws(a.live, '/export'), { token: OPERATOR_KEY })).json;
  assert.equal(exportBefore.usage[0].quantity, '7');
  assert.equal((await call(s.url, 'DELETE', ws(a.live), { token: a.token })).status, 200);

  const p = purger(50);
  assert.deepEqual((await p.run()).purged, [], 'nothing is due during the grace period');
  const later = new Date(Date.now() + 31 * DAY);
  assert.deepEqual((await p.run(later)).purged.sort(), [a.live, a.test].sort());

  assert.deepEqual(await pgRows([a.live, a.test]), {
    api_keys: 0,
    webhook_endpoints: 0,
    outbox_events: 0,
    meters: 0,
    meter_alerts: 0,
    idempotency_keys: 0,
    meter_alert_firings: 0,
  });
  assert.deepEqual(await redisKeys(a.live), []);
  assert.deepEqual(await redisKeys(a.test), []);
  // The mutation runs in the background: wait for it, on the rows themselves.
  await eventually(async () => (await chRows([a.live, a.test])) === 0, 20_000, 'the ClickHouse rows to be deleted');

  const tomb = (await call(s.url, 'GET', ws(a.live), { token: OPERATOR_KEY })).json.workspace;
  assert.deepEqual([tomb.id, tomb.contact_email, tomb.deleted_at !== null], [a.live, null, true]);
  const exportAfter = (await call(s.url, 'GET', ws(a.live, '/export'), { token: OPERATOR_KEY })).json;
  assert.deepEqual([exportAfter.usage, exportAfter.billing], [exportBefore.usage, exportBefore.billing]);
  const restore = await call(s.url, 'POST', ws(a.live, '/restore'), { token: OPERATOR_KEY });
  assert.equal(restore.json.error.code, 'restore_window_closed');

  // The other workspace lost nothing.
  assert.deepEqual(await pgRows([kept.live, kept.test]), {
    api_keys: 2,
    webhook_endpoints: 1,
    outbox_events: 1,
    meters: 1,
    meter_alerts: 1,
    idempotency_keys: 1,
    meter_alert_firings: 1,
  });
  assert.equal(await chRows([kept.live, kept.test]), 4);
  assert.equal((await redisKeys(kept.live)).length, 2);
  assert.equal((await redisKeys(kept.test)).length, 2);

  assert.deepEqual((await p.run(later)).purged, [], 'a second run has nothing left to do');
});

test('runs are bounded, and a run that failed half-way is finished by the next without losing the export', async () => {
  const b = await populated('purge-b');
  const c = await populated('purge-c');
  const exportBefore = (await call(s.url, 'GET', ws(b.live, '/export'), { token: OPERATOR_KEY })).json;
  for (const w of [b, c]) assert.equal((await call(s.url, 'DELETE', ws(w.live), { token: w.token })).status, 200);
  const later = new Date(Date.now() + 31 * DAY);

  // ClickHouse unreachable: the export was kept and Postgres purged, then the run stops, unfinished.
  await assert.rejects(purger(50, 'http://127.0.0.1:9').run(later));
  const { rows } = await stores.pool.query(
    'SELECT count(*)::int AS n FROM workspaces WHERE id = ANY($1) AND purged_at IS NULL',
    [[b.live, b.test, c.live, c.test]],
  );
  assert.equal(rows[0].n, 4, 'nothing is marked purged');
  assert.ok((await chRows([b.live])) > 0);

  const p = purger(3);
  const first = (await p.run(later)).purged;
  assert.equal(first.length, 3, 'at most a batch per run');
  // Two replicas at once: one runs, the other finds the lock taken (or, if later, nothing due).
  const [x, y] = await Promise.all([p.run(later), purger(3).run(later)]);
  assert.deepEqual([...first, ...x.purged, ...y.purged].sort(), [b.live, b.test, c.live, c.test].sort());
  await eventually(async () => (await chRows([b.live, b.test, c.live, c.test])) === 0, 20_000, 'the rows to go');
  const exportAfter = (await call(s.url, 'GET', ws(b.live, '/export'), { token: OPERATOR_KEY })).json;
  assert.deepEqual(exportAfter.usage, exportBefore.usage, 'the copy taken before the failure is the one kept');
});

test('through PgBouncer in transaction mode, one run at a time: the lock is held on the session URL', async () => {
  // One server connection behind the pooler: every client shares one Postgres session, so a
  // session-level lock taken through it would be re-entered by the next replica's try_lock.
  const bouncer = await startPgBouncer(6437, { poolSize: 1 });
  const chUrl = new URL(stores.env.CLICKHOUSE_URL!);
  const gate = await GateProxy.start({ host: chUrl.hostname, port: Number(chUrl.port) });
  const through = createPool(bouncer.urlFor(stores.databaseUrl), 3);
  try {
    const d = await populated('purge-bouncer');
    assert.equal((await call(s.url, 'DELETE', ws(d.live), { token: d.token })).status, 200);
    const later = new Date(Date.now() + 31 * DAY);
    // The first run stops at its first ClickHouse request, holding the lock.
    gate.hold();
    const first = purger(50, `http://127.0.0.1:${gate.port}`, through).run(later);
    await eventually(async () => gate.heldBytes > 0, 10_000, 'the first run to reach ClickHouse');
    assert.deepEqual((await purger(50, undefined, through).run(later)).purged, [], 'a second run finds the lock taken');
    gate.release();
    assert.deepEqual((await first).purged.sort(), [d.live, d.test].sort());
    await eventually(async () => (await chRows([d.live, d.test])) === 0, 20_000, 'the rows to go');
  } finally {
    gate.release();
    await through.end();
    await gate.close();
    await bouncer.stop();
  }
});
