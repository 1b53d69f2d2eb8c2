import { type createClickHouse } from '@meterd/core/clickhouse';
import type { Ctx } from '../context.js';
import type { CookiePolicy } from './cookies.js';
import type { SessionStore } from './session.js';

/** What the dashboard's route modules share, built once when the plugin registers. */
export interface DashCtx extends Ctx {
  sessions: SessionStore;
  cookie: CookiePolicy;
  ch: ReturnType<typeof createClickHouse>;
  /** preHandler: a live session, plus the CSRF header on state-changing methods. */
  guard: (req: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) => Promise<void>;
}

/** Dashboard routes stay out of the public OpenAPI document. */
export const hidden = { hide: true } as const;
