#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { createClickHouse } from '@meterd/core/clickhouse';
import { isMeterdError } from '@meterd/core/errors';
import { createPool, createRedis } from '@meterd/core/store';
import { loadIngestConfig } from '../config.js';
import { ClickHouseStoredRows } from '../dedupe/clickhouse.js';
import { accountLostVolume, lostLookupSettings } from './identity-lost.js';

/**
 * `npm run spool:lost -- --instance meterd-ingest-0 [--wait-ms 30000] [--ignore-down a,b]`, with ingest's environment
 * (DATABASE_URL, REDIS_URL, REDIS_KEY_PREFIX, CLICKHOUSE_*, DEDUPE_*). Accounts for the instance's
 * lost spool volume (identity-lost.ts): prints the report as JSON on stdout (counts and the lost
 * rows per workspace), releases their idempotency keys, and clears ingest's start-up refusal.
 * Running it again prints the same report. Exits 0 when done, 2 on a usage error or a refusal
 * (unknown instance, instance still running, spool closed cleanly), 3 when another ingest's
 * backlog keeps the accounting from being exact yet (run it again later).
 */
async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      instance: { type: 'string' },
      'wait-ms': { type: 'string', default: '30000' },
      'ignore-down': { type: 'string', default: '' },
    },
  });
  const waitMs = Number(values['wait-ms']);
  if (values.instance === undefined || !Number.isSafeInteger(waitMs) || waitMs < 0) {
    console.error(
      'spool:lost: usage: npm run spool:lost -- --instance <INGEST_INSTANCE> [--wait-ms <ms>] [--ignore-down <instance,…>]',
    );
    return 2;
  }
  const cfg = loadIngestConfig();
  const pool = createPool(cfg.DATABASE_URL, 1);
  // The config, not the URL alone: on a Redis Cluster (REDIS_CLUSTER_NODES) every primary is scanned.
  const redis = createRedis(cfg, { enableAutoPipelining: true });
  const ch = createClickHouse({
    url: cfg.CLICKHOUSE_URL,
    database: cfg.CLICKHOUSE_DATABASE,
    user: cfg.CLICKHOUSE_USER,
    password: cfg.CLICKHOUSE_PASSWORD,
    requestTimeoutMs: 60_000,
    // On a cluster, only replicas holding every quorum insert answer (identity-lost.ts).
    settings: lostLookupSettings(cfg),
  });
  try {
    const { report, releasedNow } = await accountLostVolume(
      {
        pool,
        redis,
        stored: new ClickHouseStoredRows(ch),
        prefix: cfg.REDIS_KEY_PREFIX,
        hotSeconds: cfg.DEDUPE_HOT_SECONDS,
        pendingTtlMs: cfg.DEDUPE_PENDING_TTL_MS,
        waitMs,
        ignoreDown: values['ignore-down'].split(',').filter((x) => x !== ''),
      },
      values.instance,
    );
    console.log(JSON.stringify(report, null, 2));
    console.error(
      `spool:lost: instance ${report.instance}: ${report.lost} acknowledged rows were never shipped` +
        `${report.complete ? '' : ' (at least: part of the window had left Redis, see docs/deploy.md)'}; ` +
        `${releasedNow} idempotency keys released now, so retries are stored. Ingest may start on the new volume.`,
    );
    return 0;
  } catch (err) {
    if (!isMeterdError(err)) throw err;
    console.error(`spool:lost: ${err.code}: ${err.message}`);
    return err.retryable ? 3 : 2;
  } finally {
    await Promise.allSettled([pool.end(), redis.quit(), ch.close()]);
  }
}

process.exitCode = await main();
