import type { ClickHouseClient } from '@clickhouse/client';
import { insertEventBatch, type EventRow } from '@meterd/core/clickhouse';
import {
  meterPartials,
  recordMeterPartialsWith,
  windowBoundaries,
  type MeterDefinition,
  type MeterUsageRow,
  type MeterWindow,
} from '@meterd/core/meters';
import type { Pool } from '@meterd/core/store';
import { row, type Ev } from './helpers.js';

/** An event with properties (the meter tests' stream). */
export interface PropEv extends Ev {
  props?: Record<string, string>;
}

export function propRow(e: PropEv): EventRow {
  const r = row(e);
  if (e.props === undefined || Object.keys(e.props).length === 0) return r;
  return { ...r, prop_keys: Object.keys(e.props), prop_values: Object.values(e.props) };
}

/**
 * One shipped batch as ingest's shipper writes it: events, the batch's meter partials (for the
 * given meters per bucket), then its record.
 */
export async function insertMetered(
  ch: ClickHouseClient,
  evs: readonly PropEv[],
  meters: ReadonlyMap<string, readonly MeterDefinition[]>,
  batch?: { id: string; attempt: number },
): Promise<void> {
  await insertEventBatch(ch, evs.map(propRow), batch, (id, attempt, winners) =>
    recordMeterPartialsWith(ch, meterPartials(id, attempt, winners, meters)),
  );
}

export interface MeterSpec {
  slug: string;
  event_types: string[];
  aggregation: MeterDefinition['aggregation'];
  value_field: MeterDefinition['value_field'];
  group_by: string[];
}

/** Workspaces (each with no test bucket) and their meters, inserted as rows (the CRUD API is control-api's). */
export async function defineMeters(
  pool: Pool,
  workspaces: readonly string[],
  specs: readonly MeterSpec[],
  createdAt?: Date,
): Promise<Map<string, MeterDefinition[]>> {
  const out = new Map<string, MeterDefinition[]>();
  for (const ws of workspaces) {
    await pool.query(
      `INSERT INTO workspaces (id, slug, display_name, plan) VALUES ($1, $2, 'Meters', 'growth') ON CONFLICT (id) DO NOTHING`,
      [ws, ws.toLowerCase().replace(/_/g, '-')],
    );
    const list: MeterDefinition[] = [];
    for (const s of specs) {
      const id = `mtr_${ws}_${s.slug}`.replace(/-/g, '_');
      const { rows } = await pool.query<{ created_at: Date; updated_at: Date }>(
        `INSERT INTO meters (id, workspace_id, slug, event_types, aggregation, value_field, group_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now())) RETURNING created_at, updated_at`,
        [id, ws, s.slug, s.event_types, s.aggregation, s.value_field, s.group_by, createdAt ?? null],
      );
      list.push({
        id,
        workspace_id: ws,
        name: '',
        description: '',
        stripe_event_name: null,
        created_at_ms: rows[0]!.created_at.getTime(),
        updated_at_ms: rows[0]!.updated_at.getTime(),
        backfill_state: 'pending',
        ...s,
      });
    }
    out.set(ws, list);
  }
  return out;
}

/**
 * What readMeterUsage must answer, computed here from the distinct (winning) events alone: BigInt
 * sums, the greatest (occurred_at, event_type, idempotency_key) for latest, Sets for unique_count.
 */
export function referenceUsage(
  m: MeterDefinition,
  distinct: readonly PropEv[],
  q: {
    window: MeterWindow;
    tz: string;
    fromMs: number;
    toMs: number;
    groupBy: readonly string[];
    filter: Record<string, string>;
  },
): MeterUsageRow[] {
  const bounds = windowBoundaries(q.window, q.tz, q.fromMs, q.toMs, 100_000);
  const acc = new Map<
    string,
    {
      row: MeterUsageRow;
      n: bigint;
      vn: number;
      sum: bigint;
      max: bigint;
      latest: [number, string, bigint] | null;
      uniq: Set<string>;
    }
  >();
  for (const e of distinct) {
    if (e.workspace_id !== m.workspace_id || !m.event_types.includes(e.event_type)) continue;
    const hour = Math.floor(e.occurred_ms / 3_600_000) * 3_600_000;
    if (hour < bounds[0]! || hour >= bounds[bounds.length - 1]!) continue;
    const p = e.props ?? {};
    if (Object.entries(q.filter).some(([k, v]) => (p[k] ?? '') !== v)) continue;
    let i = 0;
    while (bounds[i + 1]! <= hour) i++;
    const group = Object.fromEntries(q.groupBy.map((k) => [k, p[k] ?? '']));
    const cur = m.value_field === 'gmv_cents' ? e.currency : '';
    const key = `${bounds[i]}|${cur}|${JSON.stringify(group)}`;
    let a = acc.get(key);
    if (a === undefined) {
      const row: MeterUsageRow = { startMs: bounds[i]!, endMs: bounds[i + 1]!, group, value: '' };
      if (m.value_field === 'gmv_cents') row.currency = cur;
      a = { row, n: 0n, vn: 0, sum: 0n, max: 0n, latest: null, uniq: new Set() };
      acc.set(key, a);
    }
    a.n++;
    let raw: string | undefined;
    if (m.value_field === 'quantity') raw = String(e.quantity);
    else if (m.value_field === 'gmv_cents') raw = String(e.gmv_cents);
    else if (m.value_field !== null) raw = p[m.value_field.slice('properties.'.length)];
    if (raw === undefined) continue;
    if (m.aggregation === 'unique_count') {
      a.uniq.add(raw);
      continue;
    }
    if (!/^-?[0-9]{1,18}$/.test(raw)) continue;
    const v = BigInt(raw);
    a.sum += v;
    if (a.vn === 0 || v > a.max) a.max = v;
    a.vn++;
    const k = `${e.event_type}\n${e.idempotency_key}`;
    // occurred_at is stored to the second (events.occurred_at is a DateTime): events within one
    // second tie, and the key decides.
    const at = Math.floor(e.occurred_ms / 1000);
    if (
      a.latest === null ||
      at > a.latest[0] ||
      (at === a.latest[0] && Buffer.compare(Buffer.from(k), Buffer.from(a.latest[1])) > 0)
    )
      a.latest = [at, k, v];
  }
  const out: MeterUsageRow[] = [];
  for (const a of acc.values()) {
    if (m.aggregation === 'sum') a.row.value = String(a.sum);
    else if (m.aggregation === 'count') a.row.value = String(a.n);
    else if (m.aggregation === 'unique_count') a.row.value = String(a.uniq.size);
    else if (a.vn === 0) continue;
    else a.row.value = String(m.aggregation === 'max' ? a.max : a.latest![2]);
    out.push(a.row);
  }
  return sortUsage(out);
}

export function sortUsage(rows: MeterUsageRow[]): MeterUsageRow[] {
  const k = (r: MeterUsageRow): string =>
    `${String(r.startMs).padStart(15, '0')}|${r.currency ?? ''}|${JSON.stringify(r.group)}`;
  return [...rows].sort((a, b) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0));
}
