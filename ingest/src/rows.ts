import { formatRfc3339, toClickHouseDateTime, type MeterEvent } from '@meterd/core';

/** An accepted event as stored and as returned to the client. */
export interface StoredRow {
  id: string;
  workspace_id: string;
  event_type: string;
  quantity: number;
  gmv_cents: number;
  currency: string;
  idempotency_key: string;
  occurred_at_ms: number;
  received_at_ms: number;
}

// DateTime text is cached per second: within one second every event shares the received_at text,
// and most occurred_at values fall in the last few seconds (bench/micro/rows.ts).
let lastSec = -1;
let lastText = '';
function chTime(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec === lastSec) return lastText;
  const t = toClickHouseDateTime(sec * 1000);
  if (ms >= Date.now() - 60_000) {
    lastSec = sec;
    lastText = t;
  }
  return t;
}

/**
 * One spool line = one JSONEachRow row of the `events` table. Ids, event types, workspace ids and
 * currencies are validated to characters that need no JSON escaping; only the idempotency key is
 * free text and goes through JSON.stringify.
 */
export function spoolLine(r: StoredRow): string {
  return `{"workspace_id":"${r.workspace_id}","event_type":"${r.event_type}","idempotency_key":${JSON.stringify(r.idempotency_key)},"event_id":"${r.id}","quantity":${r.quantity},"gmv_cents":${r.gmv_cents},"currency":"${r.currency}","occurred_at":"${chTime(r.occurred_at_ms)}","received_at":"${chTime(r.received_at_ms)}"}\n`;
}

export function toRow(e: MeterEvent, id: string, receivedMs: number): StoredRow {
  return {
    id,
    workspace_id: e.workspace_id,
    event_type: e.event_type,
    quantity: e.quantity,
    gmv_cents: e.gmv_cents,
    currency: e.currency,
    idempotency_key: e.idempotency_key,
    occurred_at_ms: Math.floor(e.occurred_at_ms / 1000) * 1000,
    received_at_ms: receivedMs,
  };
}

/**
 * What Redis keeps per idempotency key for the dedupe window: just the fields the triple does not
 * already give, `id|quantity|gmv|currency|occurred_s|received_s` (~60 bytes; the figure per key is
 * measured in ingest/test/dedupe-memory.test.ts).
 */
export function compactRow(r: StoredRow): string {
  return `${r.id}|${r.quantity}|${r.gmv_cents}|${r.currency}|${r.occurred_at_ms / 1000}|${Math.floor(r.received_at_ms / 1000)}`;
}

export function expandRow(workspaceId: string, eventType: string, idempotencyKey: string, compact: string): StoredRow {
  const [id, q, g, c, o, r] = compact.split('|');
  return {
    id: id!, workspace_id: workspaceId, event_type: eventType, idempotency_key: idempotencyKey,
    quantity: Number(q), gmv_cents: Number(g), currency: c!, occurred_at_ms: Number(o) * 1000, received_at_ms: Number(r) * 1000,
  };
}

/** The 202 body of POST /api/v1/meter. */
export function rowJson(r: StoredRow, duplicate: boolean): string {
  return `{"id":"${r.id}","workspace_id":"${r.workspace_id}","event_type":"${r.event_type}","quantity":${r.quantity},"gmv_cents":${r.gmv_cents},"currency":"${r.currency}","idempotency_key":${JSON.stringify(r.idempotency_key)},"occurred_at":"${formatRfc3339(r.occurred_at_ms)}","received_at":"${formatRfc3339(r.received_at_ms)}","duplicate":${duplicate}}`;
}
