import { ApiError } from '@meterd/core/errors';
import { DEFAULT_SCOPES, type Environment, type Scope } from '@meterd/core/keys';
import { type Plan } from '@meterd/core/plans';
import { PLAN_CHANGED_CHANNEL } from '@meterd/core/contracts';
import {
  inTransaction,
  insertApiKey,
  insertWorkspace,
  testBucketOf,
  type Pool,
  type Redis,
  type Workspace,
  WORKSPACE_COLUMNS,
} from '@meterd/core/store';
import { emitEvent } from '../webhooks/outbox.js';
import type { BillingService } from './billing.js';

export const WORKSPACE_COLS = WORKSPACE_COLUMNS;
// `workspaces` is the row being read or updated; the subquery names its test bucket (null for a test bucket).
const LIFECYCLE_COLS = `${WORKSPACE_COLS}, deleted_at, purge_after,
  (SELECT t.id FROM workspaces t WHERE t.live_workspace_id = workspaces.id) AS test_workspace_id`;

/** A workspace with its lifecycle: deleted_at and purge_after are null unless it was deleted. */
export interface WorkspaceRecord extends Workspace {
  deleted_at: string | null;
  purge_after: string | null;
  test_workspace_id: string | null;
}

/** A workspace as GET/PATCH/DELETE /api/v1/workspaces/:id show it, with the ids of both environments. */
export function workspaceView(w: WorkspaceRecord) {
  return {
    ...publicWorkspace(w),
    environment: w.environment,
    environments: {
      live: w.live_workspace_id ?? w.id,
      test: w.environment === 'test' ? w.id : w.test_workspace_id,
    },
    deleted_at: w.deleted_at,
    purge_after: w.purge_after,
  };
}

/** A workspace as the API shows it. */
export function publicWorkspace(w: Workspace) {
  return {
    id: w.id,
    slug: w.slug,
    display_name: w.display_name,
    contact_email: w.contact_email,
    plan: w.plan,
    stripe_customer_id: w.stripe_customer_id,
    created_at: w.created_at,
  };
}

/** The workspace a dashboard session acts for. */
export type SessionWorkspace = Pick<
  Workspace,
  'id' | 'slug' | 'display_name' | 'plan' | 'stripe_customer_id' | 'environment' | 'live_workspace_id'
>;

export interface SignupInput {
  slug: string;
  display_name: string;
  contact_email: string | null;
  /** The plan asked for; the workspace starts on free whatever it is. */
  plan: Plan;
}

export interface SignedUp {
  workspace: Workspace;
  /** The id of its test environment (docs/api.md §13). */
  testWorkspaceId: string;
  key: { id: string; token: string; prefix: string; scopes: readonly Scope[] };
  /** Where to pay the plan asked for; null for free, or without Stripe. */
  checkoutUrl: string | null;
}

/** Workspaces: signup, existence, and what a dashboard session stands on. */
export class WorkspaceService {
  constructor(
    private readonly pool: Pool,
    private readonly redis: Redis,
    private readonly billing: BillingService,
    private readonly graceDays: number,
  ) {}

  /** Whether a live (not deleted) workspace has this id: a deleted one is gone for every route but its own. */
  async exists(workspaceId: string): Promise<boolean> {
    const { rowCount } = await this.pool.query('SELECT 1 FROM workspaces WHERE id = $1 AND deleted_at IS NULL', [
      workspaceId,
    ]);
    return rowCount !== 0;
  }

  /**
   * The bucket of `environment` of the workspace `workspaceId` names (by its live id or its test
   * bucket's id), if not deleted.
   */
  async bucket(workspaceId: string, environment: Environment): Promise<string> {
    const { rows } = await this.pool.query<{ id: string }>(
      `SELECT id FROM workspaces
        WHERE environment = $2 AND deleted_at IS NULL
          AND (id = $1 OR live_workspace_id = $1 OR id = (SELECT live_workspace_id FROM workspaces WHERE id = $1))`,
      [workspaceId, environment],
    );
    if (rows.length === 0) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
    return rows[0]!.id;
  }

  /** The live workspace of a bucket: itself, or the live workspace of a test bucket. */
  async liveOf(bucketId: string): Promise<string> {
    const { rows } = await this.pool.query<{ id: string }>(
      'SELECT coalesce(live_workspace_id, id) AS id FROM workspaces WHERE id = $1 AND deleted_at IS NULL',
      [bucketId],
    );
    if (rows.length === 0) throw new ApiError('workspace_not_found', `no workspace ${bucketId}`);
    return rows[0]!.id;
  }

  async get(workspaceId: string): Promise<Workspace> {
    const { rows } = await this.pool.query<Workspace>(
      `SELECT ${WORKSPACE_COLS} FROM workspaces WHERE id = $1 AND deleted_at IS NULL`,
      [workspaceId],
    );
    if (rows.length === 0) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
    return rows[0]!;
  }

  /** A workspace with its lifecycle, deleted or not (the operator reads deleted ones during and after the grace period). */
  async record(workspaceId: string): Promise<WorkspaceRecord> {
    const { rows } = await this.pool.query<WorkspaceRecord>(`SELECT ${LIFECYCLE_COLS} FROM workspaces WHERE id = $1`, [
      workspaceId,
    ]);
    if (rows.length === 0) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
    return rows[0]!;
  }

  /** Changes the display name and/or contact email (null clears it) of a live workspace, and of its test bucket alike. */
  async update(
    workspaceId: string,
    patch: { display_name?: string; contact_email?: string | null },
  ): Promise<WorkspaceRecord> {
    const { rows } = await this.pool.query<WorkspaceRecord>(
      `UPDATE workspaces SET display_name = COALESCE($2, display_name),
              contact_email = CASE WHEN $3 THEN $4 ELSE contact_email END
        WHERE (id = $1 OR live_workspace_id = $1) AND deleted_at IS NULL RETURNING ${LIFECYCLE_COLS}`,
      [workspaceId, patch.display_name ?? null, 'contact_email' in patch, patch.contact_email ?? null],
    );
    return named(rows, workspaceId);
  }

  /**
   * Soft delete: from the commit on, no key of the workspace authenticates (core's findKeyByHash
   * skips deleted workspaces), and the announcement drops its keys from every process's cache, ingest
   * included. Rows and numbers stay; the operator may restore it until purge_after.
   */
  async remove(workspaceId: string): Promise<WorkspaceRecord> {
    // Both environments go together: the test bucket's keys stop at the same commit.
    const { rows } = await this.pool.query<WorkspaceRecord>(
      `UPDATE workspaces SET deleted_at = now(), purge_after = now() + make_interval(days => $2)
        WHERE (id = $1 OR live_workspace_id = $1) AND deleted_at IS NULL RETURNING ${LIFECYCLE_COLS}`,
      [workspaceId, this.graceDays],
    );
    const w = named(rows, workspaceId);
    for (const r of rows) await this.redis.publish(PLAN_CHANGED_CHANNEL, r.id);
    return w;
  }

  /** Undoes a soft delete within the grace period; its keys work again (those not revoked). */
  async restore(workspaceId: string): Promise<WorkspaceRecord> {
    const w = await this.record(workspaceId);
    if (w.environment === 'test')
      throw new ApiError(
        'workspace_mismatch',
        'a workspace is restored through its live id, with its test environment',
      );
    if (w.deleted_at === null) return w;
    const { rows } = await this.pool.query<WorkspaceRecord>(
      `UPDATE workspaces SET deleted_at = NULL, purge_after = NULL
        WHERE (id = $1 OR live_workspace_id = $1) AND deleted_at IS NOT NULL
          AND (SELECT l.purge_after > now() AND l.purged_at IS NULL FROM workspaces l WHERE l.id = $1)
        RETURNING ${LIFECYCLE_COLS}`,
      [workspaceId],
    );
    if (rows.length === 0)
      throw new ApiError('restore_window_closed', `the grace period of workspace ${workspaceId} is over`);
    for (const r of rows) await this.redis.publish(PLAN_CHANGED_CHANNEL, r.id);
    return named(rows, workspaceId);
  }

  /**
   * A workspace on the free plan with its first admin key, its Stripe customer when Stripe is
   * configured, and the workspace.signup event, all in one transaction. Anyone may sign up, so
   * nobody gets a paid plan by asking: a paid plan answers with a Checkout URL instead.
   */
  async signup(input: SignupInput): Promise<SignedUp> {
    this.billing.requireStripeFor(input.plan, 'plan');
    let customerId: string | null = null;
    try {
      return await inTransaction(this.pool, async (c) => {
        let created: Workspace;
        try {
          created = await insertWorkspace(c, {
            slug: input.slug,
            display_name: input.display_name,
            contact_email: input.contact_email,
            plan: 'free',
          });
        } catch (err) {
          if ((err as { code?: string }).code === '23505')
            throw new ApiError('slug_taken', `the slug ${input.slug} is taken`, 'slug');
          throw err;
        }
        const key = await insertApiKey(c, created.id, DEFAULT_SCOPES, 'first key');
        const testWorkspaceId = (await testBucketOf(c, created.id))!;
        const { workspace, checkoutUrl } = await this.billing.openAccount(c, created, input.plan, (id) => {
          customerId = id;
        });
        await emitEvent(c, workspace.id, 'workspace.signup', { workspace: publicWorkspace(workspace) });
        return {
          workspace,
          testWorkspaceId,
          key: { id: key.id, token: key.token, prefix: key.display_prefix, scopes: key.scopes },
          checkoutUrl,
        };
      });
    } catch (err) {
      // The Stripe customer exists but the workspace does not (the commit failed): remove it too.
      if (customerId !== null) await this.billing.dropCustomer(customerId);
      throw err;
    }
  }

  /**
   * The bucket of `environment` a dashboard session acts for (the key's own, or a live key's test
   * bucket), while the key that signed in is still live: revoking it (from the dashboard, the API
   * or another replica) ends its sessions at once. A test key reaches no live bucket.
   */
  async ofLiveKey(keyId: string, workspaceId: string, environment: Environment): Promise<SessionWorkspace | undefined> {
    const { rows } = await this.pool.query<SessionWorkspace>(
      `SELECT b.id, b.slug, b.display_name, b.plan, b.stripe_customer_id, b.environment, b.live_workspace_id
         FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
         JOIN workspaces b ON b.id = w.id OR b.live_workspace_id = w.id
        WHERE k.id = $1 AND k.workspace_id = $2 AND k.revoked_at IS NULL AND w.deleted_at IS NULL
          AND b.environment = $3`,
      [keyId, workspaceId, environment],
    );
    return rows[0];
  }
}

/** The row of `id` among those a statement over a workspace and its test bucket returned. */
function named(rows: WorkspaceRecord[], id: string): WorkspaceRecord {
  const w = rows.find((r) => r.id === id);
  if (w === undefined) throw new ApiError('workspace_not_found', `no workspace ${id}`);
  return w;
}
