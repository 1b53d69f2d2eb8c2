import type { FastifyInstance, FastifySchema } from 'fastify';
import './openapi.js';

const hidden: FastifySchema = { hide: true };
import { pgHealthy, redisHealthy } from '@meterd/core';
import type { Ctx } from '../context.js';

export function healthRoutes(app: FastifyInstance, ctx: Ctx): void {
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
