import type { FastifyInstance } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { wsParams } from '../http/schemas.js';
import { CATALOG } from '../provision/catalog.js';

interface ProvisionBody {
  service: string;
  customer_id: string;
  config?: Record<string, string>;
  workspace_id?: string;
}

const body = {
  type: 'object',
  required: ['service', 'customer_id'],
  additionalProperties: false,
  properties: {
    service: { type: 'string', maxLength: 100 },
    customer_id: { type: 'string', pattern: '^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$' },
    config: { type: 'object', maxProperties: 100, additionalProperties: { type: 'string', maxLength: 8192 } },
    workspace_id: {
      type: 'string',
      description: 'Operator key only: the workspace to provision for (defaults to config.METER_WORKSPACE_ID).',
    },
  },
} as const;

const idParams = {
  type: 'object',
  required: ['provision_id'],
  properties: { provision_id: { type: 'string' } },
} as const;

export function provisionRoutes(app: FastifyInstance, ctx: Ctx): void {
  const guard = requireAuth(ctx.auth, ['admin', 'provision:write']);
  const { provisions: p, workspaces } = ctx.services;

  app.get(
    '/api/v1/catalog',
    { schema: { tags: ['provisioning'], summary: 'Services that can be provisioned.', public: true } },
    async () => ({
      data: Object.values(CATALOG).map((e) => ({
        name: e.name,
        description: e.description,
        required_config: e.config.filter((k) => k.required).map((k) => k.name),
        config: e.config.map((k) => ({ name: k.name, type: k.type, required: k.required, secret: k.secret })),
      })),
    }),
  );

  app.post<{ Body: ProvisionBody }>(
    '/api/v1/provision',
    {
      schema: {
        tags: ['provisioning'],
        summary:
          "Deploy a catalog service for a workspace. config takes only the keys the catalog declares (400 invalid_field names any other); 429 plan_limit_exceeded beyond the plan's handlers.",
        body,
        idempotent: true,
        errors: [
          'workspace_mismatch',
          'workspace_not_found',
          'host_taken',
          'plan_limit_exceeded',
          'not_configured',
          'upstream_error',
        ],
      },
      preHandler: guard,
    },
    async (req, reply) => {
      const b = req.body;
      const config = b.config ?? {};
      const target = req.principal!.workspaceId ?? b.workspace_id ?? config.METER_WORKSPACE_ID;
      if (target === undefined)
        throw new ApiError('missing_field', 'the operator key must name workspace_id', 'workspace_id');
      if (
        b.workspace_id !== undefined &&
        req.principal!.workspaceId !== null &&
        b.workspace_id !== req.principal!.workspaceId
      ) {
        throw new ApiError('workspace_mismatch', "workspace_id is not this API key's workspace", 'workspace_id');
      }
      const ws = await workspaceAccess(workspaces, req, target);
      const row = await p.create(ws, b.service, b.customer_id, config);
      return reply.status(202).header('location', `/api/v1/provision/${row.id}`).send({ provision: row });
    },
  );

  const owned = async (req: Parameters<typeof workspaceAccess>[1], id: string) => {
    const row = await p.get(id);
    if (row === undefined) throw new ApiError('resource_not_found', `no provision ${id}`);
    await workspaceAccess(workspaces, req, row.workspace_id);
    return row;
  };

  app.get<{ Params: { provision_id: string } }>(
    '/api/v1/provision/:provision_id',
    {
      schema: {
        tags: ['provisioning'],
        summary: 'Status of a provision: pending, running, failed or deprovisioned.',
        errors: ['resource_not_found'],
        params: idParams,
      },
      preHandler: guard,
    },
    async (req) => ({ provision: await owned(req, req.params.provision_id) }),
  );

  app.delete<{ Params: { provision_id: string } }>(
    '/api/v1/provision/:provision_id',
    {
      schema: {
        tags: ['provisioning'],
        summary: 'Deprovision (frees the handler slot).',
        params: idParams,
        errors: ['resource_not_found'],
      },
      preHandler: guard,
    },
    async (req) => {
      await owned(req, req.params.provision_id);
      return { provision: await p.deprovision(req.params.provision_id) };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id/provisions',
    {
      schema: {
        tags: ['provisioning'],
        summary: "A workspace's provisions.",
        params: wsParams,
      },
      preHandler: guard,
    },
    async (req) => ({ data: await p.list(await workspaceAccess(workspaces, req, req.params.id)) }),
  );
}
