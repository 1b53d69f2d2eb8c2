import { ApiError } from '@meterd/core/errors';
import { newId } from '@meterd/core/ids';
import { type Logger } from '@meterd/core/log';
import { PLAN_QUOTAS, type Plan } from '@meterd/core/plans';
import { inTransaction, type Pool } from '@meterd/core/store';
import type { SecretBox } from '../crypto/secret-box.js';
import { emitEvent } from '../webhooks/outbox.js';
import { CATALOG, checkConfig, declaredConfig } from '../provision/catalog.js';
import type { DeploySpec, ProvisionDriver } from '../provision/driver.js';

export interface ProvisionRow {
  id: string;
  workspace_id: string;
  service: string;
  customer_id: string;
  driver: string;
  status: string;
  url: string | null;
  error: string | null;
  created_at: string;
  updated_at: string;
}
const COLS = 'id, workspace_id, service, customer_id, driver, status, url, error, created_at, updated_at';

/**
 * How long a pending provision stays with the replica deploying it before another replica's
 * resume() may take it over (the creator died mid-deploy). Above any deploy: the Kubernetes driver
 * waits for its rollout far less. A takeover of a deploy still running is harmless (drivers are
 * idempotent); it is only rare.
 */
const DEPLOY_LEASE_SECONDS = 900;

/** States that hold a handler slot against the plan's quota. */
const ACTIVE = ['pending', 'running'];

/**
 * Provisioning records and their life: pending → running | failed, then deprovisioned. The quota
 * check and the insert happen under a lock on the workspace row, so two concurrent requests can
 * never both take the last slot. The deploy runs after the commit; its outcome is written together
 * with the provision.running / provision.failed event.
 */
export class Provisioner {
  private readonly inflight = new Set<Promise<void>>();

  /** `driver` null: provisioning is off (PROVISION_DRIVER=local without PROVISION_LOCAL_ENABLED). */
  constructor(
    private readonly pool: Pool,
    private readonly driver: ProvisionDriver | null,
    private readonly box: SecretBox,
    private readonly log: Logger,
  ) {}

  async create(
    workspaceId: string,
    service: string,
    customerId: string,
    config: Record<string, string>,
  ): Promise<ProvisionRow> {
    const driver = this.enabledDriver();
    const entry = CATALOG[service];
    if (entry === undefined)
      throw new ApiError(
        'invalid_field',
        `unknown service ${service}; the catalog has: ${Object.keys(CATALOG).join(', ')}`,
        'service',
      );
    checkConfig(entry, config);
    const row = await inTransaction(this.pool, async (c) => {
      const { rows: ws } = await c.query<{ plan: Plan; slug: string }>(
        'SELECT plan, slug FROM workspaces WHERE id = $1 FOR UPDATE',
        [workspaceId],
      );
      if (ws.length === 0) throw new ApiError('workspace_not_found', `no workspace ${workspaceId}`);
      const host = driver.hostOf({ customerId, service: entry, workspaceSlug: ws[0]!.slug });
      const limit = PLAN_QUOTAS[ws[0]!.plan].handlers;
      if (limit !== null) {
        const { rows } = await c.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM provisions WHERE workspace_id = $1 AND status = ANY ($2)',
          [workspaceId, ACTIVE],
        );
        if (rows[0]!.n >= limit) {
          throw new ApiError(
            'plan_limit_exceeded',
            `the ${ws[0]!.plan} plan allows ${limit} handler${limit === 1 ? '' : 's'}; deprovision one or upgrade`,
          );
        }
      }
      try {
        const { rows } = await c.query<ProvisionRow>(
          `INSERT INTO provisions (id, workspace_id, service, customer_id, driver, status, config_enc, host, deploy_lease_until)
           VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, now() + make_interval(secs => $8)) RETURNING ${COLS}`,
          [
            newId('prv'),
            workspaceId,
            service,
            customerId,
            driver.name,
            this.box.seal(JSON.stringify(config)),
            host,
            DEPLOY_LEASE_SECONDS,
          ],
        );
        return rows[0]!;
      } catch (err) {
        if ((err as { constraint?: string }).constraint === 'provisions_host_key')
          throw new ApiError(
            'host_taken',
            `the host ${host} is already in use; choose another customer_id`,
            'customer_id',
          );
        throw err;
      }
    });
    this.track(this.run(row.id));
    return row;
  }

  async get(id: string): Promise<ProvisionRow | undefined> {
    const { rows } = await this.pool.query<ProvisionRow>(`SELECT ${COLS} FROM provisions WHERE id = $1`, [id]);
    return rows[0];
  }

  async list(workspaceId: string): Promise<ProvisionRow[]> {
    const { rows } = await this.pool.query<ProvisionRow>(
      `SELECT ${COLS} FROM provisions WHERE workspace_id = $1 ORDER BY created_at, id`,
      [workspaceId],
    );
    return rows;
  }

  /** The workspace's newest provision of `service` that is not deprovisioned (onboarding's second step). */
  async latest(
    workspaceId: string,
    service: string,
  ): Promise<Pick<ProvisionRow, 'id' | 'status' | 'url' | 'error'> | null> {
    const { rows } = await this.pool.query<Pick<ProvisionRow, 'id' | 'status' | 'url' | 'error'>>(
      `SELECT id, status, url, error FROM provisions WHERE workspace_id = $1 AND service = $2 AND status <> 'deprovisioned'
        ORDER BY created_at DESC LIMIT 1`,
      [workspaceId, service],
    );
    return rows[0] ?? null;
  }

  async deprovision(id: string): Promise<ProvisionRow> {
    const spec = await this.spec(id);
    if (spec === undefined) throw new ApiError('resource_not_found', `no provision ${id}`);
    // Without a driver nothing can be running: local children die with the process that ran them.
    await this.driver?.destroy(spec);
    const { rows } = await this.pool.query<ProvisionRow>(
      `UPDATE provisions SET status = 'deprovisioned', updated_at = now() WHERE id = $1 RETURNING ${COLS}`,
      [id],
    );
    return rows[0]!;
  }

  /**
   * Deploys left pending by a process that died before the outcome was written. With several
   * replicas, one that starts while another is still deploying must not deploy the same provision:
   * only provisions whose deploy lease ran out are taken, and taking one renews its lease.
   */
  async resume(): Promise<void> {
    if (this.driver === null) return;
    const { rows } = await this.pool.query<{ id: string }>(
      `UPDATE provisions SET deploy_lease_until = now() + make_interval(secs => $2)
        WHERE status = 'pending' AND driver = $1 AND (deploy_lease_until IS NULL OR deploy_lease_until <= now())
        RETURNING id`,
      [this.driver.name, DEPLOY_LEASE_SECONDS],
    );
    for (const r of rows) this.track(this.run(r.id));
  }

  /** Waits for deploys in flight (tests, shutdown). */
  async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  async close(): Promise<void> {
    await this.settle();
    await this.driver?.close();
  }

  private enabledDriver(): ProvisionDriver {
    if (this.driver === null) {
      throw new ApiError(
        'not_configured',
        'provisioning is off on this server: local provisioning runs only with PROVISION_LOCAL_ENABLED=true in development (npm start), otherwise set PROVISION_DRIVER=kubernetes',
      );
    }
    return this.driver;
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private async spec(id: string): Promise<DeploySpec | undefined> {
    const { rows } = await this.pool.query<{
      workspace_id: string;
      slug: string;
      service: string;
      customer_id: string;
      config_enc: string;
    }>(
      'SELECT p.workspace_id, w.slug, p.service, p.customer_id, p.config_enc FROM provisions p JOIN workspaces w ON w.id = p.workspace_id WHERE p.id = $1',
      [id],
    );
    const r = rows[0];
    if (r === undefined) return undefined;
    const service = CATALOG[r.service]!;
    const config = declaredConfig(service, JSON.parse(this.box.open(r.config_enc)) as Record<string, string>);
    return {
      provisionId: id,
      workspaceId: r.workspace_id,
      workspaceSlug: r.slug,
      customerId: r.customer_id,
      service,
      config,
    };
  }

  private async run(id: string): Promise<void> {
    const spec = await this.spec(id);
    if (spec === undefined) return;
    let url: string | null = null;
    let error: string | null = null;
    try {
      url = (await this.enabledDriver().deploy(spec)).url;
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      this.log.warn({ err, provision: id }, 'provisioning failed');
    }
    try {
      await inTransaction(this.pool, async (c) => {
        const { rows } = await c.query<ProvisionRow>(
          `UPDATE provisions SET status = $2, url = $3, error = $4, updated_at = now() WHERE id = $1 AND status = 'pending' RETURNING ${COLS}`,
          [id, error === null ? 'running' : 'failed', url, error],
        );
        const p = rows[0];
        if (p === undefined) return;
        const data = {
          provision: {
            id: p.id,
            service: p.service,
            customer_id: p.customer_id,
            status: p.status,
            url: p.url,
            error: p.error,
          },
        };
        await emitEvent(c, p.workspace_id, error === null ? 'provision.running' : 'provision.failed', data);
      });
    } catch (err) {
      this.log.error(
        { err, provision: id },
        'recording the provisioning outcome failed; it will be retried at the next start',
      );
    }
  }
}
