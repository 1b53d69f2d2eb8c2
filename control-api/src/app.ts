import Fastify, { type FastifyInstance } from 'fastify';
import { Authenticator } from '@meterd/core/auth';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { pgHealthy, redisHealthy, type Redis } from '@meterd/core/store';
import { serveProbes } from '@meterd/core/http';
import type { ControlConfig } from './config.js';
import type { Ctx } from './context.js';
import { installErrorHandling } from './http/errors.js';
import { createServices, type ServiceDeps } from './services/index.js';
import { keyRoutes } from './routes/keys.js';
import { openApi } from './routes/openapi.js';
import { provisionRoutes } from './routes/provision.js';
import { signupRoutes } from './routes/signup.js';
import { webhookRoutes } from './routes/webhooks.js';
import { stripeRoutes } from './routes/stripe.js';
import { billingRoutes } from './routes/billing.js';
import { eventRoutes } from './routes/events.js';
import { readinessRoutes } from './routes/readiness.js';
import { workspaceRoutes } from './routes/workspaces.js';
import { installIdempotency } from './http/idempotency.js';
import { shopifyRoutes } from './routes/shopify.js';
import { meterRoutes } from './routes/meters.js';
import { alertRoutes } from './routes/alerts.js';
import { dashboardPlugin } from './dashboard/index.js';

export interface AppDeps extends Omit<ServiceDeps, 'ch'> {
  /** A Redis connection of its own for the revocation subscription. */
  sub: Redis;
  /** Aborted once the process drains: /readyz answers 503. */
  draining?: AbortSignal;
}

/** The control API's HTTP surface. Stores and workers are built by the caller (main.ts or a test). */
export async function buildApp(cfg: ControlConfig, deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // req.ip: walking X-Forwarded-For from the right, the first address that is not a trusted proxy.
    trustProxy: cfg.TRUSTED_PROXIES.length === 0 ? false : [...cfg.TRUSTED_PROXIES],
    bodyLimit: 256 << 10,
    // Types are checked, never coerced, and unknown fields are refused, not silently removed.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  });
  app.decorateRequest('principal', null);
  // Every body is JSON: anything else is a 415, not a string that fails validation later.
  app.removeContentTypeParser('text/plain');
  const ch = clickHouseFromConfig(cfg, { requestTimeoutMs: 5_000 });
  app.addHook('onClose', async () => ch.close());
  const ctx: Ctx = {
    cfg,
    redis: deps.redis,
    log: deps.log,
    metrics: deps.metrics,
    auth: new Authenticator(deps.pool, deps.sub, cfg.KEY_CACHE_TTL_MS, cfg.DEPLOY_API_KEY),
    services: createServices(cfg, { ...deps, ch }),
  };
  installErrorHandling(app, deps.log, deps.metrics);
  app.addHook('onResponse', async () => deps.metrics.requests.inc());

  const doc = openApi(app);
  doc.collect();
  serveProbes(app, {
    ...(deps.draining === undefined ? {} : { draining: deps.draining }),
    checks: async () => {
      const [postgres, redis] = await Promise.all([pgHealthy(deps.pool), redisHealthy(deps.redis)]);
      return { postgres, redis };
    },
    metrics: () => deps.metrics.registry.render(),
  });
  installIdempotency(app, ctx);
  signupRoutes(app, ctx);
  workspaceRoutes(app, ctx);
  readinessRoutes(app, ctx);
  eventRoutes(app, ctx);
  keyRoutes(app, ctx);
  webhookRoutes(app, ctx);
  meterRoutes(app, ctx);
  alertRoutes(app, ctx);
  provisionRoutes(app, ctx);
  await app.register(async (scope) => stripeRoutes(scope, ctx));
  billingRoutes(app, ctx);
  shopifyRoutes(app, ctx);
  await app.register(async (scope) => dashboardPlugin(scope, ctx));
  doc.register();
  return app;
}
