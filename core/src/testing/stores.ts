import { randomBytes } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { loadConfig } from '../config/env.js';
import { storeVars } from '../config/common.js';
import { clickHouseFromConfig } from '../clickhouse/client.js';
import { ident } from '../clickhouse/sql.js';
import { createPool, type Pool } from '../store/postgres.js';
import { createRedis, type Redis } from '../store/redis.js';
import { insertApiKey, insertWorkspace, type Workspace } from '../store/workspaces.js';
import { migratePostgres } from '../migrate/postgres.js';
import { migrateClickHouse } from '../migrate/clickhouse.js';
import { PG_MIGRATIONS_DIR, CH_MIGRATIONS_DIR } from './paths.js';
import type { Plan } from '../plans.js';
import type { Scope } from '../keys/api-key.js';

/**
 * Real stores for one test file: a fresh Postgres database and a fresh ClickHouse database, both
 * migrated, and a Redis key prefix of its own, on the servers `npm test` started. Nothing is mocked;
 * isolation comes from names, so test files may run side by side. ClickHouse databases are dropped
 * and re-created rather than truncated (18.16 can resurrect merged parts after a restart).
 */
export interface TestStores {
  id: string;
  env: Record<string, string>;
  databaseUrl: URL;
  pool: Pool;
  redis: Redis;
  redisPrefix: string;
  clickhouse: ClickHouseClient;
  chDatabase: string;
  /** A workspace with one key (all default scopes). */
  workspace(plan?: Plan, scopes?: Scope[]): Promise<{ workspace: Workspace; token: string; keyId: string }>;
  close(): Promise<void>;
}

export async function openTestStores(label: string): Promise<TestStores> {
  const base = loadConfig(storeVars);
  const id = `${label
    .replace(/[^a-z0-9]/gi, '')
    .toLowerCase()
    .slice(0, 20)}_${randomBytes(4).toString('hex')}`;
  const pgName = ident(`meterd_t_${id}`);
  const admin = createPool(base.DATABASE_URL, 1);
  await admin.query(`CREATE DATABASE ${pgName}`);
  await admin.end();
  const databaseUrl = new URL(base.DATABASE_URL.toString());
  databaseUrl.pathname = `/${pgName}`;
  const pool = createPool(databaseUrl, 5);
  await migratePostgres(pool, PG_MIGRATIONS_DIR);

  const redis = createRedis(base.REDIS_URL);
  const redisPrefix = `t_${id}`;
  const chDatabase = ident(`meterd_t_${id}`);
  const connect = (database?: string) => clickHouseFromConfig(base, { database: database ?? 'default' });
  await migrateClickHouse(connect, chDatabase, CH_MIGRATIONS_DIR);
  const clickhouse = connect(chDatabase);

  return {
    id,
    env: {
      DATABASE_URL: databaseUrl.toString(),
      REDIS_URL: base.REDIS_URL.toString(),
      CLICKHOUSE_URL: base.CLICKHOUSE_URL.toString(),
      CLICKHOUSE_DATABASE: chDatabase,
      CLICKHOUSE_USER: base.CLICKHOUSE_USER,
      CLICKHOUSE_PASSWORD: base.CLICKHOUSE_PASSWORD,
      // Services started from this env keep their Redis keys under the test's prefix, which
      // close() deletes (ingest writes them; the control API reads ingest's quota counters).
      REDIS_KEY_PREFIX: redisPrefix,
    },
    databaseUrl,
    pool,
    redis,
    redisPrefix,
    clickhouse,
    chDatabase,
    async workspace(plan: Plan = 'free', scopes?: Scope[]) {
      const workspace = await insertWorkspace(pool, {
        slug: `t-${randomBytes(6).toString('hex')}`,
        display_name: 'Test',
        plan,
      });
      const key = await insertApiKey(pool, workspace.id, scopes);
      return { workspace, token: key.token, keyId: key.id };
    },
    async close() {
      // SCAN + UNLINK in chunks: a load test leaves tens of thousands of keys, too many for one call.
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await redis.unlink(...keys);
      } while (cursor !== '0');
      await redis.quit();
      await clickhouse.close();
      // 18.16 drops a table only once the queries reading it finish, and a service killed -9 by a
      // fault test leaves its last queries running on the server: allow them their own timeout.
      const dropper = clickHouseFromConfig(base, { database: 'default', requestTimeoutMs: 150_000 });
      try {
        await dropper.command({ query: `DROP DATABASE IF EXISTS ${chDatabase}` });
      } finally {
        await dropper.close();
      }
      await pool.end();
      const a = createPool(base.DATABASE_URL, 1);
      await a.query(`DROP DATABASE IF EXISTS ${pgName} WITH (FORCE)`);
      await a.end();
    },
  };
}
