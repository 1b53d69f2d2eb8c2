import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir } from './segments.js';

/** A row ClickHouse refused for its content, kept with the reason so an operator can fix and replay it. */
export interface QuarantinedRow {
  segment: number;
  /** Byte offset of the row in its segment. */
  offset: number;
  error: string;
  /** The spool line without its newline: a JSONEachRow row of the events table. */
  row: string;
}

export function quarantineDir(spoolDir: string): string {
  return join(spoolDir, 'quarantine');
}

/**
 * Appends rows to `quarantine/<segment>.ndjson` (one JSON object per line; replay with
 * `jq -c -r .row FILE | clickhouse-client --query 'INSERT INTO events FORMAT JSONEachRow'`) and
 * makes them durable before returning, since the caller then moves the checkpoint past them.
 * A crash before the checkpoint moves re-quarantines the same rows: readers dedupe on (segment, offset).
 */
export async function quarantineRows(spoolDir: string, rows: QuarantinedRow[]): Promise<string> {
  const dir = quarantineDir(spoolDir);
  const created = await mkdir(dir, { recursive: true });
  if (created !== undefined) syncDir(spoolDir);
  const path = join(dir, `${String(rows[0]!.segment).padStart(12, '0')}.ndjson`);
  const at = new Date().toISOString();
  let text = '';
  for (const r of rows)
    text +=
      JSON.stringify({ quarantined_at: at, segment: r.segment, offset: r.offset, error: r.error, row: r.row }) + '\n';
  const fh = await open(path, 'a');
  try {
    await fh.writeFile(text);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  // The file may be new: its name must be durable too.
  syncDir(dir);
  return path;
}
