import { ApiError } from '@meterd/core/errors';
import { hashKey, isWellFormedKey, type Environment, type Scope } from '@meterd/core/keys';
import { findKeyByHash, insertApiKey, revokeApiKey, type Pool, type Redis } from '@meterd/core/store';

/** A key as listed: never its secret. */
export interface ApiKeyView {
  id: string;
  name: string | null;
  prefix: string;
  scopes: Scope[];
  created_at: string;
  revoked_at: string | null;
}

/** A key just minted: the only answer that ever carries its token. */
export interface MintedKey {
  id: string;
  token: string;
  prefix: string;
  scopes: readonly Scope[];
  name: string | null;
}

/** A key minted without scopes may send and read usage, not manage the workspace. */
export const MINTED_KEY_SCOPES: readonly Scope[] = ['meter:write', 'meter:read'];

const ORDER = { oldest: 'created_at, id', newest: 'created_at DESC, id' } as const;

/** API keys of a workspace: listed, minted, revoked (everywhere at once), and traded for a dashboard session. */
export class KeyService {
  constructor(
    private readonly pool: Pool,
    private readonly redis: Redis,
  ) {}

  async list(workspaceId: string, order: keyof typeof ORDER = 'oldest'): Promise<ApiKeyView[]> {
    const { rows } = await this.pool.query<ApiKeyView>(
      `SELECT id, name, display_prefix AS prefix, scopes, created_at, revoked_at FROM api_keys
        WHERE workspace_id = $1 ORDER BY ${ORDER[order]}`,
      [workspaceId],
    );
    return rows;
  }

  async liveCount(workspaceId: string): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM api_keys WHERE workspace_id = $1 AND revoked_at IS NULL',
      [workspaceId],
    );
    return rows[0]!.n;
  }

  async mint(
    workspaceId: string,
    o: { name: string | null; scopes: readonly Scope[] | undefined },
  ): Promise<MintedKey> {
    const key = await insertApiKey(this.pool, workspaceId, o.scopes ?? MINTED_KEY_SCOPES, o.name);
    return { id: key.id, token: key.token, prefix: key.display_prefix, scopes: key.scopes, name: o.name };
  }

  /** Revokes a live key of the workspace; ingest stops accepting it within a second. */
  async revoke(workspaceId: string, keyId: string): Promise<void> {
    if (!(await revokeApiKey(this.pool, this.redis, workspaceId, keyId)))
      throw new ApiError('resource_not_found', `no live API key ${keyId} in this workspace`);
  }

  /** The live admin key a dashboard sign-in presents; the error names the `api_key` field. */
  async adminKey(token: string): Promise<{ keyId: string; workspaceId: string; environment: Environment }> {
    const rec = isWellFormedKey(token) ? await findKeyByHash(this.pool, hashKey(token)) : undefined;
    if (rec === undefined)
      throw new ApiError('invalid_api_key', 'this API key is not valid or has been revoked', 'api_key');
    if (!rec.scopes.includes('admin'))
      throw new ApiError('insufficient_scope', 'the dashboard needs a key with the admin scope', 'api_key');
    return { keyId: rec.id, workspaceId: rec.workspace_id, environment: rec.environment };
  }
}
