import type { FastifyInstance, FastifySchema } from 'fastify';
import { METRICS_CONTENT_TYPE } from '../metrics/index.js';

/** Each dependency check by name: true when it answered. */
export type Checks = Record<string, boolean>;

export interface Probes {
  /** Aborted once the process drains: /readyz answers 503 whatever the checks say. */
  draining?: AbortSignal;
  /** Dependency checks behind /readyz; none: ready while not draining. */
  checks?: () => Checks | Promise<Checks>;
  /** Prometheus text for /metrics. */
  metrics: () => string;
}

// Kept out of the OpenAPI document (control-api generates one from route schemas).
const hidden = { hide: true } as FastifySchema;

/**
 * The three operational routes every Fastify service answers the same way. /healthz: the process
 * is up (liveness). /readyz: the process should be sent traffic (readiness): 503 once draining or
 * while a check fails, with each check's result in the body. /metrics: Prometheus text.
 */
export function serveProbes(app: FastifyInstance, p: Probes): void {
  app.get('/healthz', { schema: hidden }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: hidden }, async (_req, reply) => {
    if (p.draining?.aborted === true) return reply.status(503).send({ status: 'draining' });
    const checks = (await p.checks?.()) ?? {};
    const ready = Object.values(checks).every(Boolean);
    return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable', ...checks });
  });
  app.get('/metrics', { schema: hidden }, async (_req, reply) => reply.type(METRICS_CONTENT_TYPE).send(p.metrics()));
}
