import { ApiError } from '@meterd/core/errors';
import { DEFAULT_SCOPES, type Scope } from '@meterd/core/keys';
import { type Plan } from '@meterd/core/plans';
import { inTransaction, insertApiKey, insertWorkspace, type Pool, type Workspace } from '@meterd/core/store';
import { emitEvent } from '../webhooks/outbox.js';
import type { BillingService } from './billing.js';

export const WORKSPACE_COLS = 'id, slug, display_name, contact_email, plan, stripe_customer_id, created_at';

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
export type SessionWorkspace = Pick<Workspace, 'id' | 'slug' | 'display_name' | 'plan' | 'stripe_customer_id'>;

export interface SignupInput {
  slug: string;
  display_name: string;
  contact_email: string | null;
  /** The plan asked for; the workspace starts on free whatever it is. */
  plan: Plan;
}

export interface SignedUp {
  workspace: Workspace;
  key: { id: string; token: string; prefix: string; scopes: readonly Scope[] };
  /** Where to pay the plan asked for; null for free, or without Stripe. */
  checkoutUrl: string | null;
}

/** Workspaces: signup, existence, and what a dashboard session stands on. */
export class WorkspaceService {
  constructor(
    private readonly pool: Pool,
    private readonly billing: BillingService,
  ) {}

  async exists(workspaceId: string): Promise<boolean> {
    const { rowCount } = await this.pool.query('SELECT 1 FROM workspaces WHERE id = $1', [workspaceId]);
    return rowCount !== 0;
  }

  async get(workspaceId: string): Promise<Workspace> {
    const { rows } = await this.pool.query<Workspace>(`SELECT ${WORKSPACE_COLS} FROM workspaces WHERE id = $1`, [
      workspaceId,
    ]);
    if (rows.length === 0) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
    return rows[0]!;
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
        const { workspace, checkoutUrl } = await this.billing.openAccount(c, created, input.plan, (id) => {
          customerId = id;
        });
        await emitEvent(c, workspace.id, 'workspace.signup', { workspace: publicWorkspace(workspace) });
        return {
          workspace,
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
   * The workspace a dashboard session acts for, while the key that signed in is still live:
   * revoking it (from the dashboard, the API or another replica) ends its sessions at once.
   */
  async ofLiveKey(keyId: string, workspaceId: string): Promise<SessionWorkspace | undefined> {
    const { rows } = await this.pool.query<SessionWorkspace>(
      `SELECT w.id, w.slug, w.display_name, w.plan, w.stripe_customer_id
         FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
        WHERE k.id = $1 AND k.workspace_id = $2 AND k.revoked_at IS NULL`,
      [keyId, workspaceId],
    );
    return rows[0];
  }
}
