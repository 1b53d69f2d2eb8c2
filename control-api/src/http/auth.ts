import type { FastifyReply, FastifyRequest } from 'fastify';
import { hasScope, type Authenticator, type Principal } from '@meterd/core/auth';
import { ApiError } from '@meterd/core/errors';
import { type Scope } from '@meterd/core/keys';
import type { WorkspaceService } from '../services/workspaces.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

/**
 * preHandler that resolves the bearer key to a principal and checks that it holds at least one of
 * `scopes` (the operator key holds them all). Throws 401/403 ApiErrors; the error handler answers.
 */
export function requireAuth(auth: Authenticator, scopes: readonly Scope[]) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const result = await auth.authenticate(req.headers.authorization ?? '');
    if (result instanceof ApiError) throw result;
    if (scopes.length > 0 && !scopes.some((s) => hasScope(result, s))) {
      throw new ApiError('insufficient_scope', `this endpoint needs one of the scopes: ${scopes.join(', ')}`);
    }
    req.principal = result;
  };
}

/**
 * The workspace a request may act on: a workspace key only its own (403 otherwise), the operator
 * any that exists (404 otherwise).
 */
export async function workspaceAccess(
  workspaces: WorkspaceService,
  req: FastifyRequest,
  workspaceId: string,
): Promise<string> {
  const p = req.principal!;
  if (p.workspaceId !== null) {
    if (p.workspaceId !== workspaceId)
      throw new ApiError('workspace_mismatch', 'this API key belongs to another workspace');
    return workspaceId;
  }
  if (!(await workspaces.exists(workspaceId))) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
  return workspaceId;
}
