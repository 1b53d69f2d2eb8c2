import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import { ENVIRONMENTS, type Environment } from '@meterd/core/keys';
import { PLAN_QUOTAS } from '@meterd/core/plans';
import { RedisTokenBuckets } from '../http/rate-limit.js';
import { clearedCookie, sessionCookie } from './cookies.js';
import { signedInWithTestKey } from './guard.js';
import { hidden, type DashCtx } from './context.js';

/** Sign-in turns an admin API key into a session cookie; the key travels once, in a POST body. */
export function sessionRoutes(app: FastifyInstance, d: DashCtx): void {
  // Keys have 256 bits of entropy, so this is about sparing Postgres from floods, not guessing.
  const buckets = new RedisTokenBuckets(d.redis, d.cfg.REDIS_KEY_PREFIX, 'dashboard-signin', 10, 30);

  app.post<{ Body: { api_key: string } }>(
    '/dashboard/api/session',
    {
      schema: {
        ...hidden,
        body: {
          type: 'object',
          required: ['api_key'],
          additionalProperties: false,
          properties: { api_key: { type: 'string', minLength: 1, maxLength: 200 } },
        },
      },
      preValidation: async (req) => buckets.take(req.ip),
    },
    async (req, reply) => {
      const key = await d.services.keys.adminKey(req.body.api_key.trim());
      const { id, session } = await d.sessions.create(key.workspaceId, key.keyId, key.environment);
      return reply
        .header('set-cookie', sessionCookie(d.cookie, id))
        .status(201)
        .send({ workspace_id: key.workspaceId, csrf_token: session.csrf });
    },
  );

  app.delete('/dashboard/api/session', { schema: hidden, preHandler: d.guard }, async (req, reply) => {
    await d.sessions.destroy(req.dash!.sessionId);
    return reply.header('set-cookie', clearedCookie(d.cookie)).status(204).send();
  });

  // The environment switch: a session signed in with a live key shows either bucket; one signed in
  // with a test key shows test only (docs/api.md §13).
  app.post<{ Body: { environment: Environment } }>(
    '/dashboard/api/environment',
    {
      schema: {
        ...hidden,
        body: {
          type: 'object',
          required: ['environment'],
          additionalProperties: false,
          properties: { environment: { type: 'string', enum: [...ENVIRONMENTS] } },
        },
      },
      preHandler: d.guard,
    },
    async (req) => {
      const { sessionId, session } = req.dash!;
      if (signedInWithTestKey(req.dash!) && req.body.environment === 'live')
        throw new ApiError('workspace_mismatch', 'signed in with a test key: sign in with a live key to see live data');
      await d.sessions.setEnvironment(sessionId, session, req.body.environment);
      return { environment: req.body.environment };
    },
  );

  app.get('/dashboard/api/me', { schema: hidden, preHandler: d.guard }, async (req) => {
    const { workspace, session } = req.dash!;
    const quota = PLAN_QUOTAS[workspace.plan];
    return {
      workspace,
      key_id: session.keyId,
      csrf_token: session.csrf,
      plan: { name: workspace.plan, events_per_period: quota.eventsPerPeriod, handlers: quota.handlers },
      billing_portal_available: d.services.billing.portalAvailable(workspace),
    };
  });
}
