import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  Loop,
  createClickHouse,
  clickHouseFromConfig,
  createPool,
  isMeterdError,
  pgHealthy,
  type Logger,
} from '@meterd/core';
import type { BillingConfig } from './config.js';
import { createBillingMetrics } from './metrics.js';
import { createStripe } from './stripe/client.js';
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

/** billing-sync's composition: stores, Stripe, the worker, its HTTP surface and its loop, in-process. */
export async function startBillingSync(cfg: BillingConfig, log: Logger, signal?: AbortSignal): Promise<BillingSync> {
  const pool = createPool(cfg.DATABASE_URL, cfg.BILLING_CONCURRENCY + 2);
  const ch = clickHouseFromConfig(cfg);
  const metrics = createBillingMetrics();
  const stripe = cfg.STRIPE_SECRET_KEY === '' ? undefined : createStripe(cfg);
  if (stripe === undefined) log.warn('STRIPE_SECRET_KEY is not set: dry run (the ledger is filled, nothing is sent)');
  let source: UsageSource;
  try {
    source = await openUsageSource(cfg, ch, log, signal);
  } catch (err) {
    await Promise.allSettled([ch.close(), pool.end()]);
    throw err;
  }
  const worker = new BillingWorker(pool, source, stripe, cfg, metrics, log);

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

  const http = createServer((req, res) => {
    void (async () => {
      if (req.url === '/healthz')
        return void res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}');
      if (req.url === '/readyz') {
        const ok = (await pgHealthy(pool)) && lastPassOk;
        return void res
          .writeHead(ok ? 200 : 503, { 'Content-Type': 'application/json' })
          .end(JSON.stringify({ status: ok ? 'ready' : 'not_ready' }));
      }
      if (req.url === '/metrics')
        return void res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(metrics.registry.render());
      res
        .writeHead(404, { 'Content-Type': 'application/json' })
        .end('{"error":{"code":"not_found","message":"No such route."}}');
    })();
  });
  await listen(http, cfg.BILLING_SYNC_PORT, cfg.BILLING_SYNC_HOST);
  const url = `http://${cfg.BILLING_SYNC_HOST}:${(http.address() as AddressInfo).port}`;
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
        await new Promise<void>((resolve) => {
          http.close(() => resolve());
          http.closeAllConnections();
        });
        await Promise.all([ch.close(), pool.end()]);
      })();
      return closing;
    },
  };
}

/** Missing rollup tables are a deployment mistake: fail. ClickHouse not answering yet is not: wait for it. */
async function openUsageSource(
  cfg: BillingConfig,
  ch: ReturnType<typeof createClickHouse>,
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

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
