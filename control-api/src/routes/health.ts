import type { FastifyInstance, FastifySchema } from 'fastify';
import './openapi.js';

const hidden: FastifySchema = { hide: true };
import { pgHealthy, redisHealthy, type Pool, type Redis } from '@meterd/core';
import type { ControlMetrics } from '../metrics.js';

/** Liveness, readiness (the stores answer) and metrics: plumbing, so it reads the stores directly. */
export function healthRoutes(app: FastifyInstance, ctx: { pool: Pool; redis: Redis; metrics: ControlMetrics }): void {
  app.get('/healthz', { schema: hidden }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: hidden }, async (_req, reply) => {
    const [postgres, redis] = await Promise.all([pgHealthy(ctx.pool), redisHealthy(ctx.redis)]);
    const ready = postgres && redis;
    return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable', postgres, redis });
  });
  app.get('/metrics', { schema: hidden }, async (_req, reply) =>
    reply.type('text/plain; version=0.0.4').send(ctx.metrics.registry.render()),
  );
}
