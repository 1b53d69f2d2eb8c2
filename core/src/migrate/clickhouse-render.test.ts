import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { ClickHouseClient } from '@clickhouse/client';
import { lit } from '../clickhouse/sql.js';
import { chdbConnector } from '../testing/chdb.js';
import { CH_MIGRATIONS_DIR } from '../testing/paths.js';
import { readMigrations, type Migration } from './files.js';
import { renderCluster, renderSingle } from './clickhouse-render.js';

/**
 * The cluster form of the migrations (one source with the single-server form). Here: its shape, and
 * that a current ClickHouse (chDB) parses every statement; test/cluster/clickhouse-cluster.test.ts
 * runs it on a 2×2 cluster of 18.16. chDB has no ZooKeeper or remote_servers, so it parses the
 * cluster statements (formatQuery) rather than running them; the single-server form runs on it in
 * core's chDB stores (testing/chdb.ts).
 */
let migrations: Migration[];
let dir: string;
let ch: ClickHouseClient;
before(async () => {
  migrations = await readMigrations(CH_MIGRATIONS_DIR);
  dir = mkdtempSync(join(tmpdir(), 'meterd-render-chdb-'));
  ch = chdbConnector(dir)();
});
after(async () => {
  await ch.close();
  rmSync(dir, { recursive: true, force: true });
});

const target = { cluster: 'meterd', database: 'meterd_db' };

test('single server: the statements are the files, unchanged', () => {
  for (const m of migrations) for (const s of renderSingle(m)) assert.ok(m.sql.includes(s.sql.split('\n')[0]!), m.name);
});

test('cluster: Replicated local tables with a per-migration ZooKeeper path, Distributed tables sharded by workspace', () => {
  const out = renderCluster(migrations, target);
  const all = [...out.values()].flat().map((s) => s.sql);
  const events = all.filter((s) => s.startsWith('CREATE TABLE IF NOT EXISTS events_local '));
  assert.equal(events.length, 3, '001, 003 and 004 each create events');
  assert.deepEqual(
    events.map((s) => /'\/clickhouse\/tables\/\{shard\}\/meterd_db\/events_local\/(\d{3})'/.exec(s)?.[1]),
    ['001', '003', '004'],
  );
  assert.ok(
    events.every((s) => s.includes('ON CLUSTER meterd') && s.includes('ENGINE = ReplicatedReplacingMergeTree(')),
  );
  const dist = all.filter((s) => s.startsWith('CREATE TABLE IF NOT EXISTS events ON CLUSTER'));
  assert.ok(dist.at(-1)!.endsWith('ENGINE = Distributed(meterd, meterd_db, events_local, cityHash64(workspace_id))'));
  assert.match(dist.at(-1)!, /ver\s+UInt64 ALIAS bitOr/, 'a MATERIALIZED column is an ALIAS on the Distributed table');
  const state = all.filter((s) => s.startsWith('CREATE TABLE IF NOT EXISTS aggregator_state ON CLUSTER'));
  assert.ok(state.at(-1)!.includes('closed_before UInt64 DEFAULT 0'), 'the Distributed table follows the ALTERs');
  assert.ok(state.at(-1)!.endsWith('aggregator_state_local, 0)'));
  const inserts = [...out.values()].flat().filter((s) => s.sql.startsWith('INSERT'));
  assert.ok(inserts.length > 0 && inserts.every((s) => s.skipWhenEmpty !== undefined));
  assert.ok(all.every((s) => !/^(CREATE|ALTER|RENAME|DROP)/.test(s) || s.includes('ON CLUSTER meterd')));
});

test('cluster: every statement parses on a current ClickHouse (chDB)', async () => {
  for (const [name, stmts] of renderCluster(migrations, target)) {
    for (const s of stmts) {
      const rs = await ch.query({ query: `SELECT formatQuery(${lit(s.sql)}) AS q`, format: 'JSONEachRow' });
      const [row] = await rs.json<{ q: string }>();
      assert.ok(row!.q.length > 0, `${name}: ${s.sql.slice(0, 80)}`);
    }
  }
});
