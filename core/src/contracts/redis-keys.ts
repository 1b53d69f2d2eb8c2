/**
 * Every Redis key and channel meterd writes, built in one place: ingest writes the dedupe and
 * quota keys, the control API reads the quota counters, and a key built differently on one side
 * would read as zero without any error. Keys of one workspace carry the `{workspace_id}` hash tag,
 * so one Lua call's keys share a Redis Cluster slot.
 */

/** Default of REDIS_KEY_PREFIX: the first segment of every key, so deployments sharing a Redis never collide. */
export const DEFAULT_REDIS_KEY_PREFIX = 'md';

/** Idempotency claim or stored row of one event: `<prefix>:{<workspace>}:d:<event_type>:<idempotency_key>`. */
export function dedupeKey(prefix: string, workspaceId: string, key: string): string {
  return `${prefix}:{${workspaceId}}:d:${key}`;
}

/**
 * Base of the compact dedupe tier of one workspace: `<base><slot>` is a slot's small meta hash and
 * `<base><slot>:<bits>:<bucket>` its listpack hashes of 16-byte key hashes (ingest/src/dedupe/redis.ts
 * appends the rest inside its Lua scripts; the hash tag keeps them in the workspace's slot).
 */
export function dedupeTierBase(prefix: string, workspaceId: string): string {
  return `${prefix}:{${workspaceId}}:h:`;
}

/**
 * Registry of the workspaces whose dedupe state Redis has held: a hash whose fields are workspace
 * ids, plus the field `~gen` = `<16 hex>:<birth ms>` written when ingest finds the hash without it.
 * A workspace whose marker is missing but which is listed here lost its state (Redis, or the node
 * holding its slot, lost data); one missing here is new, once every ingest has shipped past the
 * registry's birth (ingest/src/dedupe/recovery.ts). Its own hash tag: on a cluster it lives on
 * one node, never in a script with a workspace's keys.
 */
export function dedupeRegistryKey(prefix: string): string {
  return `${prefix}:{registry}:ws`;
}

/**
 * Hash of every ingest thread's "shipped through" time: field = thread, value `<ms>:<heartbeat ms>`,
 * where every event the thread acknowledged before `<ms>` is in ClickHouse (ingest/src/dedupe/shipped.ts).
 */
export function dedupeShippedKey(prefix: string): string {
  return `${prefix}:shipped`;
}

/**
 * Marker that Redis holds a workspace's counters and dedupe tier: `<gen>` (the registry generation
 * the workspace was last registered in) when complete, `<gen>:r:<token>` while its tier is being
 * rebuilt from ClickHouse. It lives in the workspace's slot, so a node that lost its data has lost
 * the marker with the state it vouches for.
 */
export function dedupeEpochMarker(prefix: string, workspaceId: string): string {
  return `${prefix}:{${workspaceId}}:e`;
}

/** Accepted-event counter of one workspace and period (YYYYMM): `<prefix>:{<workspace>}:q:<YYYYMM>`. */
export function quotaKey(prefix: string, workspaceId: string, period: string): string {
  return `${prefix}:{${workspaceId}}:q:${period}`;
}

/** Recent rejected events of one workspace, newest first (a bounded list, core's RejectionLog): `<prefix>:{<workspace>}:rej`. */
export function rejectionsKey(prefix: string, workspaceId: string): string {
  return `${prefix}:{${workspaceId}}:rej`;
}

/** Token bucket of one client address for the limit `name` (signup, dashboard sign-in). */
export function rateLimitKey(prefix: string, name: string, address: string): string {
  return `${prefix}:rl:${name}:${address}`;
}

/** Dashboard session, keyed by the SHA-256 (hex) of the cookie's id, never the id itself. */
export function dashboardSessionKey(prefix: string, idSha256Hex: string): string {
  return `${prefix}:dash:s:${idSha256Hex}`;
}

/** Pub/sub channel on which a revoked key's hash is announced, so every ingest drops it from cache. */
export const KEY_REVOKED_CHANNEL = 'meterd:keys:revoked';

/**
 * Pub/sub channel on which a workspace id is announced when its plan changed or it was deleted or
 * restored, so caches of its keys and quota drop it.
 */
export const PLAN_CHANGED_CHANNEL = 'meterd:plans:changed';

/**
 * Pub/sub channel on which an ingest process announces that its ship round recorded batches
 * (`event_batches`, `event_windows`), so that aggregators start their next cycle at once rather
 * than at their next poll. Only a hint: a lost message costs at most one poll of freshness.
 */
export const BATCHES_RECORDED_CHANNEL = 'meterd:batches:recorded';
