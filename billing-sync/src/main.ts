import { createServer } from 'node:http';
import { ConfigError, createClickHouse, createLogger, createPool, isMeterdError, pgHealthy } from '@meterd/core';
import { loadBillingConfig, type BillingConfig } from './config.js';
import { createBillingMetrics } from './metrics.js';
import { createStripe } from './stripe/client.js';
import { createUsageSource } from './usage/select.js';
import { BillingWorker } from './worker.js';

/** billing-sync: pushes closed windows of usage to Stripe meters, exactly once, on a loop. */
let cfg: BillingConfig;
try {
  cfg = loadBillingConfig();
} catch (err) {
  console.error(`billing-sync: ${(err as Error).message}`);
  process.exit(err instanceof ConfigError ? 1 : 1);
}
const log = createLogger('billing-sync', cfg.LOG_LEVEL);
const pool = createPool(cfg.DATABASE_URL, cfg.BILLING_CONCURRENCY + 2);
const ch = createClickHouse({ url: cfg.CLICKHOUSE_URL, database: cfg.CLICKHOUSE_DATABASE, user: cfg.CLICKHOUSE_USER, password: cfg.CLICKHOUSE_PASSWORD });
const metrics = createBillingMetrics();
const stripe = cfg.STRIPE_SECRET_KEY === '' ? undefined : createStripe(cfg);
if (stripe === undefined) log.warn('STRIPE_SECRET_KEY is not set: dry run (the ledger is filled, nothing is sent)');
const source = await (async () => {
  for (;;) {
    try {
      return await createUsageSource(cfg, ch);
    } catch (err) {
      // Missing rollup tables are a deployment mistake: stop. ClickHouse not answering yet is not.
      if (!(isMeterdError(err) && err.retryable)) {
        log.fatal({ err }, 'billing-sync cannot read usage');
        await Promise.allSettled([ch.close(), pool.end()]);
        process.exit(1);
      }
      log.warn({ err }, 'checking the usage source failed; retrying in 2 s');
      await new Promise((r) => setTimeout(r, 2_000));
    }
  }
})();
const worker = new BillingWorker(pool, source, stripe, cfg, metrics, log);

let lastPassOk = false;
const http = createServer((req, res) => {
  void (async () => {
    if (req.url === '/healthz') { res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}'); return; }
    if (req.url === '/readyz') {
      const ok = (await pgHealthy(pool)) && lastPassOk;
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'application/json' }).end(JSON.stringify({ status: ok ? 'ready' : 'not_ready' }));
      return;
    }
    if (req.url === '/metrics') { res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(metrics.registry.render()); return; }
    res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":{"code":"not_found","message":"No such route."}}');
  })();
});
http.listen(cfg.BILLING_SYNC_PORT, cfg.BILLING_SYNC_HOST, () => log.info({ url: `http://${cfg.BILLING_SYNC_HOST}:${cfg.BILLING_SYNC_PORT}`, dry_run: stripe === undefined, usage_source: cfg.BILLING_USAGE_SOURCE }, 'billing-sync listening'));

let stopping = false;
let wake: (() => void) | undefined;
async function loop(): Promise<void> {
  while (!stopping) {
    const started = Date.now();
    try {
      const r = await worker.pass();
      lastPassOk = true;
      log.info({ ...r, ms: Date.now() - started }, 'billing pass done');
    } catch (err) {
      lastPassOk = false;
      log.error({ err }, 'billing pass failed; retrying next interval');
    }
    if (cfg.BILLING_RUN_ONCE || stopping) break;
    await new Promise<void>((r) => { wake = r; setTimeout(r, cfg.BILLING_INTERVAL_MS); });
  }
}

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping billing-sync after the current batch');
  worker.stop();
  wake?.();
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

await loop();
http.close();
await ch.close();
await pool.end();
process.exit(0);
