import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit } from '@meterd/core/clickhouse';
import { ROLLUP_TABLE, parseChDateTime, type Granularity } from './granularity.js';
import { currentRollupsSql, dt } from './sql.js';

/** One rollup row as the API and reconcile see it. 64-bit totals stay decimal strings: exact. */
export interface RollupRow {
  workspace_id: string;
  event_type: string;
  currency: string;
  window_start: number;
  events: string;
  quantity: string;
  gmv_cents: string;
  first_event_at: number;
  last_event_at: number;
  late_events: string;
  version: string;
  computed_at: number;
}

export interface RollupFilter {
  workspaceId?: string;
  eventType?: string;
  /** Window starts in [from, to), epoch ms. */
  from: number;
  to: number;
}

export function rollupWhere(f: RollupFilter, timeColumn = 'window_start'): string {
  const parts = [`${timeColumn} >= ${dt(f.from)}`, `${timeColumn} < ${dt(f.to)}`];
  if (f.workspaceId !== undefined) parts.unshift(`workspace_id = ${lit(f.workspaceId)}`);
  if (f.eventType !== undefined) parts.push(`event_type = ${lit(f.eventType)}`);
  return parts.join(' AND ');
}

interface RawRow {
  [k: string]: string;
}

export async function readRollups(ch: ClickHouseClient, g: Granularity, f: RollupFilter): Promise<RollupRow[]> {
  let rows: RawRow[];
  try {
    const rs = await ch.query({ query: currentRollupsSql(ROLLUP_TABLE[g], rollupWhere(f)), format: 'JSONEachRow' });
    rows = await rs.json<RawRow>();
  } catch (err) {
    throw new ClickHouseQueryError(`reading ${ROLLUP_TABLE[g]}`, err);
  }
  return rows.map((r) => ({
    workspace_id: r.workspace_id!,
    event_type: r.event_type!,
    currency: r.currency!,
    window_start: parseChDateTime(r.window_start!),
    events: String(r.events),
    quantity: String(r.quantity),
    gmv_cents: String(r.gmv_cents),
    first_event_at: parseChDateTime(r.first_event_at!),
    last_event_at: parseChDateTime(r.last_event_at!),
    late_events: String(r.late_events),
    version: String(r.version),
    computed_at: parseChDateTime(r.computed_at!),
  }));
}
