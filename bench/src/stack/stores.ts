import { randomBytes } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { clickHouseFromConfig, ident } from '@meterd/core/clickhouse';
import { loadConfig, storeVars, type ConfigOf } from '@meterd/core/config';
import { migrateClickHouse, migratePostgres } from '@meterd/core/migrate';
import { type Plan } from '@meterd/core/plans';
import { createPool, createRedis, insertApiKey, insertWorkspace, type Pool, type Redis } from '@meterd/core/store';
import { CH_MIGRATIONS_DIR, PG_MIGRATIONS_DIR } from '@meterd/core/testing';
import type { Tenant } from '../load/workloads.js';

export type StoreConfig = ConfigOf<typeof storeVars>;

/**
 * The stores of one self-started run: a Postgres database and a ClickHouse database of its own
 * (both migrated, both dropped afterwards), on the servers of DATABASE_URL / CLICKHOUSE_URL, so a
 * benchmark never touches an operator's data and its ClickHouse counts hold only its own events.
 */
export interface BenchStores {
  tag: string;
  cfg: StoreConfig;
  databaseUrl: URL;
  chDatabase: string;
  clickhouse: ClickHouseClient;
  pool: Pool;
  redis: Redis;
  /** Env for a child service pointed at these stores. */
  env: Record<string, string>;
  tenant(plan: Plan): Promise<Tenant>;
  tenants(plan: Plan, n: number): Promise<Tenant[]>;
  close(keep?: boolean): Promise<void>;
}

export async function openBenchStores(env: NodeJS.ProcessEnv = process.env): Promise<BenchStores> {
  const cfg = loadConfig(storeVars, env);
  const tag = `b${randomBytes(5).toString('hex')}`;
  const name = ident(`meterd_bench_${tag}`);
  const admin = createPool(cfg.DATABASE_URL, 1);
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const databaseUrl = new URL(cfg.DATABASE_URL.toString());
  databaseUrl.pathname = `/${name}`;
  const pool = createPool(databaseUrl, 8);
  await migratePostgres(pool, PG_MIGRATIONS_DIR);
  const connect = (database?: string) => clickHouseFromConfig(cfg, { database: database ?? 'default' });
  await migrateClickHouse(connect, name, CH_MIGRATIONS_DIR);
  const clickhouse = connect(name);
  // The baseline writes to a table of the same shape, so its inserts cost what meterd's would.
  await clickhouse.command({ query: 'CREATE TABLE IF NOT EXISTS baseline_events AS events' });
  const redis = createRedis(cfg.REDIS_URL);
  const workspaceIds: string[] = [];

  const tenant = async (plan: Plan): Promise<Tenant> => {
    const w = await insertWorkspace(pool, {
      slug: `bench-${randomBytes(6).toString('hex')}`,
      display_name: `bench ${tag}`,
      plan,
    });
    const k = await insertApiKey(pool, w.id, ['meter:write'], `bench ${tag}`);
    workspaceIds.push(w.id);
    return { workspaceId: w.id, token: k.token };
  };

  return {
    tag,
    cfg,
    databaseUrl,
    chDatabase: name,
    clickhouse,
    pool,
    redis,
    env: {
      DATABASE_URL: databaseUrl.toString(),
      REDIS_URL: cfg.REDIS_URL.toString(),
      CLICKHOUSE_URL: cfg.CLICKHOUSE_URL.toString(),
      CLICKHOUSE_DATABASE: name,
      CLICKHOUSE_USER: cfg.CLICKHOUSE_USER,
      CLICKHOUSE_PASSWORD: cfg.CLICKHOUSE_PASSWORD,
    },
    tenant,
    async tenants(plan, n) {
      const out: Tenant[] = [];
      // A few inserts at a time: thousands of workspaces in seconds without hogging the pool.
      for (let i = 0; i < n; i += 8)
        out.push(...(await Promise.all(Array.from({ length: Math.min(8, n - i) }, () => tenant(plan)))));
      return out;
    },
    async close(keep = false) {
      await deleteRedisKeys(redis, new Set(workspaceIds)).catch(() => {});
      await redis.quit();
      if (!keep) await clickhouse.command({ query: `DROP DATABASE IF EXISTS ${name}` }).catch(() => {});
      await clickhouse.close();
      await pool.end();
      if (!keep) {
        const a = createPool(cfg.DATABASE_URL, 1);
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
        await a.end();
      }
    },
  };
}

/**
 * Dedupe claims and quota counters of the run's workspaces (meterd's `md:{ws}:…`, the baseline's
 * `bl:{ws}:…`): a batch run leaves millions, and they would sit in the shared Redis until expiry.
 */
async function deleteRedisKeys(redis: Redis, workspaces: Set<string>): Promise<void> {
  if (workspaces.size === 0) return;
  for (const prefix of ['md', 'bl']) {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:{ws_*`, 'COUNT', 10_000);
      cursor = next;
      const mine = keys.filter((k) => workspaces.has(k.slice(prefix.length + 2, k.indexOf('}'))));
      if (mine.length > 0) await redis.unlink(...mine);
    } while (cursor !== '0');
  }
}
