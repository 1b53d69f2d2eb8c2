import { newEventId, newId } from '@meterd/core/ids';
import { type PoolClient } from '@meterd/core/store';

/** Every event the platform emits (listed in docs/api.md). */
export const EVENT_TYPES = [
  'workspace.signup',
  'shopify.connected',
  'provision.running',
  'provision.failed',
  'meter.quota.warning',
  'meter.threshold.reached',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Channel the delivery workers LISTEN on; NOTIFY is delivered only when the emitting transaction commits. */
export const OUTBOX_CHANNEL = 'meterd_outbox';

/**
 * Records an event in the outbox inside the caller's transaction, together with one pending
 * delivery per active endpoint of the workspace subscribed to it. Because it commits or rolls back
 * with its cause, an event exists exactly when its cause does, and a crash after the commit loses
 * nothing: the worker finds the pending rows whenever it next runs.
 */
export async function emitEvent(
  c: PoolClient,
  workspaceId: string,
  event: EventType,
  data: Record<string, unknown>,
): Promise<string> {
  const id = newEventId();
  const createdAt = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  const body = JSON.stringify({ id, event, workspace_id: workspaceId, created_at: createdAt, data });
  await c.query('INSERT INTO outbox_events (id, workspace_id, event, body, created_at) VALUES ($1, $2, $3, $4, $5)', [
    id,
    workspaceId,
    event,
    body,
    createdAt,
  ]);
  const { rows: endpoints } = await c.query<{ id: string }>(
    `SELECT id FROM webhook_endpoints
      WHERE workspace_id = $1 AND status = 'active' AND (events IS NULL OR $2 = ANY (events))`,
    [workspaceId, event],
  );
  for (const e of endpoints) await insertDelivery(c, id, e.id, workspaceId);
  if (endpoints.length > 0) await c.query('SELECT pg_notify($1, $2)', [OUTBOX_CHANNEL, id]);
  return id;
}

export async function insertDelivery(
  c: PoolClient,
  eventId: string,
  endpointId: string,
  workspaceId: string,
): Promise<string> {
  const id = newId('dlv');
  await c.query('INSERT INTO webhook_deliveries (id, event_id, endpoint_id, workspace_id) VALUES ($1, $2, $3, $4)', [
    id,
    eventId,
    endpointId,
    workspaceId,
  ]);
  return id;
}
