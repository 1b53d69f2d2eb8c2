import { randomBytes } from 'node:crypto';
import { ApiError } from '@meterd/core/errors';
import { newId } from '@meterd/core/ids';
import { inTransaction, type Pool } from '@meterd/core/store';
import type { SecretBox } from '../crypto/secret-box.js';
import { OUTBOX_CHANNEL, insertDelivery } from '../webhooks/outbox.js';
import { checkResolvedHost, checkWebhookUrl } from '../webhooks/ssrf.js';

/** An endpoint as listed: never its secret. */
export interface EndpointView {
  id: string;
  url: string;
  description: string | null;
  events: string[] | null;
  status: string;
  consecutive_failures: number;
  disabled_at: string | null;
  created_at: string;
}

export interface DeliveryView {
  id: string;
  event_id: string;
  event: string;
  endpoint_id: string;
  status: string;
  attempts: number;
  next_attempt_at: string;
  last_status_code: number | null;
  last_latency_ms: number | null;
  last_error: string | null;
  created_at: string;
  completed_at: string | null;
}

export interface AttemptView {
  attempt: number;
  status_code: number | null;
  latency_ms: number | null;
  error: string | null;
  attempted_at: string;
}

export type DeliveryStatus = 'pending' | 'delivering' | 'succeeded' | 'failed';

const ENDPOINT_COLS = 'id, url, description, events, status, consecutive_failures, disabled_at, created_at';
const DELIVERIES = `SELECT d.id, d.event_id, e.event, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
  d.last_status_code, d.last_latency_ms, d.last_error, d.created_at, d.completed_at
  FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id`;

export interface WebhookPolicy {
  /** Endpoints a workspace may have (WEBHOOK_MAX_ENDPOINTS). */
  maxEndpoints: number;
  /** WEBHOOK_ALLOW_PRIVATE: development and tests deliver to local receivers. */
  allowPrivate: boolean;
}

/** Outgoing webhook endpoints of a workspace and their delivery log. */
export class WebhookService {
  constructor(
    private readonly pool: Pool,
    private readonly box: SecretBox,
    private readonly policy: WebhookPolicy,
  ) {}

  /**
   * Subscribes an endpoint; its whsec_ signing secret is in this answer only (stored sealed). The
   * count and the insert run under a lock on the workspace row, so concurrent requests cannot both
   * take the last place.
   */
  async create(
    workspaceId: string,
    e: { url: string; description: string | null; events: readonly string[] | null },
  ): Promise<EndpointView & { secret: string }> {
    const url = checkWebhookUrl(e.url, this.policy.allowPrivate);
    if (!this.policy.allowPrivate) await checkResolvedHost(url.hostname);
    const secret = `whsec_${randomBytes(32).toString('base64url')}`;
    const max = this.policy.maxEndpoints;
    const row = await inTransaction(this.pool, async (c) => {
      await c.query('SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE', [workspaceId]);
      const { rows: n } = await c.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM webhook_endpoints WHERE workspace_id = $1',
        [workspaceId],
      );
      if (n[0]!.n >= max)
        throw new ApiError(
          'endpoint_limit_exceeded',
          `a workspace may have ${max} webhook endpoints; delete one before adding another`,
        );
      const { rows } = await c.query<EndpointView>(
        `INSERT INTO webhook_endpoints (id, workspace_id, url, description, events, secret_enc) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${ENDPOINT_COLS}`,
        [newId('we'), workspaceId, url.toString(), e.description, e.events, this.box.seal(secret)],
      );
      return rows[0]!;
    });
    return { ...row, secret };
  }

  async list(workspaceId: string): Promise<EndpointView[]> {
    const { rows } = await this.pool.query<EndpointView>(
      `SELECT ${ENDPOINT_COLS} FROM webhook_endpoints WHERE workspace_id = $1 ORDER BY created_at, id`,
      [workspaceId],
    );
    return rows;
  }

  /** Deletes an endpoint; its pending deliveries go with it. */
  async remove(workspaceId: string, webhookId: string): Promise<void> {
    const { rowCount } = await this.pool.query('DELETE FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2', [
      webhookId,
      workspaceId,
    ]);
    if (rowCount === 0) throw notFound('webhook', webhookId);
  }

  /** Re-enables an endpoint disabled after five exhausted deliveries; its failure count starts over. */
  async reactivate(workspaceId: string, webhookId: string): Promise<EndpointView> {
    const { rows } = await this.pool.query<EndpointView>(
      `UPDATE webhook_endpoints SET status = 'active', consecutive_failures = 0, disabled_at = NULL
        WHERE id = $1 AND workspace_id = $2 RETURNING ${ENDPOINT_COLS}`,
      [webhookId, workspaceId],
    );
    if (rows.length === 0) throw notFound('webhook', webhookId);
    return rows[0]!;
  }

  /** The delivery log, newest first. */
  async deliveries(
    workspaceId: string,
    f: { endpointId?: string; status?: DeliveryStatus; limit: number },
  ): Promise<DeliveryView[]> {
    const { rows } = await this.pool.query<DeliveryView>(
      `${DELIVERIES}
        WHERE d.workspace_id = $1 AND ($2::text IS NULL OR d.endpoint_id = $2) AND ($3::text IS NULL OR d.status = $3)
        ORDER BY d.created_at DESC, d.id LIMIT $4`,
      [workspaceId, f.endpointId ?? null, f.status ?? null, f.limit],
    );
    return rows;
  }

  /** The newest deliveries, each with every attempt (status, latency, error). */
  async deliveriesWithAttempts(
    workspaceId: string,
    limit: number,
  ): Promise<(DeliveryView & { attempts_log: AttemptView[] })[]> {
    const rows = await this.deliveries(workspaceId, { limit });
    const attempts = await this.attemptsOf(rows.map((r) => r.id));
    return rows.map((r) => ({ ...r, attempts_log: attempts.get(r.id) ?? [] }));
  }

  async delivery(workspaceId: string, deliveryId: string): Promise<DeliveryView & { attempts_log: AttemptView[] }> {
    const { rows } = await this.pool.query<DeliveryView>(`${DELIVERIES} WHERE d.id = $1 AND d.workspace_id = $2`, [
      deliveryId,
      workspaceId,
    ]);
    if (rows.length === 0) throw notFound('delivery', deliveryId);
    const attempts = await this.attemptsOf([deliveryId]);
    return { ...rows[0]!, attempts_log: attempts.get(deliveryId) ?? [] };
  }

  /** Sends a delivery's event again to its endpoint, as a new delivery with its own log; returns its id. */
  async resend(workspaceId: string, deliveryId: string): Promise<string> {
    return inTransaction(this.pool, async (c) => {
      const { rows } = await c.query<{ event_id: string; endpoint_id: string }>(
        'SELECT event_id, endpoint_id FROM webhook_deliveries WHERE id = $1 AND workspace_id = $2',
        [deliveryId, workspaceId],
      );
      if (rows.length === 0) throw notFound('delivery', deliveryId);
      const id = await insertDelivery(c, rows[0]!.event_id, rows[0]!.endpoint_id, workspaceId);
      // Wakes the delivery worker at once instead of at its next poll.
      await c.query('SELECT pg_notify($1, $2)', [OUTBOX_CHANNEL, rows[0]!.event_id]);
      return id;
    });
  }

  private async attemptsOf(deliveryIds: string[]): Promise<Map<string, AttemptView[]>> {
    const { rows } = await this.pool.query<AttemptView & { delivery_id: string }>(
      `SELECT delivery_id, attempt, status_code, latency_ms, error, attempted_at FROM webhook_attempts
        WHERE delivery_id = ANY ($1) ORDER BY delivery_id, attempt`,
      [deliveryIds],
    );
    const by = new Map<string, AttemptView[]>();
    for (const { delivery_id, ...a } of rows) {
      const list = by.get(delivery_id);
      if (list === undefined) by.set(delivery_id, [a]);
      else list.push(a);
    }
    return by;
  }
}

function notFound(what: string, id: string): ApiError {
  return new ApiError('resource_not_found', `no ${what} ${id} in this workspace`);
}
