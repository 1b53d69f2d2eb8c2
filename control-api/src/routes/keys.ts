import type { FastifyInstance } from 'fastify';
import { ApiError, SCOPES, insertApiKey, revokeApiKey, type Scope } from '@meterd/core';
import type { Ctx } from '../context.js';
import { requireAuth, workspaceAccess } from '../http/auth.js';

const wsParams = { type: 'object', required: ['id'], properties: { id: { type: 'string' } } } as const;
const keyParams = {
  type: 'object',
  required: ['id', 'key_id'],
  properties: { id: { type: 'string' }, key_id: { type: 'string' } },
} as const;

interface KeyRow {
  id: string;
  name: string | null;
  display_prefix: string;
  scopes: Scope[];
  created_at: string;
  revoked_at: string | null;
}

const view = (k: KeyRow) => ({
  id: k.id,
  name: k.name,
  prefix: k.display_prefix,
  scopes: k.scopes,
  created_at: k.created_at,
  revoked_at: k.revoked_at,
});

/** API keys: listed without their secret, minted with scopes (token shown once), revoked everywhere at once. */
export function keyRoutes(app: FastifyInstance, ctx: Ctx): void {
  const admin = requireAuth(ctx.auth, ['admin']);

  app.get<{ Params: { id: string } }>(
    '/api/v1/workspaces/:id/api-keys',
    {
      schema: { tags: ['api-keys'], summary: 'List API keys (never their secret).', params: wsParams },
      preHandler: admin,
    },
    async (req) => {
      const ws = await workspaceAccess(ctx.pool, req, req.params.id);
      const { rows } = await ctx.pool.query<KeyRow>(
        'SELECT id, name, display_prefix, scopes, created_at, revoked_at FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id',
        [ws],
      );
      return { data: rows.map(view) };
    },
  );

  app.post<{ Params: { id: string }; Body: { name?: string; scopes?: Scope[] } }>(
    '/api/v1/workspaces/:id/api-keys',
    {
      schema: {
        tags: ['api-keys'],
        summary: 'Mint an API key; the token is in this response only.',
        params: wsParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            name: { type: 'string', maxLength: 200 },
            scopes: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: [...SCOPES] } },
          },
        },
      },
      preHandler: admin,
    },
    async (req, reply) => {
      const ws = await workspaceAccess(ctx.pool, req, req.params.id);
      const scopes = req.body?.scopes ?? ['meter:write', 'meter:read'];
      const key = await insertApiKey(ctx.pool, ws, scopes, req.body?.name ?? null);
      return reply.status(201).send({
        api_key: {
          id: key.id,
          token: key.token,
          prefix: key.display_prefix,
          scopes: key.scopes,
          name: req.body?.name ?? null,
        },
      });
    },
  );

  app.delete<{ Params: { id: string; key_id: string } }>(
    '/api/v1/workspaces/:id/api-keys/:key_id',
    {
      schema: {
        tags: ['api-keys'],
        summary: 'Revoke an API key (ingest stops accepting it within a second).',
        params: keyParams,
      },
      preHandler: admin,
    },
    async (req) => {
      const ws = await workspaceAccess(ctx.pool, req, req.params.id);
      const revoked = await revokeApiKey(ctx.pool, ctx.redis, ws, req.params.key_id);
      if (!revoked) throw new ApiError('resource_not_found', `no live API key ${req.params.key_id} in this workspace`);
      return { api_key: { id: req.params.key_id, revoked: true } };
    },
  );
}
