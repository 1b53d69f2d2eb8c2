import { int, loadConfig, oneOf, str, url } from '@meterd/core/config';
import { listenOn } from '@meterd/core/http';
import type { ServiceSpec } from '@meterd/core/service';
import { createFront } from './router.js';

const vars = {
  FRONT_HOST: str('Address the front router listens on.', '127.0.0.1'),
  FRONT_PORT: int('Port of the front router (the single base URL).', 8080, 0, 65535),
  INGEST_URL: url('Ingest base URL (/api/v1/meter, /api/v1/meter/batch).', 'http://127.0.0.1:8081', ['http:']),
  AGGREGATOR_URL: url('Aggregator base URL (/api/v1/workspaces/:id/usage).', 'http://127.0.0.1:8083', ['http:']),
  CONTROL_API_URL: url('Control API base URL (everything else).', 'http://127.0.0.1:8082', ['http:']),
  LOG_LEVEL: oneOf('pino log level.', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
};

/** The front router process: one base URL (port 8080) in front of ingest, aggregator and control API. */
export const frontService: ServiceSpec<
  ReturnType<typeof loadConfig<typeof vars>>,
  { url: string; close(): Promise<void> }
> = {
  name: 'front',
  loadConfig: (env) => loadConfig(vars, env),
  start: async (cfg, ctx) => {
    const app = createFront(
      { ingest: cfg.INGEST_URL, aggregator: cfg.AGGREGATOR_URL, control: cfg.CONTROL_API_URL },
      { draining: ctx.draining },
    );
    const url = `http://${cfg.FRONT_HOST}:${await listenOn(app, cfg.FRONT_PORT, cfg.FRONT_HOST)}`;
    ctx.log.info({ url }, 'front router listening');
    return { url, close: () => app.close() };
  },
  drainMs: 10_000,
};
