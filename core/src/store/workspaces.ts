import type pg from 'pg';
import { newId } from '../ids.js';
import { mintKey, type Environment, type Scope, DEFAULT_SCOPES } from '../keys/api-key.js';
import type { Plan } from '../plans.js';
import { KEY_REVOKED_CHANNEL } from '../contracts/redis-keys.js';
import type { Redis } from './redis.js';

export interface Workspace {
  id: string;
  slug: string;
  display_name: string;
  contact_email: string | null;
  plan: Plan;
  stripe_customer_id: string | null;
  created_at: string;
  /** Which environment this bucket is: a live workspace, or the test bucket of `live_workspace_id`. */
  environment: Environment;
  live_workspace_id: string | null;
}

/** The columns of a Workspace, for the SELECTs and RETURNINGs that read one. */
export const WORKSPACE_COLUMNS =
  'id, slug, display_name, contact_email, plan, stripe_customer_id, created_at, environment, live_workspace_id';

export interface KeyRecord {
  id: string;
  /** The bucket the key belongs to: a live workspace or a test bucket. */
  workspace_id: string;
  scopes: Scope[];
  plan: Plan;
  environment: Environment;
  /** For a test key, the live workspace of its bucket; null for a live key. */
  live_workspace_id: string | null;
}

type Queryable = pg.Pool | pg.PoolClient;

export async function insertWorkspace(
  db: Queryable,
  w: {
    slug: string;
    display_name: string;
    contact_email?: string | null;
    plan: Plan;
    stripe_customer_id?: string | null;
  },
): Promise<Workspace> {
  // One statement, so a workspace never exists without its test bucket (docs/api.md §13).
  const { rows } = await db.query<Workspace>(
    `WITH live AS (
       INSERT INTO workspaces (id, slug, display_name, contact_email, plan, stripe_customer_id)
       VALUES ($1, $2, $3, $4, $5, $6)
       RETURNING ${WORKSPACE_COLUMNS}
     ), test AS (
       INSERT INTO workspaces (id, slug, display_name, contact_email, plan, environment, live_workspace_id)
       SELECT $7, slug, display_name, contact_email, plan, 'test', id FROM live
     )
     SELECT * FROM live`,
    [
      newId('ws'),
      w.slug,
      w.display_name,
      w.contact_email ?? null,
      w.plan,
      w.stripe_customer_id ?? null,
      testBucketId(),
    ],
  );
  return rows[0]!;
}

/**
 * `ws_test` + 20 base62 characters: the id says it is a test bucket, and still matches the event
 * contract's workspace id (`^ws_[A-Za-z0-9]{1,61}$`, docs/api.md), so ingest takes it unchanged.
 */
function testBucketId(): string {
  return 'ws_test' + newId('ws').slice(3);
}

/** The test bucket of a live workspace (undefined when there is no such workspace). */
export async function testBucketOf(db: Queryable, liveWorkspaceId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ id: string }>('SELECT id FROM workspaces WHERE live_workspace_id = $1', [
    liveWorkspaceId,
  ]);
  return rows[0]?.id;
}

/**
 * Mints a key for a workspace bucket (live or test); the token's prefix names the bucket's
 * environment. The plaintext token is in the result and nowhere else.
 */
export async function insertApiKey(
  db: Queryable,
  workspaceId: string,
  scopes: readonly Scope[] = DEFAULT_SCOPES,
  name: string | null = null,
): Promise<{ id: string; token: string; display_prefix: string; scopes: readonly Scope[]; environment: Environment }> {
  const { rows } = await db.query<{ environment: Environment }>('SELECT environment FROM workspaces WHERE id = $1', [
    workspaceId,
  ]);
  // An unknown id falls through to the INSERT, whose foreign key refuses it.
  const environment = rows[0]?.environment ?? 'live';
  const key = mintKey(environment);
  const id = newId('key');
  await db.query(
    `INSERT INTO api_keys (id, workspace_id, display_prefix, key_hash, scopes, name) VALUES ($1, $2, $3, $4, $5, $6)`,
    [id, workspaceId, key.displayPrefix, key.hash, scopes, name],
  );
  return { id, token: key.token, display_prefix: key.displayPrefix, scopes, environment };
}

/** The live (unrevoked) key with this hash, of a workspace not deleted, with its plan; undefined when none. */
export async function findKeyByHash(db: Queryable, hash: Buffer): Promise<KeyRecord | undefined> {
  const { rows } = await db.query<KeyRecord>(
    `SELECT k.id, k.workspace_id, k.scopes, w.plan, w.environment, w.live_workspace_id
       FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
      WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND w.deleted_at IS NULL`,
    [hash],
  );
  return rows[0];
}

/** Revokes a key and tells every ingest process to drop it from its cache at once. */
export async function revokeApiKey(db: Queryable, redis: Redis, workspaceId: string, keyId: string): Promise<boolean> {
  const { rows } = await db.query<{ key_hash: Buffer }>(
    `UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND workspace_id = $2 AND revoked_at IS NULL RETURNING key_hash`,
    [keyId, workspaceId],
  );
  if (rows.length === 0) return false;
  await redis.publish(KEY_REVOKED_CHANNEL, rows[0]!.key_hash.toString('hex'));
  return true;
}
