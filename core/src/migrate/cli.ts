import { loadConfig, storeVars, ConfigError } from '../config/index.js';
import { createPool } from '../store/postgres.js';
import { clickHouseFromConfig } from '../clickhouse/client.js';
import { migratePostgres } from './postgres.js';
import { migrateClickHouse } from './clickhouse.js';
import { PG_MIGRATIONS_DIR, CH_MIGRATIONS_DIR } from '../paths.js';

/** `npm run migrate`: applies pending Postgres and ClickHouse migrations; exits non-zero on any failure. */
async function main(): Promise<void> {
  const cfg = loadConfig({
    DATABASE_URL: storeVars.DATABASE_URL,
    CLICKHOUSE_URL: storeVars.CLICKHOUSE_URL,
    CLICKHOUSE_DATABASE: storeVars.CLICKHOUSE_DATABASE,
    CLICKHOUSE_USER: storeVars.CLICKHOUSE_USER,
    CLICKHOUSE_PASSWORD: storeVars.CLICKHOUSE_PASSWORD,
  });
  const pool = createPool(cfg.DATABASE_URL, 1);
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
  );
  console.log(`clickhouse: ${ch.length === 0 ? 'up to date' : `applied ${ch.join(', ')}`}`);
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? err.message : `migrate: ${(err as Error).message}`);
  process.exit(1);
});
