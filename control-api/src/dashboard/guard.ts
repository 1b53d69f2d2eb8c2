import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, type Plan, type Pool } from '@meterd/core';
import { readCookie, type CookiePolicy } from './cookies.js';
import type { Session, SessionStore } from './session.js';

export interface DashWorkspace {
  id: string;
  slug: string;
  display_name: string;
  plan: Plan;
  stripe_customer_id: string | null;
}

/** The signed-in caller of a dashboard route. */
export interface Dash {
  sessionId: string;
  session: Session;
  workspace: DashWorkspace;
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
  pool: Pool,
  cookie: CookiePolicy,
): Promise<Dash | undefined> {
  const sessionId = readCookie(req.headers.cookie, cookie.name);
  const session = await store.get(sessionId);
  if (session === undefined) return undefined;
  const { rows } = await pool.query<DashWorkspace>(
    `SELECT w.id, w.slug, w.display_name, w.plan, w.stripe_customer_id
       FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
      WHERE k.id = $1 AND k.workspace_id = $2 AND k.revoked_at IS NULL`,
    [session.keyId, session.workspaceId],
  );
  if (rows.length === 0) {
    await store.destroy(sessionId);
    return undefined;
  }
  return { sessionId: sessionId!, session, workspace: rows[0]! };
}

function csrfMatches(sent: string | string[] | undefined, expected: string): boolean {
  if (typeof sent !== 'string') return false;
  const a = Buffer.from(sent);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** preHandler for the dashboard's JSON API: a session, and the CSRF token on anything but GET. */
export function sessionGuard(store: SessionStore, pool: Pool, cookie: CookiePolicy) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const dash = await resolveSession(req, store, pool, cookie);
    if (dash === undefined) throw new ApiError('session_required', 'sign in to the dashboard first');
    if (req.method !== 'GET' && req.method !== 'HEAD' && !csrfMatches(req.headers[CSRF_HEADER], dash.session.csrf)) {
      throw new ApiError('csrf_token_invalid', 'missing or wrong X-CSRF-Token header');
    }
    req.dash = dash;
  };
}
