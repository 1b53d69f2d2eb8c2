import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError } from '../clickhouse/client.js';
import { batchRecordOf, type BatchRecord, type EventRow } from '../clickhouse/batches.js';
import { CH_TABLES } from '../contracts/tables.js';
import type { MeterCatalog } from './catalog.js';
import type { MeterDefinition } from './definition.js';
import { byteCompare, foldMeterPartials } from './fold.js';

/**
 * A shipped batch's partials per meter (`meter_batches`, infra/clickhouse/006_meters.sql): what an
 * open hour of a meter is summed from, as `event_batches` is for the built-in rollups. Written by
 * the shipper after the batch's events and before its `event_windows` record (the aggregator finds
 * a window through that record, so its partials are in place by then). A replay writes the same
 * batch id with an attempt at least as far: readers keep the latest attempt. Cost: one pass over
 * the batch's winners, each row doing the work of its bucket's meters of its event type (fold.ts);
 * next to nothing for a row whose bucket has no meter.
 */
export interface MeterPartial {
  workspace_id: string;
  window_start: string;
  meter_id: string;
  batch_id: string;
  currency: string;
  group_values: string[];
  events: number;
  values_n: number;
  value_sum: string;
  value_max: string;
  latest_at: string;
  latest_key: string;
  latest_value: string;
  uniq_values: string[];
  skipped: number;
  attempt: number;
}

/**
 * The partials of a batch's winners (one copy per triple: core's batchWinners). The latest value is
 * the one with the greatest (occurred_at, event_type, idempotency_key), compared as ClickHouse
 * compares them (bytes of UTF-8), the order the exact recompute uses. Runs on ingest's shipper
 * thread for every ship round: fold.ts says how it is kept cheap.
 */
export const meterPartials: (
  batchId: string,
  attempt: number,
  winners: Iterable<EventRow>,
  meters: ReadonlyMap<string, readonly MeterDefinition[]>,
) => MeterPartial[] = foldMeterPartials;

export { byteCompare };

/** The same through a client (tests and tools that insert events themselves). */
export async function recordMeterPartialsWith(ch: ClickHouseClient, partials: readonly MeterPartial[]): Promise<void> {
  if (partials.length === 0) return;
  try {
    await ch.insert({ table: CH_TABLES.meterBatches, values: partials, format: 'JSONEachRow' });
  } catch (err) {
    throw new ClickHouseQueryError(`recording the meter partials of batch ${partials[0]!.batch_id}`, err);
  }
}

/** What ingest's shipper adds to a batch's record (core's BatchRecord.meters). */
export type MeterPartialsOf = (
  batchId: string,
  attempt: number,
  winners: readonly EventRow[],
) => Promise<MeterPartial[]>;

/** The meters of the batch's buckets (cached: MeterCatalog) and their partials; none without meters. */
export function meterPartialsFor(catalog: MeterCatalog): MeterPartialsOf {
  return async (batchId, attempt, winners) => {
    const buckets = new Set<string>();
    for (const r of winners) buckets.add(r.workspace_id);
    return meterPartials(batchId, attempt, winners, await catalog.forBuckets(buckets));
  };
}

/**
 * The whole record of a batch's winners (core's batchWinners): the built-in partials and windows,
 * and the meters' partials when `partialsOf` is given. What every path that writes `events` for
 * ingest records, the spool's shipper and INGEST_ACK=clickhouse alike: a path that left the meters
 * out would leave the meters' open hours short until they close.
 */
export async function batchRecordWithMeters(
  batchId: string,
  attempt: number,
  winners: readonly EventRow[],
  partialsOf: MeterPartialsOf | undefined,
): Promise<BatchRecord> {
  const rec = batchRecordOf(batchId, attempt, winners);
  if (partialsOf !== undefined) rec.meters = await partialsOf(batchId, attempt, winners);
  return rec;
}
