import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import { PLANS, type Plan } from '@meterd/core/plans';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { wsParams } from '../http/schemas.js';
import { workspaceView, type WorkspaceRecord } from '../services/workspaces.js';

interface PatchBody {
  display_name?: string;
  contact_email?: string | null;
  plan?: Plan;
}

/**
 * A workspace read, updated and deleted. Its own admin key acts on it while it lives; the operator
 * also reads a deleted one (and its finance export) and may restore it within the grace period.
 */
export function workspaceRoutes(app: FastifyInstance, ctx: Ctx): void {
  const admin = requireAuth(ctx.auth, ['admin']);
  const { workspaces, billing, finance } = ctx.services;

  /** The workspace's own key sees it live only (a deleted one's keys no longer authenticate); the operator any. */
  async function visible(req: FastifyRequest, id: string): Promise<WorkspaceRecord> {
    return workspaces.record(req.principal!.workspaceId !== null ? await workspaceAccess(workspaces, req, id) : id);
  }

  /**
   * Renaming and deleting act on the whole workspace (both environments), so they take its live id
   * and a live key: a test key must never delete the live workspace.
   */
  async function liveWorkspace(req: FastifyRequest, id: string): Promise<string> {
    const bucket = await workspaceAccess(workspaces, req, id);
    if ((await workspaces.record(bucket)).environment === 'test')
      throw new ApiError(
        'workspace_mismatch',
        'a workspace is changed or deleted through its live id with a live key; that deletes its test environment too',
      );
    return bucket;
  }

  app.get<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id',
    {
      schema: {
        tags: ['workspaces'],
        summary: 'Read a workspace (the operator also reads deleted ones, with deleted_at and purge_after).',
        params: wsParams,
        errors: ['workspace_mismatch', 'workspace_not_found'],
      },
      preHandler: admin,
    },
    async (req) => ({ workspace: workspaceView(await visible(req, req.params.id)) }),
  );

  app.patch<{ Params: { id: string }; Body: PatchBody }>(
    '/api/v1/workspaces/:id',
    {
      schema: {
        tags: ['workspaces'],
        summary:
          "Update a workspace's display name and contact email (null clears it). Only the operator may set `plan` directly; a workspace buys one through Stripe Checkout.",
        params: wsParams,
        body: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: {
            display_name: { type: 'string', minLength: 1, maxLength: 200 },
            contact_email: { type: ['string', 'null'], format: 'email', maxLength: 320 },
            plan: { type: 'string', enum: [...PLANS] },
          },
        },
        errors: ['operator_only', 'workspace_mismatch', 'workspace_not_found'],
      },
      preHandler: admin,
    },
    async (req) => {
      const id = await liveWorkspace(req, req.params.id);
      const { plan, ...rest } = req.body;
      if (plan !== undefined && req.principal!.workspaceId !== null)
        throw new ApiError(
          'operator_only',
          'only the operator key may set a plan; a workspace buys one through POST /api/v1/workspaces/:id/billing/checkout-session',
          'plan',
        );
      if (Object.keys(rest).length > 0) await workspaces.update(id, rest);
      if (plan !== undefined) await billing.setPlan(id, plan);
      return { workspace: workspaceView(await workspaces.record(id)) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id',
    {
      schema: {
        tags: ['workspaces'],
        summary:
          'Soft-delete a workspace and its test environment: their keys stop working at once (ingest included); the operator may restore them until purge_after; the finance export stays available.',
        params: wsParams,
        errors: ['workspace_mismatch', 'workspace_not_found'],
      },
      preHandler: admin,
    },
    async (req) => ({
      workspace: workspaceView(await workspaces.remove(await liveWorkspace(req, req.params.id))),
    }),
  );

  app.post<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id/restore',
    {
      schema: {
        tags: ['workspaces'],
        summary: 'Operator only: undo a soft delete within the grace period.',
        params: wsParams,
        errors: ['operator_only', 'workspace_not_found', 'restore_window_closed'],
      },
      preHandler: requireAuth(ctx.auth, []),
    },
    async (req) => {
      if (req.principal!.workspaceId !== null)
        throw new ApiError('operator_only', 'only the operator key may restore a deleted workspace');
      return { workspace: workspaceView(await workspaces.restore(req.params.id)) };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id/export',
    {
      schema: {
        tags: ['workspaces'],
        summary:
          "Finance export: usage per month × event type × currency and the billing ledger's totals per month × meter × status. Stays available to the operator after the workspace is deleted.",
        params: wsParams,
        errors: ['workspace_mismatch', 'workspace_not_found'],
      },
      preHandler: admin,
    },
    async (req) => {
      const w = await visible(req, req.params.id);
      return { workspace: workspaceView(w), ...(await finance.export(w.id)) };
    },
  );
}
