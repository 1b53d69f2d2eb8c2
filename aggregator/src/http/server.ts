import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiError, pgHealthy, type Logger, type Pool } from '@meterd/core';
import type { AggregatorMetrics } from '../metrics.js';
import { handleUsage, type UsageRouteDeps } from './usage-route.js';
import { sendError, sendJson } from './respond.js';

export interface ServerDeps extends UsageRouteDeps {
  pool: Pool;
  metrics: AggregatorMetrics;
  log: Logger;
  /** Called before /metrics renders, to refresh gauges computed from state (watermark age). */
  beforeScrape?: () => void;
}

const USAGE_PATH = /^\/api\/v1\/workspaces\/([^/]+)\/usage\/?$/;

/** The aggregator's HTTP surface: the usage API plus /healthz, /readyz and /metrics. */
export function createAggregatorServer(deps: ServerDeps): {
  server: Server;
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
} {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://aggregator');
    const path = url.pathname;
    const run = async (): Promise<void> => {
      if (path === '/healthz') return sendJson(res, 200, '{"status":"ok"}');
      if (path === '/readyz') return ready(deps, res);
      if (path === '/metrics') {
        deps.beforeScrape?.();
        const body = deps.metrics.registry.render();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', 'content-length': Buffer.byteLength(body) });
        return void res.end(body);
      }
      const m = USAGE_PATH.exec(path);
      if (m === null) throw new ApiError('not_found', `no route ${req.method} ${path.slice(0, 200)}`);
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        throw new ApiError('method_not_allowed', 'use GET');
      }
      deps.metrics.usageRequests.inc();
      await handleUsage(deps, req, res, decodeURIComponent(m[1]!), url.searchParams);
    };
    run().catch((err: unknown) => {
      if (res.headersSent) return void res.destroy();
      sendError(res, err, deps.log);
    });
  });
  return {
    server,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
      }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

async function ready(deps: ServerDeps, res: import('node:http').ServerResponse): Promise<void> {
  const [pg, ch] = await Promise.all([
    pgHealthy(deps.pool),
    deps.ch.ping().then(
      (r) => r.success,
      () => false,
    ),
  ]);
  sendJson(
    res,
    pg && ch ? 200 : 503,
    JSON.stringify({ status: pg && ch ? 'ready' : 'unavailable', postgres: pg, clickhouse: ch }),
  );
}
