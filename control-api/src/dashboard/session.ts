import { createHash, randomBytes } from 'node:crypto';
import { dashboardSessionKey } from '@meterd/core/contracts';
import { type Environment } from '@meterd/core/keys';
import { type Redis } from '@meterd/core/store';

/** What a signed-in browser is: a workspace, reached through one of its API keys. */
export interface Session {
  workspaceId: string;
  /** The key used to sign in: revoking it ends the session (checked on every request). */
  keyId: string;
  /** Sent back in X-CSRF-Token on every state-changing call. */
  csrf: string;
  createdAt: number;
  /** The environment the dashboard shows (docs/api.md §13); absent in sessions from before environments: live. */
  environment?: Environment;
}

/** 32 random bytes, base64url: what the cookie carries. */
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

/**
 * Dashboard sessions in Redis. The cookie holds a random id; Redis holds only its SHA-256, so a
 * copy of Redis (a dump, a replica) does not hand out live sessions. The API key itself is never
 * stored: the session remembers which key signed in, not the key.
 */
export class SessionStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlSeconds: number,
  ) {}

  private key(id: string): string {
    return dashboardSessionKey(this.prefix, createHash('sha256').update(id).digest('hex'));
  }

  async create(
    workspaceId: string,
    keyId: string,
    environment: Environment,
  ): Promise<{ id: string; session: Session }> {
    const id = randomBytes(32).toString('base64url');
    const session: Session = {
      workspaceId,
      keyId,
      csrf: randomBytes(24).toString('base64url'),
      createdAt: Date.now(),
      environment,
    };
    await this.redis.set(this.key(id), JSON.stringify(session), 'EX', this.ttlSeconds);
    return { id, session };
  }

  async get(id: string | undefined): Promise<Session | undefined> {
    if (id === undefined || !SESSION_ID.test(id)) return undefined;
    const raw = await this.redis.get(this.key(id));
    return raw === null ? undefined : (JSON.parse(raw) as Session);
  }

  /** Switches the environment the session shows, keeping its expiry. */
  async setEnvironment(id: string, session: Session, environment: Environment): Promise<void> {
    await this.redis.set(this.key(id), JSON.stringify({ ...session, environment }), 'KEEPTTL');
  }

  async destroy(id: string | undefined): Promise<void> {
    if (id !== undefined && SESSION_ID.test(id)) await this.redis.del(this.key(id));
  }
}
