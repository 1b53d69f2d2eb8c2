import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import { CH_MIGRATIONS_DIR, migrateClickHouse, pinnedSettings } from '@meterd/core';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { checkProperty } from './property.js';

// The same property on the current engine (chDB, in-process): the SQL must run on both.
let stores: TestStores;
let dir: string;
let ch: ClickHouseClient;
// chdb's connection is typed against its own copy of @clickhouse/client-common; the shapes match.
const connect = (): ClickHouseClient =>
  createClient({
    connection: createChdbConnection({ path: dir }) as never,
    clickhouse_settings: pinnedSettings('current'),
  });

before(async () => {
  stores = await openTestStores('aggpropchdb');
  dir = mkdtempSync(join(tmpdir(), 'meterd-agg-chdb-'));
  await migrateClickHouse(connect, 'default', CH_MIGRATIONS_DIR);
  ch = connect();
});
after(async () => {
  await ch.close();
  await stores.close();
  rmSync(dir, { recursive: true, force: true });
});

for (const seed of [11, 12]) {
  test(`random streams with duplicates, replays, late and out-of-order events (chDB, seed ${seed})`, async () => {
    await checkProperty(ch, stores.databaseUrl, seed);
  });
}
