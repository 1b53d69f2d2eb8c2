import { ApiError, inTransaction, newId, type Pool } from '@meterd/core';
import { OUTBOX_CHANNEL, insertDelivery } from './outbox.js';

/**
 * Webhook operations shared by the API (`/api/v1/workspaces/:id/webhooks…`) and the dashboard:
 * the routes differ in how they authenticate, not in what they do.
 */
export const ENDPOINT_COLS = 'id, url, description, events, status, consecutive_failures, disabled_at, created_at';

export interface NewEndpoint {
  url: string;
  description: string | null;
  events: string[] | null;
  secretEnc: string;
}

/**
 * Subscribes an endpoint unless the workspace already has `max`. The count and the insert run
 * under a lock on the workspace row, so concurrent requests cannot both take the last place.
 */
export async function createEndpoint<Row>(pool: Pool, workspaceId: string, e: NewEndpoint, max: number): Promise<Row> {
  return inTransaction(pool, async (c) => {
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
    const { rows } = await c.query(
      `INSERT INTO webhook_endpoints (id, workspace_id, url, description, events, secret_enc) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${ENDPOINT_COLS}`,
      [newId('we'), workspaceId, e.url, e.description, e.events, e.secretEnc],
    );
    return rows[0] as Row;
  });
}

/** Re-enables an endpoint disabled after five exhausted deliveries; its failure count starts over. */
export async function reactivateEndpoint<Row>(pool: Pool, workspaceId: string, webhookId: string): Promise<Row> {
  const { rows } = await pool.query(
    `UPDATE webhook_endpoints SET status = 'active', consecutive_failures = 0, disabled_at = NULL
      WHERE id = $1 AND workspace_id = $2 RETURNING ${ENDPOINT_COLS}`,
    [webhookId, workspaceId],
  );
  if (rows.length === 0) throw new ApiError('resource_not_found', `no webhook ${webhookId} in this workspace`);
  return rows[0] as Row;
}

/** Sends a delivery's event again to its endpoint, as a new delivery with its own log; returns its id. */
export async function resendDelivery(pool: Pool, workspaceId: string, deliveryId: string): Promise<string> {
  return inTransaction(pool, async (c) => {
    const { rows } = await c.query<{ event_id: string; endpoint_id: string }>(
      'SELECT event_id, endpoint_id FROM webhook_deliveries WHERE id = $1 AND workspace_id = $2',
      [deliveryId, workspaceId],
    );
    if (rows.length === 0) throw new ApiError('resource_not_found', `no delivery ${deliveryId} in this workspace`);
    const id = await insertDelivery(c, rows[0]!.event_id, rows[0]!.endpoint_id, workspaceId);
    // Wakes the delivery worker at once instead of at its next poll.
    await c.query('SELECT pg_notify($1, $2)', [OUTBOX_CHANNEL, rows[0]!.event_id]);
    return id;
  });
}
