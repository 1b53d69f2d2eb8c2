import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ClickHouseClient } from '@clickhouse/client';
import { openChdb, type Chdb } from '@meterd/core/testing/chdb';
import { ClickHouseRollupUsage, missingRollupTables } from '../src/usage/clickhouse-rollups.js';

// The rollup source's SQL on the current engine (chDB, in-process); rollups.test.ts runs it on 18.16.
let chdb: Chdb;
let ch: ClickHouseClient;

before(async () => {
  chdb = await openChdb('billing');
  ch = chdb.client;
});
after(() => chdb.close());

test('rollup totals (FINAL, newest version, one per currency) and the as-of rule on the current engine', async () => {
  assert.deepEqual(await missingRollupTables(ch), []);
  const src = new ClickHouseRollupUsage(ch, 2);
  const h = 1_700_000_000 - (1_700_000_000 % 3600);
  const fmt = (s: number): string => new Date(s * 1000).toISOString().slice(0, 19).replace('T', ' ');
  const row = (ws: string, window: number, currency: string, q: number, g: number, version: number) => ({
    workspace_id: ws,
    event_type: 'checkout.completed',
    currency,
    window_start: fmt(window),
    events: 1,
    quantity: q,
    gmv_cents: g,
    first_event_at: fmt(window),
    last_event_at: fmt(window),
    late_events: 0,
    version,
    computed_at: fmt(window),
  });
  await ch.insert({
    table: 'usage_hourly',
    format: 'JSONEachRow',
    values: [row('ws_a', h, 'USD', 1, 100, 1), row('ws_a', h, 'EUR', 2, 30, 1), row('ws_b', h + 3600, 'USD', 5, 7, 1)],
  });
  await ch.insert({ table: 'usage_hourly', format: 'JSONEachRow', values: [row('ws_a', h, 'USD', 3, 900, 2)] });
  const got = (await src.totals(h, h + 7200, 'hour'))
    .map((t) => [t.workspace_id, t.currency, t.window_start, t.quantity, t.gmv_cents])
    .sort();
  assert.deepEqual(got, [
    ['ws_a', 'EUR', h, 2n, 30n],
    ['ws_a', 'USD', h, 3n, 900n],
    ['ws_b', 'USD', h + 3600, 5n, 7n],
  ]);
  assert.deepEqual(await src.totals(h, h + 3600, 'hour').then((r) => r.length), 2);

  assert.equal(await src.asOf(h + 99_999), null);
  const state = (shard: number, closedBefore: number, updated: number) => ({
    shard,
    block: 1,
    version: 1,
    as_of_ms: 0,
    closed_before: closedBefore,
    updated_ms: updated,
  });
  await ch.insert({
    table: 'aggregator_state',
    format: 'JSONEachRow',
    values: [state(0, h + 500, 1), state(1, h + 100, 1), state(1, h + 300, 2), state(9, 0, 3)],
  });
  assert.equal(
    await src.asOf(h + 99_999),
    h + 300,
    'the oldest shard, each shard by its newest row, leftover shards ignored',
  );
  assert.equal(await src.asOf(h + 200), h + 200, 'never past now');
});
