import type { FastifyInstance } from 'fastify';
import type { Ctx } from '../context.js';
import { cookiePolicy } from './cookies.js';
import type { DashCtx } from './context.js';
import { sessionGuard } from './guard.js';
import { manageRoutes } from './routes-manage.js';
import { meterRoutes } from './routes-meters.js';
import { eventRoutes } from './routes-events.js';
import { overviewRoutes } from './routes-overview.js';
import { pageRoutes } from './pages.js';
import { sessionRoutes } from './routes-session.js';
import { SessionStore } from './session.js';

/**
 * The dashboard under /dashboard: HTML pages and their assets, and a JSON API under
 * /dashboard/api that a session cookie (not a bearer key) authorises. Registered in its own
 * Fastify scope; it reads ClickHouse through the services' client.
 */
export async function dashboardPlugin(app: FastifyInstance, ctx: Ctx): Promise<void> {
  const cfg = ctx.cfg;
  const sessions = new SessionStore(ctx.redis, cfg.REDIS_KEY_PREFIX, cfg.DASHBOARD_SESSION_TTL_SECONDS);
  const cookie = cookiePolicy(cfg.PUBLIC_BASE_URL, cfg.DASHBOARD_SESSION_TTL_SECONDS);
  app.decorateRequest('dash', null);
  app.addHook('onSend', async (_req, reply) => {
    // Nothing the dashboard answers (workspace data, a freshly minted token) belongs in a cache.
    if (reply.getHeader('cache-control') === undefined) reply.header('cache-control', 'no-store');
  });
  const d: DashCtx = {
    ...ctx,
    sessions,
    cookie,
    ch: ctx.services.ch,
    guard: sessionGuard(sessions, ctx.services.workspaces, cookie),
  };
  sessionRoutes(app, d);
  overviewRoutes(app, d);
  manageRoutes(app, d);
  meterRoutes(app, d);
  eventRoutes(app, d);
  pageRoutes(app, d);
}
