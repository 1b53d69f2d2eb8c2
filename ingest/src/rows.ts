import { toClickHouseDateTime } from '@meterd/core/clickhouse';
import { formatRfc3339, type MeterEvent, type StoredEvent } from '@meterd/core/event';

/**
 * Per-second text caches. Formatting a date costs ~1 µs; every event needs two ClickHouse
 * DateTimes and two RFC 3339 strings, and nearly all fall in a handful of recent seconds.
 * bench/micro/rows.ts measured spoolLine at ~1,190 ns/event with one shared entry (received_at and
 * occurred_at evicting each other) against ~115 ns with a 64-entry table indexed by second.
 */
class SecondCache {
  private readonly secs = new Float64Array(64).fill(-1);
  private readonly texts: string[] = new Array<string>(64).fill('');
  constructor(private readonly format: (ms: number) => string) {}
  get(ms: number): string {
    const sec = Math.floor(ms / 1000);
    const i = sec & 63;
    if (this.secs[i] === sec) return this.texts[i]!;
    const t = this.format(sec * 1000);
    this.secs[i] = sec;
    this.texts[i] = t;
    return t;
  }
}

const chTime = new SecondCache(toClickHouseDateTime);
const rfcTime = new SecondCache(formatRfc3339);

/**
 * One spool line = one JSONEachRow row of the `events` table. Ids, event types, workspace ids and
 * currencies are validated to characters that need no JSON escaping; only the idempotency key is
 * free text and goes through JSON.stringify.
 */
export function spoolLine(r: StoredEvent): string {
  const head = `{"workspace_id":"${r.workspace_id}","event_type":"${r.event_type}","idempotency_key":${JSON.stringify(r.idempotency_key)},"event_id":"${r.id}","quantity":${r.quantity},"gmv_cents":${r.gmv_cents},"currency":"${r.currency}","occurred_at":"${chTime.get(r.occurred_at_ms)}","received_at":"${chTime.get(r.received_at_ms)}"`;
  // Properties only when the event has some: JSONEachRow fills omitted columns with their default
  // (empty arrays), so an event without them keeps the line it always had.
  if (r.prop_keys === undefined) return `${head}}\n`;
  return `${head},"prop_keys":${JSON.stringify(r.prop_keys)},"prop_values":${JSON.stringify(r.prop_values)}}\n`;
}

export function toRow(e: MeterEvent, id: string, receivedMs: number): StoredEvent {
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
    prop_keys: e.prop_keys,
    prop_values: e.prop_values,
  };
}

/**
 * What Redis keeps per idempotency key for the dedupe window: just the fields the triple does not
 * already give, `id|quantity|gmv|currency|occurred_s|received_s` (~60 bytes; the figure per key is
 * measured in ingest/test/dedupe-memory.test.ts).
 */
export function compactRow(r: StoredEvent): string {
  return `${r.id}|${r.quantity}|${r.gmv_cents}|${r.currency}|${r.occurred_at_ms / 1000}|${Math.floor(r.received_at_ms / 1000)}`;
}

export function expandRow(
  workspaceId: string,
  eventType: string,
  idempotencyKey: string,
  compact: string,
): StoredEvent {
  const [id, q, g, c, o, r] = compact.split('|');
  return {
    id: id!,
    workspace_id: workspaceId,
    event_type: eventType,
    idempotency_key: idempotencyKey,
    quantity: Number(q),
    gmv_cents: Number(g),
    currency: c!,
    occurred_at_ms: Number(o) * 1000,
    received_at_ms: Number(r) * 1000,
  };
}

/** The 202 body of POST /api/v1/meter. */
export function rowJson(r: StoredEvent, duplicate: boolean): string {
  return `{"id":"${r.id}","workspace_id":"${r.workspace_id}","event_type":"${r.event_type}","quantity":${r.quantity},"gmv_cents":${r.gmv_cents},"currency":"${r.currency}","idempotency_key":${JSON.stringify(r.idempotency_key)},"occurred_at":"${rfcTime.get(r.occurred_at_ms)}","received_at":"${rfcTime.get(r.received_at_ms)}","duplicate":${duplicate}}`;
}

/** The row a spool line holds (the inverse of spoolLine), for re-committing dedupe keys at start. */
export function fromSpoolLine(line: string): StoredEvent {
  const r = JSON.parse(line) as Record<string, string | number>;
  return {
    id: String(r.event_id),
    workspace_id: String(r.workspace_id),
    event_type: String(r.event_type),
    idempotency_key: String(r.idempotency_key),
    quantity: Number(r.quantity),
    gmv_cents: Number(r.gmv_cents),
    currency: String(r.currency),
    occurred_at_ms: Date.parse(`${String(r.occurred_at).replace(' ', 'T')}Z`),
    received_at_ms: Date.parse(`${String(r.received_at).replace(' ', 'T')}Z`),
  };
}
