import {
  createRawInserter,
  EVENT_ROW_BINARY_COLUMNS,
  eventRowsToRowBinary,
  type EventRow,
  type RawInsertTarget,
} from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { SpoolRowEncodingError } from './errors.js';
import type { InsertRows } from './shipper.js';

/**
 * The events inserter ingest ships with: the spool keeps JSONEachRow lines (the shipper cuts,
 * bisects and quarantines by line), and each insert goes out as RowBinary, which costs ClickHouse
 * less CPU per row than parsing JSON (bench/micro/insert-format.ts; README "Performance").
 */
export function createEventsInserter(t: RawInsertTarget): InsertRows {
  const post = createRawInserter(t, CH_TABLES.events, EVENT_ROW_BINARY_COLUMNS, 'RowBinary');
  return (body) => post(spoolLinesToRowBinary(body));
}

/** Spool lines (JSONEachRow, one row per line) as one RowBinary body of the same rows. */
export function spoolLinesToRowBinary(body: Buffer): Buffer {
  const rows: EventRow[] = [];
  try {
    for (let start = 0; start < body.length;) {
      const nl = body.indexOf(10, start);
      const stop = nl === -1 ? body.length : nl;
      if (stop > start) rows.push(JSON.parse(body.toString('utf8', start, stop)) as EventRow);
      start = stop + 1;
    }
    return eventRowsToRowBinary(rows);
  } catch (err) {
    throw new SpoolRowEncodingError(err);
  }
}
