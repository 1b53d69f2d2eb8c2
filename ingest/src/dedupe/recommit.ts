import { periodOf } from '@meterd/core/plans';
import type { Deduper } from './deduper.js';
import { compactRow, fromSpoolLine } from '../rows.js';

/** Rows held in memory at once while re-committing: bounds start-up memory for a large spool. */
const CHUNK = 5_000;

/**
 * A crash between the spool's fdatasync and the Redis commit leaves acknowledged events whose keys
 * are only pending and uncounted: when the claim expires, a retry would be stored a second time,
 * and the event would never count on its quota. At start, before the thread takes requests, every
 * unshipped spool row commits its key (and counts it) unless Redis already holds a stored row for it. Returns how many rows were looked at.
 */
export async function recommitUnshipped(lines: Iterable<string>, deduper: Deduper): Promise<number> {
  // Per workspace and the period of the claim (the row's received_at): the counter it counts on.
  let byWs = new Map<string, { ws: string; period: string; keys: string[]; rows: string[] }>();
  let buffered = 0;
  let seen = 0;
  const flush = async () => {
    for (const g of byWs.values()) await deduper.recommit(g.ws, g.period, g.keys, g.rows);
    byWs = new Map();
    buffered = 0;
  };
  for (const line of lines) {
    const row = fromSpoolLine(line);
    const period = periodOf(row.received_at_ms);
    const at = `${row.workspace_id}|${period}`;
    let g = byWs.get(at);
    if (g === undefined) byWs.set(at, (g = { ws: row.workspace_id, period, keys: [], rows: [] }));
    g.keys.push(`${row.event_type}:${row.idempotency_key}`);
    g.rows.push(compactRow(row));
    seen++;
    if (++buffered >= CHUNK) await flush();
  }
  await flush();
  return seen;
}
