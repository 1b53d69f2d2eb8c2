import type { ClickHouseClient } from '@clickhouse/client';
import { ident, lit } from '../clickhouse/sql.js';
import { applyPending, readMigrations, splitStatements } from './files.js';

/** Opens a client on `database`, or on the server's default database when it is undefined. */
export type ClickHouseConnector = (database?: string) => ClickHouseClient;

/**
 * Applies each ClickHouse migration once. ClickHouse has no transactions, so a migration is
 * recorded only after all its statements succeeded, and statements are written to be re-runnable
 * (`IF NOT EXISTS`) so that a migration interrupted half-way can simply run again.
 * Migrations name tables without a database; they run with `database` selected.
 */
export async function migrateClickHouse(
  connect: ClickHouseConnector,
  database: string,
  dir: string,
): Promise<string[]> {
  const db = ident(database);
  const migrations = await readMigrations(dir);
  // The server refuses any request naming a database that does not exist yet, CREATE DATABASE too.
  const admin = connect();
  try {
    await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${db}` });
  } finally {
    await admin.close();
  }
  const client = connect(db);
  try {
    await client.command({
      query: `CREATE TABLE IF NOT EXISTS schema_migrations (name String, checksum String, applied_at DateTime('UTC'))
              ENGINE = MergeTree() ORDER BY name`,
    });
    const rs = await client.query({ query: 'SELECT name, checksum FROM schema_migrations', format: 'JSONEachRow' });
    const done = new Map((await rs.json<{ name: string; checksum: string }>()).map((r) => [r.name, r.checksum]));
    return await applyPending('clickhouse', migrations, done, async (m) => {
      for (const stmt of splitStatements(m.sql)) await client.command({ query: stmt });
      await client.command({
        query: `INSERT INTO schema_migrations (name, checksum, applied_at) VALUES (${lit(m.name)}, ${lit(m.checksum)}, now())`,
      });
    });
  } finally {
    await client.close();
  }
}
