import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Authenticator } from '@meterd/core/auth';
import { formatRfc3339 } from '@meterd/core/event';
import { createLogger } from '@meterd/core/log';
import { createRedis } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { createAggregatorMetrics } from '../src/metrics.js';
import { createAggregatorServer } from '../src/http/server.js';
import { readRollups } from '../src/rollups/read.js';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { COPY_HORIZON_S, catchUp, insertEvents, type Ev } from './helpers.js';

const SHARDS = 2;
const OPERATOR = 'operator-key-for-usage-tests-0123456789';
let stores: TestStores;
let base: string;
let close: () => Promise<void>;
let sub: ReturnType<typeof createRedis>;
let ws: { id: string; token: string };
let other: { id: string; token: string };
let writeOnly: string;
const hour = Math.floor(Date.now() / 3_600_000) * 3_600_000;
const from = formatRfc3339(hour - 3 * 86_400_000);
const to = formatRfc3339(hour + 3_600_000);

before(async () => {
  stores = await openTestStores('aggusage');
  const a = await stores.workspace('growth');
  const b = await stores.workspace('growth');
  const w = await stores.workspace('growth', ['meter:write']);
  ws = { id: a.workspace.id, token: a.token };
  other = { id: b.workspace.id, token: b.token };
  writeOnly = w.token;
  const evs: Ev[] = [];
  for (let i = 0; i < 60; i++) {
    const occurred = hour - (i % 50) * 1_800_000 + i * 1000;
    evs.push({
      workspace_id: i % 3 === 0 ? other.id : ws.id,
      event_type: i % 2 ? 'checkout.completed' : 'api.call',
      idempotency_key: `k${i}`,
      event_id: `evt_${i}`,
      quantity: 1 + (i % 4),
      gmv_cents: 1000 * i + 7,
      currency: i % 5 ? 'USD' : 'EUR',
      occurred_ms: occurred,
      received_ms: occurred + 2000,
    });
  }
  // A batch shipped, then shipped again after a crash before the checkpoint moved (the same batch
  // id; the replay reaches further, so it is a later attempt with more rows), then again as it was.
  await insertEvents(stores.clickhouse, evs.slice(0, 20), { id: 'b1', attempt: 20 });
  await insertEvents(stores.clickhouse, evs, { id: 'b1', attempt: 60 });
  await insertEvents(stores.clickhouse, evs, { id: 'b1', attempt: 60 });
  const agg = new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: 3600,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 50,
  });
  await catchUp(agg, SHARDS);
  await agg.stop();

  sub = createRedis(new URL(stores.env.REDIS_URL!));
  const log = createLogger('aggregator-test', 'silent');
  const srv = createAggregatorServer({
    ch: stores.clickhouse,
    pool: stores.pool,
    log,
    metrics: createAggregatorMetrics(),
    auth: new Authenticator(stores.pool, sub, 1000, OPERATOR),
    shards: SHARDS,
    freshnessTargetMs: 2000,
  });
  base = `http://127.0.0.1:${await srv.listen(0, '127.0.0.1')}`;
  close = srv.close;
});
after(async () => {
  await close();
  sub.disconnect();
  await stores.close();
});

const get = (path: string, token?: string, accept?: string): Promise<Response> =>
  fetch(base + path, {
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(accept ? { accept } : {}) },
  });
const usagePath = (id: string, qs: string): string => `/api/v1/workspaces/${id}/usage?from=${from}&to=${to}&${qs}`;

test('JSON usage equals the rollup rows at every granularity, with freshness', async () => {
  for (const g of ['hour', 'day', 'month'] as const) {
    const res = await get(usagePath(ws.id, `granularity=${g}`), ws.token);
    assert.equal(res.status, 200);
    const body = (await res.json()) as {
      data: Record<string, unknown>[];
      totals: Record<string, unknown>[];
      freshness: { lag_ms: number; as_of: string };
    };
    const q = new URL(base + usagePath(ws.id, '')).searchParams;
    const rows = await readRollups(stores.clickhouse, g, {
      workspaceId: ws.id,
      from: Date.parse(q.get('from')!) - 40 * 86_400_000,
      to: Date.parse(q.get('to')!) + 40 * 86_400_000,
    });
    assert.ok(rows.length > 0);
    assert.deepEqual(
      body.data.map((d) => [
        d.window_start,
        d.event_type,
        d.currency,
        String(d.events),
        String(d.quantity),
        String(d.gmv_cents),
        d.first_event_at,
        d.last_event_at,
      ]),
      rows.map((r) => [
        formatRfc3339(r.window_start),
        r.event_type,
        r.currency,
        r.events,
        r.quantity,
        r.gmv_cents,
        formatRfc3339(r.first_event_at),
        formatRfc3339(r.last_event_at),
      ]),
    );
    const totalEvents = body.totals.reduce((s, t) => s + Number(t.events), 0);
    assert.equal(totalEvents, 40, 'the replayed events are counted once');
    assert.ok(body.freshness.lag_ms >= 0 && typeof body.freshness.as_of === 'string');
  }
});

test('CSV (Accept or format=csv) carries the same rows as JSON', async () => {
  const json = (await (await get(usagePath(ws.id, 'granularity=hour'), ws.token)).json()) as {
    data: Record<string, unknown>[];
  };
  for (const [qs, accept] of [
    ['granularity=hour', 'text/csv'],
    ['granularity=hour&format=csv', undefined],
  ] as const) {
    const res = await get(usagePath(ws.id, qs), ws.token, accept);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^text\/csv/);
    assert.ok(res.headers.get('x-meterd-freshness-lag-ms') !== null);
    const [header, ...lines] = (await res.text()).trim().split('\r\n');
    const cols = header!.split(',');
    const parsed = lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v])));
    assert.deepEqual(
      parsed,
      json.data.map((d) => Object.fromEntries(cols.map((c) => [c, String(d[c])]))),
    );
    assert.equal(cols.at(-1), 'currency_exponent');
    assert.deepEqual(
      [...new Set(parsed.map((p) => `${p.currency} ${p.currency_exponent}`))].sort(),
      ['EUR 2', 'USD 2'],
      "ISO 4217 minor units of each row's currency",
    );
  }
});

test('a key of another workspace gets 403; the operator key reads any workspace', async () => {
  const res = await get(usagePath(ws.id, 'granularity=day'), other.token);
  assert.equal(res.status, 403);
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'workspace_mismatch');
  assert.equal((await get(usagePath(ws.id, 'granularity=day'), OPERATOR)).status, 200);
  const missing = await get(usagePath('ws_doesnotexist', 'granularity=day'), OPERATOR);
  assert.equal(missing.status, 404);
});

test('auth and parameter errors are JSON with codes', async () => {
  const cases: [string, string | undefined, number, string][] = [
    [usagePath(ws.id, 'granularity=day'), undefined, 401, 'missing_api_key'],
    [usagePath(ws.id, 'granularity=day'), writeOnly, 403, 'insufficient_scope'],
    [usagePath(ws.id, 'granularity=week'), ws.token, 400, 'invalid_field'],
    [usagePath(ws.id, 'granularty=day'), ws.token, 400, 'unknown_field'],
    [`/api/v1/workspaces/${ws.id}/usage?from=yesterday`, ws.token, 400, 'invalid_timestamp'],
    [`/api/v1/workspaces/${ws.id}/usage?from=${to}&to=${from}`, ws.token, 400, 'invalid_field'],
    [
      `/api/v1/workspaces/${ws.id}/usage?granularity=hour&from=2020-01-01T00:00:00Z&to=2024-01-01T00:00:00Z`,
      ws.token,
      400,
      'invalid_field',
    ],
    ['/api/v1/nothing', ws.token, 404, 'not_found'],
  ];
  for (const [path, token, status, code] of cases) {
    const res = await get(path, token);
    assert.equal(res.status, status, path);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, code, path);
  }
});
