import { join } from 'node:path';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { loadConfig, storeVars, ConfigError } from '@meterd/core/config';
import { migrateClickHouse, migratePostgres } from '@meterd/core/migrate';
import { createPool, sessionUrl } from '@meterd/core/store';
import { REPO_ROOT } from './paths.js';

const PG_MIGRATIONS_DIR = join(REPO_ROOT, 'infra/postgres');
const CH_MIGRATIONS_DIR = join(REPO_ROOT, 'infra/clickhouse');

/** `npm run migrate`: applies pending Postgres and ClickHouse migrations; exits non-zero on any failure. */
async function main(): Promise<void> {
  const cfg = loadConfig({
    DATABASE_URL: storeVars.DATABASE_URL,
    DATABASE_SESSION_URL: storeVars.DATABASE_SESSION_URL,
    CLICKHOUSE_URL: storeVars.CLICKHOUSE_URL,
    CLICKHOUSE_DATABASE: storeVars.CLICKHOUSE_DATABASE,
    CLICKHOUSE_USER: storeVars.CLICKHOUSE_USER,
    CLICKHOUSE_PASSWORD: storeVars.CLICKHOUSE_PASSWORD,
    CLICKHOUSE_CLUSTER: storeVars.CLICKHOUSE_CLUSTER,
    CLICKHOUSE_INSERT_QUORUM: storeVars.CLICKHOUSE_INSERT_QUORUM,
  });
  // The migration lock is a session advisory lock: a direct (or session-pooled) connection.
  const pool = createPool(sessionUrl(cfg), 1, { statementTimeoutMs: 0 });
  try {
    const pg = await migratePostgres(pool, PG_MIGRATIONS_DIR);
    console.log(`postgres: ${pg.length === 0 ? 'up to date' : `applied ${pg.join(', ')}`}`);
  } finally {
    await pool.end();
  }
  const ch = await migrateClickHouse(
    (database) => clickHouseFromConfig(cfg, { database: database ?? 'default' }),
    cfg.CLICKHOUSE_DATABASE,
    CH_MIGRATIONS_DIR,
    { cluster: cfg.CLICKHOUSE_CLUSTER },
  );
  console.log(`clickhouse: ${ch.length === 0 ? 'up to date' : `applied ${ch.join(', ')}`}`);
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? err.message : `migrate: ${(err as Error).message}`);
  process.exit(1);
});
