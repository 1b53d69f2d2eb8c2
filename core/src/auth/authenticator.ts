import { timingSafeEqual } from 'node:crypto';
import { ApiError } from '../errors/api-error.js';
import { findKeyByHash } from '../store/workspaces.js';
import { hashKey, isWellFormedKey, type Scope } from '../keys/api-key.js';
import { KEY_REVOKED_CHANNEL, type Redis } from '../store/redis.js';
import type { Pool } from '../store/postgres.js';
import type { Plan } from '../plans.js';

/** Who is calling: a workspace key, or the operator (DEPLOY_API_KEY), who may act for any workspace. */
export interface Principal {
  /** null for the operator. */
  workspaceId: string | null;
  scopes: ReadonlySet<Scope> | 'all';
  plan: Plan | null;
}

interface Entry { value: Principal | null; expires: number }

const NEGATIVE_TTL_MS = 2_000;

/**
 * Resolves `Authorization: Bearer …` to a principal. Keys are hashed on arrival and looked up by
 * hash (Postgres, cached for `ttlMs`); a revocation published on Redis drops the cache entry in
 * every process at once, and a (re)connected subscriber clears the whole cache, since messages sent
 * while it was away are lost. Concurrent misses for one key share one query.
 */
export class Authenticator {
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<Principal | ApiError>>();
  private readonly operatorHash: Buffer | null;

  constructor(private readonly pool: Pool, private readonly sub: Redis, private readonly ttlMs: number, operatorKey: string) {
    this.operatorHash = operatorKey === '' ? null : hashKey(operatorKey);
    sub.on('ready', () => this.cache.clear());
    sub.on('message', (channel: string, hashHex: string) => {
      if (channel === KEY_REVOKED_CHANNEL) this.cache.delete(hashHex);
    });
    void sub.subscribe(KEY_REVOKED_CHANNEL).catch(() => {
      // The 'ready' handler clears the cache and ioredis re-subscribes on reconnect.
    });
  }

  authenticate(header: string): Principal | ApiError | Promise<Principal | ApiError> {
    if (header.length === 0) return new ApiError('missing_api_key', 'send Authorization: Bearer <api key>');
    if (header.length < 8 || header.slice(0, 7).toLowerCase() !== 'bearer ') {
      return new ApiError('invalid_api_key', 'the Authorization header must be "Bearer <api key>"');
    }
    const token = header.slice(7).trim();
    const hash = hashKey(token);
    if (this.operatorHash !== null && timingSafeEqual(hash, this.operatorHash)) return OPERATOR;
    if (!isWellFormedKey(token)) return new ApiError('invalid_api_key', 'the API key is not valid');
    const hex = hash.toString('hex');
    const hit = this.cache.get(hex);
    if (hit !== undefined && hit.expires > Date.now()) return hit.value ?? INVALID;
    let p = this.inflight.get(hex);
    if (p === undefined) {
      p = this.lookup(hex, hash);
      this.inflight.set(hex, p);
    }
    return p;
  }

  private async lookup(hex: string, hash: Buffer): Promise<Principal | ApiError> {
    try {
      const rec = await findKeyByHash(this.pool, hash);
      const value: Principal | null = rec === undefined ? null : { workspaceId: rec.workspace_id, scopes: new Set(rec.scopes), plan: rec.plan };
      this.cache.set(hex, { value, expires: Date.now() + (value === null ? Math.min(NEGATIVE_TTL_MS, this.ttlMs) : this.ttlMs) });
      return value ?? INVALID;
    } catch (err) {
      return new ApiError('service_unavailable', 'could not check the API key; retry shortly', undefined, { retryable: true, cause: err });
    } finally {
      this.inflight.delete(hex);
    }
  }

  /** The plan of any workspace, for operator requests (cached like keys). Undefined if there is no such workspace. */
  private readonly plans = new Map<string, { plan: Plan | undefined; expires: number }>();
  async planOf(workspaceId: string): Promise<Plan | undefined> {
    const hit = this.plans.get(workspaceId);
    if (hit !== undefined && hit.expires > Date.now()) return hit.plan;
    const { rows } = await this.pool.query<{ plan: Plan }>('SELECT plan FROM workspaces WHERE id = $1', [workspaceId]);
    const plan = rows[0]?.plan;
    this.plans.set(workspaceId, { plan, expires: Date.now() + (plan === undefined ? NEGATIVE_TTL_MS : this.ttlMs) });
    return plan;
  }
}

const OPERATOR: Principal = Object.freeze({ workspaceId: null, scopes: 'all', plan: null });
const INVALID = new ApiError('invalid_api_key', 'the API key is not valid or has been revoked');

export function hasScope(p: Principal, scope: Scope): boolean {
  return p.scopes === 'all' || p.scopes.has(scope);
}
