import { Authenticator } from '@meterd/core/auth';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { BATCHES_RECORDED_CHANNEL } from '@meterd/core/contracts';
import { createLogger, type Logger } from '@meterd/core/log';
import { MeterCatalog } from '@meterd/core/meters';
import { createPool, createRedis, type Redis, type RedisTarget } from '@meterd/core/store';
import type { ServiceContext, ServiceSpec } from '@meterd/core/service';
import { loadAggregatorConfig, type AggregatorConfig } from './config.js';
import { createAggregatorMetrics } from './metrics.js';
import { createAggregatorServer } from './http/server.js';
import { Aggregator } from './worker/aggregator.js';
import { PgTableLeases } from './worker/leases.js';
import { CLUSTER_LOOKBACK_SECONDS, LOOKBACK_SECONDS } from './worker/detect.js';

export interface AggregatorApp {
  port: number;
  aggregator: Aggregator | null;
  close(): Promise<void>;
}

/** Builds the whole service from a parsed config: stores, worker (unless disabled), HTTP server. */
export async function startAggregatorApp(cfg: AggregatorConfig, ctx?: Partial<ServiceContext>): Promise<AggregatorApp> {
  const log = ctx?.log ?? createLogger('aggregator', cfg.LOG_LEVEL);
  const ch = clickHouseFromConfig(cfg);
  const pool = createPool(cfg.DATABASE_URL, 4, { statementTimeoutMs: cfg.DATABASE_STATEMENT_TIMEOUT_MS });
  const sub = createRedis(cfg);
  const auth = new Authenticator(pool, sub, cfg.KEY_CACHE_TTL_MS, cfg.DEPLOY_API_KEY);
  const metrics = createAggregatorMetrics();
  // Leases get their own two connections: a burst of usage-API reads must not delay a renewal.
  const leasePool = cfg.AGGREGATOR_WORKER
    ? createPool(cfg.DATABASE_URL, 2, { statementTimeoutMs: cfg.DATABASE_STATEMENT_TIMEOUT_MS })
    : null;

  const aggregator =
    leasePool !== null
      ? new Aggregator(
          ch,
          new PgTableLeases(leasePool, { shards: cfg.AGGREGATOR_SHARDS, ttlMs: cfg.AGGREGATOR_LEASE_TTL_MS }),
          {
            shards: cfg.AGGREGATOR_SHARDS,
            closeAfterSeconds: cfg.AGGREGATOR_CLOSE_AFTER_SECONDS,
            windowsPerQuery: cfg.AGGREGATOR_WINDOWS_PER_QUERY,
            copyHorizonSeconds: cfg.AGGREGATOR_COPY_HORIZON_SECONDS,
            lookbackSeconds: lookbackSeconds(cfg),
            meters: new MeterCatalog(pool, { ttlMs: 2_000 }),
            backfill: { db: pool, hours: cfg.AGGREGATOR_METER_BACKFILL_HOURS },
          },
          metrics,
          log,
        )
      : null;

  const http = createAggregatorServer({
    ch,
    auth,
    pool,
    metrics,
    log,
    shards: cfg.AGGREGATOR_SHARDS,
    freshnessTargetMs: cfg.AGGREGATOR_FRESHNESS_TARGET_MS,
    ...(ctx?.draining === undefined ? {} : { draining: ctx.draining }),
    beforeScrape: () => metrics.watermarkAge.set(aggregator?.watermarkAgeSeconds() ?? -1),
  });
  const port = await http.listen(cfg.AGGREGATOR_PORT, cfg.AGGREGATOR_HOST);
  aggregator?.start(cfg.AGGREGATOR_POLL_MS);
  const wakes = aggregator === null ? null : subscribeToWakes(cfg, aggregator, log);
  log.info(
    { url: `http://${cfg.AGGREGATOR_HOST}:${port}`, worker: aggregator !== null, shards: cfg.AGGREGATOR_SHARDS },
    'aggregator listening',
  );

  return {
    port,
    aggregator,
    async close() {
      await http.close();
      wakes?.disconnect();
      await aggregator?.stop();
      await leasePool?.end();
      sub.disconnect();
      await pool.end();
      await ch.close();
    },
  };
}

/**
 * Wakes the worker when an ingest process recorded batches, so that a rollup waits for the cycle
 * rather than for the next poll. A lost message or a Redis outage costs at most one poll.
 */
export function subscribeToWakes(cfg: RedisTarget, aggregator: Aggregator, log: Logger): Redis {
  const r = createRedis(cfg, { enableAutoPipelining: false });
  r.on('error', (err) => log.debug({ err }, 'redis connection error (batch announcements)'));
  r.on('message', () => aggregator.wake());
  // ioredis subscribes again by itself after a reconnect.
  r.subscribe(BATCHES_RECORDED_CHANNEL).catch((err: unknown) =>
    log.warn({ err }, 'could not subscribe to batch announcements; rollups wait for the poll'),
  );
  return r;
}

/**
 * The aggregator process: the rollup worker and the usage API. Several may run at once; shard
 * leases (rows in Postgres, split evenly over the live replicas) keep each workspace's windows with
 * one of them. A stop finishes the current cycle and gives the leases back.
 */
export const aggregatorService: ServiceSpec<AggregatorConfig, AggregatorApp> = {
  name: 'aggregator',
  loadConfig: loadAggregatorConfig,
  start: startAggregatorApp,
  drainMs: 10_000,
};

/** AGGREGATOR_LOOKBACK_SECONDS, or its default for one server or a cluster (worker/detect.ts). */
export function lookbackSeconds(cfg: AggregatorConfig): number {
  if (cfg.AGGREGATOR_LOOKBACK_SECONDS > 0) return cfg.AGGREGATOR_LOOKBACK_SECONDS;
  return cfg.CLICKHOUSE_CLUSTER === '' ? LOOKBACK_SECONDS : CLUSTER_LOOKBACK_SECONDS;
}
