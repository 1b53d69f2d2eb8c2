import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { errorBody } from '@meterd/core/errors';
import { MetricsRegistry } from '@meterd/core/metrics';
import { createServiceApp } from '@meterd/core/http';

export interface Upstreams {
  ingest: URL;
  aggregator: URL;
  control: URL;
}

const USAGE = /^\/api\/v1\/workspaces\/[^/]+\/usage(?:\/|$)/;
/** A meter's usage (docs/meters.md) is read from the aggregator; the meters' CRUD stays with the control API. */
const METER_USAGE = /^\/api\/v1\/workspaces\/[^/]+\/meters\/[^/]+\/usage(?:\/|$)/;

/** Which service answers a path: meter writes to ingest, usage reads to the aggregator, the rest to the control API. */
export function routeOf(path: string): keyof Upstreams {
  if (path === '/api/v1/meter' || path === '/api/v1/meter/batch') return 'ingest';
  if (USAGE.test(path) || METER_USAGE.test(path)) return 'aggregator';
  return 'control';
}

/** Hop-by-hop headers are the proxy's own business (RFC 9110 §7.6.1), never forwarded. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/** The front's own operational routes; every other path is proxied. */
const OWN = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The local single base URL (production uses an ingress with the same path rules). Bodies stream
 * both ways; each upstream has a keep-alive agent, so the front adds no connection set-up per request.
 * Fastify answers only the front's own /healthz, /readyz and /metrics: proxied requests never go
 * through it, so their bodies are piped, never parsed or buffered.
 */
export function createFront(up: Upstreams, o: { draining?: AbortSignal } = {}): FastifyInstance {
  const registry = new MetricsRegistry();
  const counters = Object.fromEntries(
    (['ingest', 'aggregator', 'control'] as const).map((u) => [
      u,
      {
        requests: registry.counter('meterd_front_requests_total', 'Requests proxied, by upstream.', { upstream: u }),
        errors: registry.counter('meterd_front_upstream_errors_total', 'Upstreams unreachable (502), by upstream.', {
          upstream: u,
        }),
      },
    ]),
  ) as Record<
    keyof Upstreams,
    { requests: ReturnType<MetricsRegistry['counter']>; errors: ReturnType<MetricsRegistry['counter']> }
  >;
  const agents = {
    ingest: new http.Agent({ keepAlive: true, maxSockets: 256 }),
    aggregator: new http.Agent({ keepAlive: true, maxSockets: 64 }),
    control: new http.Agent({ keepAlive: true, maxSockets: 64 }),
  };
  const proxy = (req: IncomingMessage, res: ServerResponse, path: string): void => {
    const target = routeOf(path);
    const base = up[target];
    counters[target].requests.inc();
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP.has(k)) headers[k] = v;
    const client = req.socket.remoteAddress ?? '';
    headers['x-forwarded-for'] = req.headers['x-forwarded-for']
      ? `${req.headers['x-forwarded-for'] as string}, ${client}`
      : client;
    headers['x-forwarded-host'] = req.headers.host ?? '';
    headers.host = base.host;
    const out = http.request(
      { hostname: base.hostname, port: base.port, method: req.method, path: req.url, headers, agent: agents[target] },
      (upRes) => {
        const h: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined && !HOP.has(k)) h[k] = v;
        res.writeHead(upRes.statusCode ?? 502, h);
        upRes.pipe(res);
      },
    );
    out.on('error', () => {
      counters[target].errors.inc();
      if (res.headersSent) return res.destroy();
      res
        .writeHead(502, { 'content-type': 'application/json' })
        .end(errorBody('service_unavailable', `the ${target} service is unreachable`));
    });
    req.pipe(out);
  };
  const app = createServiceApp(
    { ...(o.draining === undefined ? {} : { draining: o.draining }), metrics: () => registry.render() },
    {
      serverFactory: (fastify) => {
        const server = http.createServer((req, res) => {
          const path = (req.url ?? '/').split('?')[0]!;
          if (OWN.has(path)) fastify(req, res);
          else proxy(req, res, path);
        });
        server.keepAliveTimeout = 65_000;
        return server;
      },
    },
  );
  app.addHook('onClose', async () => Object.values(agents).forEach((a) => a.destroy()));
  return app;
}
