import { ConfigError, createLogger, int, loadConfig, oneOf, str, url } from '@meterd/core';
import { createFront } from './front/router.js';

/** The front router process: one base URL (port 8080) in front of ingest, aggregator and control API. */
const vars = {
  FRONT_HOST: str('Address the front router listens on.', '127.0.0.1'),
  FRONT_PORT: int('Port of the front router (the single base URL).', 8080, 0, 65535),
  INGEST_URL: url('Ingest base URL (/api/v1/meter, /api/v1/meter/batch).', 'http://127.0.0.1:8081', ['http:']),
  AGGREGATOR_URL: url('Aggregator base URL (/api/v1/workspaces/:id/usage).', 'http://127.0.0.1:8083', ['http:']),
  CONTROL_API_URL: url('Control API base URL (everything else).', 'http://127.0.0.1:8082', ['http:']),
  LOG_LEVEL: oneOf('pino log level.', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
};

let cfg;
try {
  cfg = loadConfig(vars);
} catch (err) {
  console.error(err instanceof ConfigError ? `front: ${err.message}` : err);
  process.exit(1);
}
const log = createLogger('front', cfg.LOG_LEVEL);
const server = createFront({ ingest: cfg.INGEST_URL, aggregator: cfg.AGGREGATOR_URL, control: cfg.CONTROL_API_URL });
server.keepAliveTimeout = 65_000;
server.listen(cfg.FRONT_PORT, cfg.FRONT_HOST, () => {
  const a = server.address() as { port: number };
  log.info({ url: `http://${cfg.FRONT_HOST}:${a.port}` }, 'front router listening');
});
const stop = () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 10_000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
