import type { FastifyInstance } from 'fastify';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { wsParams } from '../http/schemas.js';

/** GET /api/v1/workspaces/:id/billing/readiness: can this workspace's usage be billed, and if not, why. */
export function readinessRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { workspaces, readiness } = ctx.services;
  app.get<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id/billing/readiness',
    {
      schema: {
        tags: ['billing'],
        summary:
          "Whether the workspace's usage can be billed: Stripe configured, customer linked, and per meter pushed in the last 35 days its Stripe meter active, its last push accepted and no row unbilled; each check with its reason.",
        params: wsParams,
        errors: ['workspace_mismatch', 'workspace_not_found', 'upstream_error'],
      },
      preHandler: requireAuth(ctx.auth, ['admin', 'meter:read']),
    },
    async (req) => {
      const w = await workspaces.get(await workspaceAccess(workspaces, req, req.params.id));
      return readiness.of(w.id, w.stripe_customer_id, w.environment);
    },
  );
}
