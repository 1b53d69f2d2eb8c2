import { ApiError, inTransaction, type Pool } from '@meterd/core';
import { OUTBOX_CHANNEL, insertDelivery } from './outbox.js';

/**
 * Webhook operations shared by the API (`/api/v1/workspaces/:id/webhooks…`) and the dashboard:
 * the routes differ in how they authenticate, not in what they do.
 */
export const ENDPOINT_COLS = 'id, url, description, events, status, consecutive_failures, disabled_at, created_at';

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
