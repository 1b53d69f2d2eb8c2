import { createHash } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError } from './client.js';
import { CH_TABLES } from '../contracts/tables.js';
import { createRawInserter, type RawInsertTarget } from './raw-insert.js';
import type { MeterPartial } from '../meters/partials.js';

/**
 * The record of a shipped batch (infra/clickhouse/004_events_time_key.sql), the aggregator's only
 * source of "what changed": a partial per (workspace, hour, event_type, currency) in
 * `event_batches`, and the batch's (workspace, hour) windows in `event_windows`. Written after the
 * batch's events and before the shipper's checkpoint moves: a crash anywhere in between ships the
 * batch again and writes the same record again, so a window is never lost and a replay collapses
 * (same batch id, same or later attempt; readers keep the latest attempt of a batch id).
 */

/** An `events` row as ingest's spool holds it (JSONEachRow, DateTimes as `YYYY-MM-DD hh:mm:ss`). */
export interface EventRow {
  workspace_id: string;
  event_type: string;
  idempotency_key: string;
  event_id: string;
  quantity: number;
  gmv_cents: number;
  currency: string;
  occurred_at: string;
  received_at: string;
  /** The event's properties as parallel arrays (absent: none; the columns default to []). */
  prop_keys?: string[];
  prop_values?: string[];
}

export interface BatchPartial {
  workspace_id: string;
  window_start: string;
  batch_id: string;
  event_type: string;
  currency: string;
  events: number;
  quantity: string;
  gmv_cents: string;
  first_event_at: string;
  last_event_at: string;
  attempt: number;
}

export interface BatchWindow {
  workspace_id: string;
  window_start: string;
  batch_id: string;
  attempt: number;
}

export interface BatchRecord {
  partials: BatchPartial[];
  windows: BatchWindow[];
  /** The batch's partials per meter (core/meters), written like `partials`: before the windows. */
  meters?: readonly MeterPartial[];
}

/** The hour a row's occurred_at falls in, as a ClickHouse DateTime: the window_start of its partials. */
export function hourOf(r: Pick<EventRow, 'occurred_at'>): string {
  return `${r.occurred_at.slice(0, 13)}:00:00`;
}

/**
 * The record of one batch. Copies of a triple inside the batch count once (the earliest received;
 * the same-second tie the server breaks by an event-id hash is taken in batch order here: partials
 * only feed the open hour, which is recomputed exactly from `events` when it closes). Sums are
 * BigInt: a batch of 50k rows of up to 2^53 each passes 2^53.
 */
export function batchRecord(batchId: string, attempt: number, rows: Iterable<EventRow>): BatchRecord {
  return batchRecordOf(batchId, attempt, batchWinners(rows));
}

/** One copy per triple of a batch: the earliest received, ties in batch order (see batchRecord). */
export function batchWinners(rows: Iterable<EventRow>): EventRow[] {
  const winners = new Map<string, EventRow>();
  for (const r of rows) {
    const k = `${r.workspace_id}\n${r.event_type}\n${r.idempotency_key}`;
    const prev = winners.get(k);
    if (prev === undefined || r.received_at < prev.received_at) winners.set(k, r);
  }
  return [...winners.values()];
}

/** The record of a batch's winners (batchWinners). */
export function batchRecordOf(batchId: string, attempt: number, winners: Iterable<EventRow>): BatchRecord {
  const acc = new Map<string, { p: BatchPartial; q: bigint; g: bigint }>();
  for (const r of winners) {
    const hour = hourOf(r);
    const k = `${r.workspace_id}\n${hour}\n${r.event_type}\n${r.currency}`;
    let a = acc.get(k);
    if (a === undefined) {
      a = {
        p: {
          workspace_id: r.workspace_id,
          window_start: hour,
          batch_id: batchId,
          event_type: r.event_type,
          currency: r.currency,
          events: 0,
          quantity: '0',
          gmv_cents: '0',
          first_event_at: r.occurred_at,
          last_event_at: r.occurred_at,
          attempt,
        },
        q: 0n,
        g: 0n,
      };
      acc.set(k, a);
    }
    a.p.events++;
    a.q += BigInt(r.quantity);
    a.g += BigInt(r.gmv_cents);
    if (r.occurred_at < a.p.first_event_at) a.p.first_event_at = r.occurred_at;
    if (r.occurred_at > a.p.last_event_at) a.p.last_event_at = r.occurred_at;
  }
  const partials: BatchPartial[] = [];
  const windows = new Map<string, BatchWindow>();
  for (const { p, q, g } of acc.values()) {
    p.quantity = q.toString();
    p.gmv_cents = g.toString();
    partials.push(p);
    windows.set(`${p.workspace_id}\n${p.window_start}`, {
      workspace_id: p.workspace_id,
      window_start: p.window_start,
      batch_id: batchId,
      attempt,
    });
  }
  return { partials, windows: [...windows.values()] };
}

/** Every column but inserted_at, which the server stamps with its own clock (DEFAULT now()). */
const WINDOW_COLUMNS = ['workspace_id', 'window_start', 'batch_id', 'attempt'] as const;

/** Writes a batch's record: partials first, so the aggregator finds them when it reads the windows. */
export type RecordBatch = (record: BatchRecord) => Promise<void>;

/** The recorder ingest's shipper uses: two JSONEachRow POSTs, like its events insert. */
export function createBatchRecorder(t: RawInsertTarget): RecordBatch {
  const partials = createRawInserter(t, CH_TABLES.eventBatches);
  const windows = createRawInserter(t, CH_TABLES.eventWindows, WINDOW_COLUMNS);
  const meters = createRawInserter(t, CH_TABLES.meterBatches);
  return async (rec) => {
    if (rec.windows.length === 0) return;
    // Both before the windows that point the aggregator at them; neither depends on the other.
    await Promise.all([
      partials(jsonLines(rec.partials)),
      rec.meters === undefined || rec.meters.length === 0 ? undefined : meters(jsonLines(rec.meters)),
    ]);
    await windows(jsonLines(rec.windows));
  };
}

/** The same record through a client (tests and tools that insert events themselves). */
export async function recordBatchWith(ch: ClickHouseClient, rec: BatchRecord): Promise<void> {
  if (rec.windows.length === 0) return;
  try {
    await ch.insert({ table: CH_TABLES.eventBatches, values: rec.partials, format: 'JSONEachRow' });
    await ch.insert({
      table: CH_TABLES.eventWindows,
      values: rec.windows,
      format: 'JSONEachRow',
      columns: [...WINDOW_COLUMNS],
    });
  } catch (err) {
    throw new ClickHouseQueryError(`recording batch ${rec.windows[0]!.batch_id}`, err);
  }
}

/**
 * Inserts rows into `events` and records them as one batch, as ingest's shipper does, for tools and
 * tests that write events themselves. The batch id defaults to a hash of the rows, so inserting the
 * same rows again is a replay of the same batch; a shipper's replay after a crash may also reach
 * further (the same id, a later attempt, a superset of the rows).
 */
export async function insertEventBatch(
  ch: ClickHouseClient,
  rows: readonly EventRow[],
  batch?: { id: string; attempt: number },
  /** Runs between the events and the record, as the shipper's meter partials do (core/meters). */
  beforeRecord?: (batchId: string, attempt: number, winners: readonly EventRow[]) => Promise<void>,
): Promise<void> {
  if (rows.length === 0) return;
  try {
    await ch.insert({ table: 'events', values: rows, format: 'JSONEachRow' });
  } catch (err) {
    throw new ClickHouseQueryError(`inserting ${rows.length} events`, err);
  }
  const id = batch?.id ?? `sha256:${createHash('sha256').update(JSON.stringify(rows)).digest('hex').slice(0, 32)}`;
  const winners = batchWinners(rows);
  await beforeRecord?.(id, batch?.attempt ?? 0, winners);
  await recordBatchWith(ch, batchRecordOf(id, batch?.attempt ?? 0, winners));
}

function jsonLines(rows: readonly object[]): Buffer {
  let s = '';
  for (const r of rows) s += `${JSON.stringify(r)}\n`;
  return Buffer.from(s);
}
