import type { ClickHouseClient } from '@clickhouse/client';
import { clickHouseErrorCode } from '../clickhouse/client.js';
import { ident, lit } from '../clickhouse/sql.js';
import { MeterdError } from '../errors/meterd-error.js';
import { applyPending, readMigrations } from './files.js';
import { renderCluster, renderSingle, type RenderedStatement } from './clickhouse-render.js';

/** Opens a client on `database`, or on the server's default database when it is undefined. */
export type ClickHouseConnector = (database?: string) => ClickHouseClient;

export interface ClickHouseMigrateOptions {
  /** CLICKHOUSE_CLUSTER: render every migration for this cluster (clickhouse-render.ts). */
  cluster?: string;
  /** How long to wait for another migrator's lock before failing (default 5 minutes). */
  lockWaitMs?: number;
}

/** The lock table: created without IF NOT EXISTS, so exactly one migrator's CREATE succeeds. */
export const MIGRATION_LOCK_TABLE = 'schema_migrations_lock';

/** "Table already exists" (one server) and "Replica … already exists" (another node, via ZooKeeper). */
const LOCK_TAKEN_CODES = new Set([57, 253]);

/**
 * Applies each ClickHouse migration once. ClickHouse has no transactions, so a migration is
 * recorded only after all its statements succeeded, and statements are written to be re-runnable
 * (`IF NOT EXISTS`) so that a migration interrupted half-way can simply run again.
 * Migrations name tables without a database; they run with `database` selected.
 *
 * One migrator at a time: it holds a lock table (MIGRATION_LOCK_TABLE) while it reads the history
 * and applies, and a second one waits for it, then finds the migrations applied and applies none.
 * On a cluster the lock and the history are replicated through ZooKeeper to every node (one path
 * for the whole cluster), and a history row is acknowledged only once every node has it
 * (insert_quorum = the cluster's node count), so whichever node the next migrator reads sees it.
 * A migrator killed while holding the lock leaves the table behind: the next one fails after
 * `lockWaitMs` naming it (DROP TABLE <db>.schema_migrations_lock once no migrator runs).
 */
export async function migrateClickHouse(
  connect: ClickHouseConnector,
  database: string,
  dir: string,
  opts: ClickHouseMigrateOptions = {},
): Promise<string[]> {
  const db = ident(database);
  const cluster = opts.cluster === undefined || opts.cluster === '' ? undefined : ident(opts.cluster);
  const on = cluster === undefined ? '' : ` ON CLUSTER ${cluster}`;
  const migrations = await readMigrations(dir);
  const rendered =
    cluster === undefined
      ? new Map(migrations.map((m) => [m.name, renderSingle(m)]))
      : renderCluster(migrations, { cluster, database: db });
  // The server refuses any request naming a database that does not exist yet, CREATE DATABASE too.
  const admin = connect();
  try {
    await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${db}${on}` });
  } finally {
    await admin.close();
  }
  const client = connect(db);
  try {
    const historyEngine =
      cluster === undefined
        ? 'MergeTree()'
        : `ReplicatedMergeTree('/clickhouse/meterd/${db}/schema_migrations', '{replica}')`;
    await client.command({
      query: `CREATE TABLE IF NOT EXISTS schema_migrations${on} (name String, checksum String, applied_at DateTime('UTC'))
              ENGINE = ${historyEngine} ORDER BY name`,
    });
    const quorum = cluster === undefined ? 0 : await clusterNodes(client, cluster);
    await takeMigrationLock(client, db, cluster, opts.lockWaitMs ?? 300_000);
    try {
      const rs = await client.query({ query: 'SELECT name, checksum FROM schema_migrations', format: 'JSONEachRow' });
      const done = new Map((await rs.json<{ name: string; checksum: string }>()).map((r) => [r.name, r.checksum]));
      return await applyPending('clickhouse', migrations, done, async (m) => {
        for (const stmt of rendered.get(m.name)!) await runStatement(client, stmt, cluster !== undefined);
        await client.command({
          query: `INSERT INTO schema_migrations (name, checksum, applied_at) VALUES (${lit(m.name)}, ${lit(m.checksum)}, now())`,
          ...(quorum > 1 ? { clickhouse_settings: { insert_quorum: String(quorum) } } : {}),
        });
      });
    } finally {
      await releaseMigrationLock(client);
    }
  } finally {
    await client.close();
  }
}

async function runStatement(client: ClickHouseClient, stmt: RenderedStatement, onCluster: boolean): Promise<void> {
  if (stmt.skipWhenEmpty !== undefined) {
    const rs = await client.query({
      query: `SELECT count() AS n FROM ${ident(stmt.skipWhenEmpty)}`,
      format: 'JSONEachRow',
    });
    const [row] = await rs.json<{ n: string }>();
    if (row!.n === '0') return;
  }
  // A data move through Distributed tables must land before the next statement reads it.
  await client.command({
    query: stmt.sql,
    ...(onCluster ? { clickhouse_settings: { insert_distributed_sync: 1 } } : {}),
  });
}

async function clusterNodes(client: ClickHouseClient, cluster: string): Promise<number> {
  const rs = await client.query({
    query: `SELECT count() AS n FROM system.clusters WHERE cluster = ${lit(cluster)}`,
    format: 'JSONEachRow',
  });
  const n = Number((await rs.json<{ n: string }>())[0]!.n);
  if (n === 0)
    throw new MeterdError(
      'METERD_CLICKHOUSE_CLUSTER_UNKNOWN',
      `ClickHouse knows no cluster ${cluster} (remote_servers)`,
    );
  return n;
}

/** Takes the migration lock of `db` (the client's database), waiting up to `waitMs` for its holder. */
export async function takeMigrationLock(
  client: ClickHouseClient,
  db: string,
  cluster: string | undefined,
  waitMs: number,
): Promise<void> {
  // Not ON CLUSTER: on a cluster the table is one replica at a fixed ZooKeeper path, which any
  // node's CREATE contends for.
  const engine =
    cluster === undefined
      ? 'MergeTree()'
      : `ReplicatedMergeTree('/clickhouse/meterd/${db}/${MIGRATION_LOCK_TABLE}', 'lock')`;
  const deadline = Date.now() + waitMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2_000)) {
    try {
      await client.command({
        query: `CREATE TABLE ${MIGRATION_LOCK_TABLE} (at DateTime) ENGINE = ${engine} ORDER BY at`,
      });
      return;
    } catch (err) {
      const code = clickHouseErrorCode(err);
      if (code === undefined || !LOCK_TAKEN_CODES.has(code)) throw err;
      if (Date.now() >= deadline)
        throw new MeterdError(
          'METERD_MIGRATION_LOCKED',
          `another ClickHouse migrator holds ${db}.${MIGRATION_LOCK_TABLE}; if none runs (one was killed), DROP TABLE ${db}.${MIGRATION_LOCK_TABLE}`,
        );
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

export async function releaseMigrationLock(client: ClickHouseClient): Promise<void> {
  await client.command({ query: `DROP TABLE IF EXISTS ${MIGRATION_LOCK_TABLE}` });
}
