import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import { type Logger } from '@meterd/core/log';
import { pgHealthy, type Pool } from '@meterd/core/store';
import { createServiceApp, listenOn } from '@meterd/core/http';
import type { AggregatorMetrics } from '../metrics.js';
import { handleMeterUsage } from './meter-usage-route.js';
import { handleUsage, type UsageRouteDeps } from './usage-route.js';
import { errorReply } from './respond.js';

export interface ServerDeps extends UsageRouteDeps {
  pool: Pool;
  metrics: AggregatorMetrics;
  log: Logger;
  /** Aborted once the process drains: /readyz answers 503. */
  draining?: AbortSignal;
  /** Called before /metrics renders, to refresh gauges computed from state (watermark age). */
  beforeScrape?: () => void;
}

const USAGE = '/api/v1/workspaces/:workspaceId/usage';
const METER_USAGE = '/api/v1/workspaces/:workspaceId/meters/:slug/usage';

/** The aggregator's HTTP surface: the usage API plus /healthz, /readyz and /metrics. */
export function createAggregatorServer(deps: ServerDeps): {
  app: FastifyInstance;
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
} {
  const app = createServiceApp(
    {
      ...(deps.draining === undefined ? {} : { draining: deps.draining }),
      checks: async () => {
        const [postgres, clickhouse] = await Promise.all([
          pgHealthy(deps.pool),
          deps.ch.ping().then(
            (r) => r.success,
            () => false,
          ),
        ]);
        return { postgres, clickhouse };
      },
      metrics: () => {
        deps.beforeScrape?.();
        return deps.metrics.registry.render();
      },
    },
    { routerOptions: { ignoreTrailingSlash: true } },
  );
  // No route takes a body: none is parsed, so a body never turns into a parse error before routing.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));

  // GET also answers HEAD (Fastify adds the HEAD route).
  app.get<{ Params: { workspaceId: string } }>(USAGE, async (req, reply) => {
    deps.metrics.usageRequests.inc();
    const query = new URL(req.url, 'http://aggregator').searchParams;
    const r = await handleUsage(deps, req.headers, req.params.workspaceId, query);
    return reply.status(200).headers(r.headers).send(r.body);
  });
  app.get<{ Params: { workspaceId: string; slug: string } }>(METER_USAGE, async (req, reply) => {
    deps.metrics.usageRequests.inc();
    const query = new URL(req.url, 'http://aggregator').searchParams;
    const r = await handleMeterUsage(deps, req.headers, req.params.workspaceId, req.params.slug, query);
    return reply.status(200).headers(r.headers).send(r.body);
  });
  for (const url of [USAGE, METER_USAGE])
    app.route({
      method: ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
      url,
      handler: async (_req, reply) => {
        void reply.header('allow', 'GET, HEAD');
        throw new ApiError('method_not_allowed', 'use GET');
      },
    });
  app.setNotFoundHandler(async (req) => {
    throw new ApiError('not_found', `no route ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}`);
  });
  app.setErrorHandler(async (err, _req, reply) => {
    const e = errorReply(err, deps.log);
    return reply.status(e.status).headers(e.headers).type('application/json; charset=utf-8').send(e.body);
  });
  return {
    app,
    listen: (port, host) => listenOn(app, port, host),
    close: () => app.close(),
  };
}
