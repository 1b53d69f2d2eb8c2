import type { FastifyInstance } from 'fastify';
import { type Scope } from '@meterd/core/keys';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';
import { mintKeyBody, pathParams, wsParams } from '../http/schemas.js';

/** API keys: listed without their secret, minted with scopes (token shown once), revoked everywhere at once. */
export function keyRoutes(app: FastifyInstance, ctx: Ctx): void {
  const admin = requireAuth(ctx.auth, ['admin']);
  const { keys, workspaces } = ctx.services;

  app.get<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id/api-keys',
    {
      schema: { tags: ['api-keys'], summary: 'List API keys (never their secret).', params: wsParams },
      preHandler: admin,
    },
    async (req) => ({ data: await keys.list(await workspaceAccess(workspaces, req, req.params.id)) }),
  );

  app.post<{ Params: { id: string }; Body: { name?: string; scopes?: Scope[] } }>(
    '/api/v1/workspaces/:id/api-keys',
    {
      schema: {
        tags: ['api-keys'],
        summary: 'Mint an API key; the token is in this response only.',
        params: wsParams,
        body: mintKeyBody,
        idempotent: true,
      },
      preHandler: admin,
    },
    async (req, reply) => {
      const ws = await workspaceAccess(workspaces, req, req.params.id);
      const key = await keys.mint(ws, { name: req.body?.name ?? null, scopes: req.body?.scopes });
      return reply.status(201).send({ api_key: key });
    },
  );

  app.delete<{ Params: { id: string; key_id: string } }>(
    '/api/v1/workspaces/:id/api-keys/:key_id',
    {
      schema: {
        tags: ['api-keys'],
        summary: 'Revoke an API key (ingest stops accepting it within a second).',
        params: pathParams('id', 'key_id'),
        errors: ['resource_not_found'],
      },
      preHandler: admin,
    },
    async (req) => {
      await keys.revoke(await workspaceAccess(workspaces, req, req.params.id), req.params.key_id);
      return { api_key: { id: req.params.key_id, revoked: true } };
    },
  );
}
