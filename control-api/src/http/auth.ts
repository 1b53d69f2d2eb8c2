import type { FastifyReply, FastifyRequest } from 'fastify';
import { bucketOfKey, hasScope, type Authenticator, type Principal } from '@meterd/core/auth';
import { ApiError } from '@meterd/core/errors';
import { ENVIRONMENTS, type Environment, type Scope } from '@meterd/core/keys';
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
 * The bucket a request acts on (docs/api.md §13): a workspace key only its own workspace (403
 * otherwise), the operator any that exists (404 otherwise). The path names a workspace by its live
 * id or by its test bucket's id. With the live id, the environment is the key's (a test key acts on
 * its test bucket) unless `?environment=` names one: a live key may then act on its test bucket, a
 * test key never on live.
 */
export async function workspaceAccess(
  workspaces: WorkspaceService,
  req: FastifyRequest,
  workspaceId: string,
): Promise<string> {
  const p = req.principal!;
  const asked = environmentParam(req);
  if (p.workspaceId !== null) {
    const own = bucketOfKey(p, workspaceId);
    if (own === undefined) throw new ApiError('workspace_mismatch', 'this API key belongs to another workspace');
    if (asked === undefined || asked === p.environment) return own;
    if (asked === 'live')
      throw new ApiError('workspace_mismatch', 'a test key acts on the test environment only', 'environment');
    return workspaces.bucket(own, 'test');
  }
  if (asked !== undefined) return workspaces.bucket(workspaceId, asked);
  if (!(await workspaces.exists(workspaceId))) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
  return workspaceId;
}

/**
 * The live workspace of the bucket a request may act on (workspaceAccess), for what belongs to the
 * whole workspace rather than one environment: meter definitions and alerts (docs/meters.md). Any of
 * its keys reads them; writes need a live key, since they decide what live usage is billed by.
 */
export async function liveWorkspaceAccess(
  workspaces: WorkspaceService,
  req: FastifyRequest,
  workspaceId: string,
  mode: 'read' | 'write',
): Promise<string> {
  const bucket = await workspaceAccess(workspaces, req, workspaceId);
  if (mode === 'write' && req.principal!.environment === 'test')
    throw new ApiError(
      'workspace_mismatch',
      'meters and alerts belong to the live workspace and decide what it is billed for: change them with a live key (a test key reads them)',
    );
  return workspaces.liveOf(bucket);
}

/**
 * `?environment=live|test`, read from the raw query string, so routes without a querystring schema
 * take it too (those with one list it: http/schemas.ts's environmentQueryProp). Any other value is
 * refused, never ignored: acting on live when test was meant is the one mistake this must not make.
 */
export function environmentParam(req: FastifyRequest): Environment | undefined {
  const q = req.url.indexOf('?');
  if (q === -1) return undefined;
  const v = new URLSearchParams(req.url.slice(q + 1)).get('environment');
  if (v === null) return undefined;
  if (!(ENVIRONMENTS as readonly string[]).includes(v))
    throw new ApiError('invalid_field', 'environment must be live or test', 'environment');
  return v as Environment;
}
