import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { meterBySlug, readMeterUsage } from '@meterd/core/meters';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { freePort, startService, waitFor, type Service } from './support/services.js';

/**
 * Meters end to end, every service its own process: events with properties go over HTTP into
 * ingest (a retry inside a batch, a replayed batch answered as duplicates), ingest ships them to
 * ClickHouse with the meters' partials, the aggregator rolls them up (a closed hour recomputed
 * exactly, the open hours folded from the partials), and the meter usage API answers JSON and CSV
 * equal to totals computed here from the distinct events; bad parameters are 400 naming the field,
 * an unknown meter 404, another workspace's key 403.
 */
let stores: TestStores;
let spoolDir: string;
const services: Service[] = [];

before(async () => {
  stores = await openTestStores('meterse2e');
  spoolDir = mkdtempSync(join(tmpdir(), 'meterd-meters-e2e-'));
});
after(async () => {
  for (const s of services) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  rmSync(spoolDir, { recursive: true, force: true });
  await stores.close();
});

const rfc3339 = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const HOUR = 3_600_000;

test('ingest → ClickHouse → aggregator → meter usage API: exact per group, closed and open hours, JSON and CSV', async () => {
  const [ingestPort, aggregatorPort] = await Promise.all([freePort(), freePort()]);
  const { workspace, token } = await stores.workspace('enterprise');
  const other = await stores.workspace('enterprise');
  // Meters exist before the events: ingest's shipper writes their partials from the first batch.
  const meters: [string, string, string | null, string[]][] = [
    ['tokens', 'sum', 'properties.tokens', ['model']],
    ['calls', 'count', null, ['region', 'model']],
    ['users', 'unique_count', 'properties.user', []],
    ['gmv', 'sum', 'gmv_cents', []],
  ];
  for (const [slug, aggregation, value_field, group_by] of meters)
    await stores.pool.query(
      `INSERT INTO meters (id, workspace_id, slug, event_types, aggregation, value_field, group_by, backfill_state)
       VALUES ($1, $2, $3, '{api.call}', $4, $5, $6, 'done')`,
      [`mtr_e2e_${slug}`, workspace.id, slug, aggregation, value_field, group_by],
    );
  const [ingest, aggregator] = await Promise.all([
    startService('ingest', 'ingest', ingestPort, {
      ...stores.env,
      INGEST_PORT: String(ingestPort),
      INGEST_THREADS: '1',
      SPOOL_DIR: spoolDir,
      SHIP_INTERVAL_MS: '100',
      LOG_LEVEL: 'warn',
    }),
    startService('aggregator', 'aggregator', aggregatorPort, {
      ...stores.env,
      AGGREGATOR_PORT: String(aggregatorPort),
      AGGREGATOR_POLL_MS: '100',
      AGGREGATOR_SHARDS: '2',
      // The hour two hours ago is closed (recomputed from the raw events); the last and the current are open.
      AGGREGATOR_CLOSE_AFTER_SECONDS: '600',
      LOG_LEVEL: 'warn',
    }),
  ]);
  services.push(ingest, aggregator);

  const now = Date.now();
  const closedHour = Math.floor(now / HOUR) * HOUR - 2 * HOUR;
  const openHour = Math.floor(now / HOUR) * HOUR;
  const models = ['gpt-4', 'claude', 'ünï "q",x'];
  const events = [];
  for (const [hi, h] of [closedHour, openHour].entries())
    for (let i = 0; i < 30; i++)
      events.push({
        workspace_id: workspace.id,
        event_type: 'api.call',
        idempotency_key: `call-${hi}-${i}`,
        gmv_cents: 100 + i,
        currency: i % 4 === 0 ? 'EUR' : 'USD',
        occurred_at: rfc3339(Math.min(h + i * 60_000, now - 1000)),
        properties: {
          model: models[i % 3]!,
          ...(i % 5 === 0 ? {} : { region: i % 2 === 0 ? 'eu' : 'us' }),
          // Every seventh value is not an integer: skipped, never billed.
          tokens: i % 7 === 0 ? '12.5' : String(1_000 + i * 10),
          user: `u${i % 9}`,
        },
      });
  const send = async (batch: unknown[]): Promise<Record<string, unknown>[]> => {
    const r = await fetch(`${ingest.url}/api/v1/meter/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ events: batch }),
    });
    assert.equal(r.status, 202, await r.clone().text());
    return ((await r.json()) as { results: Record<string, unknown>[] }).results;
  };
  await send([...events.slice(0, 40), events[3]]);
  await send(events.slice(40));
  // The same batch again (a client retry): duplicates, counted once.
  const again = await send(events.slice(40));
  assert.ok(
    again.every((r) => r.duplicate === true || r.status === 'duplicate'),
    JSON.stringify(again[0]),
  );

  // Expected, per hour, from the distinct events.
  const want = {
    tokens: new Map<string, bigint>(),
    calls: new Map<string, number>(),
    users: new Map<number, Set<string>>(),
    gmv: new Map<string, bigint>(),
  };
  for (const e of events) {
    const h = Math.floor(Date.parse(e.occurred_at) / HOUR) * HOUR;
    if (!e.properties.tokens.includes('.')) {
      const k = `${h}|${e.properties.model}`;
      want.tokens.set(k, (want.tokens.get(k) ?? 0n) + BigInt(e.properties.tokens));
    }
    const ck = `${h}|${e.properties.region ?? ''}|${e.properties.model}`;
    want.calls.set(ck, (want.calls.get(ck) ?? 0) + 1);
    want.users.set(h, (want.users.get(h) ?? new Set()).add(e.properties.user));
    const gk = `${h}|${e.currency}`;
    want.gmv.set(gk, (want.gmv.get(gk) ?? 0n) + BigInt(e.gmv_cents));
  }
  const from = rfc3339(closedHour);
  const to = rfc3339(openHour + HOUR);
  const usage = async (slug: string, qs: string, t = token): Promise<Response> =>
    fetch(`${aggregator.url}/api/v1/workspaces/${workspace.id}/meters/${slug}/usage?from=${from}&to=${to}&${qs}`, {
      headers: { authorization: `Bearer ${t}` },
    });
  type Row = { window_start: string; group: Record<string, string>; value: number; currency?: string };
  const rowsOf = async (slug: string, qs: string): Promise<Row[]> => {
    const r = await usage(slug, qs);
    assert.equal(r.status, 200, await r.clone().text());
    return ((await r.json()) as { data: Row[] }).data;
  };
  const tokensGot = async (): Promise<Map<string, bigint>> =>
    new Map(
      (await rowsOf('tokens', 'window=hour&group_by=model')).map((r) => [
        `${Date.parse(r.window_start)}|${r.group.model}`,
        BigInt(r.value),
      ]),
    );
  await waitFor(
    'the meter rollups to catch up',
    async () => {
      const got = await tokensGot();
      return got.size === want.tokens.size && [...want.tokens].every(([k, v]) => got.get(k) === v);
    },
    60_000,
  );
  assert.deepEqual(await tokensGot(), want.tokens);

  const calls = await rowsOf('calls', 'window=hour&group_by=region,model');
  assert.deepEqual(
    new Map(calls.map((r) => [`${Date.parse(r.window_start)}|${r.group.region}|${r.group.model}`, r.value])),
    want.calls,
  );
  const filtered = await rowsOf('calls', 'window=day&group_by=model&filter[region]=eu');
  const eu = events.filter((e) => e.properties.region === 'eu');
  assert.equal(
    filtered.reduce((a, r) => a + r.value, 0),
    eu.length,
  );
  const users = await rowsOf('users', 'window=hour');
  assert.deepEqual(
    new Map(users.map((r) => [Date.parse(r.window_start), r.value])),
    new Map([...want.users].map(([h, s]) => [h, s.size])),
  );
  const gmv = await rowsOf('gmv', 'window=hour');
  assert.deepEqual(new Map(gmv.map((r) => [`${Date.parse(r.window_start)}|${r.currency}`, BigInt(r.value)])), want.gmv);

  // closedOnly (billing, alerts): the closed hour only, the open ones not yet.
  const tokensMeter = await meterBySlug(stores.pool, workspace.id, 'tokens');
  const closedRows = await readMeterUsage(stores.clickhouse, {
    meter: tokensMeter!,
    bucketId: workspace.id,
    fromMs: closedHour,
    toMs: openHour + HOUR,
    window: 'hour',
    tz: 'UTC',
    groupBy: ['model'],
    filter: {},
    closedOnly: true,
  });
  assert.deepEqual(
    new Map(closedRows.map((r) => [`${r.startMs}|${r.group.model}`, BigInt(r.value)])),
    new Map([...want.tokens].filter(([k]) => Number(k.split('|')[0]) === closedHour)),
  );

  // CSV: the same tokens rows, a header naming the group, a quoted group value.
  const csv = await usage('tokens', 'window=hour&group_by=model&format=csv');
  assert.equal(csv.status, 200);
  assert.match(csv.headers.get('content-type')!, /text\/csv/);
  const lines = (await csv.text()).trim().split('\r\n');
  assert.equal(lines[0], 'window_start,window_end,model,value');
  assert.equal(lines.length - 1, want.tokens.size);
  assert.ok(lines.some((l) => l.includes('"ünï ""q"",x"')));

  // Day windows in a time zone: the total is unchanged (both hours fall in one Paris day or two).
  const paris = await rowsOf('tokens', 'window=day&tz=Europe/Paris');
  assert.equal(
    paris.reduce((a, r) => a + BigInt(r.value), 0n),
    [...want.tokens.values()].reduce((a, v) => a + v, 0n),
  );

  // Refusals: the field named, nothing read.
  for (const [qs, code, field] of [
    ['window=week', 'invalid_field', 'window'],
    ['tz=Mars/Olympus', 'invalid_field', 'tz'],
    ['tz=Asia/Kolkata&window=day', 'invalid_field', 'tz'],
    ['group_by=colour', 'invalid_field', 'group_by'],
    ['filter[colour]=red', 'invalid_field', 'filter[colour]'],
    ['granularity=day', 'unknown_field', 'granularity'],
    ['format=xml', 'invalid_field', 'format'],
  ] as const) {
    const r = await usage('tokens', qs);
    assert.equal(r.status, 400, qs);
    const e = ((await r.json()) as { error: { code: string; field: string } }).error;
    assert.deepEqual([e.code, e.field], [code, field], qs);
  }
  const bad = await fetch(`${aggregator.url}/api/v1/workspaces/${workspace.id}/meters/tokens/usage?from=yesterday`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(bad.status, 400);
  const missing = await usage('nope', 'window=hour');
  assert.equal(missing.status, 404);
  assert.deepEqual(((await missing.json()) as { error: { code: string; field: string } }).error.field, 'slug');
  const foreign = await usage('tokens', 'window=hour', other.token);
  assert.equal(foreign.status, 403);
});
