import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '@meterd/core/log';
import type { MeterUsageQuery, MeterUsageRow } from '@meterd/core/meters';
import { createPool, type Pool } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, Receiver, testEnv } from './helpers.js';
import { loadControlConfig } from '../src/config.js';
import { AlertWatch, periodBounds } from '../src/meters/alert-watch.js';
import type { MeterUsageReader } from '../src/meters/usage-reader.js';
import { startControl, type ControlServer } from '../src/server.js';

/**
 * Alert evaluation (docs/meters.md) against real Postgres, with the meter's value coming from a
 * reader the test controls: the computation behind it (core's readMeterUsage) is the aggregator's
 * and is tested there. What is tested here is when `meter.threshold.reached` fires: once per alert,
 * period and threshold however many evaluators race, never below the threshold, again the next
 * period, quota_percent from the workspace's plan.
 */
let stores: TestStores;
let s: ControlServer;
const pools: Pool[] = [];
const log = createLogger('alert-watch-test', 'silent');

/**
 * What the readers answer: per meter slug and group filter (JSON), for whatever period is asked.
 * The tests that drive check() by hand use `values` (through replica()); the server's own watch,
 * running on the real clock, reads `serverValues`, so it never fires the hand-driven alerts.
 */
const values = new Map<string, string>();
const serverValues = new Map<string, string>();
/** What each was asked, in order. */
const queries: MeterUsageQuery[] = [];
const serverQueries: MeterUsageQuery[] = [];
const keyOf = (slug: string, filter: Record<string, string> = {}) => `${slug} ${JSON.stringify(filter)}`;
const readerOf =
  (from: Map<string, string>, asked: MeterUsageQuery[]): MeterUsageReader =>
  async (q) => {
    asked.push(q);
    const v = from.get(keyOf(q.meter.slug, { ...q.filter }));
    const rows: MeterUsageRow[] =
      v === undefined ? [] : [{ startMs: q.fromMs, endMs: q.toMs, group: { ...q.filter }, value: v }];
    return rows;
  };

before(async () => {
  stores = await openTestStores('ctlalerts');
  // The server's own watch checks every 100 ms: the end-to-end test below relies on it.
  const cfg = loadControlConfig(testEnv(stores, { METER_ALERT_CHECK_MS: '100' }));
  s = await startControl(cfg, { log, meterUsage: readerOf(serverValues, serverQueries) });
});
after(async () => {
  await s.close();
  await Promise.all(pools.map((p) => p.end()));
  await stores.close();
});

const path = (id: string, rest = '') => `/api/v1/workspaces/${id}${rest}`;
let slugs = 0;

/** A workspace on `plan` with one meter (grouped by model) and one alert on it; the meter's slug is unique to the test. */
async function alerted(
  alert: { threshold_kind: string; threshold: number; period: string; group_value?: Record<string, string> },
  plan: 'free' | 'growth' | 'enterprise' = 'growth',
) {
  const w = await stores.workspace(plan);
  const slug = `m${++slugs}`;
  const m = await call(s.url, 'POST', path(w.workspace.id, '/meters'), {
    token: w.token,
    body: { slug, event_types: ['llm.call'], aggregation: 'sum', value_field: 'quantity', group_by: ['model'] },
  });
  assert.equal(m.status, 201, m.text);
  const a = await call(s.url, 'POST', path(w.workspace.id, '/alerts'), {
    token: w.token,
    body: { meter: slug, ...alert },
  });
  assert.equal(a.status, 201, a.text);
  return {
    ws: w.workspace.id,
    token: w.token,
    slug,
    meterId: m.json.meter.id as string,
    alertId: a.json.alert.id as string,
  };
}

/** A watch on a pool of its own, as another control-api replica would have; never started (the test drives check()). */
function replica(read: MeterUsageReader = readerOf(values, queries)): AlertWatch {
  const pool = createPool(stores.databaseUrl, 4);
  pools.push(pool);
  return new AlertWatch(pool, read, log);
}

async function firings(alertId: string) {
  const { rows } = await stores.pool.query<{ period_start: Date; threshold: string; value: string }>(
    'SELECT period_start, threshold::text, value::text FROM meter_alert_firings WHERE alert_id = $1 ORDER BY period_start',
    [alertId],
  );
  return rows;
}

async function events(ws: string) {
  const { rows } = await stores.pool.query<{ body: string }>(
    "SELECT body FROM outbox_events WHERE workspace_id = $1 AND event = 'meter.threshold.reached' ORDER BY created_at",
    [ws],
  );
  return rows.map((r) => JSON.parse(r.body) as { data: Record<string, any> });
}

// A fixed instant (mid-month, mid-day, UTC), so the periods are known.
const NOW = Date.UTC(2026, 10, 15, 12, 30);

test('never below the threshold; at it, fires once with the documented payload; later checks add nothing', async () => {
  const a = await alerted({ threshold_kind: 'absolute', threshold: 100, period: 'day' });
  const w = replica();
  values.set(keyOf(a.slug), '99');
  await w.check(NOW);
  assert.deepEqual(await firings(a.alertId), []);
  assert.deepEqual(await events(a.ws), []);
  values.set(keyOf(a.slug), '100');
  await w.check(NOW);
  await w.check(NOW + 60_000);
  values.set(keyOf(a.slug), '250');
  await w.check(NOW + 120_000);
  const day = periodBounds('day', NOW);
  assert.deepEqual(await firings(a.alertId), [{ period_start: new Date(day.startMs), threshold: '100', value: '100' }]);
  const [e, ...more] = await events(a.ws);
  assert.equal(more.length, 0);
  assert.deepEqual(e!.data, {
    alert: { id: a.alertId, threshold_kind: 'absolute', threshold: 100, period: 'day' },
    meter: { id: a.meterId, slug: a.slug },
    period: { start: '2026-11-15T00:00:00.000Z', end: '2026-11-16T00:00:00.000Z' },
    threshold: 100,
    value: '100',
    group: null,
  });
  const q = queries.filter((x) => x.meter.slug === a.slug).at(-1)!;
  assert.deepEqual(
    [q.bucketId, q.fromMs, q.toMs, q.window, q.tz, q.groupBy, q.filter, q.closedOnly],
    [a.ws, day.startMs, day.endMs, 'day', 'UTC', [], {}, false],
  );
});

test('the comparison is exact: a value a double rounds up to the threshold does not fire', async () => {
  const a = await alerted({ threshold_kind: 'absolute', threshold: 2 ** 53 - 1, period: 'month' });
  const w = replica();
  // As a double, 9007199254740990.6 is 9007199254740991, the threshold; exactly, it is below it.
  values.set(keyOf(a.slug), '9007199254740990.6');
  await w.check(NOW);
  assert.deepEqual(await firings(a.alertId), []);
  values.set(keyOf(a.slug), '9007199254740991');
  await w.check(NOW);
  assert.equal((await firings(a.alertId)).length, 1);
});

test('three replicas racing over many alerts fire each exactly once', async () => {
  const list = await Promise.all(
    Array.from({ length: 8 }, () => alerted({ threshold_kind: 'absolute', threshold: 10, period: 'month' })),
  );
  for (const a of list) values.set(keyOf(a.slug), '10');
  const [r1, r2, r3] = [replica(), replica(), replica()];
  for (let round = 0; round < 5; round++) await Promise.all([r1.check(NOW), r2.check(NOW), r3.check(NOW)]);
  for (const a of list) {
    assert.equal((await firings(a.alertId)).length, 1, a.slug);
    assert.equal((await events(a.ws)).length, 1, a.slug);
  }
});

test('with usage rising between reads (ingest going on) and three replicas racing: never below the threshold, then exactly once', async () => {
  const a = await alerted({ threshold_kind: 'absolute', threshold: 50, period: 'month' });
  // Every read of this meter sees one more unit than the one before, whichever replica makes it.
  let used = 0;
  let highest = -1;
  const rising: MeterUsageReader = async (q) => {
    if (q.meter.slug !== a.slug) return [];
    const v = used++;
    highest = Math.max(highest, v);
    return [{ startMs: q.fromMs, endMs: q.toMs, group: {}, value: String(v) }];
  };
  const rs = [replica(rising), replica(rising), replica(rising)];
  while (used < 80) {
    await Promise.all(rs.map((r) => r.check(NOW)));
    const fired = await firings(a.alertId);
    if (highest < 50) assert.deepEqual(fired, [], `fired while the highest value read was ${highest}`);
    else assert.equal(fired.length, 1);
  }
  const [f] = await firings(a.alertId);
  assert.ok(
    Number(f!.value) >= 50 && Number(f!.value) <= 52,
    `fired at ${f!.value}: one of the first reads at or past 50`,
  );
  assert.equal((await events(a.ws)).length, 1);
});

test('the next period fires again; a group alert reads its group only', async () => {
  const a = await alerted({ threshold_kind: 'absolute', threshold: 5, period: 'day', group_value: { model: 'gpt-4' } });
  const w = replica();
  values.set(keyOf(a.slug), '1000');
  values.set(keyOf(a.slug, { model: 'gpt-4' }), '4');
  await w.check(NOW);
  assert.deepEqual(await firings(a.alertId), [], "the meter's total is not the group's");
  values.set(keyOf(a.slug, { model: 'gpt-4' }), '5');
  await w.check(NOW);
  await w.check(NOW + 86_400_000);
  const got = await firings(a.alertId);
  assert.deepEqual(
    got.map((f) => f.period_start.toISOString()),
    ['2026-11-15T00:00:00.000Z', '2026-11-16T00:00:00.000Z'],
  );
  const q = queries.filter((x) => x.meter.slug === a.slug).at(-1)!;
  assert.deepEqual([q.groupBy, q.filter], [['model'], { model: 'gpt-4' }]);
  assert.deepEqual((await events(a.ws)).at(-1)!.data.group, { model: 'gpt-4' });
});

test("quota_percent is that percent of the plan's monthly event quota; a plan without one never fires", async () => {
  // growth: 100,000 events a month, so 80 % is 80,000; free: 500, so 80 % is 400.
  const growth = await alerted({ threshold_kind: 'quota_percent', threshold: 80, period: 'month' }, 'growth');
  const free = await alerted({ threshold_kind: 'quota_percent', threshold: 80, period: 'month' }, 'free');
  const unlimited = await alerted({ threshold_kind: 'quota_percent', threshold: 1, period: 'month' }, 'enterprise');
  const w = replica();
  values.set(keyOf(growth.slug), '79999');
  values.set(keyOf(free.slug), '400');
  values.set(keyOf(unlimited.slug), '999999999999');
  await w.check(NOW);
  assert.deepEqual(await firings(growth.alertId), []);
  assert.deepEqual(await firings(unlimited.alertId), []);
  assert.equal((await firings(free.alertId)).length, 1);
  assert.deepEqual(
    [(await events(free.ws))[0]!.data.threshold, (await events(free.ws))[0]!.data.alert.threshold_kind],
    [400, 'quota_percent'],
  );
  values.set(keyOf(growth.slug), '80000');
  await w.check(NOW);
  assert.deepEqual(await firings(growth.alertId), [
    { period_start: new Date(Date.UTC(2026, 10, 1)), threshold: '80', value: '80000' },
  ]);
});

test('a deleted alert or meter stops firing', async () => {
  const a = await alerted({ threshold_kind: 'absolute', threshold: 1, period: 'day' });
  const b = await alerted({ threshold_kind: 'absolute', threshold: 1, period: 'day' });
  assert.equal((await call(s.url, 'DELETE', path(a.ws, `/alerts/${a.alertId}`), { token: a.token })).status, 204);
  assert.equal((await call(s.url, 'DELETE', path(b.ws, `/meters/${b.slug}`), { token: b.token })).status, 200);
  values.set(keyOf(a.slug), '5');
  values.set(keyOf(b.slug), '5');
  await replica().check(NOW);
  assert.deepEqual([await firings(a.alertId), await firings(b.alertId)], [[], []]);
});

test("end to end: the server's own watch sends meter.threshold.reached to a subscribed endpoint once, and close() stops it", async () => {
  const rx = await new Receiver().start();
  try {
    const a = await alerted({ threshold_kind: 'absolute', threshold: 3, period: 'month' });
    const hook = await call(s.url, 'POST', path(a.ws, '/webhooks'), {
      token: a.token,
      body: { url: rx.url, events: ['meter.threshold.reached'] },
    });
    assert.equal(hook.status, 201, hook.text);
    serverValues.set(keyOf(a.slug), '3');
    const [r] = await rx.waitFor(1);
    const body = JSON.parse(r!.body);
    assert.deepEqual([body.event, body.data.meter.slug, body.data.value], ['meter.threshold.reached', a.slug, '3']);
    // Several more checks run (100 ms apart) and add nothing.
    const seen = serverQueries.length;
    await eventually(
      async () => serverQueries.filter((q) => q.meter.slug === a.slug).length >= 5 || undefined,
      10_000,
      'more checks',
    );
    assert.ok(serverQueries.length > seen);
    assert.equal((await firings(a.alertId)).length, 1);
    assert.equal(rx.received.length, 1);
  } finally {
    await rx.close();
  }
});

test('a started watch reads until stop(), which waits for the check in flight; nothing reads after', async () => {
  const a = await alerted({ threshold_kind: 'absolute', threshold: 1, period: 'day' });
  const asked: MeterUsageQuery[] = [];
  const pool = createPool(stores.databaseUrl, 2);
  pools.push(pool);
  const w = new AlertWatch(pool, readerOf(new Map(), asked), log);
  w.start(10);
  await eventually(async () => asked.filter((q) => q.meter.slug === a.slug).length >= 3 || undefined, 10_000, 'checks');
  await w.stop();
  const n = asked.length;
  // An absence can only be observed over some time: ten intervals of the stopped loop.
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(asked.length, n);
});
