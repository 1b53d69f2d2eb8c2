import { ConfigError, createLogger, isMeterdError } from '@meterd/core';
import { loadAggregatorConfig, type AggregatorConfig } from './config.js';
import { startAggregatorApp } from './app.js';

/**
 * Aggregator entry point: the rollup worker and the usage API in one process. Several may run at
 * once; shard leases (Postgres advisory locks) keep each workspace's windows with one of them.
 * SIGTERM/SIGINT finish the current cycle, release the leases and exit.
 */
let cfg: AggregatorConfig;
try {
  cfg = loadAggregatorConfig();
} catch (err) {
  console.error(err instanceof ConfigError || isMeterdError(err) ? `aggregator: ${err.message}` : err);
  process.exit(1);
}
const log = createLogger('aggregator', cfg.LOG_LEVEL);
const app = await startAggregatorApp(cfg).catch((err: unknown) => {
  log.fatal({ err }, 'aggregator failed to start');
  process.exit(1);
});

let stopping = false;
function shutdown(signal: string): void {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping aggregator');
  setTimeout(() => process.exit(0), 10_000).unref();
  app.close().then(
    () => process.exit(0),
    (err: unknown) => {
      log.error({ err }, 'error while stopping');
      process.exit(1);
    },
  );
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
