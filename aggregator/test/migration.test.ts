import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { createClickHouse } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { migrateClickHouse } from '@meterd/core/migrate';
import { CH_MIGRATIONS_DIR } from '@meterd/core/testing';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { reconcile } from '../src/reconcile/compare.js';
import { totalsFromEventsSql } from '../src/rollups/sql.js';
import { GRANULARITIES, type Granularity } from '../src/rollups/granularity.js';
import {
  COPY_HORIZON_S,
  catchUp,
  insertEvents,
  randomStream,
  referenceSnapshot,
  rng,
  row,
  rollupSnapshot,
  snapshotToObject,
  type Ev,
} from './helpers.js';

// 004 moves a populated store to the time-first sort key: every total the raw events give is the
// same after it, and the aggregator, started on the migrated store, ends exactly on the reference.
const SHARDS = 4;
const CLOSE_AFTER = 3600;
let stores: TestStores;
let ch: ClickHouseClient;
let before003: string;
let database: string;

before(async () => {
  stores = await openTestStores('aggmig');
  const base = loadConfig(storeVars);
  const connect = (db?: string): ClickHouseClient =>
    createClickHouse({
      url: base.CLICKHOUSE_URL,
      database: db ?? 'default',
      user: base.CLICKHOUSE_USER,
      password: base.CLICKHOUSE_PASSWORD,
    });
  before003 = mkdtempSync(join(tmpdir(), 'meterd-mig-'));
  for (const f of readdirSync(CH_MIGRATIONS_DIR).filter((n) => n < '004')) {
    cpSync(join(CH_MIGRATIONS_DIR, f), join(before003, f));
  }
  database = `${stores.chDatabase}_m`;
  await migrateClickHouse(connect, database, before003);
  ch = connect(database);
  // Applies the rest (004) on the populated database.
  migrateRest = () => migrateClickHouse(connect, database, CH_MIGRATIONS_DIR);
});
let migrateRest: () => Promise<string[]>;
after(async () => {
  await ch.command({ query: `DROP DATABASE IF EXISTS ${database}` });
  await ch.close();
  await stores.close();
  rmSync(before003, { recursive: true, force: true });
});

async function totals(g: Granularity): Promise<string[]> {
  const all = (t: string): string => `${t} > toDateTime(0, 'UTC')`;
  const rs = await ch.query({
    query: `SELECT * FROM (${totalsFromEventsSql(g, all('occurred_at'), all, CLOSE_AFTER)}) ORDER BY workspace_id, event_type, cur, bucket`,
    format: 'JSONEachRow',
  });
  return (await rs.json<Record<string, unknown>>()).map((r) => JSON.stringify(r));
}

test('004 moves a populated store: every total is unchanged and the aggregator resumes exactly', async () => {
  const rand = rng(404);
  const workspaces = ['ws_mig_a', 'ws_mig_b'];
  const { batches, distinct } = randomStream(rand, {
    workspaces,
    distinct: 400,
    base: Date.UTC(2024, 0, 28, 22),
    spanMs: 4 * 86_400_000,
    closeAfterSeconds: CLOSE_AFTER,
  });
  // The current hour too, still open after the migration: its partial comes from the migration.
  const now = Math.floor(Date.now() / 1000) * 1000;
  const hourStart = Math.floor(now / 3_600_000) * 3_600_000;
  const open: Ev[] = [];
  for (let i = 0; i < 30; i++) {
    const at = hourStart + Math.floor(((now - hourStart) * i) / 30 / 1000) * 1000;
    open.push({
      workspace_id: workspaces[i % 2]!,
      event_type: 'api.call',
      idempotency_key: `open_${i}`,
      event_id: `evt_open_${i}`,
      quantity: 1 + i,
      gmv_cents: 100 * i,
      currency: 'USD',
      occurred_ms: at,
      received_ms: at,
    });
  }
  // Before 004 the shipper wrote plain inserts (no batch record).
  for (const b of [...batches, open, open.slice(0, 7)]) {
    await ch.insert({ table: 'events', values: b.map(row), format: 'JSONEachRow' });
  }
  const before = Object.fromEntries(await Promise.all(GRANULARITIES.map(async (g) => [g, await totals(g)] as const)));
  assert.ok(before.hour!.length > 50);

  assert.deepEqual(await migrateRest(), [
    '004_events_time_key.sql',
    '005_aggregator_closed_before.sql',
    '006_meters.sql',
  ]);
  const create = await (await ch.query({ query: 'SHOW CREATE TABLE events', format: 'TabSeparatedRaw' })).text();
  assert.match(create, /ORDER BY \(workspace_id, toStartOfHour\(occurred_at\), event_type, idempotency_key\)/);
  const after = Object.fromEntries(await Promise.all(GRANULARITIES.map(async (g) => [g, await totals(g)] as const)));
  assert.deepEqual(after, before, 'the raw events give the same totals after the move');

  const agg = new Aggregator(ch, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: CLOSE_AFTER,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 20,
  });
  try {
    await catchUp(agg, SHARDS);
    await agg.runOnce();
    const want = referenceSnapshot([...distinct, ...open], CLOSE_AFTER);
    assert.deepEqual(snapshotToObject(await rollupSnapshot(ch)), snapshotToObject(want));
    for (const ws of workspaces) {
      assert.deepEqual(
        await reconcile(ch, {
          workspaceId: ws,
          from: 0,
          to: hourStart + 3_600_000,
          closeAfterSeconds: CLOSE_AFTER,
          copyHorizonSeconds: COPY_HORIZON_S,
        }),
        [],
      );
    }
    // Batches shipped after the migration add to the open hour from their partials alone.
    const more: Ev[] = open
      .slice(0, 3)
      .map((e, i) => ({ ...e, idempotency_key: `more_${i}`, event_id: `evt_more_${i}` }));
    await insertEvents(ch, more);
    const r = await agg.runOnce();
    assert.equal(r.closed, 0, 'an open hour is folded, not recomputed');
    assert.deepEqual(
      snapshotToObject(await rollupSnapshot(ch)),
      snapshotToObject(referenceSnapshot([...distinct, ...open, ...more], CLOSE_AFTER)),
    );
  } finally {
    await agg.stop();
  }
});
