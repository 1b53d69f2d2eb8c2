import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { errorBody } from '@meterd/core';

export interface Upstreams {
  ingest: URL;
  aggregator: URL;
  control: URL;
}

const USAGE = /^\/api\/v1\/workspaces\/[^/]+\/usage(?:\/|$)/;

/** Which service answers a path: meter writes to ingest, usage reads to the aggregator, the rest to the control API. */
export function routeOf(path: string): keyof Upstreams {
  if (path === '/api/v1/meter' || path === '/api/v1/meter/batch') return 'ingest';
  if (USAGE.test(path)) return 'aggregator';
  return 'control';
}

/** Hop-by-hop headers are the proxy's own business (RFC 9110 §7.6.1), never forwarded. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/**
 * The local single base URL (production uses an ingress with the same path rules). Bodies stream
 * both ways; each upstream has a keep-alive agent, so the front adds no connection set-up per request.
 */
export function createFront(up: Upstreams): http.Server {
  const agents = {
    ingest: new http.Agent({ keepAlive: true, maxSockets: 256 }),
    aggregator: new http.Agent({ keepAlive: true, maxSockets: 64 }),
    control: new http.Agent({ keepAlive: true, maxSockets: 64 }),
  };
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const target = routeOf(path);
    const base = up[target];
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
      if (res.headersSent) return res.destroy();
      res
        .writeHead(502, { 'content-type': 'application/json' })
        .end(errorBody('service_unavailable', `the ${target} service is unreachable`));
    });
    req.pipe(out);
  });
  server.on('close', () => Object.values(agents).forEach((a) => a.destroy()));
  return server;
}
