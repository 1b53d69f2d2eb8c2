import type { Deduper } from './deduper.js';
import { compactRow, fromSpoolLine } from '../rows.js';

/** Rows held in memory at once while re-committing: bounds start-up memory for a large spool. */
const CHUNK = 5_000;

/**
 * A crash between the spool's fdatasync and the Redis commit leaves acknowledged events whose keys
 * are only pending: when the claim expires, a retry would be stored (and counted against the quota)
 * a second time. At start, before the thread takes requests, every unshipped spool row commits its
 * key unless Redis already holds a stored row for it. Returns how many rows were looked at.
 */
export async function recommitUnshipped(lines: Iterable<string>, deduper: Deduper): Promise<number> {
  let byWs = new Map<string, { keys: string[]; rows: string[] }>();
  let buffered = 0;
  let seen = 0;
  const flush = async () => {
    for (const [ws, g] of byWs) await deduper.recommit(ws, g.keys, g.rows);
    byWs = new Map();
    buffered = 0;
  };
  for (const line of lines) {
    const row = fromSpoolLine(line);
    let g = byWs.get(row.workspace_id);
    if (g === undefined) byWs.set(row.workspace_id, (g = { keys: [], rows: [] }));
    g.keys.push(`${row.event_type}:${row.idempotency_key}`);
    g.rows.push(compactRow(row));
    seen++;
    if (++buffered >= CHUNK) await flush();
  }
  await flush();
  return seen;
}
