import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { isMeterdError } from '@meterd/core/errors';
import { type Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';
import { createPool, pgHealthy } from '@meterd/core/store';
import { createServiceApp, listenOn } from '@meterd/core/http';
import type { ServiceSpec } from '@meterd/core/service';
import { loadBillingConfig, type BillingConfig } from './config.js';
import { createBillingMetrics } from './metrics.js';
import { createStripe } from './stripe/client.js';
import { ClickHouseMeterUsage } from './usage/meters.js';
import { createUsageSource } from './usage/select.js';
import type { UsageSource } from './usage/source.js';
import { BillingWorker } from './worker.js';

export interface BillingSync {
  url: string;
  /** One billing pass now (BILLING_RUN_ONCE uses it instead of the loop). */
  passOnce(): Promise<void>;
  /** Passes every BILLING_INTERVAL_MS until close(). */
  startLoop(): void;
  /** Finishes the pass in flight (pushes stop after their current batch), then closes every connection. */
  close(): Promise<void>;
}

/**
 * billing-sync's composition: stores, Stripe, the worker, its HTTP surface and its loop, in-process.
 * `draining` aborted: /readyz answers 503, and a start still waiting for ClickHouse gives up.
 */
export async function startBillingSync(cfg: BillingConfig, log: Logger, draining?: AbortSignal): Promise<BillingSync> {
  const pool = createPool(cfg.DATABASE_URL, cfg.BILLING_CONCURRENCY + 2, {
    statementTimeoutMs: cfg.DATABASE_STATEMENT_TIMEOUT_MS,
  });
  const ch = clickHouseFromConfig(cfg);
  const metrics = createBillingMetrics();
  const stripe = cfg.STRIPE_SECRET_KEY === '' ? undefined : createStripe(cfg);
  if (stripe === undefined) log.warn('STRIPE_SECRET_KEY is not set: dry run (the ledger is filled, nothing is sent)');
  let source: UsageSource;
  try {
    source = await openUsageSource(cfg, ch, log, draining);
  } catch (err) {
    await Promise.allSettled([ch.close(), pool.end()]);
    throw err;
  }
  const worker = new BillingWorker(pool, source, stripe, cfg, metrics, log, new ClickHouseMeterUsage(pool, ch));

  let lastPassOk = false;
  const passOnce = async (): Promise<void> => {
    const started = Date.now();
    try {
      const r = await worker.pass();
      lastPassOk = true;
      log.info({ ...r, ms: Date.now() - started }, 'billing pass done');
    } catch (err) {
      lastPassOk = false;
      log.error({ err }, 'billing pass failed; retrying next interval');
    }
  };
  const loop = new Loop(passOnce, {
    intervalMs: cfg.BILLING_INTERVAL_MS,
    onError: (err) => log.error({ err }, 'billing pass failed'),
    ref: true,
  });

  const http = createServiceApp({
    ...(draining === undefined ? {} : { draining }),
    checks: async () => ({ postgres: await pgHealthy(pool), last_pass: lastPassOk }),
    metrics: () => metrics.registry.render(),
  });
  const port = await listenOn(http, cfg.BILLING_SYNC_PORT, cfg.BILLING_SYNC_HOST);
  const url = `http://${cfg.BILLING_SYNC_HOST}:${port}`;
  log.info({ url, dry_run: stripe === undefined, usage_source: cfg.BILLING_USAGE_SOURCE }, 'billing-sync listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    passOnce,
    startLoop: () => void loop.start(),
    close() {
      closing ??= (async () => {
        worker.stop();
        await loop.stop();
        await http.close();
        await Promise.all([ch.close(), pool.end()]);
      })();
      return closing;
    },
  };
}

/** Missing rollup tables are a deployment mistake: fail. ClickHouse not answering yet is not: wait for it. */
async function openUsageSource(
  cfg: BillingConfig,
  ch: ReturnType<typeof clickHouseFromConfig>,
  log: Logger,
  signal?: AbortSignal,
): Promise<UsageSource> {
  for (;;) {
    try {
      return await createUsageSource(cfg, ch);
    } catch (err) {
      if (!(isMeterdError(err) && err.retryable) || signal?.aborted === true) throw err;
      log.warn({ err }, 'checking the usage source failed; retrying in 2 s');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 2_000);
        signal?.addEventListener(
          'abort',
          () => {
            clearTimeout(t);
            resolve();
          },
          { once: true },
        );
      });
    }
  }
}

/**
 * billing-sync's process: pushes closed windows of usage to Stripe meters, exactly once, on a
 * loop; with BILLING_RUN_ONCE, one pass and exit. A stop waits for the push batch in flight.
 */
export const billingSyncService: ServiceSpec<BillingConfig, BillingSync> = {
  name: 'billing-sync',
  loadConfig: loadBillingConfig,
  start: async (cfg, ctx) => {
    const service = await startBillingSync(cfg, ctx.log, ctx.draining);
    if (cfg.BILLING_RUN_ONCE) return { ...service, done: service.passOnce() };
    service.startLoop();
    return service;
  },
  drainMs: 30_000,
};
