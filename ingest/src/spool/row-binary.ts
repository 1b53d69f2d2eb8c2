import {
  createRawInserter,
  EVENT_ROW_BINARY_COLUMNS,
  eventRowsToRowBinary,
  type EventRow,
  type RawInsertTarget,
} from '@meterd/core/clickhouse';
import { CH_TABLES } from '@meterd/core/contracts';
import { SpoolRowEncodingError } from './errors.js';
import type { InsertRows, ParsedLine } from './shipper.js';

/**
 * The events inserter ingest ships with: the spool keeps JSONEachRow lines (the shipper cuts,
 * bisects and quarantines by line, and parses each line once), and each insert goes out as
 * RowBinary, which costs ClickHouse less CPU per row than parsing JSON (bench/micro/insert-format.ts;
 * README "Performance").
 */
export function createEventsInserter(t: RawInsertTarget): InsertRows {
  const post = createRawInserter(t, CH_TABLES.events, EVENT_ROW_BINARY_COLUMNS, 'RowBinary');
  return (_lines, rows) => post(parsedRowsToRowBinary(rows));
}

/**
 * The shipper's parsed lines as one RowBinary body. A line that was not JSON, or a row that cannot
 * be encoded, refuses the whole body the way ClickHouse refuses an unparsable row.
 */
export function parsedRowsToRowBinary(rows: readonly ParsedLine[]): Buffer {
  for (const r of rows) if (r instanceof SpoolRowEncodingError) throw r;
  try {
    return eventRowsToRowBinary(rows as readonly EventRow[]);
  } catch (err) {
    throw new SpoolRowEncodingError(err);
  }
}
