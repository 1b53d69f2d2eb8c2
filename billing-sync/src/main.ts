import { ConfigError, createLogger } from '@meterd/core';
import { loadBillingConfig, type BillingConfig } from './config.js';
import { startBillingSync } from './service.js';

/** billing-sync: pushes closed windows of usage to Stripe meters, exactly once, on a loop. */
let cfg: BillingConfig;
try {
  cfg = loadBillingConfig();
} catch (err) {
  console.error(err instanceof ConfigError ? `billing-sync: ${err.message}` : err);
  process.exit(1);
}
const log = createLogger('billing-sync', cfg.LOG_LEVEL);
const starting = new AbortController();
let stopping = false;
let service: Awaited<ReturnType<typeof startBillingSync>> | undefined;

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping billing-sync after the current batch');
  starting.abort();
  await service?.close();
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

try {
  service = await startBillingSync(cfg, log, starting.signal);
} catch (err) {
  if (!stopping) {
    log.fatal({ err }, 'billing-sync cannot read usage');
    process.exitCode = 1;
  }
}
if (service !== undefined) {
  if (stopping) await service.close();
  else if (cfg.BILLING_RUN_ONCE) {
    await service.passOnce();
    await service.close();
  } else service.startLoop();
}
// No process.exit: once closed, nothing is left on the event loop and the process ends by itself.
