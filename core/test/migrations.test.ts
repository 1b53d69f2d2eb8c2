import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestStores } from '@meterd/core/testing';
import { chdbConnector } from '@meterd/core/testing/chdb';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { migrateClickHouse, migratePostgres, readMigrations } from '@meterd/core/migrate';
import { CH_MIGRATIONS_DIR, PG_MIGRATIONS_DIR } from '@meterd/core/testing';

test('every Postgres and ClickHouse (18.16 server) migration applies on a fresh database, once', async () => {
  // openTestStores applies both sets on fresh databases; here we check what it produced.
  const stores = await openTestStores('migrations');
  try {
    const pg = (await stores.pool.query<{ name: string }>('SELECT name FROM schema_migrations ORDER BY name')).rows.map(
      (r) => r.name,
    );
    assert.deepEqual(
      pg,
      (await readMigrations(PG_MIGRATIONS_DIR)).map((m) => m.name),
    );
    assert.deepEqual(await migratePostgres(stores.pool, PG_MIGRATIONS_DIR), [], 'a second run applies nothing');

    const rs = await stores.clickhouse.query({
      query: 'SELECT name FROM schema_migrations ORDER BY name',
      format: 'JSONEachRow',
    });
    const ch = (await rs.json<{ name: string }>()).map((r) => r.name);
    assert.deepEqual(
      ch,
      (await readMigrations(CH_MIGRATIONS_DIR)).map((m) => m.name),
    );
    const version = await (
      await stores.clickhouse.query({ query: 'SELECT version() AS v', format: 'JSONEachRow' })
    ).json<{ v: string }>();
    assert.match(version[0]!.v, /^18\.16\./, "the server CI runs is Debian's 18.16");
    const base = loadConfig(storeVars);
    const connect = (database?: string) => clickHouseFromConfig(base, { database: database ?? 'default' });
    assert.deepEqual(await migrateClickHouse(connect, stores.chDatabase, CH_MIGRATIONS_DIR), []);

    // An applied migration edited afterwards is refused loudly: migrations are append-only.
    const dir = mkdtempSync(join(tmpdir(), 'pgmig-'));
    cpSync(PG_MIGRATIONS_DIR, dir, { recursive: true });
    appendFileSync(join(dir, '001_workspaces_and_keys.sql'), '\n-- edited\n');
    await assert.rejects(
      migratePostgres(stores.pool, dir),
      /001_workspaces_and_keys.sql was edited after it was applied/,
    );
  } finally {
    await stores.close();
  }
});

test('a failing migration stops the run with its name and is not recorded', async () => {
  const stores = await openTestStores('migfail');
  try {
    const dir = mkdtempSync(join(tmpdir(), 'pgmig-'));
    cpSync(PG_MIGRATIONS_DIR, dir, { recursive: true });
    const next = String((await readMigrations(dir)).length + 1).padStart(3, '0');
    appendFileSync(join(dir, `${next}_broken.sql`), 'CREATE TABLE ok_then (x int);\nSELECT * FROM no_such_table;\n');
    await assert.rejects(
      migratePostgres(stores.pool, dir),
      new RegExp(`postgres migration ${next}_broken.sql failed: relation "no_such_table" does not exist`),
    );
    const { rows } = await stores.pool.query(`SELECT to_regclass('ok_then') AS t`);
    assert.equal(rows[0].t, null, 'the transaction rolled the partial migration back');
  } finally {
    await stores.close();
  }
});

test('every ClickHouse migration also applies on a current engine (chDB)', async () => {
  const path = mkdtempSync(join(tmpdir(), 'chdb-'));
  // The migration runner closes each client it opens, and closing a client closes its chDB
  // connection: open a new one per client, on the same data path.
  const connect = chdbConnector(path);
  const applied = await migrateClickHouse(connect, 'meterd', CH_MIGRATIONS_DIR);
  assert.deepEqual(
    applied,
    (await readMigrations(CH_MIGRATIONS_DIR)).map((m) => m.name),
  );
  const c = connect('meterd');
  const v = await (await c.query({ query: 'SELECT version() AS v', format: 'JSONEachRow' })).json<{ v: string }>();
  assert.ok(Number(v[0]!.v.split('.')[0]) >= 23, `chDB runs a current engine (${v[0]!.v})`);
  // The events table takes the exact JSONEachRow lines ingest spools, on the current engine too.
  await c.insert({
    table: 'events',
    format: 'JSONEachRow',
    values: [
      {
        workspace_id: 'ws_a',
        event_type: 'checkout.completed',
        idempotency_key: 'k"\\ü',
        event_id: 'evt_1',
        quantity: 1,
        gmv_cents: 9007199254740991,
        currency: 'USD',
        occurred_at: '2026-11-01 00:00:00',
        received_at: '2026-11-01 00:00:01',
      },
    ],
  });
  const rows = await (
    await c.query({ query: 'SELECT idempotency_key, gmv_cents FROM events FINAL', format: 'JSONEachRow' })
  ).json();
  assert.deepEqual(rows, [{ idempotency_key: 'k"\\ü', gmv_cents: '9007199254740991' }]);
  assert.deepEqual(await migrateClickHouse(connect, 'meterd', CH_MIGRATIONS_DIR), []);
});
