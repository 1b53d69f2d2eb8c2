import { timingSafeEqual } from 'node:crypto';
import { ApiError } from '../errors/api-error.js';
import { findKeyByHash, type KeyRecord } from '../store/workspaces.js';
import { hashKey, isWellFormedKey, type Environment, type Scope } from '../keys/api-key.js';
import { KEY_REVOKED_CHANNEL, PLAN_CHANGED_CHANNEL } from '../contracts/redis-keys.js';
import type { Redis } from '../store/redis.js';
import type { Pool } from '../store/postgres.js';
import type { Plan } from '../plans.js';

/** Who is calling: a workspace key, or the operator (DEPLOY_API_KEY), who may act for any workspace. */
export interface Principal {
  /** The bucket the key belongs to (a live workspace or its test bucket); null for the operator. */
  workspaceId: string | null;
  scopes: ReadonlySet<Scope> | 'all';
  plan: Plan | null;
  /** The key's environment; null for the operator. */
  environment: Environment | null;
  /** The live workspace the key's bucket belongs to (workspaceId itself for a live key); null for the operator. */
  liveWorkspaceId: string | null;
}

export interface AuthenticatorOptions {
  /** Live keys kept in memory (default 100,000). */
  maxKeys?: number;
  /** Unknown or revoked keys remembered, so a retrying client does not cost a query each time (default 10,000). */
  maxMisses?: number;
  /** Workspace plans kept for operator requests (default 100,000; unknown workspaces get `maxMisses`). */
  maxPlans?: number;
  /**
   * Key lookups allowed at once, running or waiting for a pool connection (default 1,000). Further
   * misses are answered `service_unavailable` at once: random tokens never repeat, so coalescing
   * cannot bound a flood of them, and an unbounded queue would grow without limit. The bound must
   * still let a cold cache fill: capped at the pool's size (4), the bench's 2,000-workspace scenario
   * got 8,950 503s for valid keys.
   */
  maxConcurrentLookups?: number;
  /** How a key hash is looked up (default: findKeyByHash on the pool); tests slow it down to open race windows. */
  findKey?: (hash: Buffer) => Promise<KeyRecord | undefined>;
  /** The clock cache entries expire by (default Date.now); tests move it instead of sleeping. */
  now?: () => number;
}

/**
 * How long an unknown key hash is remembered. A new key cannot be stuck here: its token is minted
 * from random bytes and leaves the server only after its row is committed, so nobody can present
 * it (and have its miss cached) before it exists. The TTL stays short anyway, so that a row restored
 * by hand (or a replica catching up) is seen within two seconds.
 */
const NEGATIVE_TTL_MS = 2_000;

/**
 * A TTL cache bounded by count. Every entry of one cache lives for the same `ttlMs` and a re-insert
 * moves the key to the back, so Map insertion order is also expiry order: eviction drops the entry
 * closest to expiry, and a sweep stops at the first live entry (amortised O(1) per insert). Hits do
 * not reorder, which keeps them one Map.get and a compare with no allocation; a hot key evicted
 * early costs one query, which its TTL would cost anyway.
 */
class TtlCache<V> {
  private readonly map = new Map<string, { value: V; expires: number }>();
  constructor(
    private readonly capacity: number,
    private readonly ttlMs: number,
  ) {}

  get size(): number {
    return this.map.size;
  }

  get(key: string, now: number): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.expires > now) return e.value;
    this.map.delete(key);
    return undefined;
  }

  set(key: string, value: V, now: number): void {
    this.map.delete(key);
    for (const [k, e] of this.map) {
      if (e.expires > now) break;
      this.map.delete(k);
    }
    if (this.map.size >= this.capacity) {
      const oldest = this.map.keys().next();
      if (oldest.done !== true) this.map.delete(oldest.value);
    }
    this.map.set(key, { value, expires: now + this.ttlMs });
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  /** A full scan: for rare events only (a workspace's plan changed). */
  deleteWhere(pred: (v: V) => boolean): void {
    for (const [k, e] of this.map) if (pred(e.value)) this.map.delete(k);
  }

  clear(): void {
    this.map.clear();
  }
}

/**
 * Resolves `Authorization: Bearer …` to a principal. Keys are hashed on arrival and looked up by
 * hash (Postgres, cached for `ttlMs`, every cache bounded); a revocation published on Redis drops
 * the cache entry in every process at once, and a (re)connected subscriber clears the caches, since
 * messages sent while it was away are lost. Concurrent misses for one key share one query, and at
 * most `maxConcurrentLookups` queries run at once.
 */
export class Authenticator {
  private readonly keys: TtlCache<Principal>;
  private readonly misses: TtlCache<ApiError>;
  private readonly plans: TtlCache<Plan>;
  private readonly missingPlans: TtlCache<true>;
  private readonly inflight = new Map<string, Promise<Principal | ApiError>>();
  private readonly operatorHash: Buffer | null;
  private readonly findKey: (hash: Buffer) => Promise<KeyRecord | undefined>;
  private readonly maxLookups: number;
  private lookups = 0;
  /**
   * Bumped by every revocation message and every (re)subscription. A lookup caches its row only if
   * this did not move while it ran: a revocation that landed meanwhile may be for that very key,
   * and the row it read may predate it.
   */
  private generation = 0;
  private readonly now: () => number;
  private subscription: 'none' | 'pending' | 'done' = 'none';
  /** Resolves once the revocation channel is subscribed; from then on revocations reach the cache. */
  readonly subscribed: Promise<void>;
  private markSubscribed!: () => void;

  constructor(
    private readonly pool: Pool,
    private readonly sub: Redis,
    ttlMs: number,
    operatorKey: string,
    options: AuthenticatorOptions = {},
  ) {
    this.operatorHash = operatorKey === '' ? null : hashKey(operatorKey);
    const missTtl = Math.min(NEGATIVE_TTL_MS, ttlMs);
    this.keys = new TtlCache(positiveInt('maxKeys', options.maxKeys ?? 100_000), ttlMs);
    this.misses = new TtlCache(positiveInt('maxMisses', options.maxMisses ?? 10_000), missTtl);
    this.plans = new TtlCache(positiveInt('maxPlans', options.maxPlans ?? 100_000), ttlMs);
    this.missingPlans = new TtlCache(positiveInt('maxMisses', options.maxMisses ?? 10_000), missTtl);
    this.maxLookups = positiveInt('maxConcurrentLookups', options.maxConcurrentLookups ?? 1_000);
    this.findKey = options.findKey ?? ((hash) => findKeyByHash(pool, hash));
    this.now = options.now ?? Date.now;
    this.subscribed = new Promise((resolve) => (this.markSubscribed = resolve));

    sub.on('ready', () => {
      this.reset();
      if (this.subscription === 'none') this.subscribe();
    });
    sub.on('message', (channel: string, message: string) => {
      if (channel === KEY_REVOKED_CHANNEL) {
        this.generation++;
        this.keys.delete(message);
        // Later callers must not join a query that may have read the row before the revocation.
        this.inflight.delete(message);
      } else if (channel === PLAN_CHANGED_CHANNEL) {
        // The principal carries the plan, and so the quota ingest enforces: drop the workspace's
        // entries so its next request reads the new plan (or, for a deleted workspace, finds no
        // live key), instead of after the cache TTL.
        this.generation++;
        this.keys.deleteWhere((p) => p.workspaceId === message);
        this.plans.delete(message);
        this.missingPlans.delete(message);
        // A lookup running now may have read the row before the change (or the delete): later
        // callers query again. Which keys are the workspace's is unknown until they resolve, so
        // every running lookup is left to its own callers; plan changes are rare.
        this.inflight.clear();
      }
    });
    this.subscribe();
  }

  private subscribe(): void {
    this.subscription = 'pending';
    this.sub.subscribe(KEY_REVOKED_CHANNEL, PLAN_CHANGED_CHANNEL).then(
      () => {
        // Anything cached before the subscription took effect could have missed a revocation.
        this.reset();
        this.subscription = 'done';
        this.markSubscribed();
      },
      () => {
        // Retried by the 'ready' handler when the connection comes back.
        this.subscription = 'none';
      },
    );
  }

  private reset(): void {
    this.generation++;
    this.keys.clear();
    this.misses.clear();
    this.plans.clear();
    this.missingPlans.clear();
    this.inflight.clear();
  }

  authenticate(header: string): Principal | ApiError | Promise<Principal | ApiError> {
    return this.resolve(header, true)!;
  }

  /**
   * The answer known without a query: malformed, operator, or held by a cache (live key or recent
   * miss). `undefined` means only a lookup can tell, so a caller can ration lookups (ingest refuses
   * them to an address that keeps sending unknown keys) before calling `authenticate`.
   */
  cached(header: string): Principal | ApiError | undefined {
    return this.resolve(header, false) as Principal | ApiError | undefined;
  }

  private resolve(header: string, lookup: boolean): Principal | ApiError | Promise<Principal | ApiError> | undefined {
    if (header.length === 0) return MISSING;
    if (header.length < 8 || header.slice(0, 7).toLowerCase() !== 'bearer ') return MALFORMED_HEADER;
    const token = header.slice(7).trim();
    const hash = hashKey(token);
    if (this.operatorHash !== null && timingSafeEqual(hash, this.operatorHash)) return OPERATOR;
    if (!isWellFormedKey(token)) return MALFORMED_KEY;
    const hex = hash.toString('hex');
    const now = this.now();
    const hit = this.keys.get(hex, now) ?? this.misses.get(hex, now);
    if (hit !== undefined || !lookup) return hit;
    return this.inflight.get(hex) ?? (this.lookups < this.maxLookups ? this.startLookup(hex, hash) : BUSY);
  }

  private startLookup(hex: string, hash: Buffer): Promise<Principal | ApiError> {
    this.lookups++;
    const p: Promise<Principal | ApiError> = this.lookup(hex, hash, this.generation).finally(() => {
      this.lookups--;
      // A revocation or reset may have replaced this entry with a newer query for the same key.
      if (this.inflight.get(hex) === p) this.inflight.delete(hex);
    });
    this.inflight.set(hex, p);
    return p;
  }

  private async lookup(hex: string, hash: Buffer, generation: number): Promise<Principal | ApiError> {
    let rec: KeyRecord | undefined;
    try {
      rec = await this.findKey(hash);
    } catch (err) {
      return new ApiError('service_unavailable', 'could not check the API key; retry shortly', undefined, {
        retryable: true,
        cause: err,
      });
    }
    if (rec === undefined) {
      // A revocation only ever turns keys invalid, so it cannot make a negative answer stale.
      this.misses.set(hex, INVALID, this.now());
      return INVALID;
    }
    const principal: Principal = {
      workspaceId: rec.workspace_id,
      scopes: new Set(rec.scopes),
      plan: rec.plan,
      environment: rec.environment,
      liveWorkspaceId: rec.live_workspace_id ?? rec.workspace_id,
    };
    // Callers that asked before the revocation still get this answer; later ones query again.
    if (generation === this.generation) this.keys.set(hex, principal, this.now());
    return principal;
  }

  /** The plan of any workspace, for operator requests (cached like keys). Undefined if there is no such workspace. */
  async planOf(workspaceId: string): Promise<Plan | undefined> {
    const now = this.now();
    const hit = this.plans.get(workspaceId, now);
    if (hit !== undefined) return hit;
    if (this.missingPlans.get(workspaceId, now) === true) return undefined;
    const generation = this.generation;
    const { rows } = await this.pool.query<{ plan: Plan }>(
      'SELECT plan FROM workspaces WHERE id = $1 AND deleted_at IS NULL',
      [workspaceId],
    );
    const plan = rows[0]?.plan;
    if (generation === this.generation) {
      if (plan === undefined) this.missingPlans.set(workspaceId, true, this.now());
      else this.plans.set(workspaceId, plan, this.now());
    }
    return plan;
  }

  /** Entries held in each cache and queries running (for tests and gauges). */
  get cacheSizes(): { keys: number; misses: number; plans: number; lookups: number } {
    return {
      keys: this.keys.size,
      misses: this.misses.size,
      plans: this.plans.size + this.missingPlans.size,
      lookups: this.lookups,
    };
  }
}

function positiveInt(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 1)
    throw new RangeError(`Authenticator option ${name} must be a positive integer, got ${n}`);
  return n;
}

const OPERATOR: Principal = Object.freeze({
  workspaceId: null,
  scopes: 'all',
  plan: null,
  environment: null,
  liveWorkspaceId: null,
});
const INVALID = new ApiError('invalid_api_key', 'the API key is not valid or has been revoked');
// Shared for the same reason as INVALID: a flood of junk headers must not build an Error each.
const MISSING = new ApiError('missing_api_key', 'send Authorization: Bearer <api key>');
const MALFORMED_HEADER = new ApiError('invalid_api_key', 'the Authorization header must be "Bearer <api key>"');
const MALFORMED_KEY = new ApiError('invalid_api_key', 'the API key is not valid');
// Shared like INVALID: under a flood, building an Error (and its stack) per rejected request is the cost to avoid.
const BUSY = new ApiError('service_unavailable', 'too many API key checks in progress; retry shortly', undefined, {
  retryable: true,
});

export function hasScope(p: Principal, scope: Scope): boolean {
  return p.scopes === 'all' || p.scopes.has(scope);
}

/**
 * The bucket a workspace key acts on when a path names `workspaceId`: its own bucket, named by its
 * own id or, for a test key, by its live workspace's id (the environment then comes from the key).
 * Undefined when the path names another workspace. Not for the operator.
 */
export function bucketOfKey(p: Principal, workspaceId: string): string | undefined {
  if (p.workspaceId === workspaceId || (p.environment === 'test' && p.liveWorkspaceId === workspaceId))
    return p.workspaceId!;
  return undefined;
}
