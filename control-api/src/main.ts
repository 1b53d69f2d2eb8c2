import { ConfigError, createLogger, isMeterdError } from '@meterd/core';
import { loadControlConfig, type ControlConfig } from './config.js';
import { startControl } from './server.js';

let cfg: ControlConfig;
try {
  cfg = loadControlConfig();
} catch (err) {
  console.error(err instanceof ConfigError || isMeterdError(err) ? `control-api: ${err.message}` : err);
  process.exit(1);
}
const log = createLogger('control-api', cfg.LOG_LEVEL);
const server = await startControl(cfg, { log }).catch((err: unknown) => {
  log.fatal({ err }, 'control-api failed to start');
  process.exit(1);
});
log.info({ url: server.url }, 'control-api listening');

let stopping = false;
function shutdown(signal: string): void {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping control-api');
  setTimeout(() => process.exit(0), 15_000).unref();
  server.close().then(
    () => process.exit(0),
    (err: unknown) => {
      log.error({ err }, 'error while stopping');
      process.exit(1);
    },
  );
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
