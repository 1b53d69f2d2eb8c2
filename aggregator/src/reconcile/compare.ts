import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit } from '@meterd/core/clickhouse';
import { formatRfc3339 } from '@meterd/core/event';
import { GRANULARITIES, bucketSql, parseChDateTime, type Granularity } from '../rollups/granularity.js';
import { readRollups, type RollupRow } from '../rollups/read.js';
import { dt, totalsFromEventsSql } from '../rollups/sql.js';

export interface ReconcileScope {
  /** undefined: every workspace. */
  workspaceId?: string;
  /** Window starts in [from, to). */
  from: number;
  to: number;
  closeAfterSeconds: number;
  /** Copies of a triple are compared within [from − this, to + this) (AGGREGATOR_COPY_HORIZON_SECONDS). */
  copyHorizonSeconds: number;
}

export interface Difference {
  granularity: Granularity;
  key: string;
  field: string;
  expected: string;
  actual: string;
}

const FIELDS = ['events', 'quantity', 'gmv_cents', 'first_event_at', 'last_event_at', 'late_events'] as const;
type Totals = Record<(typeof FIELDS)[number], string>;

/**
 * Recomputes every granularity straight from the distinct raw events (days and months too, not
 * from the hours, so that a wrong hour cannot hide in a matching day) and lists each difference
 * with the current rollup rows. A key present on one side only is a difference of every field.
 */
export async function reconcile(ch: ClickHouseClient, scope: ReconcileScope): Promise<Difference[]> {
  const out: Difference[] = [];
  for (const g of GRANULARITIES) {
    const [expected, actual] = await Promise.all([expectedTotals(ch, g, scope), readRollups(ch, g, scope)]);
    const got = new Map(
      actual.map((r) => [keyOf(r.workspace_id, r.event_type, r.currency, r.window_start), totalsOf(r)]),
    );
    for (const [key, want] of expected) {
      const have = got.get(key);
      got.delete(key);
      for (const f of FIELDS) {
        const a = have?.[f] ?? '(missing)';
        if (a !== want[f]) out.push({ granularity: g, key, field: f, expected: want[f], actual: a });
      }
    }
    for (const [key, have] of got) {
      // A recompute that finds no event left for a key writes it as 0 (it cannot delete a row).
      if (have.events === '0') continue;
      // A rollup row for a window with no distinct events left.
      for (const f of FIELDS) out.push({ granularity: g, key, field: f, expected: '(missing)', actual: have[f] });
    }
  }
  return out;
}

async function expectedTotals(ch: ClickHouseClient, g: Granularity, s: ReconcileScope): Promise<Map<string, Totals>> {
  const inRange = (t: string): string => `${bucketSql(g, t)} >= ${dt(s.from)} AND ${bucketSql(g, t)} < ${dt(s.to)}`;
  const ws = s.workspaceId === undefined ? [] : [`workspace_id = ${lit(s.workspaceId)}`];
  const where = [...ws, inRange('occurred_at')].join(' AND ');
  const pad = s.copyHorizonSeconds * 1000;
  const scope = [...ws, `occurred_at >= ${dt(Math.max(0, s.from - pad))} AND occurred_at < ${dt(s.to + pad)}`].join(
    ' AND ',
  );
  let rows: Record<string, string>[];
  try {
    const rs = await ch.query({
      query: totalsFromEventsSql(g, where, inRange, s.closeAfterSeconds, scope),
      format: 'JSONEachRow',
    });
    rows = await rs.json();
  } catch (err) {
    throw new ClickHouseQueryError(`recomputing ${g} totals from events`, err);
  }
  return new Map(
    rows.map((r) => [
      keyOf(r.workspace_id!, r.event_type!, r.cur!, parseChDateTime(r.bucket!)),
      {
        events: String(r.n),
        quantity: String(r.qs),
        gmv_cents: String(r.gs),
        first_event_at: formatRfc3339(parseChDateTime(r.fo!)),
        last_event_at: formatRfc3339(parseChDateTime(r.lo!)),
        late_events: String(r.late),
      },
    ]),
  );
}

/** A rollup row's totals as text (64-bit sums stay strings; times RFC 3339), as reconcile compares them. */
export function totalsOf(r: RollupRow): Totals {
  return {
    events: r.events,
    quantity: r.quantity,
    gmv_cents: r.gmv_cents,
    first_event_at: formatRfc3339(r.first_event_at),
    last_event_at: formatRfc3339(r.last_event_at),
    late_events: r.late_events,
  };
}

function keyOf(ws: string, et: string, cur: string, start: number): string {
  return `${ws} ${et} ${cur} ${formatRfc3339(start)}`;
}
