import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import type { SessionWorkspace, WorkspaceService } from '../services/workspaces.js';
import { readCookie, type CookiePolicy } from './cookies.js';
import type { Session, SessionStore } from './session.js';

/** The signed-in caller of a dashboard route. */
export interface Dash {
  sessionId: string;
  session: Session;
  workspace: SessionWorkspace;
}

declare module 'fastify' {
  interface FastifyRequest {
    dash: Dash | null;
  }
}

export const CSRF_HEADER = 'x-csrf-token';

/**
 * Resolves the session cookie to a workspace, or undefined. The key that signed in must still be
 * live: revoking it (from the dashboard, the API or another replica) ends its sessions at once.
 */
export async function resolveSession(
  req: FastifyRequest,
  store: SessionStore,
  workspaces: WorkspaceService,
  cookie: CookiePolicy,
): Promise<Dash | undefined> {
  const sessionId = readCookie(req.headers.cookie, cookie.name);
  const session = await store.get(sessionId);
  if (session === undefined) return undefined;
  const workspace = await workspaces.ofLiveKey(session.keyId, session.workspaceId, session.environment ?? 'live');
  if (workspace === undefined) {
    await store.destroy(sessionId);
    return undefined;
  }
  return { sessionId: sessionId!, session, workspace };
}

/**
 * Whether the session was signed in with a test key. The bucket shown is the signing-in key's own
 * exactly when live is shown or the key is a test key, so a test bucket that is the key's own says so.
 */
export function signedInWithTestKey(dash: Pick<Dash, 'session' | 'workspace'>): boolean {
  return dash.workspace.environment === 'test' && dash.workspace.id === dash.session.workspaceId;
}

function csrfMatches(sent: string | string[] | undefined, expected: string): boolean {
  if (typeof sent !== 'string') return false;
  const a = Buffer.from(sent);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** preHandler for the dashboard's JSON API: a session, and the CSRF token on anything but GET. */
export function sessionGuard(store: SessionStore, workspaces: WorkspaceService, cookie: CookiePolicy) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const dash = await resolveSession(req, store, workspaces, cookie);
    if (dash === undefined) throw new ApiError('session_required', 'sign in to the dashboard first');
    if (req.method !== 'GET' && req.method !== 'HEAD' && !csrfMatches(req.headers[CSRF_HEADER], dash.session.csrf)) {
      throw new ApiError('csrf_token_invalid', 'missing or wrong X-CSRF-Token header');
    }
    req.dash = dash;
  };
}
